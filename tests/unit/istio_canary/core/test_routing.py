"""Routing edits on realistic VirtualServices: only what the release owns changes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from istio_canary.core.destination_rule import SubsetConflictError, ensure_subsets, restore_subsets
from istio_canary.core.istio_rules import validate_virtual_service
from istio_canary.core.request import ReleaseRequest
from istio_canary.core.routing import (
    RoutingError,
    RoutingPlan,
    apply_plan,
    find_owned_route,
    plan_for_step,
    promote,
    remove_match_route,
    restore_owned,
    routing_state,
    set_match_route,
    set_weights,
)
from istio_canary.core.validation import ValidationError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
SCENARIOS = yaml.safe_load((FIXTURES / "scenarios.yaml").read_text())


def load(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    vs, dr = yaml.safe_load_all((FIXTURES / name).read_text())
    return vs, dr


def request(**params: Any) -> ReleaseRequest:
    base = {"service": "reviews", "namespace": "bookinfo", "stable_version": "v1", "canary_version": "v3"}
    return ReleaseRequest.from_params({**base, **params})


def without(routes: list[dict[str, Any]], index: int) -> list[dict[str, Any]]:
    return routes[:index] + routes[index + 1 :]


# --------------------------------------------------------------------------- DestinationRule


def test_ensure_subsets_appends_missing_subset_and_keeps_everything_else() -> None:
    _, dr = load("reviews_bookinfo.yaml")
    original = copy.deepcopy(dr)

    out = ensure_subsets(dr, request())

    assert dr == original  # input untouched
    expected = copy.deepcopy(original)
    expected["spec"]["subsets"].append({"name": "v3", "labels": {"version": "v3"}})
    assert out == expected  # trafficPolicy (ISTIO_MUTUAL), v2's own policy, metadata: all kept
    assert ensure_subsets(out, request()) == out


def test_ensure_subsets_creates_the_list_when_the_rule_has_none() -> None:
    _, dr = load("ratings_resilience.yaml")
    req = request(service="ratings", canary_version="v2")

    out = ensure_subsets(dr, req)

    assert out["spec"]["subsets"] == [
        {"name": "v1", "labels": {"version": "v1"}},
        {"name": "v2", "labels": {"version": "v2"}},
    ]
    assert out["spec"]["trafficPolicy"] == dr["spec"]["trafficPolicy"]
    assert "subsets" not in dr["spec"]


def test_ensure_subsets_refuses_to_rewrite_someone_elses_subset() -> None:
    _, dr = load("reviews_bookinfo.yaml")
    # The DR's v2 selects version=v2 pods; a release that calls its v3 canary "v2" must not hijack it.
    req = request(canary_subset="v2")

    with pytest.raises(SubsetConflictError) as err:
        ensure_subsets(dr, req)

    message = str(err.value)
    assert "'v2'" in message and "{'version': 'v2'}" in message and "{'version': 'v3'}" in message


def test_ensure_subsets_matches_fqdn_rule_host_and_custom_label_key() -> None:
    _, dr = load("frontend_gateways.yaml")  # DR host is the FQDN, subsets named stable/legacy
    scenario = next(s for s in SCENARIOS if s["fixture"] == "frontend_gateways.yaml")
    req = ReleaseRequest.from_params(scenario["params"])

    out = ensure_subsets(dr, req)

    assert [s["name"] for s in out["spec"]["subsets"]] == ["stable", "legacy", "canary"]
    assert out["spec"]["subsets"][2] == {"name": "canary", "labels": {"app.kubernetes.io/version": "2.4.0"}}


def test_ensure_subsets_rejects_a_rule_for_another_host() -> None:
    _, dr = load("reviews_bookinfo.yaml")
    with pytest.raises(RoutingError, match="host 'reviews', not for the release's host 'ratings'"):
        ensure_subsets(dr, request(service="ratings"))


# --------------------------------------------------------------------------- finding the owned route


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s["fixture"])
def test_find_owned_route_in_every_fixture(scenario: dict[str, Any]) -> None:
    vs, _ = load(scenario["fixture"])
    assert find_owned_route(vs, ReleaseRequest.from_params(scenario["params"])) == scenario["owned_index"]


def test_without_route_name_the_catch_all_route_is_owned_not_the_matched_ones() -> None:
    vs, _ = load("productpage_named.yaml")
    req = request(service="productpage", canary_version="v2")
    assert find_owned_route(vs, req) == 3


def test_host_not_routed_by_the_virtual_service_is_an_error_listing_routes() -> None:
    vs, _ = load("reviews_bookinfo.yaml")
    with pytest.raises(RoutingError) as err:
        find_owned_route(vs, request(service="ratings"))
    message = str(err.value)
    assert "bookinfo/reviews" in message and "'ratings'" in message
    assert "http[0] 'jason' (match -> reviews)" in message and "http[1] (catch-all -> reviews)" in message


def test_two_catch_all_candidates_are_ambiguous() -> None:
    vs, _ = load("reviews_bookinfo.yaml")
    vs["spec"]["http"].insert(
        0, {"name": "all", "match": [], "route": [{"destination": {"host": "reviews"}}]}
    )
    with pytest.raises(RoutingError, match=r"2 catch-all HTTP routes.*http\[0\] 'all'.*http\[2\]"):
        find_owned_route(vs, request())


def test_named_route_missing_duplicated_or_for_another_host() -> None:
    vs, _ = load("productpage_named.yaml")
    base = {"service": "productpage", "canary_version": "v2"}
    with pytest.raises(RoutingError, match=r"no HTTP route named 'checkout'.*'login'.*'api'"):
        find_owned_route(vs, request(**base, route_name="checkout"))
    with pytest.raises(RoutingError, match="does not send all its traffic to host 'productpage'"):
        find_owned_route(vs, request(**base, route_name="static"))
    duplicated = copy.deepcopy(vs)
    duplicated["spec"]["http"][3]["name"] = "api"
    with pytest.raises(RoutingError, match=r"2 HTTP routes named 'api' \(indices \[1, 3\]\)"):
        find_owned_route(duplicated, request(**base, route_name="api"))


def test_route_splitting_between_two_hosts_is_not_owned() -> None:
    vs, _ = load("reviews_bookinfo.yaml")
    vs["spec"]["http"][1]["route"] = [
        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 80},
        {"destination": {"host": "reviews-legacy"}, "weight": 20},
    ]
    with pytest.raises(RoutingError, match="no catch-all HTTP route"):
        find_owned_route(vs, request())


# --------------------------------------------------------------------------- weights


def test_set_weights_splits_the_owned_route_and_keeps_the_jason_route() -> None:
    vs, _ = load("reviews_bookinfo.yaml")
    original = copy.deepcopy(vs)

    out = set_weights(vs, request(), 10)

    assert vs == original
    assert out["spec"]["http"][1] == {
        "route": [
            {"destination": {"host": "reviews", "subset": "v1"}, "weight": 90},
            {"destination": {"host": "reviews", "subset": "v3"}, "weight": 10},
        ]
    }
    assert out["spec"]["http"][0] == original["spec"]["http"][0]
    assert {k: v for k, v in out.items() if k != "spec"} == {k: v for k, v in original.items() if k != "spec"}
    assert set_weights(out, request(), 10) == out


def test_zero_and_hundred_leave_a_single_destination_without_weight() -> None:
    vs, _ = load("reviews_bookinfo.yaml")
    at_50 = set_weights(vs, request(), 50)
    assert set_weights(at_50, request(), 0)["spec"]["http"][1] == {
        "route": [{"destination": {"host": "reviews", "subset": "v1"}}]
    }
    assert set_weights(at_50, request(), 100)["spec"]["http"][1] == {
        "route": [{"destination": {"host": "reviews", "subset": "v3"}}]
    }
    # Back to 0 from any step is the original VirtualService, byte for byte.
    assert set_weights(at_50, request(), 0) == vs


def test_set_weights_keeps_policies_port_host_spelling_and_destination_extras_on_both() -> None:
    vs, _ = load("ratings_resilience.yaml")
    req = request(service="ratings", canary_version="v2")
    original_owned = copy.deepcopy(vs["spec"]["http"][1])

    out = set_weights(vs, req, 25)

    owned = out["spec"]["http"][1]
    fqdn = "ratings.bookinfo.svc.cluster.local"
    assert owned["route"] == [
        {
            "destination": {"host": fqdn, "subset": "v1", "port": {"number": 9080}},
            "weight": 75,
            "headers": {"response": {"set": {"x-served-by": "ratings"}}},
        },
        {
            "destination": {"host": fqdn, "subset": "v2", "port": {"number": 9080}},
            "weight": 25,
            "headers": {"response": {"set": {"x-served-by": "ratings"}}},
        },
    ]
    assert {k: v for k, v in owned.items() if k != "route"} == {
        k: v for k, v in original_owned.items() if k != "route"
    }  # fault, retries, timeout, headers, mirror, mirrorPercentage, name
    assert out["spec"]["http"][0] == vs["spec"]["http"][0]


@pytest.mark.parametrize("weight", [-1, 101, 10.5, True, "10", None])
def test_set_weights_rejects_weights_outside_0_to_100(weight: Any) -> None:
    vs, _ = load("reviews_bookinfo.yaml")
    with pytest.raises(ValidationError) as err:
        set_weights(vs, request(), weight)
    assert err.value.field == "canary_weight"


def test_weights_are_absolute_whatever_the_previous_step() -> None:
    vs, _ = load("reviews_bookinfo.yaml")
    direct = set_weights(vs, request(), 50)
    via_steps = set_weights(set_weights(set_weights(vs, request(), 10), request(), 100), request(), 50)
    assert via_steps == direct


# --------------------------------------------------------------------------- canary match route


def test_header_match_route_goes_right_before_the_owned_route() -> None:
    vs, _ = load("reviews_bookinfo.yaml")
    req = request(strategy="header", header_name="x-canary", header_value="always")
    original = copy.deepcopy(vs)

    out = set_match_route(vs, req)

    assert vs == original
    assert out["spec"]["http"] == [
        original["spec"]["http"][0],  # jason keeps priority
        {
            "name": "reviews-canary",
            "match": [{"headers": {"x-canary": {"exact": "always"}}}],
            "route": [{"destination": {"host": "reviews", "subset": "v3"}}],
        },
        original["spec"]["http"][1],
    ]
    assert set_match_route(out, req) == out


def test_cookie_match_route_uses_the_re2_regex() -> None:
    vs, _ = load("reviews_bookinfo.yaml")
    out = set_match_route(vs, request(strategy="cookie"))
    assert out["spec"]["http"][1]["match"] == [{"headers": {"cookie": {"regex": r"^(.*;\s*)?canary=true(;.*)?$"}}}]


def test_match_route_copies_request_shaping_policies_but_not_fault_or_mirror() -> None:
    vs, _ = load("ratings_resilience.yaml")
    req = request(service="ratings", canary_version="v2", strategy="header")

    out = set_match_route(vs, req)

    owned = vs["spec"]["http"][1]
    assert out["spec"]["http"][1] == {
        "name": "ratings-canary",
        "match": [{"headers": {"user-agent": {"exact": "canary"}}}],
        "route": [
            {
                "destination": {
                    "host": "ratings.bookinfo.svc.cluster.local",
                    "subset": "v2",
                    "port": {"number": 9080},
                },
                "headers": {"response": {"set": {"x-served-by": "ratings"}}},
            }
        ],
        "timeout": owned["timeout"],
        "retries": owned["retries"],
        "headers": owned["headers"],
    }
    assert out["spec"]["http"][2] == owned


def test_match_route_for_a_named_route_ands_the_condition_into_each_match() -> None:
    vs, _ = load("productpage_named.yaml")
    scenario = next(s for s in SCENARIOS if s["fixture"] == "productpage_named.yaml")
    req = ReleaseRequest.from_params(scenario["params"])

    out = set_match_route(vs, req)

    routes = out["spec"]["http"]
    assert [r.get("name") for r in routes] == ["login", "productpage-canary", "api", "static", "default"]
    assert routes[1]["match"] == [
        {"uri": {"prefix": "/api/v1/products"}, "headers": {"x-canary": {"exact": "yes"}}},
        {
            "uri": {"prefix": "/api/v2/products"},
            "headers": {"x-api-client": {"prefix": "mobile"}, "x-canary": {"exact": "yes"}},
        },
    ]
    assert routes[1]["rewrite"] == {"authority": "productpage-api"}
    assert routes[1]["timeout"] == "5s" and routes[1]["retries"] == {"attempts": 2, "retryOn": "5xx"}
    assert without(routes, 1) == vs["spec"]["http"]


def test_match_route_conflicting_with_the_owned_routes_own_header_match_is_refused() -> None:
    vs, _ = load("productpage_named.yaml")
    req = request(
        service="productpage",
        canary_version="v2",
        route_name="api",
        strategy="header",
        header_name="x-api-client",
    )
    with pytest.raises(RoutingError, match="already matches header 'x-api-client'"):
        set_match_route(vs, req)


def test_match_route_moved_by_someone_is_put_back_in_front_of_the_owned_route() -> None:
    vs, _ = load("reviews_bookinfo.yaml")
    req = request(strategy="header")
    good = set_match_route(vs, req)
    moved = copy.deepcopy(good)
    canary_route = moved["spec"]["http"].pop(1)
    canary_route["match"][0]["headers"]["user-agent"] = {"exact": "stale"}
    moved["spec"]["http"].insert(0, canary_route)

    assert set_match_route(moved, req) == good


def test_weighted_strategy_has_no_match_route() -> None:
    vs, _ = load("reviews_bookinfo.yaml")
    with pytest.raises(RoutingError, match="'weighted' does not use a canary match route"):
        set_match_route(vs, request())
    with pytest.raises(RoutingError):
        apply_plan(vs, request(), RoutingPlan(10, match_route=True))


def test_remove_match_route_is_a_no_op_copy_when_absent() -> None:
    vs, _ = load("reviews_bookinfo.yaml")
    out = remove_match_route(vs, request(strategy="header"))
    assert out == vs and out is not vs
    with_route = set_match_route(vs, request(strategy="header"))
    assert remove_match_route(with_route, request(strategy="header")) == vs


# --------------------------------------------------------------------------- promote and rollback


def test_promote_sends_everything_to_canary_and_drops_the_match_route() -> None:
    vs, _ = load("reviews_bookinfo.yaml")
    req = request(strategy="header")
    mid_release = apply_plan(vs, req, RoutingPlan(50, match_route=True))

    out = promote(mid_release, req)

    assert out["spec"]["http"] == [
        vs["spec"]["http"][0],
        {"route": [{"destination": {"host": "reviews", "subset": "v3"}}]},
    ]
    assert promote(out, req) == out


def test_rollback_restores_the_owned_route_and_keeps_others_edits() -> None:
    snapshot, _ = load("ratings_resilience.yaml")
    req = request(service="ratings", canary_version="v2", strategy="cookie")
    current = apply_plan(snapshot, req, RoutingPlan(50, match_route=True))
    # Meanwhile someone tightens the health route and adds a route ahead of the owned one.
    current["spec"]["http"][0]["timeout"] = "500ms"
    extra = {
        "name": "debug",
        "match": [{"headers": {"x-debug": {"exact": "1"}}}],
        "route": [{"destination": {"host": "ratings-debug"}}],
    }
    current["spec"]["http"].insert(1, extra)
    current["metadata"]["resourceVersion"] = "9300"
    before = copy.deepcopy(current)

    out = restore_owned(current, snapshot, req)

    assert current == before
    expected_routes = [dict(snapshot["spec"]["http"][0], timeout="500ms"), extra, snapshot["spec"]["http"][1]]
    assert out["spec"]["http"] == expected_routes
    assert out["metadata"]["resourceVersion"] == "9300"  # the write goes against what we read
    assert restore_owned(out, snapshot, req) == out


def test_rollback_after_promotion_and_of_a_named_route() -> None:
    snapshot, _ = load("productpage_named.yaml")
    req = request(service="productpage", canary_version="v2", route_name="api", strategy="header")
    promoted = promote(apply_plan(snapshot, req, RoutingPlan(10, True)), req)
    assert restore_owned(promoted, snapshot, req) == snapshot


def test_rollback_finds_the_owned_route_by_its_snapshot_name_when_reshaped() -> None:
    snapshot, _ = load("ratings_resilience.yaml")
    req = request(service="ratings", canary_version="v2")
    current = set_weights(snapshot, req, 50)
    # An operator hand-added a third destination to the owned route during the release.
    current["spec"]["http"][1]["route"].append({"destination": {"host": "ratings-v0"}, "weight": 0})
    out = restore_owned(current, snapshot, req)
    assert out == snapshot


def test_restore_subsets_removes_only_what_the_release_added() -> None:
    _, snapshot_dr = load("reviews_bookinfo.yaml")
    req = request()
    current = ensure_subsets(snapshot_dr, req)
    current["spec"]["subsets"][1]["trafficPolicy"]["connectionPool"]["http"]["http1MaxPendingRequests"] = 128
    current["metadata"]["resourceVersion"] = "50000"

    out = restore_subsets(current, snapshot_dr, req)

    expected = copy.deepcopy(current)
    expected["spec"]["subsets"] = current["spec"]["subsets"][:2]  # v3 gone, the edit to v2 kept
    assert out == expected
    assert restore_subsets(out, snapshot_dr, req) == out


def test_restore_subsets_keeps_a_subset_still_referenced_and_drops_an_added_list() -> None:
    vs, snapshot_dr = load("ratings_resilience.yaml")
    req = request(service="ratings", canary_version="v2")
    current = ensure_subsets(snapshot_dr, req)
    still_routed = set_weights(vs, req, 50)

    kept = restore_subsets(current, snapshot_dr, req, keep_referenced_by=still_routed)
    assert [s["name"] for s in kept["spec"]["subsets"]] == ["v1", "v2"]

    # Back at the snapshot's route, v1 is still what the owned route uses: only v2 goes.
    back = restore_subsets(current, snapshot_dr, req, keep_referenced_by=vs)
    assert [s["name"] for s in back["spec"]["subsets"]] == ["v1"]
    assert restore_subsets(current, snapshot_dr, req) == snapshot_dr


# --------------------------------------------------------------------------- state and plans


def test_routing_state_reports_the_owned_route() -> None:
    vs, _ = load("reviews_bookinfo.yaml")
    req = request(strategy="header")
    assert routing_state(vs, req).describe() == "http[1]: stable 100%, canary 0%; match route absent"
    state = routing_state(apply_plan(vs, req, RoutingPlan(50, True)), req)
    assert (state.owned_index, state.canary_weight, state.stable_weight, state.match_route_present) == (
        2,
        50,
        50,
        True,
    )
    ratings, _ = load("ratings_resilience.yaml")
    ratings["spec"]["http"][1]["route"] = [
        dict(ratings["spec"]["http"][1]["route"][0], weight=80),
        {"destination": {"host": "ratings", "subset": "v3"}, "weight": 20},
    ]
    ratings_state = routing_state(ratings, request(service="ratings", canary_version="v2"))
    assert (ratings_state.stable_weight, ratings_state.other_weight, ratings_state.owned_route_name) == (
        80, 20, "default")


def test_routing_state_reads_relative_weights() -> None:
    vs, _ = load("reviews_bookinfo.yaml")
    vs["spec"]["http"][1]["route"] = [
        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 3},
        {"destination": {"host": "reviews", "subset": "v3"}, "weight": 1},
    ]
    state = routing_state(vs, request())
    assert (state.stable_weight, state.canary_weight) == (75, 25)


PLANS = [RoutingPlan(w, m) for w in (0, 10, 50, 100) for m in (False, True)]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s["fixture"])
def test_plans_are_absolute_idempotent_and_valid(scenario: dict[str, Any]) -> None:
    vs, dr = load(scenario["fixture"])
    req = ReleaseRequest.from_params(scenario["params"])
    dr = ensure_subsets(dr, req)
    plans = [p for p in PLANS if req.uses_match_route or not p.match_route]
    original = copy.deepcopy(vs)
    for first in plans:
        after_first = apply_plan(vs, req, first)
        for second in plans:
            direct = apply_plan(vs, req, second)
            assert apply_plan(after_first, req, second) == direct, (first, second)
            assert apply_plan(direct, req, second) == direct
            state = routing_state(direct, req)
            assert (state.canary_weight, state.match_route_present) == (
                second.canary_weight,
                second.match_route,
            )
        validate_virtual_service(after_first, dr)
        # Rollback from any plan gives back the snapshot.
        assert restore_owned(after_first, vs, req) == remove_match_route(vs, req)
    assert vs == original


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s["fixture"])
def test_foreign_content_survives_a_whole_release(scenario: dict[str, Any]) -> None:
    vs, _ = load(scenario["fixture"])
    req = ReleaseRequest.from_params(scenario["params"])
    owned = scenario["owned_index"]
    current = vs
    for step in req.steps:
        current = apply_plan(current, req, plan_for_step(req, step))
    current = promote(current, req)

    assert {k: v for k, v in current.items() if k != "spec"} == {k: v for k, v in vs.items() if k != "spec"}
    assert {k: v for k, v in current["spec"].items() if k != "http"} == {
        k: v for k, v in vs["spec"].items() if k != "http"
    }  # hosts, gateways, exportTo, tcp routes
    assert without(current["spec"]["http"], owned) == without(vs["spec"]["http"], owned)
    assert routing_state(current, req).canary_weight == 100


def test_plan_for_step() -> None:
    assert plan_for_step(request(), 10) == RoutingPlan(10, False)
    assert plan_for_step(request(strategy="cookie"), 10) == RoutingPlan(10, True)
    assert plan_for_step(request(strategy="header"), 100) == RoutingPlan(100, False)
    with pytest.raises(ValidationError):
        RoutingPlan(120)


# --------------------------------------------------------------------------- what the release does not own


def _with_extra_destination(vs: dict[str, Any]) -> dict[str, Any]:
    vs = copy.deepcopy(vs)
    vs["spec"]["http"][1]["route"] = [
        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 80},
        {"destination": {"host": "reviews", "subset": "v2"}, "weight": 20},
    ]
    return vs


def test_only_the_stable_share_moves_and_other_destinations_keep_their_weight() -> None:
    vs = _with_extra_destination(load("reviews_bookinfo.yaml")[0])
    req = request()  # v1 -> v3; v2 keeps its 20
    routes = {w: set_weights(vs, req, w)["spec"]["http"][1]["route"] for w in (10, 50, 100, 0)}
    assert routes[10] == [
        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 72},
        {"destination": {"host": "reviews", "subset": "v3"}, "weight": 8},
        {"destination": {"host": "reviews", "subset": "v2"}, "weight": 20},
    ]
    assert [e["weight"] for e in routes[50]] == [40, 40, 20]
    assert routes[100] == [
        {"destination": {"host": "reviews", "subset": "v3"}, "weight": 80},
        {"destination": {"host": "reviews", "subset": "v2"}, "weight": 20},
    ]
    assert routes[0] == vs["spec"]["http"][1]["route"]
    state = routing_state(set_weights(vs, req, 10), req)
    assert (state.stable_weight, state.canary_weight, state.other_weight) == (72, 8, 20)
    snapshot = copy.deepcopy(vs)
    assert restore_owned(promote(vs, req), snapshot, req) == snapshot


def test_a_weight_zero_entry_of_another_subset_is_kept_verbatim() -> None:
    vs, _ = load("reviews_bookinfo.yaml")
    vs["spec"]["http"][1]["route"] = [
        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 100},
        {"destination": {"host": "reviews", "subset": "v2"}, "weight": 0},
    ]
    out = set_weights(vs, request(), 50)
    assert out["spec"]["http"][1]["route"] == [
        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 50},
        {"destination": {"host": "reviews", "subset": "v3"}, "weight": 50},
        {"destination": {"host": "reviews", "subset": "v2"}, "weight": 0},
    ]


def test_an_owned_route_without_subset_is_refused_naming_the_field_and_fix() -> None:
    vs, _ = load("reviews_bookinfo.yaml")
    vs["spec"]["http"][1]["route"] = [{"destination": {"host": "reviews"}}]
    with pytest.raises(RoutingError) as err:
        set_weights(vs, request(), 10)
    message = str(err.value)
    assert "VirtualService bookinfo/reviews spec.http[1].route[0].destination" in message
    assert "canary's pods (version=v3) already get traffic" in message
    assert "subset: v1" in message and "Fix: pin it" in message


def test_a_users_route_named_like_the_match_route_is_never_removed() -> None:
    from istio_canary.core.lock import with_lock

    vs, _ = load("reviews_bookinfo.yaml")
    req = request(strategy="header")
    users = {"name": req.canary_route_name, "match": [{"headers": {"x-beta": {"exact": "1"}}}],
             "route": [{"destination": {"host": "reviews", "subset": "v2"}}]}
    vs["spec"]["http"].insert(0, users)
    locked = with_lock(vs, "dag/run", {"virtualService": copy.deepcopy(vs), "destinationRule": None})
    for edit in (lambda v: apply_plan(v, req, RoutingPlan(10, True)), lambda v: promote(v, req),
                 lambda v: restore_owned(v, vs, req)):
        with pytest.raises(RoutingError, match="existed before this release took its lock"):
            edit(locked)


def test_the_canary_subset_gets_the_stable_subsets_traffic_policy() -> None:
    _, dr = load("reviews_bookinfo.yaml")
    policy = {"connectionPool": {"http": {"http2MaxRequests": 100}}, "outlierDetection": {"consecutive5xxErrors": 3}}
    dr["spec"]["subsets"][0]["trafficPolicy"] = copy.deepcopy(policy)
    out = ensure_subsets(dr, request())
    assert out["spec"]["subsets"][-1] == {"name": "v3", "labels": {"version": "v3"}, "trafficPolicy": policy}
    assert restore_subsets(out, dr, request()) == dr


# --------------------------------------------------------------------------- sticky canary sessions


def _locked(vs: dict[str, Any], holder: str = "istio_canary_release/run-1") -> dict[str, Any]:
    from istio_canary.core.lock import with_lock

    return with_lock(vs, holder, {"virtualService": copy.deepcopy(vs), "destinationRule": None})


def _sticky_cookie_of(vs: dict[str, Any], req: ReleaseRequest) -> str:
    """The name=value the owned route's canary destination sets."""
    owned = vs["spec"]["http"][find_owned_route(vs, req)]
    canary = [e for e in owned["route"] if e["destination"]["subset"] == req.canary_subset]
    return canary[0]["headers"]["response"]["add"]["set-cookie"].split(";")[0]


def test_sticky_step_sets_the_cookie_on_the_canary_destination_and_routes_it_back() -> None:
    import re2

    vs, _ = load("reviews_bookinfo.yaml")
    req = request(sticky_sessions=True, sticky_max_age_seconds=600)
    locked = _locked(vs)

    out = apply_plan(locked, req, plan_for_step(req, 10))

    http = out["spec"]["http"]
    assert [r.get("name") for r in http] == ["jason", "reviews-canary-sticky", None]
    assert http[0] == vs["spec"]["http"][0]  # the user's route, verbatim and still first
    owned = http[2]
    stable, canary = owned["route"]
    assert stable == {"destination": {"host": "reviews", "subset": "v1"}, "weight": 90}  # no cookie on stable
    set_cookie = canary["headers"]["response"]["add"]["set-cookie"]
    name_value = set_cookie.split(";")[0]
    assert re2.fullmatch(r"istio-canary-reviews=v3-[0-9a-f]{12}", name_value)
    assert set_cookie == f"{name_value}; Max-Age=600; Path=/"
    sticky_route = http[1]
    assert sticky_route["route"] == [{"destination": {"host": "reviews", "subset": "v3"}}]
    (match,) = sticky_route["match"]
    regex = match["headers"]["cookie"]["regex"]
    for cookie in (name_value, f"session=abc; {name_value}", f"{name_value}; theme=dark", f"a=1;{name_value};b=2"):
        assert re2.fullmatch(regex, cookie), cookie
    for cookie in (f"x{name_value}", f"{name_value}0", "istio-canary-reviews=v3-000000000000", "canary=true"):
        assert not re2.fullmatch(regex, cookie), cookie
    state = routing_state(out, req)
    assert (state.canary_weight, state.sticky_route_present, state.match_route_present) == (10, True, False)


def test_sticky_cookie_is_new_per_release_and_the_same_on_every_write_of_one() -> None:
    vs, _ = load("reviews_bookinfo.yaml")
    req = request(sticky_sessions=True)
    first = _sticky_cookie_of(apply_plan(_locked(vs, "dag/run-1"), req, plan_for_step(req, 10)), req)
    again = _sticky_cookie_of(apply_plan(_locked(vs, "dag/run-1"), req, plan_for_step(req, 50)), req)
    other = _sticky_cookie_of(apply_plan(_locked(vs, "dag/run-2"), req, plan_for_step(req, 10)), req)
    assert first == again != other


def test_sticky_plans_are_idempotent_and_absolute() -> None:
    vs, _ = load("reviews_bookinfo.yaml")
    locked = _locked(vs)
    for strategy in ("weighted", "header", "cookie"):
        req = request(sticky_sessions=True, strategy=strategy)
        plans = [plan_for_step(req, w) for w in (10, 50, 100)]
        if req.uses_match_route:
            plans.append(RoutingPlan(0, True))
        for first in plans:
            after_first = apply_plan(locked, req, first)
            for second in plans:
                direct = apply_plan(locked, req, second)
                assert apply_plan(after_first, req, second) == direct, (strategy, first, second)
                assert apply_plan(direct, req, second) == direct
                assert routing_state(direct, req).sticky_route_present is second.sticky
            # Rollback from any step: the snapshot's routing exactly.
            assert restore_owned(after_first, vs, req)["spec"] == vs["spec"]


def test_sticky_sessions_hold_at_partial_steps_only() -> None:
    req = request(sticky_sessions=True, strategy="header")
    assert [plan_for_step(req, w).sticky for w in (10, 50, 100)] == [True, True, False]
    assert plan_for_step(request(), 10).sticky is False
    assert "sticky sessions on" in plan_for_step(req, 10).describe()
    with pytest.raises(ValidationError, match="canary_weight"):
        RoutingPlan(100, sticky=True)
    vs, _ = load("reviews_bookinfo.yaml")
    with pytest.raises(RoutingError, match="sticky_sessions"):
        apply_plan(vs, request(), RoutingPlan(10, sticky=True))


def test_header_strategy_targeted_phase_has_no_sticky_and_steps_have_both_routes() -> None:
    vs, _ = load("reviews_bookinfo.yaml")
    req = request(sticky_sessions=True, strategy="header")
    locked = _locked(vs)
    targeted = apply_plan(locked, req, RoutingPlan(0, True))
    assert [r.get("name") for r in targeted["spec"]["http"]] == ["jason", "reviews-canary", None]
    assert "headers" not in str(targeted["spec"]["http"][-1])
    step = apply_plan(targeted, req, plan_for_step(req, 10))
    assert [r.get("name") for r in step["spec"]["http"]] == ["jason", "reviews-canary-sticky", "reviews-canary", None]


def test_promotion_and_the_last_step_drop_the_sticky_route_and_cookie() -> None:
    vs, _ = load("reviews_bookinfo.yaml")
    req = request(sticky_sessions=True)
    locked = _locked(vs)
    mid = apply_plan(locked, req, plan_for_step(req, 50))
    expected_http = [vs["spec"]["http"][0], {"route": [{"destination": {"host": "reviews", "subset": "v3"}}]}]
    assert promote(mid, req)["spec"]["http"] == expected_http
    assert apply_plan(mid, req, plan_for_step(req, 100))["spec"]["http"] == expected_http
    assert promote(promote(mid, req), req) == promote(mid, req)


def test_sticky_on_a_named_route_ands_the_cookie_into_each_match_and_copies_its_policies() -> None:
    vs, _ = load("productpage_named.yaml")
    req = ReleaseRequest.from_params({"service": "productpage", "namespace": "bookinfo", "stable_version": "v1",
                                      "canary_version": "v2", "route_name": "api", "sticky_sessions": True})
    locked = _locked(vs)
    out = apply_plan(locked, req, plan_for_step(req, 10))
    owned_index = find_owned_route(out, req)
    owned, sticky_route = out["spec"]["http"][owned_index], out["spec"]["http"][owned_index - 1]
    assert sticky_route["name"] == "productpage-canary-sticky"
    assert len(sticky_route["match"]) == len(owned["match"])
    for theirs, ours in zip(owned["match"], sticky_route["match"], strict=True):
        assert {k: v for k, v in ours.items() if k != "headers"} == {k: v for k, v in theirs.items() if k != "headers"}
        assert "cookie" in ours["headers"]
    for key in ("timeout", "retries", "rewrite", "corsPolicy"):
        assert sticky_route.get(key) == owned.get(key)
    assert "fault" not in sticky_route and "mirror" not in sticky_route
    assert restore_owned(out, vs, req)["spec"] == vs["spec"]


def test_everything_a_sticky_release_writes_is_valid_for_istio_and_its_crd() -> None:
    from sandbox import schema

    crds = schema.load_schemas("/work/shared/istio" if Path("/work/shared/istio").exists() else None)
    vs, dr = load("reviews_bookinfo.yaml")
    for strategy in ("weighted", "header", "cookie"):
        req = request(sticky_sessions=True, strategy=strategy, sticky_cookie_name="app.sticky$v+1")
        ensured = ensure_subsets(dr, req)
        out = apply_plan(_locked(vs), req, plan_for_step(req, 10))
        validate_virtual_service(out, ensured)
        for version in ("v1", "v1beta1"):
            assert crds.validate("virtualservices", version, dict(out, apiVersion=f"networking.istio.io/{version}")) == []


def test_a_cookie_name_with_regex_characters_is_matched_literally() -> None:
    import re2

    vs, _ = load("reviews_bookinfo.yaml")
    req = request(sticky_sessions=True, sticky_cookie_name="a.b*c")
    out = apply_plan(_locked(vs), req, plan_for_step(req, 10))
    regex = out["spec"]["http"][1]["match"][0]["headers"]["cookie"]["regex"]
    name_value = _sticky_cookie_of(out, req)
    assert re2.fullmatch(regex, name_value)
    assert not re2.fullmatch(regex, name_value.replace("a.b*c", "aXbbbc"))


def test_a_non_sticky_release_leaves_a_users_route_named_like_the_sticky_route_alone() -> None:
    vs, _ = load("reviews_bookinfo.yaml")
    users = {"name": "reviews-canary-sticky", "match": [{"headers": {"x-beta": {"exact": "1"}}}],
             "route": [{"destination": {"host": "reviews", "subset": "v2"}}]}
    vs["spec"]["http"].insert(0, users)
    req = request()
    out = apply_plan(_locked(vs), req, plan_for_step(req, 10))
    assert out["spec"]["http"][0] == users
    assert promote(out, req)["spec"]["http"][0] == users


def test_a_users_route_named_like_the_sticky_route_is_never_removed() -> None:
    vs, _ = load("reviews_bookinfo.yaml")
    req = request(sticky_sessions=True)
    vs["spec"]["http"].insert(0, {"name": req.sticky_route_name, "match": [{"headers": {"x-beta": {"exact": "1"}}}],
                                  "route": [{"destination": {"host": "reviews", "subset": "v2"}}]})
    locked = _locked(vs)
    for edit in (lambda v: apply_plan(v, req, plan_for_step(req, 10)), lambda v: promote(v, req),
                 lambda v: restore_owned(v, vs, req)):
        with pytest.raises(RoutingError, match="existed before this release took its lock"):
            edit(locked)


def test_a_set_cookie_already_on_the_owned_routes_destination_is_refused_not_overwritten() -> None:
    vs, _ = load("reviews_bookinfo.yaml")
    vs["spec"]["http"][1]["route"][0]["headers"] = {"response": {"add": {"Set-Cookie": "lang=en"}}}
    req = request(sticky_sessions=True)
    with pytest.raises(RoutingError, match="already adds a set-cookie"):
        apply_plan(_locked(vs), req, plan_for_step(req, 10))


def test_the_canary_destinations_own_response_headers_stay_beside_the_cookie() -> None:
    vs, _ = load("reviews_bookinfo.yaml")
    headers = {"request": {"set": {"x-team": "books"}}, "response": {"add": {"x-served-by": "reviews"}}}
    vs["spec"]["http"][1]["route"][0]["headers"] = copy.deepcopy(headers)
    req = request(sticky_sessions=True)
    locked = _locked(vs)
    out = apply_plan(locked, req, plan_for_step(req, 10))
    stable, canary = out["spec"]["http"][-1]["route"]
    assert stable["headers"] == headers
    assert canary["headers"]["response"]["add"]["x-served-by"] == "reviews"
    assert canary["headers"]["request"] == headers["request"]
    assert "set-cookie" in canary["headers"]["response"]["add"]
    # Back to 0% (or a targeted phase): the cookie goes, the copied headers stay as they were.
    zero = apply_plan(out, req, RoutingPlan(0))
    assert zero["spec"]["http"][-1]["route"] == [{"destination": {"host": "reviews", "subset": "v1"},
                                                  "headers": headers}]
    assert restore_owned(out, vs, req)["spec"] == vs["spec"]
