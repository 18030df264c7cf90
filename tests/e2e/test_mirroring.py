"""The mirror phase end to end: `airflow dags test` releases with `mirror_percent` against the
sandbox (real Prometheus, real Kubernetes client writes; the healthy release on the real
kube-apiserver too). While the owned route mirrors, clients get only stable's responses and
the judge reads the canary's copies; a bad canary is rolled back before any client reached it;
a service whose writes the mirror would run twice is refused before any write."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from istio_canary.core.lock import lock_of, outcome_of
from istio_canary.core.mirror import mirrored_percent
from istio_canary.core.request import ReleaseRequest
from istio_canary.core.routing import find_owned_route, routing_state
from sandbox.client import ISTIO_GROUP, ISTIO_VERSION
from tests.conftest import BOTH_APIS
from tests.helpers import VirtualServicePoller, dr_of, vs_of

pytestmark = pytest.mark.e2e

NS = "bookinfo"
RELEASE = {"service": "reviews", "namespace": NS, "stable_version": "v1", "canary_version": "v2"}
FAST = {"bake_seconds": 4, "check_interval_seconds": 1, "min_requests": 20, "plan_bake": False}
# The owned route takes only GETs (the sandbox's clients send GETs): safe to mirror as it is.
READS = {"name": "reads", "match": [{"method": {"exact": "GET"}}],
         "route": [{"destination": {"host": "reviews", "subset": "v1"}}]}


class MirrorTracker(VirtualServicePoller):
    """Instants with the release's mirror on the owned route, and every canary weight the owned
    route carried."""

    def __init__(self, mesh: Any, request: ReleaseRequest) -> None:
        super().__init__(mesh, request)
        self.mirrored: list[tuple[float, float, int]] = []  # (at, mirror percent, canary weight)
        self.weights: set[int] = set()

    def observe(self, vs: dict[str, Any]) -> None:
        state = routing_state(vs, self.request)
        percent = mirrored_percent(vs["spec"]["http"][find_owned_route(vs, self.request)], self.request)
        self.weights.add(state.canary_weight)
        if percent:
            self.mirrored.append((time.time(), percent, state.canary_weight))


def _own_get_route(mesh: Any) -> None:
    vs = vs_of(mesh)
    vs["spec"]["http"] = [READS]
    mesh.api.replace_namespaced_custom_object(ISTIO_GROUP, ISTIO_VERSION, NS, "virtualservices", "reviews", vs)


def _sums(mesh: Any, promql: str, at: float, *labels: str) -> dict[tuple[str, ...], float]:
    return {tuple(r["metric"].get(k, "") for k in labels): float(r["value"][1]) for r in mesh.prom_result(promql, at)}


def _delta(mesh: Any, promql: str, start: float, end: float, *labels: str) -> dict[tuple[str, ...], float]:
    before, after = _sums(mesh, promql, start, *labels), _sums(mesh, promql, end, *labels)
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


@BOTH_APIS
def test_healthy_canary_is_judged_on_mirrored_traffic_then_released_and_promoted(
    mesh: Any, analyzed_release: Any
) -> None:
    _own_get_route(mesh)
    params = {**RELEASE, **FAST, "route_name": "reads", "mirror_percent": 50, "bake_seconds": 8}
    with MirrorTracker(mesh, ReleaseRequest.from_params(params)) as tracker:
        result = analyzed_release(params)
    assert result.state == "success", result.output[-5000:]
    # istioctl analyzed the mirror state too (no new Error-level message, or the call failed).
    assert len(tracker.mirrored) >= 10, "never saw the mirror phase"
    assert {(percent, weight) for _, percent, weight in tracker.mirrored} == {(50.0, 0)}
    assert tracker.weights >= {0, 10, 50, 100}
    # Prometheus samples strictly inside the phase (scrapes every 1 s).
    start, end = tracker.mirrored[0][0] + 1.5, tracker.mirrored[-1][0] - 0.2
    assert end - start >= 4
    clients = _delta(mesh, f'sum by (version) (sandbox_requests_total{{service="reviews",namespace="{NS}"}})',
                     start, end, "version")
    assert set(clients) == {("v1",)}, clients  # clients got only stable's responses
    istio = _delta(mesh, 'sum by (reporter, destination_version) (istio_requests_total'
                         '{destination_service_name="reviews"})', start, end, "reporter", "destination_version")
    assert set(istio) == {("destination", "v1"), ("destination", "v2")}, istio  # copies: destination-reported only
    assert 0.3 <= istio[("destination", "v2")] / istio[("destination", "v1")] <= 0.7, istio
    out = result.output
    assert "set route: 0% canary, mirror 50% to canary: wrote VirtualService bookinfo/reviews" in out
    assert re.search(r"^\+\s+mirror:\n\+\s+host: reviews\n\+\s+subset: v2$", out, re.M), out[-3000:]
    report = out[out.index("release bookinfo/reviews v1 -> v2: PROMOTED"):]
    assert re.search(r"^mirror\s+mirror 50%\s+\d+\s+\S+\s+\S+\s+pass", report, re.M), report[:800]
    vs = vs_of(mesh)
    owned = vs["spec"]["http"][0]
    assert "mirror" not in owned and "mirrorPercentage" not in owned
    assert owned["match"] == READS["match"] and owned["route"] == [{"destination": {"host": "reviews", "subset": "v2"}}]
    assert lock_of(vs) is None and outcome_of(vs).outcome == "promoted"


def test_unhealthy_canary_is_caught_in_the_mirror_phase_before_any_client_reaches_it(
    mesh: Any, run_release: Any
) -> None:
    _own_get_route(mesh)
    mesh.set_behaviour("v1", error_rate=0.005)
    mesh.set_behaviour("v2", error_rate=0.05)
    before, before_dr = vs_of(mesh), dr_of(mesh)
    params = {**RELEASE, **FAST, "route_name": "reads", "mirror_percent": 100, "bake_seconds": 60}
    with MirrorTracker(mesh, ReleaseRequest.from_params(params)) as tracker:
        result = run_release(params)
    assert result.state == "failed", result.output[-5000:]
    assert tracker.mirrored, "never saw the mirror phase"
    assert tracker.weights == {0}  # the route never sent a client's request to the canary
    out = result.output
    assert "stopped EARLY" in out
    assert "ROLLED_BACK: mirror: fail" in out
    for later in ("targeted.set_route", "step_10.set_route"):
        assert f"task_id='{later}'" not in out
    vs = vs_of(mesh)
    assert vs["spec"] == before["spec"] and dr_of(mesh)["spec"] == before_dr["spec"]
    assert lock_of(vs) is None and outcome_of(vs).outcome == "rolled_back"


def test_mirroring_a_route_that_takes_writes_is_refused_before_any_write(mesh: Any, run_release: Any) -> None:
    before = (vs_of(mesh)["metadata"]["resourceVersion"], dr_of(mesh)["metadata"]["resourceVersion"])
    result = run_release({**RELEASE, **FAST, "mirror_percent": 20}, timeout=240)
    assert result.state == "failed", result.output[-3000:]
    out = result.output
    assert "release refused before any write" in out
    assert "spec.http[0].match: mirror_percent=20 would copy requests of any method" in out
    assert "set mirror_duplicate_writes_ok to true" in out
    assert (vs_of(mesh)["metadata"]["resourceVersion"], dr_of(mesh)["metadata"]["resourceVersion"]) == before
    assert "task_id='destination_rule'" not in out  # refused in preflight: the subset never written
