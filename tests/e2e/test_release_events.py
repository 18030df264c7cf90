"""A release tells its story on its VirtualService: `kubectl describe virtualservice reviews`
lists an Event for each step, then the promotion or the rollback, each naming the run.

Real `airflow dags test` runs, the real kubectl, on both API servers (BOTH_APIS: the sandbox's
stand-in and a real kube-apiserver, whose RBAC authorizer judges the pipeline's token). On the
real server, a Role without `create` on events gets the server's 403: the release logs it and
is promoted all the same.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from typing import Any

import pytest
from kubernetes import client

from istio_canary.core.lock import outcome_of
from tests.conftest import BOTH_APIS
from tests.helpers import vs_of

pytestmark = pytest.mark.e2e

NS = "bookinfo"
RELEASE = {"service": "reviews", "namespace": NS, "stable_version": "v1", "canary_version": "v2",
           "bake_seconds": 4, "check_interval_seconds": 1, "min_requests": 20,
           # Seconds-long bakes on a small sandbox: the traffic plan would stretch or refuse them.
           "plan_bake": False}
ROLE = "istio-canary-release"  # include/manifests/rbac.yaml's Role
EVENT_ROW = re.compile(r"^\s+(Normal|Warning)\s+(Canary\w+)\s+\S+\s+istio-canary\s+(.*)$")


def run_id_of(output: str) -> str:
    found = re.search(r"run_id=(manual__[^,\s]+)", output)
    assert found, output[-3000:]
    return found.group(1)


def described_events(cluster: Any, run_id: str) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the run's rows under `Events:` in `kubectl describe
    virtualservice reviews`, in the order kubectl prints them (oldest first)."""
    env = {**os.environ, **cluster.env, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '')}",
           "KUBECACHEDIR": str(cluster.state_dir / "kube-cache")}
    done = subprocess.run(["kubectl", "describe", "virtualservice", "reviews", "-n", NS], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "\nEvents:\n" in done.stdout, done.stdout
    rows = [EVENT_ROW.match(line) for line in done.stdout.split("\nEvents:\n", 1)[1].splitlines()]
    return [(m[1], m[2], m[3]) for m in rows if m and f"run {run_id} " in m[3]]


@BOTH_APIS
def test_a_promoted_release_shows_each_step_then_the_promotion(mesh: Any, run_release: Any) -> None:
    result = run_release(RELEASE)
    assert result.state == "success", result.output[-5000:]
    run_id = run_id_of(result.output)
    events = described_events(mesh, run_id)
    assert [(kind, reason) for kind, reason, _ in events] == [
        ("Normal", "CanaryStepApplied"), ("Normal", "CanaryStepApplied"), ("Normal", "CanaryStepApplied"),
        ("Normal", "CanaryPromoted"),
    ], events
    steps = [message for _, _, message in events]
    assert steps[0].startswith("Step 10%: reviews canary v2 10%, stable v1 90%")
    assert steps[1].startswith("Step 50%: reviews canary v2 50%, stable v1 50%")
    assert steps[2].startswith("Step 100%: reviews canary v2 100%, stable v1 0%")
    assert steps[3].startswith("Promoted reviews v2")
    assert all("of DAG istio_canary_release, task " in m for m in steps)
    assert "task step_50.set_route" in steps[1] and "task promote" in steps[3]
    assert "Kubernetes Event Normal CanaryPromoted on VirtualService bookinfo/reviews" in result.output


@BOTH_APIS
def test_a_rolled_back_release_shows_its_step_then_the_rollback(mesh: Any, run_release: Any) -> None:
    mesh.set_behaviour("v1", error_rate=0.005)
    mesh.set_behaviour("v2", error_rate=0.05)
    result = run_release({**RELEASE, "bake_seconds": 60})
    assert result.state == "failed", result.output[-5000:]
    assert outcome_of(vs_of(mesh)).outcome == "rolled_back"
    events = described_events(mesh, run_id_of(result.output))
    assert [(kind, reason) for kind, reason, _ in events] == [
        ("Normal", "CanaryStepApplied"), ("Warning", "CanaryRolledBack"),
    ], events
    assert events[0][2].startswith("Step 10%: reviews canary v2 10%")
    assert events[1][2].startswith("Rolled back reviews v2 from canary weight 10%: routing restored")
    assert "task rollback" in events[1][2]


@pytest.mark.parametrize("cluster", ["kube-apiserver"], indirect=True)
def test_a_role_without_create_on_events_gets_403_and_the_release_is_promoted(
    mesh: Any, run_release: Any
) -> None:
    """The real authorizer refuses every event: each is logged as a warning, none fails a task."""
    assert mesh.real
    rbac = client.RbacAuthorizationV1Api(mesh.api.api_client)
    role = rbac.read_namespaced_role(ROLE, NS)
    original = copy.deepcopy(role)
    role.rules = [rule for rule in role.rules if "events" not in rule.resources]
    assert len(role.rules) == len(original.rules) - 1
    rbac.replace_namespaced_role(ROLE, NS, role)
    try:
        result = run_release(RELEASE)
    finally:
        original.metadata.resource_version = None
        rbac.replace_namespaced_role(ROLE, NS, original)
    assert result.state == "success", result.output[-5000:]
    assert outcome_of(vs_of(mesh)).outcome == "promoted"
    refused = re.findall(r"could not record the Kubernetes Event (\w+) on VirtualService bookinfo/reviews "
                         r"\(the release goes on without it\): create Event .*?HTTP 403", result.output)
    assert refused == ["CanaryStepApplied"] * 3 + ["CanaryPromoted"], result.output[-5000:]
    assert 'cannot create resource "events"' in result.output
    assert described_events(mesh, run_id_of(result.output)) == []
