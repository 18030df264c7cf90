"""What Prometheus answered, as the judge's numbers (pure: no network).

Query results (instant vectors of `{"metric": {...}, "value": [ts, "value"]}`) become a
`Measurement` per version, or a `CounterSnapshot` of the raw request counters that two
looks difference into exact counts (see `core.promql` for why counts are differenced).
The version is read from the metric label the query grouped by (`label=`, default
`destination_version`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from istio_canary.core.promql import DESTINATION_VERSION

_ERROR_CODE = re.compile(r"^5\d\d$")


@dataclass(frozen=True)
class MeasuredSpan:
    """The time a measurement covers, in epoch seconds. `seconds` is the PromQL range that
    covers it (whole seconds, >= 1)."""

    start: float
    end: float

    @property
    def seconds(self) -> int:
        return max(1, math.ceil(self.end - self.start))


@dataclass(frozen=True)
class Measurement:
    """One version over one span. NaN counts mean the data was missing or broken."""

    requests: float
    errors: float
    p99_ms: float | None = None
    custom: Mapping[str, float | None] = field(default_factory=dict)

    @property
    def error_rate(self) -> float | None:
        if not self.counts_valid or self.requests <= 0:
            return None
        return self.errors / self.requests

    @property
    def counts_valid(self) -> bool:
        return (
            math.isfinite(self.requests) and math.isfinite(self.errors) and 0 <= self.errors <= self.requests
        )

    def minus(self, earlier: Measurement) -> Measurement:
        """Counts since `earlier` (for the interval between two cumulative looks)."""
        return Measurement(
            requests=self.requests - earlier.requests,
            errors=self.errors - earlier.errors,
            p99_ms=self.p99_ms,
            custom=dict(self.custom),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": _json_float(self.requests),
            "errors": _json_float(self.errors),
            "p99_ms": _json_float(self.p99_ms),
            "custom": {k: _json_float(v) for k, v in self.custom.items()},
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Measurement:
        def number(value: Any) -> float:
            return math.nan if value is None else float(value)

        return cls(
            requests=number(raw.get("requests")),
            errors=number(raw.get("errors")),
            p99_ms=sample_value(raw.get("p99_ms")),
            custom={k: sample_value(v) for k, v in (raw.get("custom") or {}).items()},
        )


def _json_float(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def sample_value(raw: Any) -> float | None:
    """A Prometheus sample value ("0.5", "NaN", "+Inf") as a float; NaN, Inf, junk -> None."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _value_of(sample: Mapping[str, Any]) -> float | None:
    """The value of one instant-vector sample `{"value": [ts, "value"]}`."""
    pair = sample.get("value") or (None, None)
    return sample_value(pair[1] if len(pair) > 1 else None)


def values_by_version(
    results: Iterable[Mapping[str, Any]] | None, *, label: str = DESTINATION_VERSION
) -> dict[str, float | None]:
    """Sample value per version, the version read from the metric label `label`."""
    values: dict[str, float | None] = {}
    for sample in results or ():
        version = (sample.get("metric") or {}).get(label)
        if version is not None:
            values[version] = _value_of(sample)
    return values


def custom_value(results: Sequence[Mapping[str, Any]] | None) -> float | None:
    """A custom query's value: exactly one finite sample, otherwise None (ambiguous or missing)."""
    if not results or len(results) != 1:
        return None
    return _value_of(results[0])


def measurements_from_results(
    versions: Sequence[str],
    requests: Sequence[Mapping[str, Any]] | None,
    errors: Sequence[Mapping[str, Any]] | None,
    p99: Sequence[Mapping[str, Any]] | None = None,
    custom: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]] | None]] | None = None,
    *,
    label: str = DESTINATION_VERSION,
) -> dict[str, Measurement]:
    """Measurements per version from instant-vector results of the built-in queries.

    Versions are read from the metric label `label` (the one the queries grouped by). A version
    absent from the request results had no requests (0). A query that was not
    answered (None) or a NaN count gives NaN counts, which the judge treats as missing data.
    p99 and custom values that are missing or NaN become None. Counts are rounded (they come
    from extrapolating `increase`); errors never exceed requests.
    """
    request_values = values_by_version(requests, label=label) if requests is not None else None
    error_values = values_by_version(errors, label=label) if errors is not None else None
    p99_values = values_by_version(p99, label=label)
    measurements = {}
    for version in versions:
        n = _count(request_values, version)
        e = _count(error_values, version)
        if math.isfinite(n) and math.isfinite(e):
            e = min(e, n)
        measurements[version] = Measurement(
            requests=n,
            errors=e,
            p99_ms=p99_values.get(version),
            custom={
                name: custom_value(per_version.get(version)) for name, per_version in (custom or {}).items()
            },
        )
    return measurements


def _count(values: Mapping[str, float | None] | None, version: str) -> float:
    if values is None:
        return math.nan
    if version not in values:
        return 0.0
    value = values[version]
    return math.nan if value is None or value < 0 else float(round(value))


@dataclass(frozen=True)
class CounterSnapshot:
    """Raw `istio_requests_total` counters at one instant: version -> response code -> value."""

    at: float
    series: Mapping[str, Mapping[str, float]]

    @classmethod
    def from_results(
        cls, results: Iterable[Mapping[str, Any]], at: float, *, label: str = DESTINATION_VERSION
    ) -> CounterSnapshot:
        """From `counter_snapshot_query` results; the version is read from the metric label `label`."""
        series: dict[str, dict[str, float]] = {}
        for sample in results:
            labels = sample.get("metric") or {}
            version = labels.get(label)
            value = _value_of(sample)
            if version is None or value is None:
                continue
            series.setdefault(version, {})[str(labels.get("response_code", ""))] = value
        return cls(at=at, series=series)

    def since(self, earlier: CounterSnapshot | None, versions: Sequence[str]) -> dict[str, Measurement]:
        """Exact request and 5xx counts per version between `earlier` and this snapshot.

        A series that went down was reset (a pod restarted): as Prometheus does, its current
        value counts as the increase since the reset. A series new since `earlier` counts from 0.
        """
        out = {}
        for version in versions:
            now = self.series.get(version, {})
            before = earlier.series.get(version, {}) if earlier else {}
            requests = errors = 0.0
            for code, value in now.items():
                previous = before.get(code, 0.0)
                delta = value - previous if value >= previous else value
                requests += delta
                if _ERROR_CODE.match(code):
                    errors += delta
            out[version] = Measurement(requests=requests, errors=errors)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "series": {v: dict(codes) for v, codes in self.series.items()}}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> CounterSnapshot:
        return cls(
            at=float(raw["at"]),
            series={v: {c: float(x) for c, x in codes.items()} for v, codes in raw["series"].items()},
        )


def with_latency(
    measurement: Measurement, p99_ms: float | None, custom: Mapping[str, float | None] | None = None
) -> Measurement:
    """The same counts with p99 (and custom values) from windowed queries added."""
    return replace(measurement, p99_ms=p99_ms, custom=dict(custom or measurement.custom))
