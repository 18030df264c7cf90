"""A judge's verdict: pass, fail or inconclusive, with one result per metric (JSON round-trip)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# Verdict statistic: 1 when the check wants more data before the bake ends (the canary's error
# rate above max_error_rate but not significantly, or its p99 above stable's tolerance by no
# more than noise); the watch then extends the bake, up to max_bake_seconds.
EXTEND_BAKE = "extend_bake"


class VerdictOutcome(StrEnum):
    """What a verdict, or one metric's result within it, says about the canary."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


class Baseline(StrEnum):
    """Which stable error rate the canary was judged against."""

    IN_RELEASE = "in-release stable"
    HISTORY = "pre-release history"
    BOTH = "both"
    NONE = "none"


@dataclass(frozen=True)
class MetricResult:
    """One check within a verdict: its outcome, the value seen, the threshold and why."""

    name: str
    outcome: VerdictOutcome
    value: float | None
    threshold: float | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outcome": self.outcome.value,
            "value": _finite_or_none(self.value),
            "threshold": _finite_or_none(self.threshold),
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> MetricResult:
        return cls(
            raw["name"], VerdictOutcome(raw["outcome"]), raw.get("value"), raw.get("threshold"), raw["detail"]
        )


@dataclass(frozen=True)
class Verdict:
    """The judge's answer at one check (or at bake end, `final`), with every result behind it."""

    outcome: VerdictOutcome
    reasons: tuple[MetricResult, ...]
    baseline: Baseline
    statistics: Mapping[str, float | None]
    final: bool = False

    @property
    def summary(self) -> str:
        """One line: the outcome and the results that decided it."""
        deciding = [r for r in self.reasons if r.outcome is self.outcome and self.outcome is not VerdictOutcome.PASS]
        if not deciding:
            return f"{self.outcome.value}: every check within limits (baseline: {self.baseline.value})"
        return f"{self.outcome.value}: " + "; ".join(f"{r.name}: {r.detail}" for r in deciding)

    def table(self) -> str:
        """A compact table for task logs: one row per metric with value and threshold."""
        kind = "final verdict" if self.final else f"check {int(self.statistics.get('check') or 0)}"
        rows = [("metric", "outcome", "value", "threshold", "detail")]
        rows += [
            (r.name, r.outcome.value, _fmt(r.name, r.value), _fmt(r.name, r.threshold), r.detail)
            for r in self.reasons
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = [f"{kind}: {self.outcome.value.upper()} (baseline: {self.baseline.value})"]
        for row in rows:
            lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4])
        return "\n".join(line.rstrip() for line in lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "reasons": [r.to_dict() for r in self.reasons],
            "baseline": self.baseline.value,
            "statistics": {k: _finite_or_none(v) for k, v in self.statistics.items()},
            "final": self.final,
            "summary": self.summary,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Verdict:
        return cls(
            outcome=VerdictOutcome(raw["outcome"]),
            reasons=tuple(MetricResult.from_dict(r) for r in raw["reasons"]),
            baseline=Baseline(raw["baseline"]),
            statistics=dict(raw.get("statistics") or {}),
            final=bool(raw.get("final")),
        )



def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def pct(rate: float | None) -> str:
    """A rate as a percentage for logs and details; `n/a` when unknown."""
    return "n/a" if rate is None else f"{rate:.2%}"


def _fmt(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    if name in ("error_rate",):
        return pct(value)
    if name.startswith("errors_vs_"):
        return f"e={value:.3g}"
    if name.startswith("p99"):
        return f"{value:.1f}ms"
    return f"{value:g}"

