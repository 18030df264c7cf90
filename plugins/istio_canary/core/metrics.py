"""What the canary analysis measures, and the PromQL that measures it (pure: no network).

Built-in metrics use Istio's standard metrics as reported by the destination sidecar
(`reporter="destination"`): request count, 5xx count and p99 latency per version, canary and
stable in the SAME query so both cover the same window.

Which metric label carries the version follows the release's pod label (`metric_label_for`):
Istio fills `destination_version` only from the pod label `version`, and
`destination_canonical_revision` from `service.istio.io/canonical-revision`, else
`app.kubernetes.io/version`, else `version`. Every query and every parser takes that metric
label (`label=`, default `destination_version`), so a release keyed on another pod label
still finds its versions.

Counting choice. The judge's statistics work on request and error *counts*. Prometheus'
`increase()` extrapolates to the window edges, so its counts are not integers and may
disagree between the request and the error query. The watch therefore reads the raw
counters (`counter_snapshot_query`) once at its start and again at every check and
differences them (`CounterSnapshot.since`): exact counts, one query per check, counter
resets handled per series the way Prometheus does. The windowed `increase` queries
(`request_count_query`, `error_count_query`) remain for one-off looks such as the pre-release
history baseline; their results are rounded to whole requests.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from istio_canary.core.validation import ValidationError, require_dns1123_label, require_label_value

REQUESTS_METRIC = "istio_requests_total"
DURATION_BUCKET_METRIC = "istio_request_duration_milliseconds_bucket"
ERROR_CODE_REGEX = "5.."
_ERROR_CODE = re.compile(r"^5\d\d$")

Direction = Literal["lower", "higher"]

# The Istio metric labels that name a workload's version.
DESTINATION_VERSION = "destination_version"
DESTINATION_CANONICAL_REVISION = "destination_canonical_revision"
METRIC_VERSION_LABELS: tuple[str, ...] = (DESTINATION_VERSION, DESTINATION_CANONICAL_REVISION)
# Pod labels, highest precedence first, that Istio reads for destination_canonical_revision.
CANONICAL_REVISION_POD_LABELS: tuple[str, ...] = (
    "service.istio.io/canonical-revision",
    "app.kubernetes.io/version",
    "version",
)
# The pod label a release may select versions by -> the metric label Istio reports it in.
# Any other pod label never reaches Istio's metrics: canary and stable would look alike.
VERSION_LABEL_METRICS: dict[str, str] = {
    "version": DESTINATION_VERSION,
    "app.kubernetes.io/version": DESTINATION_CANONICAL_REVISION,
    "service.istio.io/canonical-revision": DESTINATION_CANONICAL_REVISION,
}


def metric_label_for(version_label: str) -> str:
    """The Istio metric label that reports the pod label `version_label` (one of
    `VERSION_LABEL_METRICS`), e.g. `version` -> `destination_version`."""
    try:
        return VERSION_LABEL_METRICS[version_label]
    except (KeyError, TypeError):
        raise ValidationError(
            "version_label",
            version_label,
            "Istio's metrics cannot tell versions apart by this label (destination_version comes only "
            "from the pod label 'version', destination_canonical_revision from "
            "'service.istio.io/canonical-revision', else 'app.kubernetes.io/version', else 'version'); "
            f"use one of: {', '.join(VERSION_LABEL_METRICS)}",
        ) from None


def _metric_label(label: Any) -> str:
    """One of `METRIC_VERSION_LABELS`: the only label names that reach PromQL."""
    if label not in METRIC_VERSION_LABELS:
        raise ValidationError("metric_label", label, f"must be one of {', '.join(METRIC_VERSION_LABELS)}")
    return str(label)


# --------------------------------------------------------------------------- custom metrics

TEMPLATE_PLACEHOLDERS = frozenset({"service", "namespace", "version", "window"})
# A placeholder is a bare identifier in braces. Any other brace pair is PromQL's own
# (label matchers), so templates read as ordinary PromQL: `errors{app="{service}"}`.
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_METRIC_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _check_template(field_name: str, template: Any) -> frozenset[str]:
    if not isinstance(template, str) or not template.strip():
        raise ValidationError(field_name, template, "must be a non-empty PromQL template")
    used = set()
    for match in _PLACEHOLDER.finditer(template):
        name = match.group(1)
        if name not in TEMPLATE_PLACEHOLDERS:
            raise ValidationError(
                field_name,
                template,
                f"unknown placeholder {{{name}}}; allowed: "
                + ", ".join(f"{{{p}}}" for p in sorted(TEMPLATE_PLACEHOLDERS)),
            )
        used.add(name)
    depth = 0
    for char in _PLACEHOLDER.sub("", template):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth < 0:
                raise ValidationError(field_name, template, "unbalanced braces: '}' without '{'")
    if depth:
        raise ValidationError(field_name, template, "unbalanced braces: '{' never closed")
    return frozenset(used)


def _label(field_name: str, value: Any) -> str:
    """A DNS-1123 label: safe inside a PromQL string (no quotes, braces or newlines)."""
    return require_dns1123_label(field_name, value)


def _version(value: Any) -> str:
    """A Kubernetes label value (`v1`, `1.2.0`, `v1.2_rc`): the pods' version label, which is
    what Istio reports in the version metric label. Letters, digits, '-', '_' and '.' only: no
    quote, backslash, brace or newline can reach PromQL."""
    return require_label_value("version", value)


def _version_regex(versions: Sequence[str]) -> str:
    r"""The alternation for a `=~"..."` matcher, e.g. `v1|1\\.2\\.0`. '.' is the only regex
    metacharacter a label value can hold: `\.` for RE2, its backslash doubled in the PromQL string."""
    return "|".join(v.replace(".", "\\\\.") for v in versions)


def window_literal(field_name: str, seconds: Any) -> str:
    """A PromQL range such as `30s`, from a whole number of seconds (nothing else gets in)."""
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds <= 0:
        raise ValidationError(field_name, seconds, "must be a positive whole number of seconds")
    return f"{seconds}s"


@dataclass(frozen=True)
class CustomMetric:
    """A user PromQL query, rendered once per version, judged against a threshold.

    `query` may use `{service}`, `{namespace}`, `{version}` and `{window}` (rendered `30s`);
    it must return one sample (e.g. wrap it in `sum(...)`). `direction` says which way is
    better; `threshold` is absolute; `compare_to_stable`, when set, is the fractional
    worsening of the canary over stable that is tolerated (0.1 = 10 % worse).
    """

    name: str
    query: str
    direction: Direction
    threshold: float
    compare_to_stable: float | None = None
    placeholders: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _METRIC_NAME.fullmatch(self.name):
            raise ValidationError(
                "custom_metrics.name", self.name, "must be an identifier: lowercase letters, digits, '_'"
            )
        where = f"custom_metrics[{self.name}]"
        object.__setattr__(self, "placeholders", _check_template(f"{where}.query", self.query))
        if self.direction not in ("lower", "higher"):
            raise ValidationError(f"{where}.direction", self.direction, "must be 'lower' or 'higher'")
        object.__setattr__(self, "threshold", _finite(f"{where}.threshold", self.threshold))
        if self.compare_to_stable is not None:
            tolerance = _finite(f"{where}.compare_to_stable", self.compare_to_stable)
            if tolerance < 0:
                raise ValidationError(f"{where}.compare_to_stable", tolerance, "must be >= 0")
            if "version" not in self.placeholders:
                raise ValidationError(
                    f"{where}.query", self.query, "needs {version} to compare the canary with stable"
                )
            object.__setattr__(self, "compare_to_stable", tolerance)

    def render(self, *, service: str, namespace: str, version: str, window_seconds: int) -> str:
        """The query for one version. Only validated names reach PromQL (no injection)."""
        values = {
            "service": _label("service", service),
            "namespace": _label("namespace", namespace),
            "version": _version(version),
            "window": window_literal("window_seconds", window_seconds),
        }
        # One pass: a substituted value is never scanned again for placeholders.
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.query)

    def is_worse(self, value: float, reference: float) -> bool:
        """True when `value` is on the bad side of `reference`."""
        return value > reference if self.direction == "lower" else value < reference

    def stable_limit(self, stable_value: float) -> float:
        """The worst canary value tolerated next to stable's value."""
        tolerance = self.compare_to_stable or 0.0
        if self.direction == "lower":
            return stable_value + abs(stable_value) * tolerance
        return stable_value - abs(stable_value) * tolerance

    @classmethod
    def from_dict(cls, raw: Any, index: int = 0) -> CustomMetric:
        if isinstance(raw, CustomMetric):
            return raw
        if not isinstance(raw, Mapping):
            raise ValidationError(f"custom_metrics[{index}]", raw, "must be a mapping")
        missing = [k for k in ("name", "query", "direction", "threshold") if k not in raw]
        if missing:
            raise ValidationError(f"custom_metrics[{index}]", dict(raw), f"missing {', '.join(missing)}")
        return cls(
            name=raw["name"],
            query=raw["query"],
            direction=raw["direction"],
            threshold=raw["threshold"],
            compare_to_stable=raw.get("compare_to_stable"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "query": self.query,
            "direction": self.direction,
            "threshold": self.threshold,
            "compare_to_stable": self.compare_to_stable,
        }


# --------------------------------------------------------------------------- configuration


def _finite(field_name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ValidationError(field_name, value, "must be a number")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValidationError(field_name, value, "must be a number") from None
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError(field_name, value, "must be a finite number")
    return float(value)


def _whole(field_name: str, value: Any) -> int:
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field_name, value, "must be a whole number")
    return value


@dataclass(frozen=True)
class AnalysisConfig:
    """How one step is judged. Build it with `from_params` (checked, names the bad field)."""

    bake_seconds: int
    check_interval_seconds: int = 5
    min_requests: int = 50
    max_error_rate: float = 0.01
    max_p99_ms: float = 500.0
    latency_tolerance: float = 0.2
    alpha: float = 0.01
    max_inconclusive: int = 3
    max_bake_seconds: int = 0  # 0: three times bake_seconds
    baseline_window_seconds: int = 3600
    # Canary error rate tolerated above the pre-release stable rate (0.5 = 50 % higher).
    history_margin: float = 0.5
    custom_metrics: tuple[CustomMetric, ...] = ()
    # Bake time planned from traffic (core.plan): each step bakes long enough, within
    # max_bake_seconds, to detect a 2x error rate at `alpha` with this power.
    plan_bake: bool = True
    power: float = 0.8

    def __post_init__(self) -> None:
        if not self.max_bake_seconds:
            object.__setattr__(self, "max_bake_seconds", 3 * self.bake_seconds)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> AnalysisConfig:
        """Read the analysis keys of a release's params; other keys are ignored."""
        if "bake_seconds" not in params or params["bake_seconds"] is None:
            raise ValidationError("bake_seconds", None, "is required")
        bake = _whole("bake_seconds", params["bake_seconds"])
        if bake <= 0:
            raise ValidationError("bake_seconds", bake, "must be > 0")
        defaults = cls(bake_seconds=bake)

        def get(name: str) -> Any:
            value = params.get(name)
            return getattr(defaults, name) if value is None else value

        interval = _whole("check_interval_seconds", get("check_interval_seconds"))
        if not 1 <= interval <= bake:
            raise ValidationError(
                "check_interval_seconds", interval, f"must be between 1 and bake_seconds ({bake})"
            )
        min_requests = _whole("min_requests", get("min_requests"))
        if min_requests < 1:
            raise ValidationError("min_requests", min_requests, "must be >= 1")
        max_error_rate = _finite("max_error_rate", get("max_error_rate"))
        if not 0 < max_error_rate < 1:
            raise ValidationError("max_error_rate", max_error_rate, "must be between 0 and 1 (exclusive)")
        max_p99 = _finite("max_p99_ms", get("max_p99_ms"))
        if max_p99 <= 0:
            raise ValidationError("max_p99_ms", max_p99, "must be > 0")
        tolerance = _finite("latency_tolerance", get("latency_tolerance"))
        if tolerance < 0:
            raise ValidationError("latency_tolerance", tolerance, "must be >= 0")
        alpha = _finite("alpha", get("alpha"))
        if not 0 < alpha <= 0.2:
            raise ValidationError("alpha", alpha, "must be in (0, 0.2]")
        max_inconclusive = _whole("max_inconclusive", get("max_inconclusive"))
        if max_inconclusive < 0:
            raise ValidationError("max_inconclusive", max_inconclusive, "must be >= 0")
        max_bake = _whole("max_bake_seconds", get("max_bake_seconds"))
        if max_bake < bake:
            raise ValidationError("max_bake_seconds", max_bake, f"must be >= bake_seconds ({bake})")
        history_window = _whole("baseline_window_seconds", get("baseline_window_seconds"))
        if history_window <= 0:
            raise ValidationError("baseline_window_seconds", history_window, "must be > 0")
        history_margin = _finite("history_margin", get("history_margin"))
        if history_margin < 0:
            raise ValidationError("history_margin", history_margin, "must be >= 0")
        plan = get("plan_bake")
        if not isinstance(plan, bool):
            raise ValidationError("plan_bake", plan, "must be true or false")
        power = _finite("power", get("power"))
        if not 0.5 <= power < 1:
            raise ValidationError("power", power, "must be in [0.5, 1)")
        raw_custom = params.get("custom_metrics") or ()
        if isinstance(raw_custom, str | bytes | Mapping) or not isinstance(raw_custom, Iterable):
            raise ValidationError("custom_metrics", raw_custom, "must be a list of metric definitions")
        custom = tuple(CustomMetric.from_dict(raw, i) for i, raw in enumerate(raw_custom))
        names = [m.name for m in custom]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValidationError("custom_metrics", names, f"duplicate names: {', '.join(duplicates)}")
        return cls(
            bake_seconds=bake,
            check_interval_seconds=interval,
            min_requests=min_requests,
            max_error_rate=max_error_rate,
            max_p99_ms=max_p99,
            latency_tolerance=tolerance,
            alpha=alpha,
            max_inconclusive=max_inconclusive,
            max_bake_seconds=max_bake,
            baseline_window_seconds=history_window,
            history_margin=history_margin,
            custom_metrics=custom,
            plan_bake=plan,
            power=power,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly; `from_params(to_dict())` gives the same config back."""
        return {
            "bake_seconds": self.bake_seconds,
            "check_interval_seconds": self.check_interval_seconds,
            "min_requests": self.min_requests,
            "max_error_rate": self.max_error_rate,
            "max_p99_ms": self.max_p99_ms,
            "latency_tolerance": self.latency_tolerance,
            "alpha": self.alpha,
            "max_inconclusive": self.max_inconclusive,
            "max_bake_seconds": self.max_bake_seconds,
            "baseline_window_seconds": self.baseline_window_seconds,
            "history_margin": self.history_margin,
            "custom_metrics": [m.to_dict() for m in self.custom_metrics],
            "plan_bake": self.plan_bake,
            "power": self.power,
        }


# --------------------------------------------------------------------------- built-in queries


def _selector(service: str, namespace: str, versions: Sequence[str], *extra: str, label: str) -> str:
    _label("service", service)
    _label("namespace", namespace)
    if isinstance(versions, str) or not versions:
        raise ValidationError("versions", versions, "must be a non-empty list of versions")
    for version in versions:
        _version(version)
    matchers = [
        'reporter="destination"',
        f'destination_service_name="{service}"',
        f'destination_workload_namespace="{namespace}"',
        # Escaped: matches exactly these versions (Prometheus anchors regexes).
        f'{_metric_label(label)}=~"{_version_regex(versions)}"',
        *extra,
    ]
    return "{" + ",".join(matchers) + "}"


def request_count_query(
    service: str,
    namespace: str,
    versions: Sequence[str],
    window_seconds: int,
    *,
    label: str = DESTINATION_VERSION,
) -> str:
    """Requests per version over the window (`increase`: extrapolated, round the result)."""
    selector = _selector(service, namespace, versions, label=label)
    window = window_literal("window_seconds", window_seconds)
    return f"sum by ({label}) (increase({REQUESTS_METRIC}{selector}[{window}]))"


def error_count_query(
    service: str,
    namespace: str,
    versions: Sequence[str],
    window_seconds: int,
    *,
    label: str = DESTINATION_VERSION,
) -> str:
    """5xx responses per version over the window."""
    selector = _selector(service, namespace, versions, f'response_code=~"{ERROR_CODE_REGEX}"', label=label)
    window = window_literal("window_seconds", window_seconds)
    return f"sum by ({label}) (increase({REQUESTS_METRIC}{selector}[{window}]))"


def p99_query(
    service: str,
    namespace: str,
    versions: Sequence[str],
    window_seconds: int,
    *,
    label: str = DESTINATION_VERSION,
) -> str:
    """p99 request duration (ms) per version over the window; NaN for a version without requests."""
    selector = _selector(service, namespace, versions, label=label)
    window = window_literal("window_seconds", window_seconds)
    return (
        f"histogram_quantile(0.99, sum by (le, {label}) "
        f"(increase({DURATION_BUCKET_METRIC}{selector}[{window}])))"
    )


def error_ratio_graph_query(
    service: str, namespace: str, versions: Sequence[str], *, label: str = DESTINATION_VERSION
) -> str:
    """5xx ratio per version over 1-minute rates: what a person graphs to see the canary."""
    errors = _selector(service, namespace, versions, f'response_code=~"{ERROR_CODE_REGEX}"', label=label)
    total = _selector(service, namespace, versions, label=label)
    requests = f"sum by ({label}) (rate({REQUESTS_METRIC}{total}[1m]))"
    # `or ... * 0`: a version without errors has no 5xx series; graph it at 0, not as a gap.
    return (f"(sum by ({label}) (rate({REQUESTS_METRIC}{errors}[1m])) or {requests} * 0) / "
            f"{requests}")


def scrape_time_query(
    service: str, namespace: str, versions: Sequence[str], *, label: str = DESTINATION_VERSION
) -> str:
    """When Prometheus last scraped these counters (epoch seconds). `timestamp()` must wrap
    the raw selector: applied to an aggregation it returns the evaluation time instead."""
    selector = _selector(service, namespace, versions, label=label)
    return f"max(timestamp({REQUESTS_METRIC}{selector}))"


def counter_snapshot_query(
    service: str, namespace: str, versions: Sequence[str], *, label: str = DESTINATION_VERSION
) -> str:
    """The raw request counters per version and response code, for exact differencing."""
    selector = _selector(service, namespace, versions, label=label)
    return f"sum by ({label}, response_code) ({REQUESTS_METRIC}{selector})"


# --------------------------------------------------------------------------- measurements


@dataclass(frozen=True)
class Window:
    """Epoch seconds. `seconds` is the PromQL range that covers it (whole seconds, >= 1)."""

    start: float
    end: float

    @property
    def seconds(self) -> int:
        return max(1, math.ceil(self.end - self.start))


@dataclass(frozen=True)
class Measurement:
    """One version over one window. NaN counts mean the data was missing or broken."""

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


def values_by_version(
    results: Iterable[Mapping[str, Any]] | None, *, label: str = DESTINATION_VERSION
) -> dict[str, float | None]:
    """Sample value per version, the version read from the metric label `label`."""
    values: dict[str, float | None] = {}
    for sample in results or ():
        version = (sample.get("metric") or {}).get(label)
        pair = sample.get("value") or (None, None)
        if version is not None:
            values[version] = sample_value(pair[1] if len(pair) > 1 else None)
    return values


def custom_value(results: Sequence[Mapping[str, Any]] | None) -> float | None:
    """A custom query's value: exactly one finite sample, otherwise None (ambiguous or missing)."""
    if not results or len(results) != 1:
        return None
    pair = results[0].get("value") or (None, None)
    return sample_value(pair[1] if len(pair) > 1 else None)


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
            pair = sample.get("value") or (None, None)
            value = sample_value(pair[1] if len(pair) > 1 else None)
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
