"""Sticky canary sessions end to end: `airflow dags test` of a release with sticky_sessions
against the sandbox, whose returning users keep the cookie the canary's responses set, with
`istioctl analyze` on every state the release writes."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
import re2

from istio_canary.core.lock import lock_of, outcome_of
from istio_canary.core.request import ReleaseRequest
from tests.conftest import BOTH_APIS
from tests.helpers import VirtualServicePoller, vs_of

pytestmark = pytest.mark.e2e

NS = "bookinfo"
RELEASE = {"service": "reviews", "namespace": NS, "stable_version": "v1", "canary_version": "v2",
           "sticky_sessions": True, "sticky_max_age_seconds": 3600}
FAST = {"bake_seconds": 6, "check_interval_seconds": 1, "min_requests": 20, "plan_bake": False}
CLIENTS = 200
# A route of the user's ahead of the catch-all: the release must leave it byte-identical.
JASON = {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}],
         "route": [{"destination": {"host": "reviews", "subset": "v1"}}], "timeout": "3s"}


class StickyTracker(VirtualServicePoller):
    """Keeps each distinct state of the VirtualService that has the sticky route."""

    def __init__(self, mesh: Any, request: ReleaseRequest) -> None:
        super().__init__(mesh, request)
        self.states: dict[str, dict[str, Any]] = {}  # resourceVersion -> VirtualService

    def observe(self, vs: dict[str, Any]) -> None:
        if self.request.sticky_route_name in [r.get("name") for r in vs["spec"].get("http", [])]:
            self.states.setdefault(vs["metadata"]["resourceVersion"], vs)


def _with_jason(mesh: Any) -> dict[str, Any]:
    """Put the user's jason route in front of the seeded catch-all; returns the VirtualService."""
    vs = vs_of(mesh)
    vs["spec"]["http"].insert(0, copy.deepcopy(JASON))
    return mesh.istio.replace_namespaced_custom_object(
        "networking.istio.io", "v1", NS, "virtualservices", "reviews", vs)


def _check_sticky_state(vs: dict[str, Any], request: ReleaseRequest) -> str:
    """The state has the sticky route right before the owned route, reading the cookie the
    owned route's canary destination (and only it) sets; returns that cookie."""
    http = vs["spec"]["http"]
    assert http[0] == JASON
    assert [r.get("name") for r in http] == ["jason", request.sticky_route_name, None]
    sticky, owned = http[1], http[2]
    assert sticky["route"] == [{"destination": {"host": "reviews", "subset": "v2"}}]
    stable, canary = owned["route"]
    assert stable["destination"]["subset"] == "v1" and "headers" not in stable
    assert "headers" not in sticky
    set_cookie = canary["headers"]["response"]["add"]["set-cookie"]
    cookie = set_cookie.split(";")[0]
    assert set_cookie == f"{cookie}; Max-Age=3600; Path=/"
    assert cookie.startswith("istio-canary-reviews=v2-")
    assert re2.fullmatch(sticky["match"][0]["headers"]["cookie"]["regex"], f"session=abc123; {cookie}")
    return cookie


def _clients(mesh: Any) -> dict[str, Any]:
    (report,) = [r for r in mesh.clients() if r["service"] == "reviews" and r["namespace"] == NS]
    return report


@BOTH_APIS
def test_clients_the_canary_served_stay_on_it_until_promotion(mesh: Any, analyzed_release: Any) -> None:
    before = _with_jason(mesh)
    mesh.set_behaviour(clients=CLIENTS)
    request = ReleaseRequest.from_params({**RELEASE, **FAST})
    with StickyTracker(mesh, request) as tracker:
        result = analyzed_release({**RELEASE, **FAST})
    assert result.state == "success", result.output[-5000:]
    # istioctl analyzed every step (no error-level message) and saw the sticky route at 10 and 50.
    sticky_seen = [r for r in analyzed_release.analyzer.records
                   if any(name == request.sticky_route_name for name, _ in r.weights)]
    assert len(sticky_seen) >= 2, analyzed_release.analyzer.describe()
    assert analyzed_release.analyzer.observed_weights("v2") >= {10, 50, 100}
    canary_weights = set()
    cookies = set()
    for vs in tracker.states.values():
        cookies.add(_check_sticky_state(vs, request))
        canary_weights.add(vs["spec"]["http"][2]["route"][1]["weight"])
    assert canary_weights == {10, 50} and len(cookies) == 1, (canary_weights, cookies)
    assert "sticky sessions on" in result.output

    report = _clients(mesh)
    on_canary = [c for c in report["per_client"] if c["by_version"].get("v2")]
    assert len(on_canary) >= CLIENTS // 4, report["by_route"]
    # Once served by v2, a client never went back to v1: not at 10%, 50%, 100% or after promotion.
    flipped = [c for c in on_canary if c["left"].get("v2")]
    assert not flipped, flipped[:3]
    assert report["by_route"][request.sticky_route_name]["v2"] > 0
    # The canary set this release's cookie, and no other; a client first sent to v2 at 100 %
    # (no sticky route any more) gets none, and is on v2 anyway.
    with_cookie = [c for c in on_canary if c["cookies"].get("istio-canary-reviews")]
    assert len(with_cookie) >= CLIENTS // 10, report["by_route"]
    assert {c["cookies"]["istio-canary-reviews"] for c in with_cookie} == {cookie.split("=", 1)[1]
                                                                           for cookie in cookies}

    vs = vs_of(mesh)
    assert vs["spec"]["http"] == [JASON, {"route": [{"destination": {"host": "reviews", "subset": "v2"}}]}]
    assert {k: v for k, v in vs["spec"].items() if k != "http"} == {
        k: v for k, v in before["spec"].items() if k != "http"}
    assert lock_of(vs) is None and outcome_of(vs).outcome == "promoted"


@BOTH_APIS
def test_a_failing_sticky_canary_is_rolled_back_and_its_routes_are_gone(mesh: Any, analyzed_release: Any) -> None:
    before = _with_jason(mesh)
    mesh.set_behaviour(clients=CLIENTS)
    mesh.set_behaviour("v2", error_rate=0.3)
    request = ReleaseRequest.from_params({**RELEASE, **FAST})
    with StickyTracker(mesh, request) as tracker:
        result = analyzed_release({**RELEASE, **FAST, "bake_seconds": 30})
    assert result.state == "failed", result.output[-5000:]
    assert "ROLLED_BACK: step_10: fail" in result.output
    assert tracker.states, "never saw the sticky route during step 10"
    for vs in tracker.states.values():
        _check_sticky_state(vs, request)
    during = _clients(mesh)
    sticky = {c["client"]: c for c in during["per_client"] if c["cookies"]}
    assert sticky

    vs = vs_of(mesh)
    assert vs["spec"] == before["spec"]  # jason's route and the catch-all exactly as they were
    assert lock_of(vs) is None and outcome_of(vs).outcome == "rolled_back"
    # The clients keep the cookie, but no route reads it: they are back on v1.
    back: list[dict[str, Any]] = []
    for _ in range(100):  # until a few sticky clients came back (200 rps: within seconds)
        after = _clients(mesh)["per_client"]
        back = [after[i] for i in sticky if after[i]["requests"] > sticky[i]["requests"] + 2]
        if len(back) >= 5:
            break
        time.sleep(0.2)
    assert len(back) >= 5, "sticky clients did not come back"
    for c in back:
        assert c["cookies"] == sticky[c["client"]]["cookies"]
        assert c["by_version"]["v1"] > sticky[c["client"]]["by_version"].get("v1", 0)
