"""How a step is judged: the analysis keys of a release's params, checked (pure: no network).

`AnalysisConfig.from_params` reads them and names the bad field; `CustomMetric` is one
user PromQL template judged against a threshold (its PromQL is checked and rendered by
`core.promql`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from istio_canary.core.promql import render_template, template_placeholders
from istio_canary.core.validation import ValidationError

Direction = Literal["lower", "higher"]
_METRIC_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


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


def _flag(field_name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(field_name, value, "must be true or false")
    return value


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
        object.__setattr__(self, "placeholders", template_placeholders(f"{where}.query", self.query))
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
        return render_template(
            self.query, service=service, namespace=namespace, version=version, window_seconds=window_seconds
        )

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


# The checked keys besides bake_seconds and custom_metrics, in the order they are checked:
# key -> (parser, valid(value, bake_seconds), rule when not valid; `{bake}` is bake_seconds).
_CHECKS: tuple[tuple[str, Callable[[str, Any], Any], Callable[[Any, int], bool], str], ...] = (
    (
        "check_interval_seconds",
        _whole,
        lambda v, bake: 1 <= v <= bake,
        "must be between 1 and bake_seconds ({bake})",
    ),
    ("min_requests", _whole, lambda v, _: v >= 1, "must be >= 1"),
    ("max_error_rate", _finite, lambda v, _: 0 < v < 1, "must be between 0 and 1 (exclusive)"),
    ("max_p99_ms", _finite, lambda v, _: v > 0, "must be > 0"),
    ("latency_tolerance", _finite, lambda v, _: v >= 0, "must be >= 0"),
    ("alpha", _finite, lambda v, _: 0 < v <= 0.2, "must be in (0, 0.2]"),
    ("max_inconclusive", _whole, lambda v, _: v >= 0, "must be >= 0"),
    ("max_bake_seconds", _whole, lambda v, bake: v >= bake, "must be >= bake_seconds ({bake})"),
    ("baseline_window_seconds", _whole, lambda v, _: v > 0, "must be > 0"),
    ("history_margin", _finite, lambda v, _: v >= 0, "must be >= 0"),
    ("plan_bake", _flag, lambda v, _: True, ""),
    ("power", _finite, lambda v, _: 0.5 <= v < 1, "must be in [0.5, 1)"),
)


def _bake_seconds(params: Mapping[str, Any]) -> int:
    if "bake_seconds" not in params or params["bake_seconds"] is None:
        raise ValidationError("bake_seconds", None, "is required")
    bake = _whole("bake_seconds", params["bake_seconds"])
    if bake <= 0:
        raise ValidationError("bake_seconds", bake, "must be > 0")
    return bake


def _custom_metrics(raw_custom: Any) -> tuple[CustomMetric, ...]:
    raw_custom = raw_custom or ()
    if isinstance(raw_custom, str | bytes | Mapping) or not isinstance(raw_custom, Iterable):
        raise ValidationError("custom_metrics", raw_custom, "must be a list of metric definitions")
    custom = tuple(CustomMetric.from_dict(raw, i) for i, raw in enumerate(raw_custom))
    names = [m.name for m in custom]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValidationError("custom_metrics", names, f"duplicate names: {', '.join(duplicates)}")
    return custom


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
        bake = _bake_seconds(params)
        defaults = cls(bake_seconds=bake)
        checked: dict[str, Any] = {}
        for name, parse, valid, rule in _CHECKS:
            raw = params.get(name)
            value = parse(name, getattr(defaults, name) if raw is None else raw)
            if not valid(value, bake):
                raise ValidationError(name, value, rule.format(bake=bake))
            checked[name] = value
        return cls(bake_seconds=bake, custom_metrics=_custom_metrics(params.get("custom_metrics")), **checked)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly; `from_params(to_dict())` gives the same config back."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["custom_metrics"] = [m.to_dict() for m in self.custom_metrics]
        return values
