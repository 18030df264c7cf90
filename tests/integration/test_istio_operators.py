"""The Istio operators against the sandbox: real Kubernetes client, real kubectl, real Prometheus."""

from __future__ import annotations

import copy
import json
import subprocess
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from kubernetes import client, config

from istio_canary.core.lock import LOCK_ANNOTATION, LockHeldError, lock_of, outcome_of
from istio_canary.core.routing import RoutingError, routing_state
from istio_canary.core.validation import ValidationError
from istio_canary.operators.preflight import IstioPreflightOperator, PreflightError
from istio_canary.operators.routing import (
    IstioDestinationRuleOperator,
    IstioMatchRouteOperator,
    IstioPromoteOperator,
    IstioRollbackOperator,
    IstioTrafficShiftOperator,
)

pytestmark = pytest.mark.integration

GROUP, VERSION, NS = "networking.istio.io", "v1", "bookinfo"
RELEASE = {"service": "reviews", "namespace": NS, "stable_version": "v1", "canary_version": "v2"}
JASON_ROUTE = {
    "name": "jason",
    "match": [{"headers": {"end-user": {"exact": "jason"}}}],
    "route": [{"destination": {"host": "reviews", "subset": "v1"}}],
}


def context(run_id: str = "manual__run1") -> dict[str, Any]:
    return {"dag": SimpleNamespace(dag_id="istio_canary_release"), "run_id": run_id}


@pytest.fixture
def world(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    """The session sandbox, reset to its seeded objects, with Airflow's connection pointing at it."""
    sandbox.reset()
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", sandbox.env["AIRFLOW_CONN_KUBERNETES_DEFAULT"])
    api = config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    custom = client.CustomObjectsApi(api)

    def get(plural: str, name: str = "reviews") -> dict[str, Any]:
        return custom.get_namespaced_custom_object(GROUP, VERSION, NS, plural, name)

    def put(plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        return custom.replace_namespaced_custom_object(GROUP, VERSION, NS, plural, obj["metadata"]["name"], obj)

    # A realistic starting point: someone's header route ahead of the default route, mTLS on.
    vs = get("virtualservices")
    vs["spec"]["http"].insert(0, copy.deepcopy(JASON_ROUTE))
    vs["spec"]["http"][1]["timeout"] = "10s"
    put("virtualservices", vs)
    yield SimpleNamespace(sandbox=sandbox, custom=custom, get=get, put=put)
    sandbox.reset()


def run(operator_cls: type, ctx: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    params = kwargs.pop("release", RELEASE)
    op = operator_cls(task_id="t", release=params, **kwargs)
    return op.execute(ctx or context())


def kubectl_weights(sandbox: Any) -> dict[str, int]:
    out = subprocess.run(
        ["kubectl", "get", "vs", "reviews", "-n", NS, "-o", "json"],
        env={**sandbox.env, "PATH": _venv_path(), "KUBECACHEDIR": str(sandbox.state_dir / "kube-cache")},
        capture_output=True, text=True, check=True,
    ).stdout
    owned = json.loads(out)["spec"]["http"][-1]
    return {d["destination"]["subset"]: d.get("weight", 100) for d in owned["route"]}


def _venv_path() -> str:
    import os
    import sys

    return f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '')}"


def test_destination_rule_subsets_ensured_keeping_traffic_policy(world: SimpleNamespace) -> None:
    run(IstioPreflightOperator)
    before = world.get("destinationrules")
    result = run(IstioDestinationRuleOperator)
    after = world.get("destinationrules")
    assert result["changed"] is True
    assert after["spec"]["trafficPolicy"] == before["spec"]["trafficPolicy"] == {"tls": {"mode": "ISTIO_MUTUAL"}}
    assert [s["name"] for s in after["spec"]["subsets"]] == ["v1", "v2"]
    assert after["spec"]["subsets"][1]["labels"] == {"version": "v2"}
    again = run(IstioDestinationRuleOperator)
    assert again["changed"] is False
    assert world.get("destinationrules")["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"]


def test_shift_10_50_100_visible_with_kubectl_and_jason_route_kept(world: SimpleNamespace) -> None:
    run(IstioPreflightOperator)
    run(IstioDestinationRuleOperator)
    for weight, expected in ((10, {"v1": 90, "v2": 10}), (50, {"v1": 50, "v2": 50}), (100, {"v2": 100})):
        result = run(IstioTrafficShiftOperator, canary_weight=weight)
        assert result["canary_weight"] == weight
        assert kubectl_weights(world.sandbox) == expected
        vs = world.get("virtualservices")
        assert vs["spec"]["http"][0] == JASON_ROUTE
        assert vs["spec"]["http"][1]["timeout"] == "10s"
    rv = world.get("virtualservices")["metadata"]["resourceVersion"]
    assert run(IstioTrafficShiftOperator, canary_weight=100)["changed"] is False
    assert world.get("virtualservices")["metadata"]["resourceVersion"] == rv


def test_set_route_logs_the_yaml_diff(world: SimpleNamespace, capfd: pytest.CaptureFixture[str]) -> None:
    run(IstioPreflightOperator)
    run(IstioDestinationRuleOperator)
    run(IstioTrafficShiftOperator, canary_weight=10)
    text = capfd.readouterr().out
    assert "+        subset: v2" in text and "+      weight: 10" in text, text


def _version_shares(sandbox: Any, seconds: float) -> dict[tuple[str, str, str], float]:
    """Increase of the sandbox's per-header-class request counter over `seconds`, via Prometheus."""
    query = (
        'sum by (version, user_agent_canary, cookie_canary) '
        f'(increase(sandbox_requests_total{{service="reviews",namespace="{NS}"}}[{int(seconds)}s]))'
    )
    return {
        (r["metric"]["version"], r["metric"]["user_agent_canary"], r["metric"]["cookie_canary"]): float(r["value"][1])
        for r in sandbox.prom_result(query)
    }


@pytest.mark.parametrize(
    ("strategy", "canary_key"),
    [("header", "user_agent_canary"), ("cookie", "cookie_canary")],
)
def test_match_route_sends_only_matching_requests_to_v2(
    world: SimpleNamespace, strategy: str, canary_key: str
) -> None:
    release = {**RELEASE, "strategy": strategy}
    run(IstioPreflightOperator, release=release)
    run(IstioDestinationRuleOperator, release=release)
    result = run(IstioMatchRouteOperator, release=release, enabled=True)
    assert result["match_route"] is True and result["canary_weight"] == 0
    world.sandbox.wait_for_routing(result["resource_version"])
    world.sandbox.set_behaviour(rps=400)
    time.sleep(6)
    shares = _version_shares(world.sandbox, 4)
    world.sandbox.set_behaviour(rps=50)
    index = {"user_agent_canary": 1, "cookie_canary": 2}[canary_key]
    to_v2 = {k: v for k, v in shares.items() if k[0] == "v2" and v > 0}
    matching_to_v1 = sum(v for k, v in shares.items() if k[0] == "v1" and k[index] == "true")
    assert to_v2, shares
    assert all(k[index] == "true" for k in to_v2), shares  # only matching requests reach v2
    assert matching_to_v1 == 0, shares  # and every matching request does
    run(IstioMatchRouteOperator, release=release, enabled=False)
    assert routing_state(world.get("virtualservices"), _request(release)).match_route_present is False


def _request(params: dict[str, Any]) -> Any:
    from istio_canary.core.request import ReleaseRequest

    return ReleaseRequest.from_params(params)


def test_rollback_restores_the_snapshot_spec_exactly_and_keeps_others_edits(world: SimpleNamespace) -> None:
    release = {**RELEASE, "strategy": "header"}
    snapshot = run(IstioPreflightOperator, release=release)["snapshot"]
    original = world.get("virtualservices")
    run(IstioDestinationRuleOperator, release=release)
    run(IstioMatchRouteOperator, release=release)
    run(IstioTrafficShiftOperator, release=release, canary_weight=50, match_route=True)
    assert routing_state(world.get("virtualservices"), _request(release)).canary_weight == 50
    run(IstioRollbackOperator, release=release, snapshot=snapshot, reason="test")
    restored = world.get("virtualservices")
    assert restored["spec"] == original["spec"]
    assert lock_of(restored) is None and outcome_of(restored).outcome == "rolled_back"
    # A second rollback, and a step re-run after the release ended, change nothing.
    rv = restored["metadata"]["resourceVersion"]
    assert run(IstioRollbackOperator, release=release, snapshot=snapshot)["changed"] is False
    assert run(IstioTrafficShiftOperator, release=release, canary_weight=10)["changed"] is False
    assert world.get("virtualservices")["metadata"]["resourceVersion"] == rv


def test_rollback_keeps_a_route_someone_added_during_the_release(world: SimpleNamespace) -> None:
    snapshot = run(IstioPreflightOperator)["snapshot"]
    run(IstioDestinationRuleOperator)
    run(IstioTrafficShiftOperator, canary_weight=10)
    vs = world.get("virtualservices")
    extra = {"name": "mobile", "match": [{"headers": {"x-client": {"exact": "mobile"}}}],
             "route": [{"destination": {"host": "reviews", "subset": "v1"}}]}
    vs["spec"]["http"].insert(0, extra)
    world.put("virtualservices", vs)
    run(IstioRollbackOperator, snapshot=snapshot)
    http = world.get("virtualservices")["spec"]["http"]
    assert http[0] == extra and http[1] == JASON_ROUTE
    assert http[2] == snapshot["virtualService"]["spec"]["http"][1]


def test_promote_releases_the_lock_and_a_later_step_rerun_changes_nothing(world: SimpleNamespace) -> None:
    run(IstioPreflightOperator)
    run(IstioDestinationRuleOperator)
    run(IstioTrafficShiftOperator, canary_weight=50)
    run(IstioPromoteOperator)
    vs = world.get("virtualservices")
    assert kubectl_weights(world.sandbox) == {"v2": 100}
    assert lock_of(vs) is None and outcome_of(vs).outcome == "promoted"
    rv = vs["metadata"]["resourceVersion"]
    assert run(IstioTrafficShiftOperator, canary_weight=10)["changed"] is False
    assert run(IstioRollbackOperator, reason="late")["changed"] is False  # never undoes a promotion
    assert run(IstioPreflightOperator).get("finished") == "promoted"
    assert world.get("virtualservices")["metadata"]["resourceVersion"] == rv


def test_second_release_is_refused_naming_the_holder_then_stale_lock_can_be_broken(world: SimpleNamespace) -> None:
    run(IstioPreflightOperator, ctx=context("run-A"))
    rv = world.get("virtualservices")["metadata"]["resourceVersion"]
    with pytest.raises(LockHeldError, match="istio_canary_release/run-A"):
        run(IstioPreflightOperator, ctx=context("run-B"))
    assert world.get("virtualservices")["metadata"]["resourceVersion"] == rv
    # Breaking is refused while Airflow says the holder still runs (its run state, as the task
    # runner's get_dagrun_state reports it, is stood in for here).
    holder_running = {**context("run-B"), "ti": SimpleNamespace(get_dagrun_state=lambda dag_id, run_id: "running")}
    with pytest.raises(PreflightError, match="istio_canary_release/run-A is still running"):
        run(IstioPreflightOperator, ctx=holder_running, break_stale_lock=True)
    assert world.get("virtualservices")["metadata"]["resourceVersion"] == rv
    holder_failed = {**context("run-B"), "ti": SimpleNamespace(get_dagrun_state=lambda dag_id, run_id: "failed")}
    run(IstioPreflightOperator, ctx=holder_failed, break_stale_lock=True)
    assert lock_of(world.get("virtualservices")).holder == "istio_canary_release/run-B"


def test_concurrent_edit_between_read_and_write_gets_409_then_both_edits_survive(
    world: SimpleNamespace, capfd: pytest.CaptureFixture[str]
) -> None:
    run(IstioPreflightOperator)
    run(IstioDestinationRuleOperator)
    op = IstioTrafficShiftOperator(task_id="t", release=RELEASE, canary_weight=10)
    real_get = op.hook.get
    calls = {"n": 0}

    def get_then_someone_else_writes(kind: str, namespace: str, name: str) -> dict[str, Any]:
        obj = real_get(kind, namespace, name)
        calls["n"] += kind == "VirtualService"
        if kind == "VirtualService" and calls["n"] == 1:
            other = world.get("virtualservices")
            other["spec"]["http"][0]["timeout"] = "3s"  # an unrelated route, edited concurrently
            world.put("virtualservices", other)
        return obj

    op.hook.get = get_then_someone_else_writes  # fault injection: a writer races our read
    result = op.execute(context())
    vs = world.get("virtualservices")
    assert "409 Conflict" in capfd.readouterr().out
    assert result["canary_weight"] == 10
    assert vs["spec"]["http"][0]["timeout"] == "3s"
    assert {d["destination"]["subset"]: d["weight"] for d in vs["spec"]["http"][1]["route"]} == {"v1": 90, "v2": 10}


def _rv(world: SimpleNamespace) -> tuple[str, str]:
    return (world.get("virtualservices")["metadata"]["resourceVersion"],
            world.get("destinationrules")["metadata"]["resourceVersion"])


@pytest.mark.parametrize(
    ("release", "error", "message"),
    [
        ({**RELEASE, "service": "ratings"}, PreflightError, "VirtualService bookinfo/ratings not found"),
        ({**RELEASE, "host": "ratings"}, RoutingError, "ratings"),
        ({**RELEASE, "route_name": "nope"}, RoutingError, "nope"),
        ({**RELEASE, "canary_version": "v3"}, RoutingError,
         "Service bookinfo/reviews spec.selector: selects no pods of version 'v3'"),
        ({**RELEASE, "service": "Reviews!"}, ValidationError, "service='Reviews!'"),
        ({**RELEASE, "canary_version": "v1"}, ValidationError, "canary_version='v1'"),
    ],
)
def test_bad_input_is_refused_with_zero_writes(
    world: SimpleNamespace, release: dict[str, Any], error: type, message: str
) -> None:
    before = _rv(world)
    with pytest.raises(error, match=message):
        run(IstioPreflightOperator, release=release)
    assert _rv(world) == before


def test_two_catch_all_candidates_is_ambiguous_with_zero_writes(world: SimpleNamespace) -> None:
    vs = world.get("virtualservices")
    vs["spec"]["http"].append(copy.deepcopy(vs["spec"]["http"][-1]))
    world.put("virtualservices", vs)
    before = _rv(world)
    with pytest.raises(RoutingError):
        run(IstioPreflightOperator)
    assert _rv(world) == before


def test_canary_without_sidecar_or_ready_pods_is_refused(sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    box = sandbox_factory({
        "services": [
            {"name": "reviews", "namespace": NS, "versions": {"v1": {}, "v2": {"sidecar": False}}},
            {"name": "ratings", "namespace": NS, "versions": {"v1": {}, "v2": {"ready": False}}},
        ]
    })
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", box.env["AIRFLOW_CONN_KUBERNETES_DEFAULT"])
    custom = client.CustomObjectsApi(config.new_client_from_config(config_file=str(box.kubeconfig)))
    for service, problem in (("reviews", "has no istio-proxy container"), ("ratings", "is not Ready")):
        rv = custom.get_namespaced_custom_object(GROUP, VERSION, NS, "virtualservices", service)["metadata"]["resourceVersion"]
        with pytest.raises(PreflightError, match=problem):
            run(IstioPreflightOperator, release={**RELEASE, "service": service})
        vs = custom.get_namespaced_custom_object(GROUP, VERSION, NS, "virtualservices", service)
        assert vs["metadata"]["resourceVersion"] == rv
        assert LOCK_ANNOTATION not in (vs["metadata"].get("annotations") or {})


def test_dry_run_writes_nothing_and_logs_the_plan(world: SimpleNamespace, capfd: pytest.CaptureFixture[str]) -> None:
    before = _rv(world)
    for operator_cls, extra in (
        (IstioPreflightOperator, {}),
        (IstioDestinationRuleOperator, {}),
        (IstioTrafficShiftOperator, {"canary_weight": 50}),
        (IstioPromoteOperator, {}),
    ):
        run(operator_cls, dry_run=True, **extra)
    assert _rv(world) == before
    out = capfd.readouterr().out
    assert "DRY RUN" in out and "+      weight: 50" in out


def test_transient_api_errors_are_retried_with_backoff(world: SimpleNamespace, capfd: pytest.CaptureFixture[str]) -> None:
    run(IstioPreflightOperator)
    run(IstioDestinationRuleOperator)
    # The next two writes fail with 500: the hook retries and the step still lands.
    requests.post(f"{world.sandbox.api_url}/sandbox/faults", json={"kind": "error500", "count": 2}, timeout=5)
    result = run(IstioTrafficShiftOperator, canary_weight=10)
    assert result["canary_weight"] == 10 and result["written"] is True
    out = capfd.readouterr().out
    assert out.count("HTTP 500") >= 2 and "retry 2/" in out
    assert kubectl_weights(world.sandbox) == {"v1": 90, "v2": 10}
