"""The anchor rules, reimplemented from their documented behaviour (pure Python).

Each `run_*` walks one replica's `Traffic` on its own schedule and returns a `Decision`.
Settings are the documented ones; the README lists the sources and every choice made here.

* Flagger, Istio tutorial: `interval: 1m, threshold: 5, maxWeight: 50, stepWeight: 10`,
  request-success-rate >= 99 % and request-duration p99 <= 500 ms over the last minute. As in
  Flagger's scheduler: tick 0 routes 10 %; every later tick first rolls back if failed checks
  >= threshold, then checks; a failed check (no data included) counts and holds the weight; a
  passing one advances the weight, or promotes when the weight is already maxWeight.
* Argo Rollouts, AnalysisTemplate example: success rate (canary, over `[5m]`) measured every
  5 minutes starting at once, `successCondition: result[0] >= 0.95`, `failureLimit: 3`
  (fails at the 4th failed measurement); an empty result is an error, and more than
  `consecutiveErrorLimit: 4` errors in a row abort the rollout. Steps 10/50/100 with the
  example's 10-minute pauses; the rollout completes when the last pause ends.
* Kayenta-style: at the end of steps 10 and 50 (60 s each), Mann-Whitney U on the per-interval
  error rates, canary vs stable, two-sided at 1 - confidence (0.98), direction "increase";
  too few intervals with data is NODATA (inconclusive). Passing step 50 promotes: at 100 %
  no stable traffic is left to compare with in the same intervals.
* Oracle: Wald's SPRT on canary errors with alpha = beta = 0.01, H0 p = the canary's true
  rate were it as good as stable, H1 p = canary's true rate (2x the H0 rate when the canary
  is not worse, so it can accept H0), both as they are in each interval (an incident, a burst,
  the canary's own overdispersion multiplier move both; a canary that degrades later or only
  at higher weight is healthy until then). Looks after every 10-second interval on ours'
  10/50/100 schedule, then keeps going at 100 % until it decides or `ORACLE_MAX_SECONDS` pass
  (inconclusive).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from bench.sim import INTERVAL_SECONDS, STEPS, Decision, Interval, Served, Traffic, window_p99

# Flagger (https://docs.flagger.app/tutorials/istio-progressive-delivery)
FLAGGER_INTERVAL_SECONDS = 60
FLAGGER_THRESHOLD = 5
FLAGGER_STEP_WEIGHT = 10
FLAGGER_MAX_WEIGHT = 50
FLAGGER_MIN_SUCCESS_PERCENT = 99.0
FLAGGER_MAX_P99_MS = 500.0

# Argo Rollouts (https://argo-rollouts.readthedocs.io/en/stable/features/analysis/)
ARGO_MEASUREMENT_SECONDS = 300
ARGO_STEP_SECONDS = 600
ARGO_SUCCESS_RATE = 0.95
ARGO_FAILURE_LIMIT = 3
ARGO_CONSECUTIVE_ERROR_LIMIT = 4

# Kayenta-style Mann-Whitney
KAYENTA_STEP_SECONDS = 60
KAYENTA_CONFIDENCE = 0.98
KAYENTA_MIN_INTERVALS = 3  # per version, below this the metric is NODATA

# Oracle
ORACLE_ALPHA = 0.01
ORACLE_BETA = 0.01
ORACLE_STEP_SECONDS = 60
ORACLE_MAX_SECONDS = 1800  # ours' longest possible release: 3 steps x max_bake_seconds 600 s


# --------------------------------------------------------------------------- Flagger


def run_flagger(traffic: Traffic) -> Decision:
    served = Served()
    per_tick = FLAGGER_INTERVAL_SECONDS // INTERVAL_SECONDS
    weight, failed, index, tick = FLAGGER_STEP_WEIGHT, 0, 0, 0  # tick 0 routes stepWeight
    while True:
        minute = [traffic.interval(i, weight) for i in range(index, index + per_tick)]
        for iv in minute:
            served.add(iv)
        index += per_tick
        tick += 1
        now = tick * FLAGGER_INTERVAL_SECONDS
        if failed >= FLAGGER_THRESHOLD:
            return served.decide("rolled_back", now)
        if not _flagger_check(minute):
            failed += 1  # holds the weight
        elif weight < FLAGGER_MAX_WEIGHT:
            weight += FLAGGER_STEP_WEIGHT
        else:
            return served.decide("promoted", now)


def _flagger_check(minute: Sequence[Interval]) -> bool:
    requests = sum(iv.canary_requests for iv in minute)
    if requests == 0:
        return False  # "no values found" for the metric query: a failed check
    errors = sum(iv.canary_errors for iv in minute)
    success_percent = 100.0 * (requests - errors) / requests
    p99 = window_p99(minute, "canary")
    return success_percent >= FLAGGER_MIN_SUCCESS_PERCENT and p99 is not None and p99 <= FLAGGER_MAX_P99_MS


# --------------------------------------------------------------------------- Argo Rollouts


def run_argo(traffic: Traffic) -> Decision:
    served = Served()
    per_measurement = ARGO_MEASUREMENT_SECONDS // INTERVAL_SECONDS
    per_step = ARGO_STEP_SECONDS // INTERVAL_SECONDS
    end = per_step * len(STEPS)
    seen: list[Interval] = []
    failed = consecutive_errors = 0
    for index in range(end):
        if index % per_measurement == 0:  # measurements at 0, 5, 10, ... minutes
            window = seen[-per_measurement:]
            requests = sum(iv.canary_requests for iv in window)
            if requests == 0:
                consecutive_errors += 1  # empty result: the condition cannot be evaluated
                if consecutive_errors > ARGO_CONSECUTIVE_ERROR_LIMIT:
                    return served.decide("rolled_back", index * INTERVAL_SECONDS)
            else:
                consecutive_errors = 0
                errors = sum(iv.canary_errors for iv in window)
                if (requests - errors) / requests < ARGO_SUCCESS_RATE:
                    failed += 1
                    if failed > ARGO_FAILURE_LIMIT:
                        return served.decide("rolled_back", index * INTERVAL_SECONDS)
        iv = traffic.interval(index, STEPS[index // per_step])
        served.add(iv)
        seen.append(iv)
    return served.decide("promoted", end * INTERVAL_SECONDS)


# --------------------------------------------------------------------------- Kayenta-style


def mann_whitney_u(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """(U of x, z, two-sided p) by the normal approximation with tie and continuity correction.

    U counts pairs with x above y (ties count one half); z > 0 means x tends to be larger.
    With every value tied there is no evidence either way: z = 0, p = 1.
    """
    n1, n2 = len(x), len(y)
    if not n1 or not n2:
        raise ValueError("both samples need at least one value")
    pooled = sorted([(v, 0) for v in x] + [(v, 1) for v in y])
    ranks = [0.0] * len(pooled)
    tie_term = 0.0
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        average_rank = (i + j) / 2.0 + 1.0
        for k in range(i, j + 1):
            ranks[k] = average_rank
        t = j - i + 1
        tie_term += t**3 - t
        i = j + 1
    rank_sum_x = sum(r for r, (_, side) in zip(ranks, pooled, strict=True) if side == 0)
    u = rank_sum_x - n1 * (n1 + 1) / 2.0
    n = n1 + n2
    variance = n1 * n2 / 12.0 * ((n + 1) - tie_term / (n * (n - 1))) if n > 1 else 0.0
    if variance <= 0.0:
        return u, 0.0, 1.0
    shift = u - n1 * n2 / 2.0
    z = math.copysign(max(0.0, abs(shift) - 0.5), shift) / math.sqrt(variance)
    return u, z, min(1.0, math.erfc(abs(z) / math.sqrt(2.0)))


def kayenta_classify(canary_rates: Sequence[float], stable_rates: Sequence[float]) -> str:
    """'pass', 'high' (canary worse: fail) or 'nodata' for one step's per-interval rates."""
    if len(canary_rates) < KAYENTA_MIN_INTERVALS or len(stable_rates) < KAYENTA_MIN_INTERVALS:
        return "nodata"
    _, z, p = mann_whitney_u(canary_rates, stable_rates)
    return "high" if p < 1.0 - KAYENTA_CONFIDENCE and z > 0 else "pass"


def run_kayenta(traffic: Traffic) -> Decision:
    served = Served()
    per_step = KAYENTA_STEP_SECONDS // INTERVAL_SECONDS
    index = 0
    for weight in STEPS[:-1]:
        canary_rates, stable_rates = [], []
        for _ in range(per_step):
            iv = traffic.interval(index, weight)
            index += 1
            served.add(iv)
            if iv.canary_requests:
                canary_rates.append(iv.canary_errors / iv.canary_requests)
            if iv.stable_requests:
                stable_rates.append(iv.stable_errors / iv.stable_requests)
        verdict = kayenta_classify(canary_rates, stable_rates)
        if verdict == "high":
            return served.decide("rolled_back", index * INTERVAL_SECONDS)
        if verdict == "nodata":
            return served.decide("inconclusive", index * INTERVAL_SECONDS)
    return served.decide("promoted", index * INTERVAL_SECONDS)


# --------------------------------------------------------------------------- SPRT oracle


def run_oracle(traffic: Traffic) -> Decision:
    served = Served()
    upper = math.log((1.0 - ORACLE_BETA) / ORACLE_ALPHA)  # reject H0: roll back
    lower = math.log(ORACLE_BETA / (1.0 - ORACLE_ALPHA))  # accept H0: promote
    per_step = ORACLE_STEP_SECONDS // INTERVAL_SECONDS
    llr = 0.0
    for index in range(ORACLE_MAX_SECONDS // INTERVAL_SECONDS):
        weight = STEPS[min(index // per_step, len(STEPS) - 1)]
        iv = traffic.interval(index, weight)
        served.add(iv)
        rates = traffic.true_rates(index, weight)
        # H0 is the canary as good as stable in this very interval (its own overdispersion
        # multiplier, the shared burst), so the oracle is not fooled by either.
        p0 = rates.canary_if_healthy
        p1 = min(rates.canary, 0.999) if rates.canary > p0 else min(2.0 * p0, 0.5)
        n, e = iv.canary_requests, iv.canary_errors
        if 0.0 < p0 < p1:  # else the interval cannot tell H0 from H1 (a rate at the cap)
            llr += e * math.log(p1 / p0) + (n - e) * math.log((1.0 - p1) / (1.0 - p0))
        seconds = (index + 1) * INTERVAL_SECONDS
        if llr >= upper:
            return served.decide("rolled_back", seconds)
        if llr <= lower:
            return served.decide("promoted", seconds)
    return served.decide("inconclusive", ORACLE_MAX_SECONDS)


ANCHORS = {"flagger": run_flagger, "argo": run_argo, "kayenta": run_kayenta, "oracle": run_oracle}
