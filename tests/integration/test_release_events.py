"""Release events against the sandbox's API stand-in run with RBAC: the pipeline's ServiceAccount
token, include/manifests/rbac.yaml (or a Role without `create` on events), the real operators
and the official client, and kubectl reading them back the way `kubectl describe` does.

The same flow on a real kube-apiserver (its own authorizer and Event validation) is in
tests/e2e/test_release_events.py.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from istio_canary.core.events import ROLLBACK_FAILED, ROLLED_BACK, STEP_APPLIED
from istio_canary.hooks.istio import IstioApiError
from istio_canary.operators.preflight import IstioPreflightOperator
from istio_canary.operators.routing import (
    IstioDestinationRuleOperator,
    IstioMatchRouteOperator,
    IstioRollbackOperator,
    IstioTrafficShiftOperator,
)
from sandbox.apiserver import make_api_server
from sandbox.client import sandbox_env
from sandbox.config import load_config, seed_world
from sandbox.kubeconfig import kubeconfig_yaml
from sandbox.store import Store

# The contract test's two servers (module fixtures), found by name through `both_servers`.
from tests.integration.test_apiserver_contract import Server, real_server, sandbox_server  # noqa: F401

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RBAC_MANIFEST = REPO / "include" / "manifests" / "rbac.yaml"
NS, GROUP, VERSION = "bookinfo", "networking.istio.io", "v1"
RELEASE = {"service": "reviews", "namespace": NS, "stable_version": "v1", "canary_version": "v2"}
RUN_ID = "manual__2026-12-03T10:00:00+00:00"
CONTEXT = {"dag": SimpleNamespace(dag_id="istio_canary_release"), "run_id": RUN_ID}


def without_events(manifest: str) -> str:
    """rbac.yaml with the Role's `create` on events taken out."""
    docs = [d for d in yaml.safe_load_all(manifest) if d]
    for doc in docs:
        if doc["kind"] == "Role":
            doc["rules"] = [r for r in doc["rules"] if "events" not in r["resources"]]
    return yaml.safe_dump_all(docs)


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], SimpleNamespace]]:
    """`stand_in(manifest)`: the API stand-in with the default world and `manifest`'s RBAC, the
    Airflow connection on the pipeline's ServiceAccount token, and the admin's clients."""
    servers = []

    def start(manifest: str) -> SimpleNamespace:
        store = Store()
        seed_world(store, load_config())
        server = make_api_server(store, crd_dir=sandbox_env().get("SANDBOX_CRDS"))
        server.load_rbac(manifest)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        admin, pipeline = tmp_path / "admin.kubeconfig", tmp_path / "pipeline.kubeconfig"
        admin.write_text(kubeconfig_yaml(server.url, NS))
        pipeline.write_text(kubeconfig_yaml(server.url, NS, token=server.service_account_token(NS, "istio-canary")))
        monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(
            {"conn_type": "kubernetes", "extra": {"kube_config_path": str(pipeline), "namespace": NS}}))
        api = config.new_client_from_config(config_file=str(admin))
        return SimpleNamespace(server=server, kubeconfig=admin, core=client.CoreV1Api(api),
                               custom=client.CustomObjectsApi(api), pipeline=pipeline)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def release_step(weight: int = 10) -> dict[str, Any]:
    """preflight (lock + snapshot), subsets, then one traffic step, as the DAG runs them."""
    for operator in (IstioPreflightOperator(task_id="preflight", release=RELEASE),
                     IstioDestinationRuleOperator(task_id="destination_rule", release=RELEASE)):
        operator.execute(CONTEXT)
    return IstioTrafficShiftOperator(task_id=f"step_{weight}.set_route", release=RELEASE,
                                     canary_weight=weight).execute(CONTEXT)


def event_calls(server: Any) -> list[tuple[str, int]]:
    return [(r["verb"], r["code"]) for r in server.audit_records() if r["resource"] == "events"]


def kubectl(world: SimpleNamespace, *args: str) -> str:
    env = {**os.environ, "KUBECONFIG": str(world.kubeconfig),
           "PATH": f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '')}",
           "KUBECACHEDIR": str(world.kubeconfig.parent / "kube-cache")}
    done = subprocess.run(["kubectl", *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_step_records_an_event_that_kubectl_describe_shows(stand_in: Any) -> None:
    world = stand_in(RBAC_MANIFEST.read_text())
    assert release_step(10)["canary_weight"] == 10
    assert event_calls(world.server) == [("create", 201)]  # as the ServiceAccount, allowed by the Role
    vs = world.custom.get_namespaced_custom_object(GROUP, VERSION, NS, "virtualservices", "reviews")
    selector = (f"involvedObject.name=reviews,involvedObject.namespace={NS},"
                f"involvedObject.kind=VirtualService,involvedObject.uid={vs['metadata']['uid']}")
    [event] = world.core.list_namespaced_event(NS, field_selector=selector).items
    assert (event.reason, event.type, event.count) == (STEP_APPLIED, "Normal", 1)
    assert event.involved_object.resource_version == vs["metadata"]["resourceVersion"]
    assert RUN_ID in event.message and "canary v2 10%, stable v1 90%" in event.message
    described = kubectl(world, "describe", "virtualservice", "reviews", "-n", NS)
    events = described.split("Events:", 1)[1]
    assert "Normal  CanaryStepApplied" in events and "istio-canary" in events and RUN_ID in events


def test_without_create_on_events_the_step_is_refused_403_logs_it_and_goes_on(
    stand_in: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    world = stand_in(without_events(RBAC_MANIFEST.read_text()))
    result = release_step(10)
    assert (result["changed"], result["canary_weight"]) == (True, 10)
    assert event_calls(world.server) == [("create", 403)]
    logged = capfd.readouterr().out
    assert "could not record the Kubernetes Event CanaryStepApplied on VirtualService bookinfo/reviews" in logged
    assert ('events is forbidden: User "system:serviceaccount:bookinfo:istio-canary" cannot create resource '
            '"events"') in logged
    # The rollback is not held up either: routing back as it was, its event refused too.
    rolled = IstioRollbackOperator(task_id="rollback", release=RELEASE).execute(CONTEXT)
    assert (rolled["changed"], rolled["canary_weight"]) == (True, 0)
    assert event_calls(world.server) == [("create", 403), ("create", 403)]
    assert world.core.list_namespaced_event(NS).items == []


def test_rollback_records_a_warning_with_the_weight_it_left(stand_in: Any) -> None:
    world = stand_in(RBAC_MANIFEST.read_text())
    release_step(50)
    IstioRollbackOperator(task_id="rollback", release=RELEASE, reason="step_50: fail").execute(CONTEXT)
    events = kubectl(world, "get", "events", "-n", NS, "-o", "json")
    items = sorted(json.loads(events)["items"], key=lambda e: e["metadata"]["name"])
    assert [(e["reason"], e["type"]) for e in items] == [(STEP_APPLIED, "Normal"), (ROLLED_BACK, "Warning")]
    assert items[1]["message"].startswith("Rolled back reviews v2 from canary weight 50%")
    assert "step_50: fail" in items[1]["message"] and RUN_ID in items[1]["message"]


def test_a_rollback_that_fails_records_where_traffic_was_left(stand_in: Any) -> None:
    """The rollback's write is refused (an injected 403 on the VirtualService; events are not
    faulted): the task fails as before, and a Warning says the canary still has its 10%."""
    world = stand_in(RBAC_MANIFEST.read_text())
    release_step(10)
    world.server.faults.arm("forbidden", count=1)
    with pytest.raises(IstioApiError, match="HTTP 403"):
        IstioRollbackOperator(task_id="rollback", release=RELEASE).execute(CONTEXT)
    failed = [e for e in world.core.list_namespaced_event(NS).items if e.reason == ROLLBACK_FAILED]
    assert [(e.type, e.involved_object.name) for e in failed] == [("Warning", "reviews")]
    assert failed[0].message.startswith("Rollback of reviews v2 FAILED: canary weight 10%")
    assert "injected fault" in failed[0].message and RUN_ID in failed[0].message


def test_the_targeted_step_says_who_reaches_the_canary(stand_in: Any) -> None:
    world = stand_in(RBAC_MANIFEST.read_text())
    release = {**RELEASE, "strategy": "header"}
    IstioPreflightOperator(task_id="preflight", release=release).execute(CONTEXT)
    IstioDestinationRuleOperator(task_id="destination_rule", release=release).execute(CONTEXT)
    IstioMatchRouteOperator(task_id="targeted.set_route", release=release).execute(CONTEXT)
    [event] = world.core.list_namespaced_event(NS).items
    assert event.reason == STEP_APPLIED
    assert event.message.startswith("Step targeted: reviews canary v2 0%, stable v1 100%; requests matching "
                                    "header user-agent: canary go to v2"), event.message


def test_dry_run_records_no_event(stand_in: Any) -> None:
    world = stand_in(RBAC_MANIFEST.read_text())
    IstioPreflightOperator(task_id="preflight", release=RELEASE, dry_run=True).execute(CONTEXT)
    IstioTrafficShiftOperator(task_id="s", release=RELEASE, canary_weight=10, dry_run=True).execute(CONTEXT)
    assert event_calls(world.server) == []


# --------------------------------------------------------------------------- the events API
# The same requests to the stand-in and to a real kube-apiserver (the contract test's servers:
# rbac.yaml, the default world, the pipeline's token): same status and message.


def event(name: str, **changes: Any) -> dict[str, Any]:
    body = {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": NS},
        "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": "VirtualService", "namespace": NS,
                           "name": "reviews"},
        "reason": "CanaryPromoted", "message": "m", "type": "Normal", "action": "Promote",
        "reportingComponent": "istio-canary", "reportingInstance": "w",
        "eventTime": "2026-12-03T10:00:00.000000Z", "firstTimestamp": "2026-12-03T10:00:00Z",
        "lastTimestamp": "2026-12-03T10:00:00Z", "count": 1, "source": {"component": "istio-canary"},
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


@pytest.fixture
def both_servers(request: pytest.FixtureRequest) -> tuple[Server, Server]:
    """The stand-in and the real kube-apiserver, each with rbac.yaml and the default world."""
    return request.getfixturevalue("sandbox_server"), request.getfixturevalue("real_server")


def answer(call: Callable[[], Any]) -> tuple[int, str]:
    try:
        call()
    except ApiException as exc:
        return exc.status, json.loads(exc.body)["message"]
    return 200, ""


EVENT_CASES = {
    "valid": (event("c-valid"), 200),
    "other-namespace": (event("c-ns", metadata={"name": "c-ns", "namespace": "other"}), 400),
    "no-reporting-instance": (event("c-ri", reportingInstance=""), 422),
    "no-action": (event("c-action", action=None), 422),
    "message-too-long": (event("c-long", message="m" * 1025), 422),
    # The legacy form (no eventTime): the object must be in the event's namespace.
    "legacy-object-elsewhere": (event("c-legacy", eventTime=None, involvedObject={
        "kind": "VirtualService", "namespace": "other", "name": "reviews"}), 422),
    "no-name": (event("", metadata={"namespace": NS}), 422),
}


@pytest.mark.parametrize("case", list(EVENT_CASES))
def test_created_events_are_checked_as_kube_apiserver_checks_them(
    case: str, both_servers: tuple[Server, Server]
) -> None:
    body, expected = EVENT_CASES[case]
    answers = {server.name: answer(lambda s=server: s.pipeline.core.create_namespaced_event(NS, copy.deepcopy(body)))
               for server in both_servers}
    assert answers["sandbox"] == answers["kube-apiserver"], answers
    assert answers["sandbox"][0] == expected, answers


def test_names_are_unique_and_selectors_name_only_event_fields(both_servers: tuple[Server, Server]) -> None:
    for server in both_servers:
        core = server.pipeline.core
        core.create_namespaced_event(NS, event("s-reviews"))
        core.create_namespaced_event(NS, event("s-ratings", involvedObject={
            "kind": "Service", "namespace": NS, "name": "ratings"}))
    answers = {}
    for server in both_servers:
        admin, core = server.admin.core, server.pipeline.core
        found = admin.list_namespaced_event(NS, field_selector="involvedObject.name=reviews,type=Normal,"
                                                               "involvedObject.kind=VirtualService")
        answers[server.name] = (
            sorted(e.metadata.name for e in found.items if e.metadata.name.startswith("s-")),
            answer(lambda c=core: c.create_namespaced_event(NS, event("s-reviews"))),
            answer(lambda a=admin: a.list_namespaced_event(NS, field_selector="spec.x=1")),
            answer(lambda c=core: c.list_namespaced_event(NS)),  # the Role grants create only
        )
    assert answers["sandbox"] == answers["kube-apiserver"], answers
    assert answers["sandbox"][0] == ["s-reviews"]
    assert [status for status, _ in answers["sandbox"][1:]] == [409, 400, 403]
