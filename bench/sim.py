"""Seeded simulated traffic for bench.judge: per-interval counts and p99, no Prometheus.

Every rule in a replica reads the same `Traffic`: interval `i` at canary weight `w` always
gives the same counts, so rules that route alike see identical data, and rules whose
schedules differ (Flagger's 10..50 %, Argo's 10-minute pauses) see counts coupled through
common random numbers (the same standard-normal draws per interval, mapped through the
weight). Differences between rules are then differences of the rules, not of the luck.

Sampling without numpy (documented in bench/README.md):
* requests per version and interval ~ Poisson(rps * share * 10 s): exact inversion of the
  CDF for means below 30, else the normal approximation (rounded, clipped at 0);
* errors ~ Binomial(requests, p): exact inversion when the variance n*p*(1-p) is below 25
  (the common case: a few errors per interval), else the normal approximation;
* p99 per version and interval: log p99 = log(true p99) + z * SE(n), with SE the asymptotic
  standard error of a sample 99th percentile of lognormal latencies (sigma 0.5) from n
  requests, so the noise shrinks as 1/sqrt(n). A window's p99 is the request-weighted mean
  of its intervals' log p99 (its standard error is then SE(total requests)).
Each draw is a standard normal z; exact inversion turns it into a uniform via Phi(z).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from statistics import NormalDist

INTERVAL_SECONDS = 10
STEPS: tuple[int, ...] = (10, 50, 100)
HISTORY_SECONDS = 3600  # the judge's default baseline_window_seconds
LATENCY_SIGMA = 0.5  # sigma of log latency (lognormal); p99 = median * exp(2.33 * sigma)
_Z99 = NormalDist().inv_cdf(0.99)
# Asymptotic SE of the log of a sample 99th percentile of a lognormal, times sqrt(n).
P99_LOG_SE_SQRT_N = LATENCY_SIGMA * math.sqrt(0.99 * 0.01) / NormalDist().pdf(_Z99)
EXACT_POISSON_BELOW = 30.0
EXACT_BINOMIAL_VARIANCE_BELOW = 25.0
_DRAWS_PER_INTERVAL = 6  # canary n, canary errors, canary p99, stable n, stable errors, stable p99


@dataclass(frozen=True)
class Scenario:
    """One kind of release. Error rates are fractions; `incident` is [start, end) seconds
    since the release started, during which both versions fail at `incident_error_rate`."""

    name: str
    expected: str  # what a good rule does: "promote", "roll back" or "not promote"
    service_rps: float = 50.0
    stable_error_rate: float = 0.005
    canary_error_rate: float = 0.005
    stable_p99_ms: float = 200.0
    canary_p99_ms: float = 200.0
    incident: tuple[float, float] | None = None
    incident_error_rate: float = 0.05
    canary_gets_traffic: bool = True

    def error_rates(self, at_seconds: float) -> tuple[float, float]:
        """(stable, canary) true error rates at this moment."""
        if self.incident and self.incident[0] <= at_seconds < self.incident[1]:
            return self.incident_error_rate, self.incident_error_rate
        return self.stable_error_rate, self.canary_error_rate


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("healthy", "promote"),
        Scenario("error_1pct", "roll back", canary_error_rate=0.01),
        Scenario("error_2pct", "roll back", canary_error_rate=0.02),
        Scenario("error_5pct", "roll back", canary_error_rate=0.05),
        Scenario("latency_30pct", "roll back", canary_p99_ms=260.0),
        Scenario("low_traffic", "promote", service_rps=2.0),
        # Two minutes of a shared dependency failing, from the start of step 50 (ours' schedule).
        Scenario("incident_both", "promote", incident=(60.0, 180.0)),
        Scenario("no_canary_traffic", "not promote", canary_gets_traffic=False),
    )
}


@dataclass(frozen=True)
class Interval:
    """One 10-second interval as both versions saw it. log p99 is None without requests."""

    canary_requests: int
    canary_errors: int
    stable_requests: int
    stable_errors: int
    canary_log_p99: float | None
    stable_log_p99: float | None


def _phi(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def poisson_from_normal(mean: float, z: float) -> int:
    """A Poisson(mean) count from a standard-normal draw (monotone in z)."""
    if mean <= 0.0:
        return 0
    if mean >= EXACT_POISSON_BELOW:
        return max(0, math.floor(mean + math.sqrt(mean) * z + 0.5))
    u = _phi(z)
    k, pmf = 0, math.exp(-mean)
    cdf = pmf
    while u > cdf and pmf > 0.0:
        k += 1
        pmf *= mean / k
        cdf += pmf
    return k


def binomial_from_normal(n: int, p: float, z: float) -> int:
    """A Binomial(n, p) count from a standard-normal draw (monotone in z)."""
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    variance = n * p * (1.0 - p)
    if variance >= EXACT_BINOMIAL_VARIANCE_BELOW:
        return min(n, max(0, math.floor(n * p + math.sqrt(variance) * z + 0.5)))
    u = _phi(z)
    ratio = p / (1.0 - p)
    k, pmf = 0, math.exp(n * math.log1p(-p))
    cdf = pmf
    while u > cdf and k < n:
        pmf *= (n - k) / (k + 1) * ratio
        k += 1
        cdf += pmf
    return k


def p99_log_se(requests: float) -> float:
    return P99_LOG_SE_SQRT_N / math.sqrt(requests)


class Traffic:
    """One replica's traffic. `interval(i, weight)` is a pure function of (seed, i, weight)."""

    def __init__(self, scenario: Scenario, seed: int) -> None:
        self.scenario = scenario
        self.seed = seed
        self._rng = random.Random(seed)
        self._history = self._draw_history()
        self._draws: list[tuple[float, ...]] = []
        self._cache: dict[tuple[int, int], Interval] = {}
        self._log_p99 = (math.log(scenario.canary_p99_ms), math.log(scenario.stable_p99_ms))

    def _draw_history(self) -> tuple[int, int]:
        s = self.scenario
        requests = poisson_from_normal(s.service_rps * HISTORY_SECONDS, self._rng.gauss(0.0, 1.0))
        return requests, binomial_from_normal(requests, s.stable_error_rate, self._rng.gauss(0.0, 1.0))

    def history(self) -> tuple[int, int]:
        """Stable's (requests, errors) over the hour before the release (no incident then)."""
        return self._history

    def interval(self, index: int, canary_weight: int) -> Interval:
        key = (index, canary_weight)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        gauss = self._rng.gauss
        while len(self._draws) <= index:
            self._draws.append(tuple(gauss(0.0, 1.0) for _ in range(_DRAWS_PER_INTERVAL)))
        z = self._draws[index]
        s = self.scenario
        stable_p, canary_p = s.error_rates(index * INTERVAL_SECONDS)
        expected = s.service_rps * INTERVAL_SECONDS
        canary_mean = expected * canary_weight / 100.0 if s.canary_gets_traffic else 0.0
        stable_mean = expected * (100 - canary_weight) / 100.0
        c_n = poisson_from_normal(canary_mean, z[0])
        s_n = poisson_from_normal(stable_mean, z[3])
        result = Interval(
            canary_requests=c_n,
            canary_errors=binomial_from_normal(c_n, canary_p, z[1]),
            stable_requests=s_n,
            stable_errors=binomial_from_normal(s_n, stable_p, z[4]),
            canary_log_p99=self._log_p99[0] + z[2] * p99_log_se(c_n) if c_n else None,
            stable_log_p99=self._log_p99[1] + z[5] * p99_log_se(s_n) if s_n else None,
        )
        self._cache[key] = result
        return result


def window_p99(intervals: Iterable[Interval], version: str) -> float | None:
    """A version's p99 (ms) over several intervals: request-weighted mean of log p99."""
    total = weighted = 0.0
    for iv in intervals:
        if version == "canary":
            n, log_p99 = iv.canary_requests, iv.canary_log_p99
        else:
            n, log_p99 = iv.stable_requests, iv.stable_log_p99
        if n and log_p99 is not None:
            total += n
            weighted += n * log_p99
    return math.exp(weighted / total) if total else None


@dataclass(frozen=True)
class Decision:
    """How one rule ended one replica. `seconds`: since the release started. The canary
    counts are what the canary served up to that moment (blast radius = errors)."""

    outcome: str  # "promoted", "rolled_back" or "inconclusive"
    seconds: float
    canary_requests: int
    canary_errors: int


class Served:
    """Running totals of what the canary served (for blast radius and requests used)."""

    __slots__ = ("errors", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0

    def add(self, iv: Interval) -> None:
        self.requests += iv.canary_requests
        self.errors += iv.canary_errors

    def decide(self, outcome: str, seconds: float) -> Decision:
        return Decision(outcome, float(seconds), self.requests, self.errors)
