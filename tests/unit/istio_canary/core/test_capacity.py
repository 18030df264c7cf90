"""The capacity check before each weight increase: sizing, decisions, messages, object reading."""

from __future__ import annotations

from typing import Any

import pytest

from istio_canary.core.capacity import (
    CapacityConfig,
    CapacityInput,
    Workload,
    decide_capacity,
    hold_timed_out,
    version_workload,
)
from istio_canary.core.validation import ValidationError

NS = "bookinfo"


def stable(ready: int = 4) -> Workload:
    return Workload("v1", ("reviews-v1",), ready, ready)


def canary(ready: int, desired: int | None = None, hpa_max: int | None = None) -> Workload:
    hpas = ("reviews-v2",) if hpa_max is not None else ()
    return Workload("v2", ("reviews-v2",), ready, ready if desired is None else desired, hpas, hpa_max)


def check(canary_workload: Workload, *, current: int = 0, nxt: int = 10, stable_rps: float | None = 100.0,
          canary_rps: float | None = 0.0, stable_workload: Workload | None = None, headroom: float = 1.0,
          reference: int | None = None) -> Any:
    return decide_capacity(CapacityInput(
        NS, stable_workload or stable(), canary_workload, current, nxt, stable_rps, canary_rps, headroom, reference,
    ))


def test_enough_ready_canary_replicas_pass_with_the_numbers() -> None:
    # 100 rps on 4 stable replicas: 25 per replica; 50% is 50 rps: 2 replicas.
    decision = check(canary(2), current=10, nxt=50, stable_rps=90.0, canary_rps=10.0)
    assert decision.action == "ok"
    assert decision.needed == 2
    assert "25.0 requests/s per replica" in decision.message
    assert "50.0 requests/s" in decision.message


def test_too_few_replicas_without_hpa_are_refused_naming_deployment_and_fix() -> None:
    decision = check(canary(1), current=10, nxt=50, stable_rps=90.0, canary_rps=10.0)
    assert decision.action == "refuse"
    assert decision.needed == 2
    assert "Deployment reviews-v2 (v2): 1/1 Ready, no HPA; needs 2" in decision.message
    assert "scale Deployment bookinfo/reviews-v2 to 2 replicas" in decision.message
    assert "kubectl -n bookinfo scale deployment reviews-v2 --replicas=2" in decision.message


def test_load_per_replica_is_the_stables_at_full_traffic_not_its_current_share() -> None:
    # At 50% a static stable of 1 replica carries half the route: its current load per replica
    # (25) would ask for 2 canary replicas at 100%; one replica carried all 50 before.
    decision = check(canary(1), stable_workload=stable(1), current=50, nxt=100, stable_rps=25.0, canary_rps=25.0)
    assert (decision.action, decision.needed) == ("ok", 1)


def test_a_stable_scaled_down_during_the_release_is_sized_by_its_first_count() -> None:
    # Its HPA took the stable from 10 to 5 replicas as it lost half its traffic.
    decision = check(canary(6), stable_workload=stable(5), current=50, nxt=100, stable_rps=50.0,
                     canary_rps=50.0, reference=10)
    assert (decision.action, decision.needed) == ("refuse", 10)
    assert decision.stable_reference_replicas == 10


def test_hpa_that_can_scale_far_enough_holds() -> None:
    decision = check(canary(1, hpa_max=4), current=10, nxt=50, stable_rps=90.0, canary_rps=10.0)
    assert decision.action == "hold"
    assert "its HPA may scale it to 4" in decision.message


def test_hpa_whose_max_is_too_low_is_refused_naming_the_hpa() -> None:
    decision = check(canary(1, hpa_max=2), current=50, nxt=100, stable_rps=50.0, canary_rps=50.0)
    assert decision.action == "refuse"
    assert "raise maxReplicas of HorizontalPodAutoscaler bookinfo/reviews-v2 to at least 4" in decision.message


def test_deployment_asking_for_enough_but_not_ready_holds() -> None:
    decision = check(canary(1, desired=3), current=10, nxt=50, stable_rps=90.0, canary_rps=10.0)
    assert decision.action == "hold"
    assert "it asks for 3" in decision.message


def test_hold_timed_out_is_a_refusal_with_the_fix() -> None:
    data = CapacityInput(NS, stable(), canary(1, hpa_max=4), 10, 50, 90.0, 10.0)
    held = decide_capacity(data)
    refused = hold_timed_out(held, data, 10)
    assert refused.action == "refuse"
    assert "after waiting 10 min the canary still has 1 Ready of the 2 needed" in refused.message
    assert "minReplicas to 2" in refused.message
    not_ready = CapacityInput(NS, stable(), canary(1, desired=3), 10, 50, 90.0, 10.0)
    message = hold_timed_out(decide_capacity(not_ready), not_ready, 5).message
    assert "find why the pods of Deployment reviews-v2 are not Ready" in message


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"stable_rps": 0.0, "canary_rps": 0.0}, "no traffic on the route"),
        ({"current": 50, "nxt": 50}, "does not raise the canary's weight"),
        ({"stable_workload": Workload("v1", (), 0, 0)}, "no Deployment makes the v1 pods"),
        ({"stable_workload": stable(0)}, "has no Ready replicas"),
        ({"stable_rps": 0.0, "canary_rps": 5.0}, "the stable carries no traffic now"),
    ],
)
def test_nothing_to_check_passes_and_says_why(kwargs: dict[str, Any], why: str) -> None:
    decision = check(canary(0), **kwargs)
    assert decision.action == "ok"
    assert "not checked" in decision.message and why in decision.message


def test_canary_without_deployment_passes_and_says_so() -> None:
    decision = check(Workload("v2", (), 0, 0))
    assert decision.action == "ok"
    assert "no Deployment makes the v2 pods" in decision.message


def test_unreadable_traffic_sizes_by_replicas() -> None:
    decision = check(canary(1), current=10, nxt=50, stable_rps=None, canary_rps=None)
    assert (decision.action, decision.needed) == ("refuse", 2)
    assert "traffic unreadable" in decision.message


def test_headroom_asks_for_spare_replicas() -> None:
    assert check(canary(2), current=10, nxt=50, stable_rps=90.0, canary_rps=10.0).action == "ok"
    decision = check(canary(2), current=10, nxt=50, stable_rps=90.0, canary_rps=10.0, headroom=1.5)
    assert (decision.action, decision.needed) == ("refuse", 3)


def test_small_weight_needs_at_least_one_replica() -> None:
    assert check(canary(0, desired=0), nxt=1).needed == 1


def test_float_noise_does_not_ask_for_an_extra_replica() -> None:
    # 0.7 * 10 / (10 / 10) is 7.000000000000001 in floating point.
    decision = check(canary(7), stable_workload=stable(10), current=50, nxt=70, stable_rps=5.0, canary_rps=5.0)
    assert (decision.action, decision.needed) == ("ok", 7)


def deployment(name: str, labels: dict[str, str], replicas: int | None, ready: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"metadata": {"name": name}, "spec": spec, "status": {"readyReplicas": ready} if ready else {}}


def hpa(name: str, target: str, max_replicas: int, kind: str = "Deployment") -> dict[str, Any]:
    return {"metadata": {"name": name},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target},
                     "maxReplicas": max_replicas}}


def test_version_workload_reads_deployments_by_their_pod_template_labels() -> None:
    deployments = [
        deployment("reviews-v2", {"app": "reviews", "version": "v2", "extra": "x"}, 2, 1),
        deployment("reviews-v1", {"app": "reviews", "version": "v1"}, 3, 3),
        deployment("ratings-v2", {"app": "ratings", "version": "v2"}, 5, 5),
        deployment("reviews-v2-b", {"app": "reviews", "version": "v2"}, None, 0),
    ]
    hpas = [hpa("reviews-v2", "reviews-v2", 6), hpa("other", "ratings-v2", 9), hpa("rs", "reviews-v2-b", 9, "ReplicaSet")]
    workload = version_workload("v2", {"app": "reviews", "version": "v2"}, deployments, hpas)
    assert workload.deployments == ("reviews-v2", "reviews-v2-b")
    assert (workload.ready, workload.desired) == (1, 3)
    assert workload.hpas == ("reviews-v2",)
    # reviews-v2 may reach 6 by its HPA; reviews-v2-b keeps its 1 (spec.replicas defaults to 1).
    assert workload.hpa_max == 7 and workload.ceiling == 7


def test_version_workload_without_deployment() -> None:
    workload = version_workload("v3", {"version": "v3"}, [deployment("a", {"version": "v1"}, 1, 1)], [])
    assert workload.deployments == () and workload.ceiling == 0
    assert workload.describe() == "version v3: no Deployment"


def test_config_defaults_and_checks() -> None:
    assert CapacityConfig.from_params({}) == CapacityConfig(True, 10, 1.0)
    assert CapacityConfig.from_params({"capacity_check": "False", "capacity_timeout_minutes": "5",
                                       "capacity_headroom": "1.2"}) == CapacityConfig(False, 5, 1.2)
    for key, value in (("capacity_check", "maybe"), ("capacity_timeout_minutes", -1),
                       ("capacity_timeout_minutes", True), ("capacity_headroom", 0.5),
                       ("capacity_headroom", "x")):
        with pytest.raises(ValidationError, match=key):
            CapacityConfig.from_params({key: value})


def test_rates_from_the_rate_query() -> None:
    from istio_canary.core.capacity import RATE_WINDOW_SECONDS, rate_query, rates_from_result

    query = rate_query("reviews", NS, "v1", "v2", "destination_version")
    assert 'destination_version=~"v1|v2"' in query and f"[{RATE_WINDOW_SECONDS}s]" in query
    result = [{"metric": {"destination_version": "v1"}, "value": [0, str(90.0 * RATE_WINDOW_SECONDS)]}]
    assert rates_from_result(result, "v1", "v2", "destination_version") == (90.0, 0.0)
