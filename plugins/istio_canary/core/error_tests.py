"""The judge's sequential error tests (e-processes), updated once per check interval.

See `core.judge` for what each test compares and why the updates are capped and inflated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from functools import lru_cache

from istio_canary.core.analysis_config import AnalysisConfig
from istio_canary.core.judge_state import ERROR_TESTS, THETAS, JudgeState, Observation
from istio_canary.core.stats import poisson_upper_tail
from istio_canary.core.verdict import MetricResult, VerdictOutcome, pct

# Without stable in an interval, a one-sample fail needs evidence from this many intervals.
INTERVALS_TO_FAIL = 3
# Stable counts as degraded in an interval when its errors would be this unlikely at the
# reference rate. Rare for a healthy stable (skipping costs a little power, never validity).
INCIDENT_P_VALUE = 0.01
# The one-sample tests skip an interval already when stable is only possibly degraded: a
# skipped interval costs them a little power, one kept in an incident a false accusation.
SKIP_P_VALUE = 0.1


def update_error_tests(
    config: AnalysisConfig, obs: Observation, state: JudgeState
) -> tuple[JudgeState, bool]:
    """The state with this interval's evidence added to each test, and whether the interval is
    an incident (stable degraded too: discounted rather than blamed on the canary)."""
    c_n, c_e = obs.canary.requests, obs.canary.errors
    s_n, s_e = (obs.stable.requests, obs.stable.errors) if obs.stable else (0.0, 0.0)
    log_e = {name: list(values) for name, values in state.log_e.items()}
    skipped = dict(state.skipped_intervals)
    cap = math.log(len(ERROR_TESTS) / config.alpha) / INTERVALS_TO_FAIL
    c2 = state.dispersion  # from earlier intervals only: this one is judged, not yet learnt from

    if c_n > 0 and s_n > 0 and c_e + s_e > 0:
        q0 = c_n / (c_n + s_n)
        # The share statistic's variance grows by (1-q0) phi_canary + q0 phi_stable.
        # Capped more loosely than the one-sample tests: shared bursts cancel out here, and a
        # clearly bad canary is to be stopped within two intervals.
        inflation = 1.0 + c2 * 2.0 * q0 * (1.0 - q0) * (c_e + s_e)
        _add(log_e["errors_vs_stable"], _vs_stable_terms(c_n, c_e, s_n, s_e), inflation, 1.5 * cap)

    for name, reference in _one_sample_references(config, state, s_n).items():
        if reference is None or c_n <= 0:
            continue
        if _stable_degraded(s_n, s_e, reference, SKIP_P_VALUE):
            skipped[name] += 1
            continue
        terms = [c_e * log_error + (c_n - c_e) * log_success
                 for log_error, log_success in _one_sample_terms(reference)]
        # With stable in the interval a shared burst shows as stable degraded (skipped above);
        # without it (the last step) only the cap keeps one burst from deciding.
        _add(log_e[name], terms, 1.0 + c2 * reference * c_n, cap if s_n <= 0 else math.inf)

    # An incident: stable's errors are up in this interval, and the canary's are above the
    # limit too (in this interval or overall). Discounted rather than blamed on the canary.
    canary_window_rate = obs.window_canary.error_rate or 0.0
    incident = _stable_degraded(s_n, s_e, config.max_error_rate) and (
        (c_n > 0 and c_e / c_n > config.max_error_rate) or canary_window_rate > config.max_error_rate
    )
    state = replace(
        state,
        log_e={k: tuple(v) for k, v in log_e.items()},
        skipped_intervals=skipped,
        canary_requests=state.canary_requests + c_n,
        canary_errors=state.canary_errors + c_e,
        stable_requests=state.stable_requests + s_n,
        stable_errors=state.stable_errors + s_e,
        stable_intervals=state.stable_intervals + (1 if s_n > 0 else 0),
        stable_interval_sums=_grown(state.stable_interval_sums, s_n, s_e),
        canary_intervals=state.canary_intervals + (1 if c_n > 0 else 0),
        canary_interval_sums=_grown(state.canary_interval_sums, c_n, c_e),
    )
    return state, incident


def _add(values: list[float], terms: Sequence[float], inflation: float, cap: float = math.inf) -> None:
    """Add one interval's log likelihood ratios (per theta), deflated and capped, in place."""
    for i, term in enumerate(terms):
        values[i] += min(term / inflation, cap)


def _vs_stable_terms(c_n: float, c_e: float, s_n: float, s_e: float) -> list[float]:
    """Per theta: the log likelihood ratio of the canary's share of the interval's errors."""
    q0 = c_n / (c_n + s_n)
    terms = []
    for theta in THETAS:
        q1 = theta * c_n / (theta * c_n + s_n)
        terms.append(c_e * math.log(q1 / q0) + s_e * math.log((1 - q1) / (1 - q0)))
    return terms


def _one_sample_references(config: AnalysisConfig, state: JudgeState, s_n: float) -> dict[str, float | None]:
    """The rate each one-sample test holds the canary to in this interval."""
    baseline = state.baseline_reference(config)
    max_reference = config.max_error_rate
    if s_n <= 0 and baseline is not None:
        # No stable in this interval to show an incident: stable's own rate in this release
        # (an incident in the last step, say) is not held against the canary either.
        max_reference = max(max_reference, baseline)
    return {"errors_vs_max": max_reference, "errors_vs_baseline": baseline}


def _grown(sums: tuple[float, float, float], n: float, e: float) -> tuple[float, float, float]:
    """Per-interval sums (errors^2, errors x requests, requests^2) with one interval added."""
    return (sums[0] + e * e, sums[1] + e * n, sums[2] + n * n) if n > 0 else sums


@lru_cache(maxsize=64)
def _one_sample_terms(reference: float) -> tuple[tuple[float, float], ...]:
    """Per theta: log LR of one error and of one success, H1 p1 = theta*reference vs H0 reference."""
    terms = []
    for theta in THETAS:
        p1 = min(theta * reference, (1.0 + reference) / 2)  # an alternative rate below 1
        terms.append((math.log(p1 / reference), math.log((1 - p1) / (1 - reference))))
    return tuple(terms)


def _stable_degraded(requests: float, errors: float, reference: float, p_value: float = INCIDENT_P_VALUE) -> bool:
    """True when stable's errors in an interval would be less likely than `p_value` at `reference`."""
    if requests <= 0 or errors <= requests * reference:  # at or below the mean: not surprising
        return False
    return poisson_upper_tail(errors, requests * reference) < p_value


def error_test_results(config: AnalysisConfig, state: JudgeState) -> list[MetricResult]:
    """One result per error test that applies: fail once its e-value reaches len(tests)/alpha."""
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
            detail = (f"{counts} vs {pct(state.baseline_reference(config))} ({baseline_source} "
                      f"{pct(baseline_rate)} + {config.history_margin:.0%})")
        else:
            detail = f"{counts} vs max_error_rate {pct(config.max_error_rate)}"
        detail += " - significantly worse" if failed else ""
        detail += f" ({skipped} interval(s) skipped: stable degraded)" if skipped else ""
        results.append(MetricResult(name, VerdictOutcome.FAIL if failed else VerdictOutcome.PASS, e, threshold, detail))
    return results

