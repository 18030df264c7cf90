"""Releases against a real etcd + kube-apiserver (`sandbox up --real-apiserver`): the real RBAC
authorizer judges the pipeline's ServiceAccount token, and a second writer causes real 409s.

The release flows that run on both API servers (promotion, rollback, header/cookie, refusals)
are in test_release_dag.py under BOTH_APIS; these are the ones only a real server can show.
"""

from __future__ import annotations

import copy
import json
import re
import time
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from istio_canary.core.lock import lock_of, outcome_of
from istio_canary.core.request import ReleaseRequest
from istio_canary.core.routing import routing_state
from tests.helpers import dr_of, vs_of

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("cluster", ["kube-apiserver"], indirect=True)]

NS = "bookinfo"
GROUP, VERSION = "networking.istio.io", "v1"
RELEASE = {"service": "reviews", "namespace": NS, "stable_version": "v1", "canary_version": "v2",
           "bake_seconds": 4, "check_interval_seconds": 1, "min_requests": 20,
           # Seconds-long bakes on a small sandbox: the traffic plan would stretch or refuse them.
           "plan_bake": False}
ROLE = "istio-canary-release"
WRITER_ROUTE = "sandbox-writer"


@pytest.fixture
def mesh(mesh: Any) -> Any:
    """The shared `mesh` (tests/e2e/conftest.py), on the real kube-apiserver, with RBAC's API and
    the pipeline's own client."""
    assert mesh.real, "these tests need the real kube-apiserver"
    mesh.rbac = client.RbacAuthorizationV1Api(mesh.api.api_client)
    mesh.pipeline = config.new_client_from_config(config_file=str(mesh.pipeline_kubeconfig))
    return mesh


def status_of(call: Any) -> int:
    try:
        call()
    except ApiException as exc:
        return int(exc.status)
    return 200


def test_the_pipeline_token_gets_what_the_role_grants_and_nothing_more(mesh: Any) -> None:
    """The kubeconfig the release runs with is the istio-canary ServiceAccount's token; the real
    authorizer, not the sandbox's own audit, decides."""
    istio = client.CustomObjectsApi(mesh.pipeline)
    core = client.CoreV1Api(mesh.pipeline)
    vs = vs_of(mesh)
    allowed = {
        "get vs": lambda: istio.get_namespaced_custom_object(GROUP, VERSION, NS, "virtualservices", "reviews"),
        "update vs": lambda: istio.replace_namespaced_custom_object(GROUP, VERSION, NS, "virtualservices",
                                                                     "reviews", vs),
        "list dr everywhere": lambda: istio.list_cluster_custom_object(GROUP, VERSION, "destinationrules"),
        "list pods": lambda: core.list_namespaced_pod(NS),
        "get service": lambda: core.read_namespaced_service("reviews", NS),
    }
    refused = {
        "delete vs": lambda: istio.delete_namespaced_custom_object(GROUP, VERSION, NS, "virtualservices", "reviews"),
        "create dr": lambda: istio.create_namespaced_custom_object(
            GROUP, VERSION, NS, "destinationrules",
            {"apiVersion": f"{GROUP}/{VERSION}", "kind": "DestinationRule", "metadata": {"name": "x"},
             "spec": {"host": "reviews"}}),
        "patch vs": lambda: istio.patch_namespaced_custom_object(GROUP, VERSION, NS, "virtualservices", "reviews",
                                                                  {"metadata": {"labels": {"x": "y"}}}),
        "list vs everywhere": lambda: istio.list_cluster_custom_object(GROUP, VERSION, "virtualservices"),
        "list pods everywhere": lambda: core.list_pod_for_all_namespaces(),
        "update service": lambda: core.replace_namespaced_service(
            "reviews", NS, core.read_namespaced_service("reviews", NS)),
    }
    assert {name: status_of(call) for name, call in allowed.items()} == dict.fromkeys(allowed, 200)
    assert {name: status_of(call) for name, call in refused.items()} == dict.fromkeys(refused, 403)


def test_a_release_the_role_does_not_allow_fails_forbidden_and_leaves_the_mesh_as_it_was(
    mesh: Any, run_release: Any
) -> None:
    """With `update` on DestinationRules taken out of the Role, the real server refuses the
    subsets write: the run fails naming the refusal, and the VirtualService and the
    DestinationRule are as they were (the lock is released by the rollback)."""
    role = mesh.rbac.read_namespaced_role(ROLE, NS)
    original = copy.deepcopy(role)
    role.rules = [rule for rule in role.rules if GROUP not in rule.api_groups] + [
        client.V1PolicyRule(api_groups=[GROUP], resources=["virtualservices"], verbs=["get", "list", "update"]),
        client.V1PolicyRule(api_groups=[GROUP], resources=["destinationrules"], verbs=["get", "list"]),
    ]
    mesh.rbac.replace_namespaced_role(ROLE, NS, role)
    try:
        before_vs, before_dr = vs_of(mesh), dr_of(mesh)
        result = run_release(RELEASE)
    finally:
        original.metadata.resource_version = None
        mesh.rbac.replace_namespaced_role(ROLE, NS, original)
    assert result.state == "failed", result.output[-5000:]
    assert re.search(r"403|Forbidden", result.output)
    assert 'cannot update resource "destinationrules"' in result.output
    vs = vs_of(mesh)
    assert vs["spec"] == before_vs["spec"] and lock_of(vs) is None
    assert dr_of(mesh)["metadata"]["resourceVersion"] == before_dr["metadata"]["resourceVersion"]


def test_a_second_writer_on_the_real_server_loses_no_edit_and_the_release_completes(
    mesh: Any, run_release: Any
) -> None:
    """Another controller edits the same VirtualService 10 times a second through the real API:
    conflicts are real 409s from the server's own resourceVersion check. The release re-reads
    and re-applies, is promoted, and every one of the writer's edits is still there."""
    started = mesh.cli("fault", "writer", "start", "--interval", "0.1")
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 10
    while WRITER_ROUTE not in [r.get("name") for r in vs_of(mesh)["spec"]["http"]]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    result = run_release(RELEASE)
    stopped = mesh.cli("fault", "writer", "stop")
    assert stopped.returncode == 0, stopped.stderr
    writer = json.loads(mesh.cli("fault", "status", "--json").stdout)["writer"]

    assert result.state == "success", result.output[-5000:]
    vs = vs_of(mesh)
    assert lock_of(vs) is None and outcome_of(vs).outcome == "promoted"
    state = routing_state(vs, ReleaseRequest.from_params(RELEASE))
    assert (state.canary_weight, state.match_route_present) == (100, False)
    assert writer["lost"] == [], writer["lost"]
    # The writer's own failed tries are only the server's conflicts (it tries again next turn).
    assert all("409" in error for error in writer["errors"]), writer["errors"]
    writer_route = next(r for r in vs["spec"]["http"] if r.get("name") == WRITER_ROUTE)
    kept = {f"x-sandbox-edit-{e['seq']}": str(e["seq"]) for e in writer["edits"]}
    assert writer_route["headers"]["request"]["set"] == kept
    assert [r.get("name") for r in vs["spec"]["http"]] == [WRITER_ROUTE, None]
    conflicts = result.output.count("409 Conflict")
    print(f"real 409s the release met: {conflicts}; writer edits: {writer['edit_count']}, "
          f"writer conflicts: {len(writer['errors'])}")
