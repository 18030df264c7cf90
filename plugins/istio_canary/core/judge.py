"""The canary judge: pass, fail or inconclusive, from counts and latencies (pure).

The watch calls `judge` every few seconds with the interval's counts and the cumulative
window; `final_verdict` at bake end. Checking often must not roll back healthy canaries more
often than `alpha`, so error rates are judged by anytime-valid sequential tests (e-processes):
each is a nonnegative supermartingale while the canary is healthy, so by Ville's inequality
it ever reaches 1/alpha with probability at most alpha, however often it is looked at.

Three error tests, Bonferroni-split (each fails at `3/alpha`):

* errors_vs_stable: canary vs stable in the same intervals. Given the interval's total errors,
  under H0 (equal rates) each error is the canary's with probability q0 = n_c/(n_c+n_s);
  under H1(theta) with rate ratio theta, q1 = theta*n_c/(theta*n_c+n_s). The product over
  intervals of (q1/q0)^c ((1-q1)/(1-q0))^s is a martingale under H0 for every theta, also
  when the traffic split changes between steps; we average it over a grid of theta. An
  incident that hits both versions moves both counts and is not blamed on the canary.
* errors_vs_baseline: canary errors against stable's rate (times 1 + history_margin): stable
  during this release once it has served `BASELINE_MIN_STABLE_REQUESTS` (recent, same time of
  day), the hour before the release until then. A one-sample Bernoulli mixture likelihood
  ratio; it works with no stable traffic left (the 100 % step).
* errors_vs_max: the same one-sample test against `max_error_rate`, so a clearly bad canary
  stops early instead of at bake end.

Real traffic is not binomial. What keeps its noise from passing for evidence:

* Overdispersion: error counts vary more from interval to interval than a binomial does.
  Both versions' intervals, each around its own rate, give the excess (a negative-binomial
  c^2, `JudgeState.dispersion`); each interval's log likelihood ratio is divided by its
  variance inflation 1 + c^2 mu (the quasi-likelihood correction), and the bake-end floor
  test uses the effective sample.
* One interval decides nothing alone: its log likelihood ratio is capped, at half the failing
  threshold's log for errors_vs_stable (shared bursts cancel out there) and, in intervals
  without stable traffic, at a third for the one-sample tests (`INTERVALS_TO_FAIL`), so a
  single burst at the 100 % step cannot roll a release back. Capping keeps the
  supermartingale (E[min(L, C)] <= E[L] <= 1). With no stable in an interval, stable's rate
  earlier in this release is not held against the canary by errors_vs_max either.
* Incidents: the one-sample tests skip intervals in which stable is possibly degraded
  (`SKIP_P_VALUE`); an interval in which stable is clearly degraded too is an incident, taken
  out of the bake-end window (the watch passes it as `discounted`); with no stable left, the
  one interval far above the rest of the window is taken out the same way. The clock is not
  stopped; a step spent in an incident is extended for want of clean requests.
* Bake-end doubt: a canary above `max_error_rate` but not significantly, or with a p99 above
  stable's tolerance by no more than two sample p99s' noise, asks for a longer bake
  (`EXTEND_BAKE`) rather than a verdict on a coin toss.

Latency, custom metrics and the absolute error-rate floor are thresholds on the cumulative
window, applied once the canary has `min_requests`. Too little data is inconclusive, never
a pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cached_property, lru_cache
from statistics import median
from typing import Any

from istio_canary.core.metrics import AnalysisConfig, Measurement, Window

# Alternatives mixed with equal weight: error-rate ratios worth stopping a release for.
THETAS: tuple[float, ...] = (1.5, 2.0, 3.0, 5.0, 10.0)
ERROR_TESTS: tuple[str, ...] = ("errors_vs_stable", "errors_vs_baseline", "errors_vs_max")
# Without stable in an interval, a one-sample fail needs evidence from this many intervals.
INTERVALS_TO_FAIL = 3
# In-release stable requests before their rate replaces the pre-release hour as the baseline.
BASELINE_MIN_STABLE_REQUESTS = 1000
# Stable intervals with requests before their spread is read as overdispersion.
DISPERSION_MIN_INTERVALS = 5
# An interval is an outlier of its window (a burst) when its errors would be this unlikely at
# the rate of the rest of the window.
OUTLIER_P_VALUE = 0.001
# Stable counts as degraded in an interval when its errors would be this unlikely at the
# reference rate. Rare for a healthy stable (skipping costs a little power, never validity).
INCIDENT_P_VALUE = 0.01
# The one-sample tests skip an interval already when stable is only possibly degraded: a
# skipped interval costs them a little power, one kept in an incident a false accusation.
SKIP_P_VALUE = 0.1
# Lowest reference rate taken from an error-free history, so one canary error is not "infinitely" worse.
HISTORY_FLOOR = 0.001
# Fewest requests per version for a p99-vs-p99 comparison to mean anything. With Istio's
# buckets (50, 100, 250 ms) two healthy versions' interpolated p99s differ by more than 20 %
# in ~1.3 % of comparisons at 500 requests each, ~0.3 % at 1,000 (simulated).
LATENCY_COMPARISON_MIN_REQUESTS = 1000
# Standard error of the log of a sample p99 times sqrt(requests), for lognormal latencies
# with sigma 0.5. Only sizes the band in which a p99 regression may still be noise (the bake
# is then extended to measure more); it never decides a fail.
P99_LOG_SE_SQRT_N = 1.87
P99_NOISE_BAND_Z = 2.0
STATE_VERSION = 2


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


class Baseline(StrEnum):
    IN_RELEASE = "in-release stable"
    HISTORY = "pre-release history"
    BOTH = "both"
    NONE = "none"


@dataclass(frozen=True)
class MetricResult:
    name: str
    outcome: Outcome
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
            raw["name"], Outcome(raw["outcome"]), raw.get("value"), raw.get("threshold"), raw["detail"]
        )


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reasons: tuple[MetricResult, ...]
    baseline: Baseline
    statistics: Mapping[str, float | None]
    final: bool = False

    @property
    def summary(self) -> str:
        """One line: the outcome and the results that decided it."""
        deciding = [r for r in self.reasons if r.outcome is self.outcome and self.outcome is not Outcome.PASS]
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
            outcome=Outcome(raw["outcome"]),
            reasons=tuple(MetricResult.from_dict(r) for r in raw["reasons"]),
            baseline=Baseline(raw["baseline"]),
            statistics=dict(raw.get("statistics") or {}),
            final=bool(raw.get("final")),
        )


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
    window: Window | None = None
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
            window=None if window is None else Window(float(window[0]), float(window[1])),
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
        return {name: math.exp(_log_mean_exp(values)) for name, values in self.log_e.items()}

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


# --------------------------------------------------------------------------- public API


def judge(
    config: AnalysisConfig, observation: Observation, state: JudgeState | None = None
) -> tuple[Verdict, JudgeState]:
    """One check during the bake. FAIL stops the step early; PASS means "fine so far"."""
    return _evaluate(config, observation, state or JudgeState(), final=False)


def final_verdict(
    config: AnalysisConfig, observation: Observation, state: JudgeState | None = None
) -> tuple[Verdict, JudgeState]:
    """The step's verdict at bake end: the last interval's check, then the absolute floors
    (error rate, p99, custom thresholds) on the cumulative window. PASS promotes the step."""
    return _evaluate(config, observation, state or JudgeState(), final=True)


def judge_no_data(
    config: AnalysisConfig, state: JudgeState | None, detail: str, *, final: bool = False
) -> tuple[Verdict, JudgeState]:
    """A check without an observation (Prometheus down, query failed): inconclusive, and a
    fail once more than `max_inconclusive` checks in a row had no usable data."""
    state = state or JudgeState()
    state = replace(state, checks=state.checks + 1)
    results = [MetricResult("data", Outcome.INCONCLUSIVE, None, None, detail)]
    return _conclude(config, state, results, counted=True, baseline=Baseline.NONE, final=final)


def needs_extension(config: AnalysisConfig, elapsed_s: float, canary_requests: float) -> bool:
    """At bake end: keep watching (up to max_bake_seconds) because the canary saw too few requests."""
    requests = canary_requests if math.isfinite(canary_requests) else 0.0
    return requests < config.min_requests and elapsed_s < config.max_bake_seconds


# --------------------------------------------------------------------------- evaluation


def _evaluate(
    config: AnalysisConfig, obs: Observation, state: JudgeState, *, final: bool
) -> tuple[Verdict, JudgeState]:
    state = replace(state, checks=state.checks + 1)
    results: list[MetricResult] = []

    broken = _broken_counts(obs)
    if broken:
        results.append(MetricResult("data", Outcome.INCONCLUSIVE, None, None, broken))
        return _conclude(config, state, results, counted=True, baseline=_baseline(obs, state), final=final)

    if state.history_rate is None and obs.history is not None:
        state = replace(state, history_rate=_history_rate(config, obs.history))
    state, incident = _update_error_tests(config, obs, state)
    baseline = _baseline(obs, state)
    counted = False  # inconclusive for lack of data (counts toward max_inconclusive)

    canary = obs.window_canary
    enough = canary.requests >= config.min_requests
    results.append(
        MetricResult(
            "requests",
            Outcome.PASS if enough else Outcome.INCONCLUSIVE,
            canary.requests,
            float(config.min_requests),
            f"canary {canary.requests:.0f} requests in the window"
            + ("" if enough else f", fewer than min_requests {config.min_requests}"),
        )
    )
    results.extend(_error_test_results(config, state))

    rate_result, rate_counted, extend = _error_rate_floor(config, obs, state, final=final, enough=enough)
    results.append(rate_result)
    counted |= rate_counted
    if incident:
        # Informational: the interval is discounted (skipped by the one-sample tests, taken
        # out of the bake-end floor by the watch); the clock is not stopped.
        results.append(
            MetricResult(
                "incident",
                Outcome.PASS,
                obs.stable.error_rate if obs.stable else None,
                config.max_error_rate,
                "stable's errors are up too in this interval: discounted, not blamed on the canary",
            )
        )
    if enough:
        latency, latency_counted, latency_extend = _latency_results(config, obs, final=final)
        custom, custom_counted = _custom_results(config, obs)
        results.extend(latency + custom)
        counted |= latency_counted or custom_counted
        extend |= latency_extend
    return _conclude(config, state, results, counted=counted, baseline=baseline, final=final, extend=extend)


def _conclude(
    config: AnalysisConfig,
    state: JudgeState,
    results: list[MetricResult],
    *,
    counted: bool,
    baseline: Baseline,
    final: bool,
    extend: bool = False,
) -> tuple[Verdict, JudgeState]:
    outcomes = {r.outcome for r in results}
    if Outcome.FAIL in outcomes:
        outcome = Outcome.FAIL
    elif Outcome.INCONCLUSIVE in outcomes:
        outcome = Outcome.INCONCLUSIVE
    else:
        outcome = Outcome.PASS
    # Only missing data and incidents count toward max_inconclusive, and only in a row;
    # waiting for enough requests is bounded by max_bake_seconds instead.
    streak = 0
    if outcome is Outcome.INCONCLUSIVE and counted:
        streak = state.inconclusive_streak + 1
        if streak > config.max_inconclusive:
            outcome = Outcome.FAIL
            results.append(
                MetricResult(
                    "inconclusive_streak",
                    Outcome.FAIL,
                    float(streak),
                    float(config.max_inconclusive),
                    f"{streak} inconclusive checks in a row (max_inconclusive {config.max_inconclusive})",
                )
            )
    e_values = state.e_values
    state = replace(state, inconclusive_streak=streak)
    statistics: dict[str, float | None] = {
        "check": float(state.checks),
        "e_threshold": len(ERROR_TESTS) / config.alpha,
        **{f"e_{name}": e_values[name] for name in ERROR_TESTS},
        "baseline_reference": state.baseline_reference(config),
        "dispersion": state.dispersion,
        "canary_requests": state.canary_requests,
        "canary_errors": state.canary_errors,
        "stable_requests": state.stable_requests,
        "stable_errors": state.stable_errors,
        "inconclusive_streak": float(streak),
        EXTEND_BAKE: 1.0 if extend else 0.0,
    }
    verdict = Verdict(outcome, tuple(results), baseline, statistics, final=final)
    return verdict, state


def _broken_counts(obs: Observation) -> str:
    checks = [("canary interval", obs.canary), ("canary window", obs.window_canary)]
    checks += [
        (name, m) for name, m in (("stable interval", obs.stable), ("stable window", obs.window_stable)) if m
    ]
    for name, m in checks:
        if not m.counts_valid:
            return f"{name} counts missing or invalid (requests={m.requests}, errors={m.errors})"
    return ""


def _history_rate(config: AnalysisConfig, history: Measurement) -> float | None:
    if not history.counts_valid or history.requests < config.min_requests:
        return None
    # Add-one: an error-free hour gives a small positive rate, not zero.
    return (history.errors + 1.0) / (history.requests + 1.0)


def _update_error_tests(
    config: AnalysisConfig, obs: Observation, state: JudgeState
) -> tuple[JudgeState, bool]:
    c_n, c_e = obs.canary.requests, obs.canary.errors
    s_n, s_e = (obs.stable.requests, obs.stable.errors) if obs.stable else (0.0, 0.0)
    log_e = {name: list(values) for name, values in state.log_e.items()}
    skipped = dict(state.skipped_intervals)
    cap = math.log(len(ERROR_TESTS) / config.alpha) / INTERVALS_TO_FAIL
    c2 = state.dispersion  # from earlier intervals only: this one is judged, not yet learnt from

    def add(name: str, terms: Sequence[float], inflation: float, cap: float = math.inf) -> None:
        values = log_e[name]
        for i, term in enumerate(terms):
            values[i] += min(term / inflation, cap)

    if c_n > 0 and s_n > 0 and c_e + s_e > 0:
        q0 = c_n / (c_n + s_n)
        terms = []
        for theta in THETAS:
            q1 = theta * c_n / (theta * c_n + s_n)
            terms.append(c_e * math.log(q1 / q0) + s_e * math.log((1 - q1) / (1 - q0)))
        # The share statistic's variance grows by (1-q0) phi_canary + q0 phi_stable.
        # Capped more loosely than the one-sample tests: shared bursts cancel out here, and a
        # clearly bad canary is to be stopped within two intervals.
        add("errors_vs_stable", terms, 1.0 + c2 * 2.0 * q0 * (1.0 - q0) * (c_e + s_e), 1.5 * cap)

    baseline = state.baseline_reference(config)
    max_reference = config.max_error_rate
    if s_n <= 0 and baseline is not None:
        # No stable in this interval to show an incident: stable's own rate in this release
        # (an incident in the last step, say) is not held against the canary either.
        max_reference = max(max_reference, baseline)
    references = {"errors_vs_max": max_reference, "errors_vs_baseline": baseline}
    for name, reference in references.items():
        if reference is None or c_n <= 0:
            continue
        if _stable_degraded(s_n, s_e, reference, SKIP_P_VALUE):
            skipped[name] += 1
            continue
        terms = [c_e * log_error + (c_n - c_e) * log_success
                 for log_error, log_success in _one_sample_terms(reference)]
        # With stable in the interval a shared burst shows as stable degraded (skipped above);
        # without it (the last step) only the cap keeps one burst from deciding.
        add(name, terms, 1.0 + c2 * reference * c_n, cap if s_n <= 0 else math.inf)

    # An incident: stable's errors are up in this interval, and the canary's are above the
    # limit too (in this interval or overall). Discounted rather than blamed on the canary.
    canary_window_rate = obs.window_canary.error_rate or 0.0
    incident = _stable_degraded(s_n, s_e, config.max_error_rate) and (
        (c_n > 0 and c_e / c_n > config.max_error_rate) or canary_window_rate > config.max_error_rate
    )

    def grown(sums: tuple[float, float, float], n: float, e: float) -> tuple[float, float, float]:
        return (sums[0] + e * e, sums[1] + e * n, sums[2] + n * n) if n > 0 else sums

    state = replace(
        state,
        log_e={k: tuple(v) for k, v in log_e.items()},
        skipped_intervals=skipped,
        canary_requests=state.canary_requests + c_n,
        canary_errors=state.canary_errors + c_e,
        stable_requests=state.stable_requests + s_n,
        stable_errors=state.stable_errors + s_e,
        stable_intervals=state.stable_intervals + (1 if s_n > 0 else 0),
        stable_interval_sums=grown(state.stable_interval_sums, s_n, s_e),
        canary_intervals=state.canary_intervals + (1 if c_n > 0 else 0),
        canary_interval_sums=grown(state.canary_interval_sums, c_n, c_e),
    )
    return state, incident


@lru_cache(maxsize=64)
def _one_sample_terms(reference: float) -> tuple[tuple[float, float], ...]:
    """Per theta: log LR of one error and of one success, H1 p1 = theta*reference vs H0 reference."""
    terms = []
    for theta in THETAS:
        p1 = min(theta * reference, (1.0 + reference) / 2)  # an alternative rate below 1
        terms.append((math.log(p1 / reference), math.log((1 - p1) / (1 - reference))))
    return tuple(terms)


def _stable_degraded(requests: float, errors: float, reference: float, p_value: float = INCIDENT_P_VALUE) -> bool:
    if requests <= 0 or errors <= requests * reference:  # at or below the mean: not surprising
        return False
    return _poisson_upper_tail(errors, requests * reference) < p_value


def _poisson_upper_tail(k: float, mean: float) -> float:
    """P(X >= k) for X ~ Poisson(mean): how surprising k errors are at the expected mean."""
    k = math.ceil(k)
    if k <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    if k > mean + 12 * math.sqrt(mean) + 30:  # far out in the tail: skip the long sum
        return 0.0
    log_terms = [-mean + j * math.log(mean) - math.lgamma(j + 1) for j in range(k)]
    return max(0.0, 1.0 - math.exp(_log_sum_exp(log_terms)))


def _error_test_results(config: AnalysisConfig, state: JudgeState) -> list[MetricResult]:
    threshold = len(ERROR_TESTS) / config.alpha
    baseline_rate, baseline_source = state.baseline_rate()
    results = []
    for name in ERROR_TESTS:
        if name == "errors_vs_baseline" and baseline_rate is None:
            continue
        if name == "errors_vs_stable" and state.stable_requests <= 0:
            continue
        e = state.e_value(name)
        failed = e >= threshold
        skipped = state.skipped_intervals.get(name, 0)
        counts = f"canary {state.canary_errors:.0f}/{state.canary_requests:.0f}"
        if name == "errors_vs_stable":
            detail = f"{counts} vs stable {state.stable_errors:.0f}/{state.stable_requests:.0f} errors"
        elif name == "errors_vs_baseline":
            detail = (f"{counts} vs {_pct(state.baseline_reference(config))} ({baseline_source} "
                      f"{_pct(baseline_rate)} + {config.history_margin:.0%})")
        else:
            detail = f"{counts} vs max_error_rate {_pct(config.max_error_rate)}"
        detail += " - significantly worse" if failed else ""
        detail += f" ({skipped} interval(s) skipped: stable degraded)" if skipped else ""
        results.append(MetricResult(name, Outcome.FAIL if failed else Outcome.PASS, e, threshold, detail))
    return results


# Verdict statistic: 1 when the check wants more data before the bake ends (the canary's error
# rate above max_error_rate but not significantly, or its p99 above stable's tolerance by no
# more than noise); the watch then extends the bake, up to max_bake_seconds.
EXTEND_BAKE = "extend_bake"


def _error_rate_floor(
    config: AnalysisConfig, obs: Observation, state: JudgeState, *, final: bool, enough: bool
) -> tuple[MetricResult, bool, bool]:
    """The result, whether it counts toward max_inconclusive, whether the bake should be extended."""
    canary, stable, discounted = _floor_window(obs)
    rate = canary.error_rate
    stable_rate = stable.error_rate if stable is not None else None
    limit = config.max_error_rate
    if rate is None:
        return MetricResult("error_rate", Outcome.INCONCLUSIVE, None, limit, "no canary requests yet"), False, False
    detail = f"canary {_pct(rate)}" + (f", stable {_pct(stable_rate)}" if stable_rate is not None else "")
    if discounted:
        detail += f" ({discounted})"
    if rate <= limit:
        outcome = Outcome.PASS if enough else Outcome.INCONCLUSIVE
        return MetricResult("error_rate", outcome, rate, limit, detail), False, False
    if stable is not None and stable_rate is not None and stable.requests >= config.min_requests:
        if stable_rate > limit:
            detail += ": stable above max_error_rate too, judged against stable (errors_vs_stable)"
            return MetricResult("error_rate", Outcome.PASS, rate, limit, detail), False, False
    else:
        baseline, source = state.baseline_rate()
        if baseline is not None and baseline > limit:
            detail += (f": stable was above max_error_rate too ({source} {_pct(baseline)}), "
                       "judged against it (errors_vs_baseline)")
            return MetricResult("error_rate", Outcome.PASS, rate, limit, detail), False, False
    # A point estimate above the limit is not evidence on its own: 4 errors in 300 requests of
    # a 0.5 % canary is 1.3 %. Fail when chance at the limit would rarely give this many errors
    # (one-sided binomial test at alpha on the overdispersion-corrected effective sample).
    per_interval = state.canary_requests / max(state.canary_intervals, 1)
    inflation = 1.0 + state.dispersion * limit * per_interval
    p_value = _binomial_upper_tail(canary.errors / inflation, canary.requests / inflation, limit)
    if p_value < config.alpha:
        if final:
            detail += f": above max_error_rate (p={p_value:.2g} < alpha {config.alpha:g})"
            return MetricResult("error_rate", Outcome.FAIL, rate, limit, detail), False, False
        detail += f": above max_error_rate (p={p_value:.2g}), decided at bake end"
        return MetricResult("error_rate", Outcome.INCONCLUSIVE, rate, limit, detail), False, False
    if final:
        detail += f": above max_error_rate but not significantly (p={p_value:.2g})"
        return MetricResult("error_rate", Outcome.PASS, rate, limit, detail), False, False
    detail += f": above max_error_rate, not yet significant (p={p_value:.2g}): bake extended if it ends now"
    return MetricResult("error_rate", Outcome.INCONCLUSIVE, rate, limit, detail), False, True


def _floor_window(obs: Observation) -> tuple[Measurement, Measurement | None, str]:
    """The window the bake-end floor judges: incident intervals out; with no stable traffic,
    bursts (intervals far above the rest of the window) out too. Also says what was taken out."""
    canary, stable = obs.window_canary, obs.window_stable
    notes = []
    if obs.discounted_canary is not None and obs.discounted_canary.requests > 0:
        canary = canary.minus(obs.discounted_canary)
        if stable is not None and obs.discounted_stable is not None:
            stable = stable.minus(obs.discounted_stable)
        notes.append(f"{obs.discounted_canary.requests:.0f} canary requests in incidents discounted")
    if (stable is None or stable.requests <= 0) and obs.canary_intervals:
        bursts = _burst_intervals(obs.canary_intervals)
        if bursts:
            burst_n = sum(n for n, _ in bursts)
            canary = canary.minus(Measurement(burst_n, sum(e for _, e in bursts)))
            notes.append(f"{len(bursts)} burst interval(s), {burst_n:.0f} requests, discounted")
    return canary, stable, "; ".join(notes)


def _burst_intervals(intervals: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The one interval whose errors are far above the typical interval's rate (the median
    of the others), among five or more: one burst is forgiven, never more, so a canary that
    fails steadily or often is never explained away."""
    rest = [pair for pair in intervals if pair[0] > 0]
    if len(rest) < 5:
        return []
    worst = max(rest, key=lambda pair: pair[1] / pair[0])
    others = [pair for pair in rest if pair is not worst]
    typical = median(e / n for n, e in others)
    rate = max(typical, 1.0 / sum(n for n, _ in others))
    return [worst] if _poisson_upper_tail(worst[1], worst[0] * rate) < OUTLIER_P_VALUE else []


def _binomial_upper_tail(k: float, n: float, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed in log space from k up (k > n p here)."""
    k, n = round(k), round(n)
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for i in range(k, n + 1):
        term = math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q)
        total += term
        if term < total * 1e-12:
            break
    return min(1.0, total)


def _latency_results(
    config: AnalysisConfig, obs: Observation, *, final: bool
) -> tuple[list[MetricResult], bool, bool]:
    """The results, whether they count toward max_inconclusive, whether to extend the bake."""
    canary_p99 = obs.window_canary.p99_ms
    stable = obs.window_stable
    stable_p99 = stable.p99_ms if stable and stable.requests >= config.min_requests else None
    if canary_p99 is None:
        return [
            MetricResult("p99_ms", Outcome.INCONCLUSIVE, None, config.max_p99_ms, "canary p99 missing")
        ], True, False
    results = []
    counted = False
    if canary_p99 <= config.max_p99_ms:
        results.append(MetricResult("p99_ms", Outcome.PASS, canary_p99, config.max_p99_ms, "canary p99"))
    elif stable_p99 is not None and stable_p99 > config.max_p99_ms:
        detail = f"canary and stable ({stable_p99:.1f} ms) both above max_p99_ms: not blamed on the canary"
        results.append(MetricResult("p99_ms", Outcome.INCONCLUSIVE, canary_p99, config.max_p99_ms, detail))
        counted = True
    else:
        results.append(
            MetricResult("p99_ms", Outcome.FAIL, canary_p99, config.max_p99_ms, "canary p99 above max_p99_ms")
        )
    if stable_p99 is not None:
        limit = stable_p99 * (1.0 + config.latency_tolerance)
        fewest = min(obs.window_canary.requests, stable.requests if stable else 0.0)
        if fewest < LATENCY_COMPARISON_MIN_REQUESTS:
            # A p99 from a few hundred requests is its largest few values, interpolated inside
            # Istio's coarse buckets (50, 100, 250 ms): comparing two of them is noise.
            detail = (f"not compared: {fewest:.0f} requests on one side, fewer than "
                      f"{LATENCY_COMPARISON_MIN_REQUESTS} (max_p99_ms still applies)")
            results.append(MetricResult("p99_vs_stable", Outcome.PASS, canary_p99, limit, detail))
            return results, counted, False
        worse = canary_p99 > limit
        detail = (
            f"canary {canary_p99:.1f} ms vs stable {stable_p99:.1f} ms "
            f"(+{config.latency_tolerance:.0%} allowed)" + (": regression" if worse else "")
        )
        # During the bake a relative regression is re-checked, not acted on: the cumulative
        # p99 is compared at every check, and only the bake-end comparison decides. A
        # regression small enough to be two sample p99s' noise asks for a longer bake first.
        noise = P99_NOISE_BAND_Z * P99_LOG_SE_SQRT_N * math.sqrt(1.0 / obs.window_canary.requests + 1.0 / stable.requests)
        within_noise = worse and math.log(canary_p99 / limit) <= noise
        outcome = Outcome.PASS if not worse else (Outcome.FAIL if final else Outcome.INCONCLUSIVE)
        if worse and not final:
            detail += ", within noise: bake extended if it ends now" if within_noise else ", re-checked at bake end"
        results.append(MetricResult("p99_vs_stable", outcome, canary_p99, limit, detail))
        return results, counted, within_noise and not final
    return results, counted, False


def _custom_results(config: AnalysisConfig, obs: Observation) -> tuple[list[MetricResult], bool]:
    results = []
    counted = False
    stable_values = obs.window_stable.custom if obs.window_stable else {}
    for metric in config.custom_metrics:
        value = obs.window_canary.custom.get(metric.name)
        if value is None or not math.isfinite(value):
            results.append(
                MetricResult(
                    metric.name, Outcome.INCONCLUSIVE, None, metric.threshold, "no value for the canary"
                )
            )
            counted = True
            continue
        bad = metric.is_worse(value, metric.threshold)
        better = "at most" if metric.direction == "lower" else "at least"
        detail = f"canary {value:g}, must be {better} {metric.threshold:g}"
        results.append(
            MetricResult(metric.name, Outcome.FAIL if bad else Outcome.PASS, value, metric.threshold, detail)
        )
        if metric.compare_to_stable is None:
            continue
        stable_value = stable_values.get(metric.name)
        name = f"{metric.name}_vs_stable"
        if stable_value is None or not math.isfinite(stable_value):
            results.append(MetricResult(name, Outcome.INCONCLUSIVE, value, None, "no value for stable"))
            counted = True
            continue
        limit = metric.stable_limit(stable_value)
        worse = metric.is_worse(value, limit)
        detail = f"canary {value:g} vs stable {stable_value:g} ({metric.compare_to_stable:.0%} tolerated)"
        results.append(MetricResult(name, Outcome.FAIL if worse else Outcome.PASS, value, limit, detail))
    return results, counted


def _baseline(obs: Observation, state: JudgeState) -> Baseline:
    in_release = state.stable_requests > 0 or bool(obs.window_stable and obs.window_stable.requests > 0)
    history = state.history_rate is not None
    if in_release and history:
        return Baseline.BOTH
    if in_release:
        return Baseline.IN_RELEASE
    return Baseline.HISTORY if history else Baseline.NONE


# --------------------------------------------------------------------------- small helpers


def _log_sum_exp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum([math.exp(v - top) for v in values]))


def _log_mean_exp(values: Sequence[float]) -> float:
    return _log_sum_exp(values) - math.log(len(values))


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.2%}"


def _fmt(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    if name in ("error_rate",):
        return _pct(value)
    if name.startswith("errors_vs_"):
        return f"e={value:.3g}"
    if name.startswith("p99"):
        return f"{value:.1f}ms"
    return f"{value:g}"
