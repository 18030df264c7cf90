"""The mirror phase's pure parts: its params, what may be mirrored, and the route edits."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from istio_canary.core.destination_rule import ensure_subsets
from istio_canary.core.istio_rules import validate_virtual_service
from istio_canary.core.lock import with_lock
from istio_canary.core.mirror import (
    MirrorConfig,
    mirror_problems,
    mirrored_percent,
    only_safe_methods,
    with_mirror,
    without_release_mirror,
)
from istio_canary.core.preflight import virtual_service_refusals
from istio_canary.core.request import ReleaseRequest
from istio_canary.core.routing import (
    RoutingPlan,
    apply_plan,
    plan_for_step,
    promote,
    restore_owned,
    routing_state,
    written_routes,
)
from istio_canary.core.validation import ValidationError

REQUEST = ReleaseRequest.from_params(
    {"service": "reviews", "namespace": "bookinfo", "stable_version": "v1", "canary_version": "v2"})


def vs_with(route: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "bookinfo", "resourceVersion": "1"},
        "spec": {"hosts": ["reviews"], "http": [
            {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}],
             "route": [{"destination": {"host": "reviews", "subset": "v3"}}]},
            route,
        ]},
    }


def dr() -> dict[str, Any]:
    rule = {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "reviews", "namespace": "bookinfo"},
            "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                                     {"name": "v3", "labels": {"version": "v3"}}]}}
    return ensure_subsets(rule, REQUEST)


CATCH_ALL = {"route": [{"destination": {"host": "reviews.bookinfo.svc.cluster.local", "subset": "v1",
                                        "port": {"number": 9080}}}], "timeout": "5s"}


# --------------------------------------------------------------------------- params


@pytest.mark.parametrize(("params", "expected"), [
    ({}, MirrorConfig(0, False)),
    ({"mirror_percent": 50}, MirrorConfig(50, False)),
    ({"mirror_percent": "12.5", "mirror_duplicate_writes_ok": "true"}, MirrorConfig(12.5, True)),
    ({"mirror_percent": None, "mirror_duplicate_writes_ok": None}, MirrorConfig(0, False)),
])
def test_params_are_read_from_the_form_or_the_cli(params: dict[str, Any], expected: MirrorConfig) -> None:
    assert MirrorConfig.from_params(params) == expected
    assert MirrorConfig.from_params(expected.to_params()) == expected


@pytest.mark.parametrize(("params", "field"), [
    ({"mirror_percent": 150}, "mirror_percent"),
    ({"mirror_percent": -1}, "mirror_percent"),
    ({"mirror_percent": "half"}, "mirror_percent"),
    ({"mirror_percent": True}, "mirror_percent"),
    ({"mirror_percent": float("nan")}, "mirror_percent"),
    ({"mirror_duplicate_writes_ok": "maybe"}, "mirror_duplicate_writes_ok"),
])
def test_bad_params_are_refused_naming_the_field_and_value(params: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        MirrorConfig.from_params(params)
    assert caught.value.field == field
    assert str(params[field]) in str(caught.value)


# --------------------------------------------------------------------------- what may be mirrored


@pytest.mark.parametrize(("matches", "safe"), [
    (None, False),  # a catch-all takes POSTs too
    ([{"method": {"exact": "GET"}}], True),
    ([{"method": {"exact": "GET"}, "uri": {"prefix": "/api"}}, {"method": {"exact": "HEAD"}}], True),
    ([{"method": {"regex": "^(GET|HEAD|OPTIONS)$"}}], True),
    ([{"method": {"regex": "GET|POST"}}], False),
    ([{"method": {"regex": "G.T"}}], False),  # cannot tell for sure: unsafe
    ([{"method": {"prefix": "GET"}}], False),
    ([{"method": {"exact": "GET"}}, {"uri": {"prefix": "/"}}], False),  # the second match takes any method
    ([{"method": {"exact": "get"}}], False),  # Envoy matches :method case-sensitively
])
def test_only_routes_restricted_to_safe_methods_count_as_safe(matches: Any, safe: bool) -> None:
    route = {"route": []} if matches is None else {"match": matches, "route": []}
    assert only_safe_methods(route) is safe


def test_a_non_idempotent_route_is_refused_naming_the_field_the_value_and_the_fix() -> None:
    refusals = virtual_service_refusals(vs_with(CATCH_ALL), dr(), REQUEST, MirrorConfig(50))
    assert len(refusals) == 1
    text = refusals[0].describe()
    assert refusals[0].field == "spec.http[1].match"
    assert "mirror_percent=50" in text and "runs twice" in text
    assert "mirror_duplicate_writes_ok" in text  # the fix names the param
    assert virtual_service_refusals(vs_with(CATCH_ALL), dr(), REQUEST, MirrorConfig(50, True)) == []
    assert virtual_service_refusals(vs_with(CATCH_ALL), dr(), REQUEST) == []  # no mirror phase: nothing to refuse


def test_a_route_that_already_mirrors_is_refused_when_the_release_would_mirror() -> None:
    route = {**CATCH_ALL, "mirror": {"host": "shadow-store"}, "mirrorPercentage": {"value": 5.0}}
    [refusal] = virtual_service_refusals(vs_with(route), dr(), REQUEST, MirrorConfig(10, True))
    assert refusal.field == "spec.http[1].mirror" and "already mirrors" in refusal.problem
    # Without a mirror phase a user's mirror elsewhere is theirs, kept through every step.
    assert virtual_service_refusals(vs_with(route), dr(), REQUEST) == []
    stepped = apply_plan(vs_with(route), REQUEST, plan_for_step(REQUEST, 50))
    assert stepped["spec"]["http"][1]["mirror"] == {"host": "shadow-store"}
    assert promote(stepped, REQUEST)["spec"]["http"][1]["mirrorPercentage"] == {"value": 5.0}


def test_a_users_mirror_to_the_canary_subset_is_refused_even_without_a_mirror_phase() -> None:
    route = {**CATCH_ALL, "mirrors": [], "mirror": {"host": "reviews", "subset": "v2"}}
    [refusal] = virtual_service_refusals(vs_with(route), dr(), REQUEST)
    assert "already mirrors to the canary subset 'v2'" in refusal.problem
    assert mirror_problems(route, REQUEST, MirrorConfig(20, True))[0][0] == "mirror"


# --------------------------------------------------------------------------- route edits


def test_the_mirror_phase_copies_to_the_canary_as_the_stable_destination_is_spelled() -> None:
    vs = vs_with(CATCH_ALL)
    out = apply_plan(vs, REQUEST, RoutingPlan(canary_weight=0, mirror_percent=50))
    owned = out["spec"]["http"][1]
    assert owned["mirror"] == {"host": "reviews.bookinfo.svc.cluster.local", "subset": "v2", "port": {"number": 9080}}
    assert owned["mirrorPercentage"] == {"value": 50.0}
    assert owned["route"] == CATCH_ALL["route"] and owned["timeout"] == "5s"  # clients still go to stable only
    assert out["spec"]["http"][0] == vs["spec"]["http"][0] and vs == vs_with(CATCH_ALL)  # input untouched
    assert routing_state(out, REQUEST).canary_weight == 0
    assert mirrored_percent(owned, REQUEST) == 50.0
    # Schema and Istio's rules: the mirror names a subset the DestinationRule has.
    validate_virtual_service(out, dr(), written_routes=written_routes(out, REQUEST))
    assert apply_plan(out, REQUEST, RoutingPlan(canary_weight=0, mirror_percent=50)) == out  # idempotent


@pytest.mark.parametrize("strategy", ["weighted", "header"])
def test_the_next_phase_promotion_and_rollback_leave_no_mirror(strategy: str) -> None:
    request = ReleaseRequest.from_params({**REQUEST.to_params(), "strategy": strategy})
    before = vs_with(CATCH_ALL)
    locked = with_lock(before, "dag/run", {"virtualService": copy.deepcopy(before)})
    mirrored = apply_plan(locked, request, RoutingPlan(canary_weight=0, mirror_percent=100))
    targeted = apply_plan(mirrored, request, RoutingPlan(canary_weight=0, match_route=request.uses_match_route))
    step = apply_plan(mirrored, request, plan_for_step(request, 10))
    for out in (targeted, step, promote(mirrored, request)):
        assert all("mirror" not in r and "mirrorPercentage" not in r for r in out["spec"]["http"])
    restored = restore_owned(mirrored, before, request)
    assert restored["spec"] == before["spec"]


def test_only_the_release_mirror_is_removed() -> None:
    other = {**CATCH_ALL, "mirror": {"host": "reviews", "subset": "v3"}}
    assert without_release_mirror(other, REQUEST) == other
    ours = with_mirror(CATCH_ALL, REQUEST, 5, {"host": "reviews"})
    assert ours["mirror"] == {"host": "reviews", "subset": "v2"}
    assert without_release_mirror(ours, REQUEST) == CATCH_ALL
    # Istio's default when mirrorPercentage is absent: every request.
    assert mirrored_percent({"mirror": {"host": "reviews", "subset": "v2"}}, REQUEST) == 100.0
    with pytest.raises(ValidationError, match="mirror_percent"):
        with_mirror(CATCH_ALL, REQUEST, 0, {"host": "reviews"})


def test_plan_describes_the_mirror() -> None:
    assert RoutingPlan(canary_weight=0, mirror_percent=12.5).describe() == "set route: 0% canary, mirror 12.5% to canary"
    assert RoutingPlan(canary_weight=10).describe() == "set route: 10% canary"
