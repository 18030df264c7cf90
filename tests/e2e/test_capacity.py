"""The capacity check before each weight increase, end to end (`airflow dags test`, real
Prometheus): a canary Deployment too small for the next step is refused before the route
reaches that weight and the release rolls back; one an HPA could grow waits, then is refused
with the HPA's fix; a canary whose replicas get Ready while the step waits goes on and is
promoted. The default world (1 replica each) is promoted with the check on in
test_release_dag.py."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from istio_canary.core.lock import outcome_of
from sandbox.client import SandboxInfo, stop_sandbox
from tests.conftest import start_sandbox
from tests.helpers import vs_of

pytestmark = pytest.mark.e2e

NS = "bookinfo"
FAST = {"namespace": NS, "stable_version": "v1", "canary_version": "v2", "bake_seconds": 4,
        "check_interval_seconds": 1, "min_requests": 20, "plan_bake": False}
# reviews: stable 4 replicas, canary 1, no HPA: 10% needs 1, 50% needs 2.
# details: the same, but an HPA may take the canary to 3: 50% waits for it.
WORLD = {"services": [
    {"name": "reviews", "namespace": NS, "rps": 100, "versions": {"v1": {"replicas": 4}, "v2": {"replicas": 1}}},
    {"name": "details", "namespace": NS, "rps": 100,
     "versions": {"v1": {"replicas": 4}, "v2": {"replicas": 1, "hpa_max_replicas": 3}}},
]}


@pytest.fixture(scope="module")
def small_canaries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxInfo]:
    state_dir = tmp_path_factory.mktemp("capacity-sandbox")
    try:
        yield start_sandbox(state_dir, WORLD)
    finally:
        stop_sandbox(state_dir)


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> SandboxInfo:
    """This module's world on the sandbox's API server, or (param kube-apiserver) the default
    world on the real kube-apiserver."""
    if getattr(request, "param", None) == "kube-apiserver":
        return request.getfixturevalue("real_sandbox")
    return request.getfixturevalue("small_canaries")


@pytest.fixture
def world(cluster: SandboxInfo) -> Iterator[SandboxInfo]:
    cluster.fault("clear")
    cluster.reset()
    cluster.api = cluster.istio
    yield cluster
    cluster.reset()


def test_canary_too_small_for_the_next_step_is_refused_before_it_and_rolled_back(
    world: Any, analyzed_release: Any,
) -> None:
    before = vs_of(world)
    result = analyzed_release({"service": "reviews", **FAST})
    assert result.state == "failed", result.output[-5000:]
    weights = analyzed_release.analyzer.observed_weights("v2")
    assert 10 in weights and 50 not in weights and 100 not in weights, analyzed_release.analyzer.describe()
    output = result.output
    # Step 10 passed its check; step 50's refused, naming the Deployment, the numbers and the fix.
    assert re.search(r"capacity: OK: capacity for 0% -> 10%: ok", output), output[-5000:]
    refusal = re.search(r"capacity: REFUSE: (capacity for 10% -> 50%: refused.*)", output)
    assert refusal, output[-5000:]
    assert "Deployment reviews-v2 (v2): 1/1 Ready, no HPA; needs 2" in refusal.group(1)
    assert "on 4 Ready replicas" in refusal.group(1)
    assert "kubectl -n bookinfo scale deployment reviews-v2 --replicas=2" in refusal.group(1)
    vs = vs_of(world)
    assert vs["spec"] == before["spec"]
    assert outcome_of(vs).outcome == "rolled_back"


def test_canary_an_hpa_could_grow_waits_then_is_refused_naming_the_hpa(world: Any, run_release: Any) -> None:
    before = vs_of(world, "details")
    # No wait allowed: the first hold is final. The HPA scales on load the canary gets only
    # after the step, so the fix is its minReplicas.
    result = run_release({"service": "details", **FAST, "capacity_timeout_minutes": 0})
    assert result.state == "failed", result.output[-5000:]
    refusal = re.search(r"capacity: REFUSE: (capacity for 10% -> 50%: waiting.*)", result.output)
    assert refusal, result.output[-5000:]
    message = refusal.group(1)
    assert "its HPA may scale it to 3" in message and "after waiting 0 min" in message
    assert "raise maxReplicas of HorizontalPodAutoscaler bookinfo/details-v2 to at least 2" in message
    assert "minReplicas to 2" in message
    assert vs_of(world, "details")["spec"] == before["spec"]


def test_check_off_and_dry_run_never_refuse(world: Any, run_release: Any) -> None:
    result = run_release({"service": "reviews", **FAST, "dry_run": True})
    assert result.state == "success", result.output[-5000:]
    assert re.search(r"DRY RUN: REFUSE: capacity for 10% -> 50%: refused", result.output), result.output[-5000:]
    result = run_release({"service": "reviews", **FAST, "capacity_check": False})
    assert result.state == "success", result.output[-5000:]
    assert "capacity_check is off" in result.output


def _set_ready(cluster: SandboxInfo, name: str, ready: int) -> None:
    from kubernetes import client, config

    apps = client.AppsV1Api(config.new_client_from_config(config_file=str(cluster.kubeconfig)))
    apps.patch_namespaced_deployment_status(name, NS, {"status": {"readyReplicas": ready, "availableReplicas": ready}})


@pytest.mark.parametrize("cluster", ["kube-apiserver"], indirect=True)
def test_a_hold_resolves_when_the_canary_gets_ready_and_the_release_goes_on(
    world: Any, run_release: Any,
) -> None:
    # The real kube-apiserver: a Deployment's status is written there as a controller would.
    _set_ready(world, "reviews-v2", 0)
    process = run_release({"service": "reviews", **FAST, "capacity_timeout_minutes": 15}, popen=True)
    lines: list[str] = []
    held = threading.Event()

    def read() -> None:
        for line in process.stdout:
            lines.append(line)
            if "capacity: HOLD" in line:
                held.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert held.wait(300), "".join(lines)[-5000:]
        assert routing_weight(world) == 0  # held before the first write of a weight
        _set_ready(world, "reviews-v2", 1)
        process.wait(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(30)
    output = "".join(lines)
    assert re.search(r"DagRun Finished:.*state=success", output), output[-5000:]
    assert re.search(r"HOLD at 0%: capacity for 0% -> 10%: waiting for Ready canary replicas \(it asks for 1\)",
                     output), output[-5000:]
    assert "capacity: OK: capacity for 0% -> 10%: ok" in output
    assert outcome_of(vs_of(world)).outcome == "promoted"


def routing_weight(cluster: SandboxInfo) -> int:
    """The canary's weight on the catch-all route now."""
    route = vs_of(cluster)["spec"]["http"][-1]["route"]
    return sum(int(d.get("weight", 100 if len(route) == 1 else 0)) for d in route
               if d["destination"].get("subset") == "v2")
