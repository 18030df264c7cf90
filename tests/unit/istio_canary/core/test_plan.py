"""Bake time planned from traffic: how long each step must bake to tell a 2x error rate."""

from __future__ import annotations

import random

import pytest

from istio_canary.core.analysis_config import AnalysisConfig
from istio_canary.core.plan import DETECT_RATIO, needed_canary_requests, plan_bake

CONFIG = AnalysisConfig.from_params({"bake_seconds": 60, "max_bake_seconds": 600, "check_interval_seconds": 10})
STEPS = (10, 50, 100)


def test_needed_requests_match_a_simulated_one_sided_test() -> None:
    """The sample size gives the configured power: simulate the fixed-sample binomial test."""
    needed = needed_canary_requests(CONFIG, 0.005)
    assert 2000 < needed < 3000  # 0.5 % -> 1 % at alpha 0.01, power 0.8
    rng = random.Random(7)
    critical = next(k for k in range(needed) if _upper_tail(k, needed, 0.005) < CONFIG.alpha)
    detected = sum(sum(rng.random() < 0.01 for _ in range(needed)) >= critical for _ in range(300))
    assert 0.7 < detected / 300 < 0.92


def _upper_tail(k: int, n: int, p: float) -> float:
    from math import comb

    return 1.0 - sum(comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k))


def test_plenty_of_traffic_bakes_as_configured() -> None:
    plan = plan_bake(CONFIG, weights=STEPS, service_rps=50.0, baseline_rate=0.005)
    assert plan.enough and plan.seconds == 60
    assert plan.steps == ((10, 60), (50, 60), (100, 60))
    assert plan.planned_requests == pytest.approx(50 * 1.6 * 60)


def test_moderate_traffic_extends_the_latest_steps_first() -> None:
    plan = plan_bake(CONFIG, weights=STEPS, service_rps=10.0, baseline_rate=0.005)
    assert plan.enough and plan.seconds == 60  # step 10 keeps its bake
    (_, b10), (_, b50), (_, b100) = plan.steps
    assert b100 > 60 and b50 == 60 and b10 == 60
    assert plan.planned_requests >= plan.needed_requests
    # Requests already judged count: before the last step only what is missing is planned.
    later = plan_bake(CONFIG, weights=(100,), service_rps=10.0, baseline_rate=0.005, seen_requests=1000)
    assert later.seconds == pytest.approx((plan.needed_requests - 1000) / 10.0, abs=1)
    assert plan_bake(CONFIG, weights=(100,), service_rps=10.0, baseline_rate=0.005, seen_requests=2400).seconds == 60


def test_low_traffic_is_not_enough_and_says_what_to_change() -> None:
    plan = plan_bake(CONFIG, weights=STEPS, service_rps=2.0, baseline_rate=0.005)
    assert not plan.enough
    assert plan.steps == ((10, 600), (50, 600), (100, 600))
    text = plan.describe(CONFIG)
    assert "2.0 requests/s" in text and "0.50% -> 1.00%" in text and "NOT ENOUGH" in text
    assert "raise max_bake_seconds to at least" in plan.refusal(CONFIG)
    # The advice is right: with that maximum the same traffic is enough.
    advised = int(plan.refusal(CONFIG).split("at least ")[1].split(",")[0])
    bigger = AnalysisConfig.from_params({**CONFIG.to_dict(), "max_bake_seconds": advised})
    assert plan_bake(bigger, weights=STEPS, service_rps=2.0, baseline_rate=0.005).enough


def test_effect_is_never_below_max_error_rate_and_overdispersion_asks_for_more() -> None:
    quiet = plan_bake(CONFIG, weights=STEPS, service_rps=50.0, baseline_rate=0.0)
    assert (quiet.p0, quiet.p1) == (CONFIG.max_error_rate / DETECT_RATIO, CONFIG.max_error_rate)
    noisy = plan_bake(CONFIG, weights=(100,), service_rps=50.0, baseline_rate=0.005, dispersion=1.0)
    calm = plan_bake(CONFIG, weights=(100,), service_rps=50.0, baseline_rate=0.005)
    assert noisy.needed_requests > 2 * calm.needed_requests and noisy.seconds > calm.seconds
    assert "overdispersed" in noisy.describe(CONFIG)


def test_plan_settings_are_validated() -> None:
    from istio_canary.core.validation import ValidationError

    with pytest.raises(ValidationError, match="power"):
        AnalysisConfig.from_params({"bake_seconds": 60, "power": 1.0})
    with pytest.raises(ValidationError, match="plan_bake"):
        AnalysisConfig.from_params({"bake_seconds": 60, "plan_bake": "yes"})
