"""What the judge sees at one check (`Observation`) and carries to the next (`JudgeState`).

Both round-trip through JSON (to_dict/from_dict), so the watch can carry them between checks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from istio_canary.core.analysis_config import AnalysisConfig
from istio_canary.core.samples import MeasuredSpan, Measurement
from istio_canary.core.stats import log_mean_exp

# Alternatives mixed with equal weight: error-rate ratios worth stopping a release for.
THETAS: tuple[float, ...] = (1.5, 2.0, 3.0, 5.0, 10.0)
ERROR_TESTS: tuple[str, ...] = ("errors_vs_stable", "errors_vs_baseline", "errors_vs_max")

# In-release stable requests before their rate replaces the pre-release hour as the baseline.
BASELINE_MIN_STABLE_REQUESTS = 1000
# Stable intervals with requests before their spread is read as overdispersion.
DISPERSION_MIN_INTERVALS = 5
# Lowest reference rate taken from an error-free history, so one canary error is not "infinitely" worse.
HISTORY_FLOOR = 0.001
STATE_VERSION = 2


@dataclass(frozen=True)
class Observation:
    """What one check sees. `canary`/`stable`: counts since the previous check (interval);
    `window_*`: cumulative since the watch started (latency and custom values come from
    these); `history`: stable over `baseline_window_seconds` before the release, if known.
    `stable` is None (or zero requests) when no stable traffic is left. `discounted_*`: the
    window's counts in intervals already judged incidents (taken out of the bake-end floor);
    `canary_intervals`: the window's per-interval canary (requests, errors), this one last."""

    canary: Measurement
    window_canary: Measurement
    stable: Measurement | None = None
    window_stable: Measurement | None = None
    history: Measurement | None = None
    window: MeasuredSpan | None = None
    discounted_canary: Measurement | None = None
    discounted_stable: Measurement | None = None
    canary_intervals: tuple[tuple[float, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        def opt(m: Measurement | None) -> dict[str, Any] | None:
            return None if m is None else m.to_dict()

        return {
            "canary": self.canary.to_dict(),
            "window_canary": self.window_canary.to_dict(),
            "stable": opt(self.stable),
            "window_stable": opt(self.window_stable),
            "history": opt(self.history),
            "window": None if self.window is None else [self.window.start, self.window.end],
            "discounted_canary": opt(self.discounted_canary),
            "discounted_stable": opt(self.discounted_stable),
            "canary_intervals": [list(pair) for pair in self.canary_intervals],
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Observation:
        def opt(value: Any) -> Measurement | None:
            return None if value is None else Measurement.from_dict(value)

        window = raw.get("window")
        return cls(
            canary=Measurement.from_dict(raw["canary"]),
            window_canary=Measurement.from_dict(raw["window_canary"]),
            stable=opt(raw.get("stable")),
            window_stable=opt(raw.get("window_stable")),
            history=opt(raw.get("history")),
            window=None if window is None else MeasuredSpan(float(window[0]), float(window[1])),
            discounted_canary=opt(raw.get("discounted_canary")),
            discounted_stable=opt(raw.get("discounted_stable")),
            canary_intervals=tuple((float(n), float(e)) for n, e in raw.get("canary_intervals") or ()),
        )


@dataclass(frozen=True)
class JudgeState:
    """Everything carried from one check to the next; JSON round-trips via to_dict/from_dict.

    `log_e` holds, per error test, the log likelihood ratio for each theta in THETAS.
    Carrying it across steps keeps one alpha for the whole release. `history_rate` is
    stable's error rate in the hour before the release; the `*_interval_sums` per version
    (over its intervals with requests: sum of errors^2, of errors x requests, of requests^2)
    give the overdispersion.
    """

    checks: int = 0
    inconclusive_streak: int = 0
    log_e: Mapping[str, tuple[float, ...]] = field(
        default_factory=lambda: {name: (0.0,) * len(THETAS) for name in ERROR_TESTS}
    )
    history_rate: float | None = None
    skipped_intervals: Mapping[str, int] = field(default_factory=lambda: {name: 0 for name in ERROR_TESTS})
    canary_requests: float = 0.0
    canary_errors: float = 0.0
    stable_requests: float = 0.0
    stable_errors: float = 0.0
    stable_intervals: int = 0
    stable_interval_sums: tuple[float, float, float] = (0.0, 0.0, 0.0)
    canary_intervals: int = 0
    canary_interval_sums: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @cached_property
    def e_values(self) -> Mapping[str, float]:
        """The mixture e-value per test: the mean over theta of the likelihood ratios."""
        return {name: math.exp(log_mean_exp(values)) for name, values in self.log_e.items()}

    def e_value(self, test: str) -> float:
        return self.e_values[test]

    @cached_property
    def dispersion(self) -> float:
        """The squared coefficient of variation of the per-interval error rate beyond the
        binomial (c^2 of a negative binomial: Var(errors) = mu + c^2 mu^2), pooled over both
        versions, each around its own rate (a canary failing steadily more is not spread);
        0 until they have `DISPERSION_MIN_INTERVALS` intervals between them."""
        excess = scale = 0.0
        versions = (
            (self.stable_intervals, self.stable_interval_sums, self.stable_requests, self.stable_errors),
            (self.canary_intervals, self.canary_interval_sums, self.canary_requests, self.canary_errors),
        )
        for intervals, (sum_e2, sum_en, sum_n2), n, e in versions:
            if intervals < 2 or n <= 0 or e <= 0:
                continue
            p = e / n
            excess += sum_e2 - 2.0 * p * sum_en + p * p * sum_n2 - p * n  # sum (e_i - p n_i)^2 - mu
            scale += p * p * sum_n2
        if self.stable_intervals + self.canary_intervals < DISPERSION_MIN_INTERVALS or scale <= 0:
            return 0.0
        return max(0.0, excess / scale)

    def baseline_rate(self) -> tuple[float | None, str]:
        """Stable's error rate to judge a canary against, and where it comes from."""
        if self.stable_requests >= BASELINE_MIN_STABLE_REQUESTS:
            # Add-one: an error-free stretch gives a small positive rate, not zero.
            return (self.stable_errors + 1.0) / (self.stable_requests + 1.0), "stable in this release"
        if self.history_rate is not None:
            return self.history_rate, "pre-release hour"
        return None, "none"

    def baseline_reference(self, config: AnalysisConfig) -> float | None:
        """The rate errors_vs_baseline tests against: the baseline times 1 + history_margin.
        Measured in this release, the rate is taken at its upper 97.5 % bound (its sample is
        a few minutes of stable, overdispersed counts count for fewer): a baseline that
        happens to come out low must not turn a healthy canary into a failing one."""
        rate, source = self.baseline_rate()
        if rate is None:
            return None
        if source == "stable in this release":
            per_interval = self.stable_errors / max(self.stable_intervals, 1)
            effective = self.stable_requests / (1.0 + self.dispersion * per_interval)
            rate += 1.96 * math.sqrt(rate * (1.0 - rate) / max(effective, 1.0))
        return min(max(rate * (1.0 + config.history_margin), HISTORY_FLOOR), 0.5)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "thetas": list(THETAS),
            "checks": self.checks,
            "inconclusive_streak": self.inconclusive_streak,
            "log_e": {k: list(v) for k, v in self.log_e.items()},
            "history_rate": self.history_rate,
            "skipped_intervals": dict(self.skipped_intervals),
            "canary_requests": self.canary_requests,
            "canary_errors": self.canary_errors,
            "stable_requests": self.stable_requests,
            "stable_errors": self.stable_errors,
            "stable_intervals": self.stable_intervals,
            "stable_interval_sums": list(self.stable_interval_sums),
            "canary_intervals": self.canary_intervals,
            "canary_interval_sums": list(self.canary_interval_sums),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> JudgeState:
        if raw.get("version") != STATE_VERSION or list(raw.get("thetas", [])) != list(THETAS):
            raise ValueError(f"judge state from another version: {raw.get('version')!r}")
        sums = tuple(float(x) for x in raw["stable_interval_sums"])
        canary_sums = tuple(float(x) for x in raw["canary_interval_sums"])
        return cls(
            checks=int(raw["checks"]),
            inconclusive_streak=int(raw["inconclusive_streak"]),
            log_e={k: tuple(float(x) for x in raw["log_e"][k]) for k in ERROR_TESTS},
            history_rate=raw.get("history_rate"),
            skipped_intervals={k: int(raw["skipped_intervals"].get(k, 0)) for k in ERROR_TESTS},
            canary_requests=float(raw["canary_requests"]),
            canary_errors=float(raw["canary_errors"]),
            stable_requests=float(raw["stable_requests"]),
            stable_errors=float(raw["stable_errors"]),
            stable_intervals=int(raw["stable_intervals"]),
            stable_interval_sums=(sums[0], sums[1], sums[2]),
            canary_intervals=int(raw["canary_intervals"]),
            canary_interval_sums=(canary_sums[0], canary_sums[1], canary_sums[2]),
        )

