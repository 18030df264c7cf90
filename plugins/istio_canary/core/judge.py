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

The verdict types are in `core.verdict`, what the judge sees and carries between checks in
`core.judge_state`, the three sequential error tests in `core.error_tests`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from statistics import median

from istio_canary.core.analysis_config import AnalysisConfig
from istio_canary.core.error_tests import error_test_results, update_error_tests
from istio_canary.core.judge_state import ERROR_TESTS, JudgeState, Observation
from istio_canary.core.samples import Measurement
from istio_canary.core.stats import binomial_upper_tail, poisson_upper_tail
from istio_canary.core.verdict import EXTEND_BAKE, Baseline, MetricResult, Verdict, VerdictOutcome, pct

# An interval is an outlier of its window (a burst) when its errors would be this unlikely at
# the rate of the rest of the window.
OUTLIER_P_VALUE = 0.001
# Fewest requests per version for a p99-vs-p99 comparison to mean anything. With Istio's
# buckets (50, 100, 250 ms) two healthy versions' interpolated p99s differ by more than 20 %
# in ~1.3 % of comparisons at 500 requests each, ~0.3 % at 1,000 (simulated).
LATENCY_COMPARISON_MIN_REQUESTS = 1000
# Standard error of the log of a sample p99 times sqrt(requests), for lognormal latencies
# with sigma 0.5. Only sizes the band in which a p99 regression may still be noise (the bake
# is then extended to measure more); it never decides a fail.
P99_LOG_SE_SQRT_N = 1.87
P99_NOISE_BAND_Z = 2.0


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
    results = [MetricResult("data", VerdictOutcome.INCONCLUSIVE, None, None, detail)]
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
        results.append(MetricResult("data", VerdictOutcome.INCONCLUSIVE, None, None, broken))
        return _conclude(config, state, results, counted=True, baseline=_baseline(obs, state), final=final)

    if state.history_rate is None and obs.history is not None:
        state = replace(state, history_rate=_history_rate(config, obs.history))
    state, incident = update_error_tests(config, obs, state)
    baseline = _baseline(obs, state)
    counted = False  # inconclusive for lack of data (counts toward max_inconclusive)

    canary = obs.window_canary
    enough = canary.requests >= config.min_requests
    results.append(
        MetricResult(
            "requests",
            VerdictOutcome.PASS if enough else VerdictOutcome.INCONCLUSIVE,
            canary.requests,
            float(config.min_requests),
            f"canary {canary.requests:.0f} requests in the window"
            + ("" if enough else f", fewer than min_requests {config.min_requests}"),
        )
    )
    results.extend(error_test_results(config, state))

    rate_result, rate_counted, extend = _error_rate_floor(config, obs, state, final=final, enough=enough)
    results.append(rate_result)
    counted |= rate_counted
    if incident:
        # Informational: the interval is discounted (skipped by the one-sample tests, taken
        # out of the bake-end floor by the watch); the clock is not stopped.
        results.append(
            MetricResult(
                "incident",
                VerdictOutcome.PASS,
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
    if VerdictOutcome.FAIL in outcomes:
        outcome = VerdictOutcome.FAIL
    elif VerdictOutcome.INCONCLUSIVE in outcomes:
        outcome = VerdictOutcome.INCONCLUSIVE
    else:
        outcome = VerdictOutcome.PASS
    # Only missing data and incidents count toward max_inconclusive, and only in a row;
    # waiting for enough requests is bounded by max_bake_seconds instead.
    streak = 0
    if outcome is VerdictOutcome.INCONCLUSIVE and counted:
        streak = state.inconclusive_streak + 1
        if streak > config.max_inconclusive:
            outcome = VerdictOutcome.FAIL
            results.append(
                MetricResult(
                    "inconclusive_streak",
                    VerdictOutcome.FAIL,
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


def _error_rate_floor(
    config: AnalysisConfig, obs: Observation, state: JudgeState, *, final: bool, enough: bool
) -> tuple[MetricResult, bool, bool]:
    """The result, whether it counts toward max_inconclusive, whether the bake should be extended."""
    canary, stable, discounted = _floor_window(obs)
    rate = canary.error_rate
    stable_rate = stable.error_rate if stable is not None else None
    limit = config.max_error_rate
    if rate is None:
        return MetricResult("error_rate", VerdictOutcome.INCONCLUSIVE, None, limit, "no canary requests yet"), False, False
    detail = f"canary {pct(rate)}" + (f", stable {pct(stable_rate)}" if stable_rate is not None else "")
    if discounted:
        detail += f" ({discounted})"
    if rate <= limit:
        outcome = VerdictOutcome.PASS if enough else VerdictOutcome.INCONCLUSIVE
        return MetricResult("error_rate", outcome, rate, limit, detail), False, False
    if stable is not None and stable_rate is not None and stable.requests >= config.min_requests:
        if stable_rate > limit:
            detail += ": stable above max_error_rate too, judged against stable (errors_vs_stable)"
            return MetricResult("error_rate", VerdictOutcome.PASS, rate, limit, detail), False, False
    else:
        baseline, source = state.baseline_rate()
        if baseline is not None and baseline > limit:
            detail += (f": stable was above max_error_rate too ({source} {pct(baseline)}), "
                       "judged against it (errors_vs_baseline)")
            return MetricResult("error_rate", VerdictOutcome.PASS, rate, limit, detail), False, False
    # A point estimate above the limit is not evidence on its own: 4 errors in 300 requests of
    # a 0.5 % canary is 1.3 %. Fail when chance at the limit would rarely give this many errors
    # (one-sided binomial test at alpha on the overdispersion-corrected effective sample).
    per_interval = state.canary_requests / max(state.canary_intervals, 1)
    inflation = 1.0 + state.dispersion * limit * per_interval
    p_value = binomial_upper_tail(canary.errors / inflation, canary.requests / inflation, limit)
    if p_value < config.alpha:
        if final:
            detail += f": above max_error_rate (p={p_value:.2g} < alpha {config.alpha:g})"
            return MetricResult("error_rate", VerdictOutcome.FAIL, rate, limit, detail), False, False
        detail += f": above max_error_rate (p={p_value:.2g}), decided at bake end"
        return MetricResult("error_rate", VerdictOutcome.INCONCLUSIVE, rate, limit, detail), False, False
    if final:
        detail += f": above max_error_rate but not significantly (p={p_value:.2g})"
        return MetricResult("error_rate", VerdictOutcome.PASS, rate, limit, detail), False, False
    detail += f": above max_error_rate, not yet significant (p={p_value:.2g}): bake extended if it ends now"
    return MetricResult("error_rate", VerdictOutcome.INCONCLUSIVE, rate, limit, detail), False, True


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
    return [worst] if poisson_upper_tail(worst[1], worst[0] * rate) < OUTLIER_P_VALUE else []


def _latency_results(
    config: AnalysisConfig, obs: Observation, *, final: bool
) -> tuple[list[MetricResult], bool, bool]:
    """The results, whether they count toward max_inconclusive, whether to extend the bake."""
    canary_p99 = obs.window_canary.p99_ms
    stable = obs.window_stable
    stable_p99 = stable.p99_ms if stable and stable.requests >= config.min_requests else None
    if canary_p99 is None:
        return [
            MetricResult("p99_ms", VerdictOutcome.INCONCLUSIVE, None, config.max_p99_ms, "canary p99 missing")
        ], True, False
    results = []
    counted = False
    if canary_p99 <= config.max_p99_ms:
        results.append(MetricResult("p99_ms", VerdictOutcome.PASS, canary_p99, config.max_p99_ms, "canary p99"))
    elif stable_p99 is not None and stable_p99 > config.max_p99_ms:
        detail = f"canary and stable ({stable_p99:.1f} ms) both above max_p99_ms: not blamed on the canary"
        results.append(MetricResult("p99_ms", VerdictOutcome.INCONCLUSIVE, canary_p99, config.max_p99_ms, detail))
        counted = True
    else:
        results.append(
            MetricResult("p99_ms", VerdictOutcome.FAIL, canary_p99, config.max_p99_ms, "canary p99 above max_p99_ms")
        )
    if stable_p99 is not None:
        limit = stable_p99 * (1.0 + config.latency_tolerance)
        fewest = min(obs.window_canary.requests, stable.requests if stable else 0.0)
        if fewest < LATENCY_COMPARISON_MIN_REQUESTS:
            # A p99 from a few hundred requests is its largest few values, interpolated inside
            # Istio's coarse buckets (50, 100, 250 ms): comparing two of them is noise.
            detail = (f"not compared: {fewest:.0f} requests on one side, fewer than "
                      f"{LATENCY_COMPARISON_MIN_REQUESTS} (max_p99_ms still applies)")
            results.append(MetricResult("p99_vs_stable", VerdictOutcome.PASS, canary_p99, limit, detail))
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
        outcome = VerdictOutcome.PASS if not worse else (VerdictOutcome.FAIL if final else VerdictOutcome.INCONCLUSIVE)
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
                    metric.name, VerdictOutcome.INCONCLUSIVE, None, metric.threshold, "no value for the canary"
                )
            )
            counted = True
            continue
        bad = metric.is_worse(value, metric.threshold)
        better = "at most" if metric.direction == "lower" else "at least"
        detail = f"canary {value:g}, must be {better} {metric.threshold:g}"
        results.append(
            MetricResult(metric.name, VerdictOutcome.FAIL if bad else VerdictOutcome.PASS, value, metric.threshold, detail)
        )
        if metric.compare_to_stable is None:
            continue
        stable_value = stable_values.get(metric.name)
        name = f"{metric.name}_vs_stable"
        if stable_value is None or not math.isfinite(stable_value):
            results.append(MetricResult(name, VerdictOutcome.INCONCLUSIVE, value, None, "no value for stable"))
            counted = True
            continue
        limit = metric.stable_limit(stable_value)
        worse = metric.is_worse(value, limit)
        detail = f"canary {value:g} vs stable {stable_value:g} ({metric.compare_to_stable:.0%} tolerated)"
        results.append(MetricResult(name, VerdictOutcome.FAIL if worse else VerdictOutcome.PASS, value, limit, detail))
    return results, counted


def _baseline(obs: Observation, state: JudgeState) -> Baseline:
    in_release = state.stable_requests > 0 or bool(obs.window_stable and obs.window_stable.requests > 0)
    history = state.history_rate is not None
    if in_release and history:
        return Baseline.BOTH
    if in_release:
        return Baseline.IN_RELEASE
    return Baseline.HISTORY if history else Baseline.NONE
