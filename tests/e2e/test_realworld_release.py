"""Real-world configurations through the whole release DAG (`airflow dags test`), not only the
operators: a route shared with a version the release does not own, someone's header route and
a stable subset with its own traffic policy are released without touching what is not the
release's; a route named like the canary match route is refused before any write."""

from __future__ import annotations

import copy
import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from istio_canary.core.lock import lock_of, outcome_of
from tests.e2e.conftest import AIRFLOW, DAG_ID, RunResult, sandbox_connections
from tools.live_airflow import airflow_env

pytestmark = pytest.mark.e2e

NS = "bookinfo"
GROUP = "networking.istio.io"
RELEASE = {"service": "reviews", "namespace": NS, "stable_version": "v1", "canary_version": "v2",
           "bake_seconds": 4, "check_interval_seconds": 1, "min_requests": 20,
           # Seconds-long bakes on a small sandbox: the traffic plan would stretch or refuse them.
           "plan_bake": False}
# v3 is an older version that keeps a fixed 20% share: not the release's to move.
WORLD = {"services": [{"name": "reviews", "namespace": NS, "rps": 200, "stable": "v1", "versions": {
    "v1": {"error_rate": 0.0}, "v2": {"error_rate": 0.0}, "v3": {"error_rate": 0.0}}}]}
JASON = {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}],
         "route": [{"destination": {"host": "reviews", "subset": "v3"}}]}
STABLE_POLICY = {"outlierDetection": {"consecutive5xxErrors": 7, "interval": "15s", "baseEjectionTime": "30s"}}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, airflow_home: Any) -> Iterator[Any]:
    from tests.conftest import start_sandbox, stop_sandbox

    state_dir = tmp_path_factory.mktemp("realworld-sandbox")
    sandbox = start_sandbox(state_dir, WORLD)
    sandbox.api = sandbox.istio
    try:
        yield sandbox
    finally:
        stop_sandbox(state_dir)


def objects(world: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    vs = world.api.get_namespaced_custom_object(GROUP, "v1", NS, "virtualservices", "reviews")
    dr = world.api.get_namespaced_custom_object(GROUP, "v1", NS, "destinationrules", "reviews")
    return vs, dr


def configure(world: Any, http: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The user's configuration: these routes, and subsets v1 (with its own policy) and v3."""
    world.reset()
    vs, dr = objects(world)
    vs["spec"]["http"] = http
    dr["spec"]["subsets"] = [{"name": "v1", "labels": {"version": "v1"}, "trafficPolicy": STABLE_POLICY},
                             {"name": "v3", "labels": {"version": "v3"}}]
    world.api.replace_namespaced_custom_object(GROUP, "v1", NS, "virtualservices", "reviews", vs)
    world.api.replace_namespaced_custom_object(GROUP, "v1", NS, "destinationrules", "reviews", dr)
    return objects(world)


def run(world: Any, airflow_home: Any, conf: dict[str, Any]) -> RunResult:
    env = airflow_env(airflow_home, sandbox_connections(world))
    result = subprocess.run([AIRFLOW, "dags", "test", DAG_ID, "-c", json.dumps(conf)], env=env,
                            capture_output=True, text=True, timeout=420)
    return RunResult(result.returncode, result.stdout + result.stderr)


def writes_since(world: Any, since: float) -> list[str]:
    records = requests.get(f"{world.api_url}/sandbox/audit", timeout=10).json()
    return [f"{r['verb']} {r['resource']} {r.get('name')}" for r in records
            if r["time"] >= since and r["verb"] in ("create", "update", "patch", "delete")]


def test_only_the_stable_share_moves_and_everything_else_is_kept(world: Any, airflow_home: Any) -> None:
    default = {"name": "default", "route": [
        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 80},
        {"destination": {"host": "reviews", "subset": "v3"}, "weight": 20}]}
    before_vs, before_dr = configure(world, [copy.deepcopy(JASON), default])

    result = run(world, airflow_home, RELEASE)

    assert result.state == "success", result.output[-5000:]
    vs, dr = objects(world)
    assert vs["spec"]["http"][0] == JASON  # someone's header route: verbatim, still first
    assert vs["spec"]["http"][1] == {"name": "default", "route": [
        {"destination": {"host": "reviews", "subset": "v2"}, "weight": 80},
        {"destination": {"host": "reviews", "subset": "v3"}, "weight": 20}]}
    assert "weight: 72" in result.output and "weight: 8" in result.output  # step 10 moved 10% of v1's 80
    assert lock_of(vs) is None and outcome_of(vs).outcome == "promoted"
    # The canary subset is judged (and stays) under the stable subset's policy; v1 and v3 untouched.
    assert dr["spec"]["subsets"] == [*before_dr["spec"]["subsets"],
                                     {"name": "v2", "labels": {"version": "v2"}, "trafficPolicy": STABLE_POLICY}]
    assert {k: v for k, v in dr["spec"].items() if k != "subsets"} == \
        {k: v for k, v in before_dr["spec"].items() if k != "subsets"}
    assert before_vs["spec"]["hosts"] == vs["spec"]["hosts"]


def test_a_route_named_like_the_canary_match_route_is_refused_before_any_write(
    world: Any, airflow_home: Any
) -> None:
    beta = {"name": "reviews-canary", "match": [{"headers": {"x-beta": {"exact": "1"}}}],
            "route": [{"destination": {"host": "reviews", "subset": "v3"}}]}
    before_vs, before_dr = configure(world, [beta, {"name": "default", "route": [
        {"destination": {"host": "reviews", "subset": "v1"}}]}])
    since = time.time()

    result = run(world, airflow_home, {**RELEASE, "strategy": "header"})

    assert result.state == "failed", result.output[-5000:]
    assert "release refused before any write" in result.output
    assert "VirtualService bookinfo/reviews spec.http[0].name" in result.output
    assert "set canary_route_name to a name no route of this VirtualService uses" in result.output
    assert writes_since(world, since) == []
    vs, dr = objects(world)
    assert (vs["spec"], dr["spec"]) == (before_vs["spec"], before_dr["spec"])
    assert lock_of(vs) is None


def test_an_ingress_virtual_service_moved_with_the_release_is_promoted_and_rolled_back_with_it(
    world: Any, airflow_home: Any
) -> None:
    configure(world, [{"name": "default", "route": [{"destination": {"host": "reviews", "subset": "v1"}}]}])
    static = {"name": "static", "match": [{"uri": {"prefix": "/static"}}],
              "route": [{"destination": {"host": "assets.bookinfo.svc.cluster.local"}}]}
    ingress = {"apiVersion": f"{GROUP}/v1", "kind": "VirtualService",
               "metadata": {"name": "reviews-ingress", "namespace": NS},
               "spec": {"hosts": ["reviews.example.com"], "gateways": ["bookinfo/bookinfo-gateway"],
                        "http": [static, {"name": "reviews", "route": [
                            {"destination": {"host": "reviews.bookinfo.svc.cluster.local", "subset": "v1"}}]}]}}
    world.api.create_namespaced_custom_object(GROUP, "v1", NS, "virtualservices", ingress)

    def ingress_now() -> dict[str, Any]:
        return world.api.get_namespaced_custom_object(GROUP, "v1", NS, "virtualservices", "reviews-ingress")

    alone = run(world, airflow_home, RELEASE)
    assert alone.state == "failed" and "add 'reviews-ingress' to virtual_services" in alone.output

    result = run(world, airflow_home, {**RELEASE, "virtual_services": ["reviews-ingress"]})

    assert result.state == "success", result.output[-5000:]
    moved = ingress_now()
    assert moved["spec"]["http"] == [static, {"name": "reviews", "route": [
        {"destination": {"host": "reviews.bookinfo.svc.cluster.local", "subset": "v2"}}]}]
    assert lock_of(moved) is None and outcome_of(moved).outcome == "promoted"
    assert "set route: 10% canary: wrote VirtualService bookinfo/reviews-ingress" in result.output

    # A failing canary: both VirtualServices go back to v1.
    configure(world, [{"name": "default", "route": [{"destination": {"host": "reviews", "subset": "v1"}}]}])
    world.api.create_namespaced_custom_object(GROUP, "v1", NS, "virtualservices", ingress)
    before = ingress_now()
    world.set_behaviour("v2", error_rate=0.3)
    failed = run(world, airflow_home, {**RELEASE, "virtual_services": ["reviews-ingress"], "bake_seconds": 20})
    assert failed.state == "failed", failed.output[-5000:]
    assert ingress_now()["spec"] == before["spec"]
    assert outcome_of(ingress_now()).outcome == "rolled_back"


def test_versions_in_the_canonical_revision_label_are_judged_by_that_metric_label(
    world: Any, airflow_home: Any
) -> None:
    label = "service.istio.io/canonical-revision"
    world.reset()
    dr = objects(world)[1]
    dr["spec"]["subsets"] = [{"name": "v1", "labels": {label: "v1"}}]
    world.api.replace_namespaced_custom_object(GROUP, "v1", NS, "destinationrules", "reviews", dr)

    result = run(world, airflow_home, {**RELEASE, "version_label": label})

    # Promoted: every step's analysis found both versions' traffic (no data never passes),
    # under Istio's canonical revision label.
    assert result.state == "success", result.output[-5000:]
    assert "sum by (destination_canonical_revision, response_code)" in result.output
    assert "destination_version" not in result.output
    _, dr = objects(world)
    assert dr["spec"]["subsets"][-1] == {"name": "v2", "labels": {label: "v2"}}
    assert outcome_of(objects(world)[0]).outcome == "promoted"
