"""`python -m sandbox fault ...` against the session sandbox: what each fault does to the real
parts (Kubernetes client writes, the real Prometheus, the traffic counters), the writer's record,
and bad values refused naming them with nothing changed. Every test ends with `fault clear`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from kubernetes.client.exceptions import ApiException

from istio_canary.hooks.prometheus import PrometheusHook, PrometheusQueryError, PrometheusUnavailableError
from sandbox.client import SandboxInfo

pytestmark = pytest.mark.integration

NS = "bookinfo"
VS = ("networking.istio.io", "v1", NS, "virtualservices", "reviews")
REQUESTS = 'sum(sandbox_requests_total{service="reviews"})'


@pytest.fixture
def box(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS_DEFAULT", sandbox.env["AIRFLOW_CONN_PROMETHEUS_DEFAULT"])
    sandbox.reset()
    sandbox.api = sandbox.istio
    yield sandbox
    cleared = sandbox.cli("fault", "clear")
    sandbox.reset()
    assert cleared.returncode == 0, cleared.stderr


fault = SandboxInfo.fault  # fault(box, ARGS): `python -m sandbox fault ARGS`, every fault's state after


def label_write(box: Any, value: str) -> int:
    """One write of the VirtualService through the official client; its HTTP status."""
    try:
        box.api.patch_namespaced_custom_object(*VS, {"metadata": {"labels": {"probe": value}}})
    except ApiException as exc:
        return exc.status
    return 200


def nothing_on(state: dict[str, Any]) -> bool:
    return (state["api"]["kind"] is None and state["prometheus"]["mode"] == "up"
            and not state["writer"]["running"] and not state["traffic"]["zero"])


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["api", "501"], "'501'"),
        (["api", "500", "--count", "0"], "--count=0"),
        (["api", "409", "--after", "-1"], "--after=-1"),
        (["api", "timeout", "--seconds", "nan"], "--seconds=nan"),
        (["api", "500", "--count", "many"], "'many'"),
        (["prometheus", "sideways"], "'sideways'"),
        (["writer", "start", "--service", "ratings"], "--service='ratings'"),
        (["writer", "start", "--interval", "0"], "--interval=0.0"),
        (["traffic", "half"], "'half'"),
    ],
)
def test_bad_values_are_refused_naming_them_and_nothing_changes(box: Any, args: list[str], named: str) -> None:
    result = box.cli("fault", *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert named in result.stderr, result.stderr
    assert nothing_on(json.loads(box.cli("fault", "status", "--json").stdout))


def test_without_a_running_sandbox_it_says_so(tmp_path: Any, sandbox: Any) -> None:
    from sandbox.client import sandbox_cli

    result = sandbox_cli("fault", "--state-dir", str(tmp_path), "api", "500")
    assert result.returncode == 1 and f"no sandbox running in {tmp_path}" in result.stderr


def test_api_faults_fail_exactly_the_planned_writes_and_the_audit_says_which(box: Any) -> None:
    fault(box, "api", "500", "--count", "2", "--after", "1")
    fault(box, "api", "timeout", "--count", "1", "--seconds", "0.2", "--append")
    state = fault(box, "api", "409", "--count", "1", "--append")
    assert [(s["kind"], s["count"], s["after"]) for s in state["api"]["queue"]] == [
        ("error500", 2, 1), ("timeout", 1, 0), ("conflict", 1, 0)]
    assert "500 x2, then timeout x1 (0.2s each), then 409 x1" in box.cli("fault", "status").stdout
    started = time.time()
    codes = [label_write(box, str(i)) for i in range(6)]
    assert codes == [200, 500, 500, 504, 409, 200]
    audit = [r for r in requests.get(f"{box.api_url}/sandbox/audit", timeout=10).json()
             if r["time"] >= started and r["verb"] == "patch"]
    assert [r.get("fault") for r in audit] == [None, "error500", "error500", "timeout", "conflict", None]
    assert box.api.get_namespaced_custom_object(*VS)["metadata"]["labels"] == {"probe": "5"}  # only 0 and 5 landed
    # `off` disarms what is still armed.
    fault(box, "api", "500", "--count", "3")
    assert nothing_on(fault(box, "api", "off"))
    assert label_write(box, "after-off") == 200


def test_prometheus_down_refuses_connections_then_up_serves_the_same_data(box: Any) -> None:
    hook = PrometheusHook()
    box.prom_wait(REQUESTS, lambda value: bool(value))
    at = time.time()
    seen = box.prom_query(REQUESTS, at=at)
    assert seen and seen > 0
    state = fault(box, "prometheus", "down")
    assert state["prometheus"]["mode"] == "down" and state["prometheus"]["pid"] is None
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{box.prometheus_url}/-/ready", timeout=5)
    with pytest.raises(PrometheusUnavailableError, match="cannot reach Prometheus"):
        hook.query(REQUESTS)
    status = box.cli("status")
    assert status.returncode == 1 and "prometheus  FAIL" in status.stdout and "DOWN" in status.stdout
    state = fault(box, "prometheus", "up")
    assert state["prometheus"]["mode"] == "up" and state["prometheus"]["pid"]
    assert box.prom_query(REQUESTS, at=at) == seen  # the same URL, its data kept across the outage
    assert float(hook.query(REQUESTS)[0]["value"][1]) > seen  # and it scrapes again
    assert str(state["prometheus"]["pid"]) in box.cli("status").stdout  # status names the new process


def test_prometheus_errors_answers_every_aggregating_query_with_its_own_error(box: Any) -> None:
    hook = PrometheusHook()
    state = fault(box, "prometheus", "errors")
    assert state["prometheus"]["mode"] == "errors"
    assert requests.get(f"{box.prometheus_url}/-/ready", timeout=5).status_code == 200  # alive...
    with pytest.raises(PrometheusQueryError, match="too many samples") as failed:  # ...but failing queries
        hook.query(f"sum(rate({REQUESTS[4:-1]}[30s]))")
    assert not isinstance(failed.value, PrometheusUnavailableError)
    with pytest.raises(PrometheusQueryError, match="too many samples"):
        hook.query(REQUESTS)
    fault(box, "prometheus", "up")
    assert float(hook.query(REQUESTS)[0]["value"][1]) > 0


def test_writer_edits_its_own_route_records_each_edit_and_notices_a_lost_one(box: Any) -> None:
    owned_before = box.api.get_namespaced_custom_object(*VS)["spec"]["http"][-1]
    fault(box, "writer", "start", "--interval", "0.2")
    deadline = time.monotonic() + 20
    while (state := fault(box, "status"))["writer"]["edit_count"] < 3:
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
    vs = box.api.get_namespaced_custom_object(*VS)
    route = vs["spec"]["http"][0]
    assert route["name"] == "sandbox-writer" and vs["spec"]["http"][-1] == owned_before
    assert "RUNNING on bookinfo/reviews every 0.2s" in box.cli("fault", "status").stdout
    assert "faults (`python -m sandbox fault clear` ends them)" in box.cli("status").stdout

    # Someone writes back a stale copy, blind (a merge patch: no resourceVersion, which a real
    # server requires of a replace): the writer's newer edits are gone, and the writer says so.
    stale = vs
    while fault(box, "status")["writer"]["edit_count"] <= state["writer"]["edit_count"] + 1:
        time.sleep(0.1)
    box.api.patch_namespaced_custom_object(*VS, {"spec": stale["spec"]})
    while not (state := fault(box, "status"))["writer"]["lost"]:
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
    lost = state["writer"]["lost"][0]
    assert lost["found"] == route and lost["expected"] != route

    stopped = fault(box, "writer", "stop")["writer"]
    assert stopped["running"] is False
    time.sleep(0.6)
    final = fault(box, "status")["writer"]
    assert final["edit_count"] == stopped["edit_count"]  # no edit after stop
    kept = box.api.get_namespaced_custom_object(*VS)["spec"]["http"][0]["headers"]["request"]["set"]
    assert f"x-sandbox-edit-{final['edit_count']}" in kept


def test_traffic_zero_stops_every_request_and_restore_brings_them_back(box: Any) -> None:
    def total() -> int:
        return box.total(box.counts())

    assert fault(box, "traffic", "zero")["traffic"]["zero"] is True
    time.sleep(0.3)  # a tick in flight may still land
    frozen = total()
    time.sleep(1.0)
    assert total() == frozen
    assert box.state()["services"][0]["rps"] > 0  # the configured rate is kept
    fault(box, "traffic", "restore")
    deadline = time.monotonic() + 10
    while total() <= frozen:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_clear_ends_every_fault_at_once(box: Any) -> None:
    fault(box, "api", "403", "--count", "9")
    fault(box, "traffic", "zero")
    fault(box, "writer", "start")
    state = fault(box, "prometheus", "down")
    assert not nothing_on(state)
    result = box.cli("fault", "clear")
    assert result.returncode == 0, result.stderr
    assert "none armed" in result.stdout and "traffic     normal" in result.stdout
    state = json.loads(box.cli("fault", "status", "--json").stdout)
    assert nothing_on(state) and state["writer"]["edit_count"] >= 1
    assert box.cli("status").returncode == 0  # healthy: Prometheus back and scraping
    assert label_write(box, "after-clear") == 200
