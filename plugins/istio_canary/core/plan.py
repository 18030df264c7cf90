"""Bake time planned from traffic (pure): how long each step must bake to have a chance.

A canary that fails twice as often as stable is only caught when it has served enough
requests. Before each step the watch measures the service's recent request rate and
error rate and asks `plan_bake` how long this step must bake so that, by the end of the
release, the canary will have served the requests a one-sided test at the configured
`alpha` needs to detect `DETECT_RATIO` x the baseline error rate with the configured
`power`. Requests of earlier steps count. Missing requests are added to the latest steps
first (the most canary traffic per second of waiting), each step up to `max_bake_seconds`;
this step never bakes less than `bake_seconds`. When even `max_bake_seconds` at every
remaining step cannot reach the number, the plan says so (`enough` is False) and the
release is refused before any write rather than promoted on evidence too thin to mean
anything.

The effect is never smaller than `max_error_rate`: the baseline is taken as at least
`max_error_rate / DETECT_RATIO`, so a stable that almost never fails does not ask for a
sample large enough to tell 0.01 % from 0.02 %.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from istio_canary.core.analysis_config import AnalysisConfig

DETECT_RATIO = 2.0


def detection_rates(config: AnalysisConfig, baseline_rate: float | None) -> tuple[float, float]:
    """(p0, p1): the baseline error rate the plan starts from and the rate it must detect."""
    p0 = max(baseline_rate or 0.0, config.max_error_rate / DETECT_RATIO)
    p0 = min(p0, 0.45)
    return p0, min(DETECT_RATIO * p0, 0.9)


def needed_canary_requests(config: AnalysisConfig, baseline_rate: float | None) -> int:
    """Canary requests for a one-sided test of p0 vs p1 = DETECT_RATIO x p0 at `alpha` with
    `power` (normal approximation to the binomial)."""
    p0, p1 = detection_rates(config, baseline_rate)
    z_alpha = NormalDist().inv_cdf(1.0 - config.alpha)
    z_power = NormalDist().inv_cdf(config.power)
    root = z_alpha * math.sqrt(p0 * (1.0 - p0)) + z_power * math.sqrt(p1 * (1.0 - p1))
    return math.ceil((root / (p1 - p0)) ** 2)


@dataclass(frozen=True)
class BakePlan:
    """The plan made before one step. `steps` are (weight, planned seconds) for this step
    and every later one; only the first is used now, later steps are planned again when
    they start."""

    seconds: int
    steps: tuple[tuple[int, int], ...]
    service_rps: float
    baseline_rate: float | None
    needed_requests: int
    seen_requests: float
    planned_requests: float
    enough: bool
    p0: float
    p1: float
    inflation: float = 1.0

    def describe(self, config: AnalysisConfig) -> str:
        """Why this bake: the rate seen, the effect and the error levels, for the task log."""
        planned = ", ".join(f"{w}%: {s}s" for w, s in self.steps)
        baseline = "unknown" if self.baseline_rate is None else f"{self.baseline_rate:.2%}"
        lines = [
            f"planned bake {self.seconds}s for this step (bake_seconds {config.bake_seconds}, "
            f"max_bake_seconds {config.max_bake_seconds})",
            f"  traffic seen: {self.service_rps:.1f} requests/s to the service, error rate {baseline}",
            f"  to detect {DETECT_RATIO:g}x: {self.p0:.2%} -> {self.p1:.2%} errors needs "
            f"{self.needed_requests} canary requests (alpha {config.alpha:g}, power {config.power:g}"
            + (f", x{self.inflation:.1f} for overdispersed errors" if self.inflation > 1.0 else "") + ")",
            f"  canary requests judged so far {self.seen_requests:.0f}; by the end of the release "
            f"with this plan {self.planned_requests:.0f} ({planned})",
        ]
        if not self.enough:
            lines.append(f"  NOT ENOUGH: {self.refusal(config)}")
        return "\n".join(lines)

    def refusal(self, config: AnalysisConfig) -> str:
        """What the user can do when even the maximum bake cannot be enough."""
        last_weight = self.steps[-1][0] if self.steps else 100
        short = self.needed_requests - self.planned_requests
        per_second = self.service_rps * last_weight / 100.0
        more = math.ceil(short / per_second) if per_second > 0 else None
        fix = (f"raise max_bake_seconds to at least {config.max_bake_seconds + more}"
               if more is not None else "wait for traffic to reach the service")
        return (
            f"at {self.service_rps:.1f} requests/s the canary would serve {self.planned_requests:.0f} "
            f"requests even at max_bake_seconds {config.max_bake_seconds} per step, fewer than the "
            f"{self.needed_requests} needed to tell a {DETECT_RATIO:g}x error rate; {fix}, raise "
            f"max_error_rate, or set plan_bake to false to release on thinner evidence"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "steps": [list(step) for step in self.steps],
            "service_rps": self.service_rps,
            "baseline_rate": self.baseline_rate,
            "needed_requests": self.needed_requests,
            "seen_requests": self.seen_requests,
            "planned_requests": self.planned_requests,
            "enough": self.enough,
        }


def plan_bake(
    config: AnalysisConfig,
    *,
    weights: Sequence[int],
    service_rps: float,
    baseline_rate: float | None,
    seen_requests: float = 0.0,
    dispersion: float = 0.0,
) -> BakePlan:
    """Plan this step's bake. `weights`: this step's canary weight, then every later step's.
    `dispersion`: the judge's overdispersion estimate (c^2, `JudgeState.dispersion`); error
    counts that vary more than a binomial's carry less information, so more are needed."""
    if not weights:
        raise ValueError("weights: at least this step's weight")
    rps = max(service_rps, 0.0) if math.isfinite(service_rps) else 0.0
    p0, p1 = detection_rates(config, baseline_rate)
    # The judge divides each interval's evidence by 1 + c^2 mu (mu: expected errors in one
    # check interval); at the last step's weight that is the factor the sample must grow by.
    inflation = 1.0 + max(dispersion, 0.0) * p0 * rps * weights[-1] / 100.0 * config.check_interval_seconds
    needed = math.ceil(needed_canary_requests(config, baseline_rate) * inflation)
    bakes = [config.bake_seconds] * len(weights)
    per_second = [rps * w / 100.0 for w in weights]
    deficit = needed - seen_requests - sum(p * b for p, b in zip(per_second, bakes, strict=True))
    for j in reversed(range(len(weights))):
        if deficit <= 0:
            break
        if per_second[j] <= 0:
            continue
        extra = min(config.max_bake_seconds - bakes[j], math.ceil(deficit / per_second[j]))
        bakes[j] += extra
        deficit -= extra * per_second[j]
    planned = seen_requests + sum(p * b for p, b in zip(per_second, bakes, strict=True))
    return BakePlan(
        seconds=bakes[0],
        steps=tuple(zip(weights, bakes, strict=True)),
        service_rps=rps,
        baseline_rate=baseline_rate,
        needed_requests=needed,
        seen_requests=seen_requests,
        planned_requests=planned,
        enough=planned >= needed,
        p0=p0,
        p1=p1,
        inflation=inflation,
    )
