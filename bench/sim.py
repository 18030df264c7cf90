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

Scenarios come in families (`FAMILIES`), each with several settings: "base" (ideal traffic),
then traffic with the properties real services have: overdispersed error counts, error bursts
shared by both versions, a pre-release hour at another error rate than the release (drift),
traffic ramps, canaries that degrade mid-release or fail only at high weight, and moderate
traffic. What varies between intervals independently of the routing (the per-interval rate
multipliers, the bursts) comes from a second random stream of the replica, drawn in interval
order, so every rule still sees the same environment whatever weight it routes, and the base
scenarios' draws (hence their figures) are the ones they always were.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Any

INTERVAL_SECONDS = 10
STEPS: tuple[int, ...] = (10, 50, 100)
HISTORY_SECONDS = 3600  # the judge's default baseline_window_seconds
LATENCY_SIGMA = 0.5  # sigma of log latency (lognormal); p99 = median * exp(2.33 * sigma)
_Z99 = NormalDist().inv_cdf(0.99)
# Asymptotic SE of the log of a sample 99th percentile of a lognormal, times sqrt(n).
P99_LOG_SE_SQRT_N = LATENCY_SIGMA * math.sqrt(0.99 * 0.01) / NormalDist().pdf(_Z99)
EXACT_POISSON_BELOW = 30.0
EXACT_BINOMIAL_VARIANCE_BELOW = 25.0
CLEARLY_BAD_RATIO = 2.0
CLEARLY_BAD_ABOVE = 0.01
CLEARLY_BAD_MIN_RPS = 10.0
_DRAWS_PER_INTERVAL = 6  # canary n, canary errors, canary p99, stable n, stable errors, stable p99


@dataclass(frozen=True)
class Scenario:
    """One kind of release. Error rates are fractions; `incident` is [start, end) seconds
    since the release started, during which both versions fail at `incident_error_rate`.

    The fields after `canary_gets_traffic` shape the traffic beyond the ideal (defaults: off):

    * `error_cv`: each version's error rate in each interval is its mean times an independent
      Gamma(mean 1, CV `error_cv`) multiplier (overdispersion). The pre-release hour's rate
      is the mean of 360 such multipliers (a Gamma of shape 360 / CV^2).
    * `burst_fraction`, `burst_factor`: each interval is a burst with this probability; during
      one both versions fail `(burst_factor - 1) x stable's base rate` more (a dependency
      hiccup adds the same errors to both, whatever the canary's own rate). The pre-release
      hour has its share of bursts too (a binomial count of its 360 intervals).
    * `history_ratio`: stable's rate in the pre-release hour is this times its rate during the
      release (drift: a quiet hour before a peak, or the reverse).
    * `ramp_factor`, `ramp_seconds`: the service's request rate moves linearly from
      `service_rps` to `ramp_factor x service_rps` over the first `ramp_seconds`, then stays.
    * `canary_faulty_from_seconds`, `canary_faulty_ramp_seconds`, `canary_faulty_from_weight`:
      the canary fails at `canary_error_rate` only from this moment (reached linearly over the
      ramp, a leak) and only while it gets at least this weight; before that it is as good as
      stable.
    """

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
    family: str = "base"
    error_cv: float = 0.0
    burst_fraction: float = 0.0
    burst_factor: float = 1.0
    history_ratio: float = 1.0
    ramp_factor: float = 1.0
    ramp_seconds: float = 180.0
    canary_faulty_from_seconds: float = 0.0
    canary_faulty_ramp_seconds: float = 0.0
    canary_faulty_from_weight: int = 0

    @property
    def healthy(self) -> bool:
        """The canary is as good as stable everywhere (a rollback of it is a false one)."""
        return (
            self.canary_gets_traffic
            and self.canary_error_rate == self.stable_error_rate
            and self.canary_p99_ms == self.stable_p99_ms
        )

    @property
    def clearly_bad(self) -> bool:
        """A canary no rule should promote: at its worst it fails at >= 2x stable's rate and
        above 1 % (the judge's default max_error_rate), on a service of >= 10 rps (below that a
        release has too few requests to tell)."""
        return (
            self.canary_gets_traffic
            and self.canary_error_rate >= CLEARLY_BAD_RATIO * self.stable_error_rate
            and self.canary_error_rate > CLEARLY_BAD_ABOVE
            and self.service_rps >= CLEARLY_BAD_MIN_RPS
        )

    @property
    def random_environment(self) -> bool:
        """Whether intervals need the second random stream (multipliers, bursts)."""
        return self.error_cv > 0.0 or self.burst_fraction > 0.0

    def rps(self, at_seconds: float) -> float:
        """The service's request rate at this moment (the ramp, if any)."""
        if self.ramp_factor == 1.0:
            return self.service_rps
        progress = min(1.0, max(0.0, at_seconds / self.ramp_seconds))
        return self.service_rps * (1.0 + (self.ramp_factor - 1.0) * progress)

    def error_rates(self, at_seconds: float, canary_weight: int = 100) -> tuple[float, float]:
        """(stable, canary) mean error rates at this moment and weight, before the
        per-interval multipliers and bursts."""
        if self.incident and self.incident[0] <= at_seconds < self.incident[1]:
            return self.incident_error_rate, self.incident_error_rate
        stable = self.stable_error_rate
        if canary_weight < self.canary_faulty_from_weight or at_seconds < self.canary_faulty_from_seconds:
            return stable, stable
        if self.canary_faulty_ramp_seconds > 0.0:
            share = min(1.0, (at_seconds - self.canary_faulty_from_seconds) / self.canary_faulty_ramp_seconds)
            return stable, stable + share * (self.canary_error_rate - stable)
        return stable, self.canary_error_rate


FAULTY_RATE = 0.02  # 4x stable's 0.5 %, 2x the judge's default max_error_rate (1 %)
_BASE: tuple[Scenario, ...] = (
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


def _family(family: str, *settings: tuple[str, dict[str, Any]]) -> tuple[Scenario, ...]:
    """A family's scenarios, named `<family>_<setting>`; a canary with a higher error rate
    than stable is one to roll back, any other one to promote."""
    scenarios = []
    for setting, fields in settings:
        scenario = Scenario(f"{family}_{setting}", "promote", family=family, **fields)
        scenarios.append(scenario if scenario.healthy else replace(scenario, expected="roll back"))
    return tuple(scenarios)


_NEW_FAMILIES: tuple[Scenario, ...] = (
    *_family(
        "overdispersed",
        *((f"cv{cv}", {"error_cv": cv}) for cv in (0.5, 1.0, 1.5)),
        *((f"cv{cv}_error_2pct", {"error_cv": cv, "canary_error_rate": FAULTY_RATE}) for cv in (1.0, 1.5)),
    ),
    *_family(
        "bursts",
        ("x5_in_5pct", {"burst_factor": 5.0, "burst_fraction": 0.05}),
        ("x10_in_3pct", {"burst_factor": 10.0, "burst_fraction": 0.03}),
        ("x20_in_2pct", {"burst_factor": 20.0, "burst_fraction": 0.02}),
        ("x20_in_5pct", {"burst_factor": 20.0, "burst_fraction": 0.05}),
        ("x10_in_3pct_error_2pct",
         {"burst_factor": 10.0, "burst_fraction": 0.03, "canary_error_rate": FAULTY_RATE}),
    ),
    # history_ratio: the pre-release hour's stable rate over the in-release one. Below 1: a
    # quiet hour before a busier release (0.3-0.6x); above 1 (1/0.6, 1/0.3): the reverse, where
    # a history-based reference is too lenient for a bad canary.
    *_family(
        "drift",
        *((f"history_{ratio}x", {"history_ratio": ratio}) for ratio in (0.3, 0.45, 0.6)),
        ("history_3.33x", {"history_ratio": 1.0 / 0.3}),
        *((f"history_{label}x_error_2pct", {"history_ratio": 1.0 / low, "canary_error_rate": FAULTY_RATE})
          for label, low in (("1.67", 0.6), ("3.33", 0.3))),
    ),
    # Over 180 s, ours' three 60-second bakes; longer schedules see the plateau afterwards.
    *_family(
        "ramp",
        ("x2", {"ramp_factor": 2.0}),
        ("x3", {"ramp_factor": 3.0}),
        ("x0.5", {"ramp_factor": 0.5}),
        ("x3_from_10rps", {"ramp_factor": 3.0, "service_rps": 10.0}),
        ("x3_error_2pct", {"ramp_factor": 3.0, "canary_error_rate": FAULTY_RATE}),
    ),
    # Healthy at first, then failing: from the start of ours' step 50 (60 s) or step 100
    # (120 s), or a leak rising linearly over five minutes from 60 s.
    *_family(
        "degrade",
        ("2pct_at_60s", {"canary_error_rate": FAULTY_RATE, "canary_faulty_from_seconds": 60.0}),
        ("5pct_at_120s", {"canary_error_rate": 0.05, "canary_faulty_from_seconds": 120.0}),
        ("leak_to_5pct_60s_to_360s",
         {"canary_error_rate": 0.05, "canary_faulty_from_seconds": 60.0, "canary_faulty_ramp_seconds": 300.0}),
    ),
    # Healthy at low weight, failing once it takes a large share (a capacity problem).
    *_family(
        "high_weight",
        *((f"{pct}pct_from_{weight}", {"canary_error_rate": pct / 100.0, "canary_faulty_from_weight": weight})
          for weight in (50, 100) for pct in (2, 5)),
    ),
    *_family(
        "moderate",
        *((f"{rps}rps_{label}", {"service_rps": float(rps), "canary_error_rate": 0.005 * ratio})
          for rps in (5, 10, 20)
          for label, ratio in (("healthy", 1.0), ("1.5x", 1.5), ("2x", 2.0), ("4x", 4.0))),
    ),
)

# Base scenarios first: a scenario's seeds follow its position, so the base figures stay put.
SCENARIOS: dict[str, Scenario] = {s.name: s for s in (*_BASE, *_NEW_FAMILIES)}


def _by_family(scenarios: Iterable[Scenario]) -> dict[str, tuple[str, ...]]:
    families: dict[str, tuple[str, ...]] = {}
    for scenario in scenarios:
        families[scenario.family] = (*families.get(scenario.family, ()), scenario.name)
    return families


FAMILIES: dict[str, tuple[str, ...]] = _by_family(SCENARIOS.values())


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


@dataclass(frozen=True)
class Rates:
    """True error rates in one interval at one weight. `canary_if_healthy`: what the canary
    would fail at were it as good as stable (its own multiplier, the shared burst)."""

    stable: float
    canary: float
    canary_if_healthy: float


_QUIET = (1.0, 1.0, False)  # per-interval (stable multiplier, canary multiplier, burst)


class Traffic:
    """One replica's traffic. `interval(i, weight)` is a pure function of (seed, i, weight)."""

    def __init__(self, scenario: Scenario, seed: int) -> None:
        self.scenario = scenario
        self.seed = seed
        self._rng = random.Random(seed)
        # The environment's own stream: the base scenarios never draw from it, so their
        # counts are unchanged, and it does not depend on the weight a rule routes.
        self._env_rng = random.Random(f"environment {seed}") if scenario.random_environment else None
        self._history = self._draw_history()
        self._draws: list[tuple[float, ...]] = []
        self._env: list[tuple[float, float, bool]] = []
        self._cache: dict[tuple[int, int], Interval] = {}
        self._log_p99 = (math.log(scenario.canary_p99_ms), math.log(scenario.stable_p99_ms))

    def _draw_history(self) -> tuple[int, int]:
        s = self.scenario
        requests = poisson_from_normal(s.service_rps * HISTORY_SECONDS, self._rng.gauss(0.0, 1.0))
        rate = s.stable_error_rate * s.history_ratio
        if self._env_rng is not None:
            intervals = HISTORY_SECONDS // INTERVAL_SECONDS
            if s.error_cv > 0.0:
                # The mean of n independent Gamma(k, theta) multipliers is Gamma(n k, theta / n).
                shape = 1.0 / s.error_cv**2
                rate *= self._env_rng.gammavariate(intervals * shape, 1.0 / (intervals * shape))
            if s.burst_fraction > 0.0:
                bursts = binomial_from_normal(intervals, s.burst_fraction, self._env_rng.gauss(0.0, 1.0))
                rate += bursts / intervals * (s.burst_factor - 1.0) * s.stable_error_rate * s.history_ratio
        return requests, binomial_from_normal(requests, min(rate, 1.0), self._rng.gauss(0.0, 1.0))

    def history(self) -> tuple[int, int]:
        """Stable's (requests, errors) over the hour before the release (no incident then)."""
        return self._history

    def _environment(self, index: int) -> tuple[float, float, bool]:
        rng = self._env_rng
        if rng is None:
            return _QUIET
        s = self.scenario
        while len(self._env) <= index:  # in interval order, whoever asks first
            if s.error_cv > 0.0:
                shape = 1.0 / s.error_cv**2
                multipliers = (rng.gammavariate(shape, 1.0 / shape), rng.gammavariate(shape, 1.0 / shape))
            else:
                multipliers = (1.0, 1.0)
            burst = s.burst_fraction > 0.0 and rng.random() < s.burst_fraction
            self._env.append((*multipliers, burst))
        return self._env[index]

    def true_rates(self, index: int, canary_weight: int) -> Rates:
        """The rates the counts of interval `index` at this weight are drawn with."""
        s = self.scenario
        stable, canary = s.error_rates(index * INTERVAL_SECONDS, canary_weight)
        if self._env_rng is None:
            return Rates(stable, canary, stable)
        stable_multiplier, canary_multiplier, burst = self._environment(index)
        extra = (s.burst_factor - 1.0) * stable if burst else 0.0
        return Rates(
            min(1.0, stable * stable_multiplier + extra),
            min(1.0, canary * canary_multiplier + extra),
            min(1.0, stable * canary_multiplier + extra),
        )

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
        rates = self.true_rates(index, canary_weight)
        expected = s.rps(index * INTERVAL_SECONDS) * INTERVAL_SECONDS
        canary_mean = expected * canary_weight / 100.0 if s.canary_gets_traffic else 0.0
        stable_mean = expected * (100 - canary_weight) / 100.0
        c_n = poisson_from_normal(canary_mean, z[0])
        s_n = poisson_from_normal(stable_mean, z[3])
        result = Interval(
            canary_requests=c_n,
            canary_errors=binomial_from_normal(c_n, rates.canary, z[1]),
            stable_requests=s_n,
            stable_errors=binomial_from_normal(s_n, rates.stable, z[4]),
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
