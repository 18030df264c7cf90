"""Releases under injected faults (`python -m sandbox fault ...`), end to end with `airflow dags test`
(and the live Airflow for two concurrent runs). Each test arms its faults by count or on a
line of the run's own output, never on a timer, and ends with the cluster's state.

Already covered elsewhere, so not repeated here: transient 500s on set-route that the hook's
retries absorb (tests/integration/test_istio_operators.py::test_transient_api_errors_are_retried_with_backoff);
a 403 on a later step rolling back (tests/e2e/test_release_dag.py::test_failure_in_a_middle_task_rolls_back);
the lock released after promote and after rollback by a single run (test_release_dag.py's
promoted / rolled-back tests); refusal naming the holder and breaking a stale lock at operator
level (test_istio_operators.py::test_second_release_is_refused_naming_the_holder_then_stale_lock_can_be_broken).
"""

from __future__ import annotations

import json
import re
import time
from itertools import pairwise
from typing import Any

import pytest
import requests

from istio_canary.core.lock import lock_of, outcome_of, snapshot_of
from istio_canary.core.request import ReleaseRequest
from istio_canary.core.routing import find_owned_route, routing_state
from sandbox.client import SandboxInfo
from tests.e2e.conftest import run_with_trigger
from tests.helpers import vs_of
from tools.live_airflow import LiveAirflow

pytestmark = pytest.mark.e2e

NS = "bookinfo"
RELEASE = {"service": "reviews", "namespace": NS, "stable_version": "v1", "canary_version": "v2",
           "bake_seconds": 5, "check_interval_seconds": 1, "min_requests": 20,
           # Seconds-long bakes on a small sandbox: the traffic plan would stretch or refuse them.
           "plan_bake": False}
REQUEST = ReleaseRequest.from_params(RELEASE)
WRITES = ("create", "update", "patch", "delete")
WRITER_ROUTE = "sandbox-writer"


_fault = SandboxInfo.fault  # _fault(sandbox, ARGS): `python -m sandbox fault ARGS`, every fault's state after


def istio_writes(mesh: Any, since: float) -> list[dict[str, Any]]:
    """The API server's audit records of Istio object writes since `since`, oldest first."""
    records = requests.get(f"{mesh.api_url}/sandbox/audit", timeout=10).json()
    return [r for r in records if r["verb"] in WRITES and r["group"] == "networking.istio.io" and r["time"] >= since]


def run_id_of(output: str) -> str:
    match = re.search(r"run_id=(manual__[^,\s]+)", output)
    assert match, output[-3000:]
    return match.group(1)


def task_log_with_errors(live: LiveAirflow, run_id: str, task_id: str, try_number: int = 1) -> str:
    """A task's log as the UI shows it, with the exception (`error_detail`) the failure raised."""
    response = live.api("GET", f"/dags/istio_canary_release/dagRuns/{run_id}/taskInstances/{task_id}/logs/"
                        f"{try_number}", headers={"Accept": "application/json"}, params={"full_content": "true"})
    response.raise_for_status()
    return "\n".join(json.dumps(entry) if isinstance(entry, dict) else str(entry)
                     for entry in response.json().get("content") or [])


def test_api_500s_and_timeouts_during_set_route_are_retried_boundedly_then_rolled_back_to_the_snapshot(
    mesh: Any, run_release: Any
) -> None:
    before = vs_of(mesh)
    dr = mesh.api.get_namespaced_custom_object("networking.istio.io", "v1", NS, "destinationrules", "reviews")
    assert [s["name"] for s in dr["spec"]["subsets"]] == ["v1"]  # so the subsets write is write 2
    # Writes 1 (lock) and 2 (subsets) pass; then every write of step 10's set-route fails: its
    # 3 Airflow tries x 5 hook attempts = 15 writes, 2 timing out (504), 13 answering 500.
    _fault(mesh, "api", "timeout", "--count", "2", "--seconds", "1", "--after", "2")
    _fault(mesh, "api", "500", "--count", "13", "--append")
    started = time.time()
    result = run_release(RELEASE)

    assert result.state == "failed", result.output[-5000:]
    vs = vs_of(mesh)
    assert vs["spec"] == before["spec"]  # routing exactly as before the release
    assert lock_of(vs) is None and outcome_of(vs).outcome == "rolled_back"
    writes = istio_writes(mesh, started)
    faulted = [r for r in writes if r.get("fault")]
    # Bounded: exactly the planned 15 writes failed, the rollback's write landed, nothing after it.
    assert [r["code"] for r in faulted] == [504, 504] + [500] * 13
    assert all(r["resource"] == "virtualservices" for r in faulted)
    # After the faults: the rollback's VirtualService write, then the subset it added removed.
    assert [(w["resource"], w["code"], w.get("fault")) for w in writes[-2:]] == [
        ("virtualservices", 200, None), ("destinationrules", 200, None)]
    assert writes.index(faulted[-1]) == len(writes) - 3
    # Backoff: within each try the hook waits 0.5, 1, 2, 4 s between its 5 attempts.
    for attempt in range(3):
        sent = [r["time"] for r in faulted[5 * attempt:5 * attempt + 5]]
        gaps = [b - a for a, b in pairwise(sent)]
        assert all(gap >= 0.5 * 2 ** i for i, gap in enumerate(gaps)), gaps
    out = result.output
    assert out.count("retry 4/4 in 4.0s") == 3  # each of the three tries gave up after 4 retries
    assert "HTTP 504" in out and "HTTP 500" in out
    assert "rollback: wrote VirtualService bookinfo/reviews" in out
    assert "ROLLED_BACK" in out and "task_id='promote'" not in out


def test_409_storm_and_a_concurrent_writer_release_completes_and_keeps_every_writer_edit(
    mesh: Any, run_release: Any
) -> None:
    writer = _fault(mesh, "writer", "start", "--interval", "1")["writer"]
    deadline = time.monotonic() + 10
    while WRITER_ROUTE not in [r.get("name") for r in vs_of(mesh)["spec"]["http"]]:
        assert time.monotonic() < deadline, writer
        time.sleep(0.1)
    # 409 x5 on the lock write (the hook re-reads and re-applies, 5 retries); then, after the
    # subsets write, 409 x6 on step 10's write: more than the hook's bound, so that try fails
    # and Airflow's retry lands it. The writer's own edits cause real 409s on top, now and then.
    _fault(mesh, "api", "409", "--count", "5")
    _fault(mesh, "api", "409", "--count", "6", "--after", "2", "--append")
    started = time.time()
    result = run_release(RELEASE)
    writer = _fault(mesh, "writer", "stop")["writer"]

    assert result.state == "success", result.output[-5000:]
    vs = vs_of(mesh)
    assert lock_of(vs) is None and outcome_of(vs).outcome == "promoted"
    state = routing_state(vs, REQUEST)
    assert (state.canary_weight, state.match_route_present) == (100, False)
    # Every edit the writer made is still there, and none was ever lost on the way.
    assert writer["lost"] == [] and writer["errors"] == []
    assert writer["edit_count"] >= 10 and len(writer["edits"]) == writer["edit_count"]
    writer_route = next(r for r in vs["spec"]["http"] if r.get("name") == WRITER_ROUTE)
    written = {f"x-sandbox-edit-{e['seq']}": str(e["seq"]) for e in writer["edits"]}
    assert writer_route["headers"]["request"]["set"] == written
    # Besides the writer's route, the release changed only its own route.
    assert [r.get("name") for r in vs["spec"]["http"]] == [WRITER_ROUTE, None]
    injected = [r for r in istio_writes(mesh, started) if r.get("fault")]
    assert [r["code"] for r in injected] == [409] * 11
    out = result.output
    assert "409 Conflict" in out and "re-reading and re-applying the same change" in out
    assert "still conflicting after 5 retries" in out  # step 10's first try, then its retry


def test_prometheus_down_during_bake_fails_after_the_bound_and_a_failing_rollback_is_retried(
    mesh: Any, run_release: Any
) -> None:
    before = vs_of(mesh)
    started = time.time()
    process = run_release({**RELEASE, "bake_seconds": 30}, popen=True)

    def prometheus_down_and_rollback_errors() -> None:
        # Step 10's bake has begun (the watch task logs it before deferring). From here on no
        # release task writes until the rollback: its first try's 5 attempts get a 500.
        _fault(mesh, "prometheus", "down")
        _fault(mesh, "api", "500", "--count", "5")

    out = run_with_trigger(process, "bake 30s", prometheus_down_and_rollback_errors)
    state = _fault(mesh, "prometheus", "up")
    assert state["prometheus"]["mode"] == "up"

    assert re.search(r"DagRun Finished:.*state=failed", out), out[-5000:]
    assert "cannot reach Prometheus" in out
    assert "inconclusive checks in a row (max_inconclusive 3)" in out
    assert "ROLLED_BACK: step_10: fail" in out
    assert "task_id='step_50.set_route'" not in out and "task_id='promote'" not in out  # never promoted
    assert "rollback try 1 of 4 failed" in out and "Traffic now: canary weight 10%" in out
    assert "rollback: wrote VirtualService bookinfo/reviews" in out
    vs = vs_of(mesh)
    assert vs["spec"] == before["spec"]
    assert lock_of(vs) is None and outcome_of(vs).outcome == "rolled_back"
    writes = istio_writes(mesh, started)
    assert [r["code"] for r in writes if r.get("fault")] == [500] * 5
    assert (writes[-1]["code"], writes[-1].get("fault")) == (200, None)  # the retried rollback, then its subsets


def test_rollback_that_finally_fails_says_loudly_where_traffic_is(mesh: Any, run_release: Any) -> None:
    mesh.set_behaviour("v1", error_rate=0.005)
    mesh.set_behaviour("v2", error_rate=0.05)  # step 10 fails, so the release rolls back
    # Writes 1-3 (lock, subsets, step 10) pass; the rollback's 4 tries are refused (403: not
    # transient, so each try fails at once and Airflow retries the task).
    _fault(mesh, "api", "403", "--count", "4", "--after", "3")
    result = run_release({**RELEASE, "bake_seconds": 60})

    assert result.state == "failed", result.output[-5000:]
    out = result.output
    assert "stopped EARLY" in out
    for attempt in (1, 2, 3):
        assert f"rollback try {attempt} of 4 failed" in out
    assert re.search(r"error.*ROLLBACK FAILED: traffic may still reach canary v2 of bookinfo/reviews: "
                     r"canary weight 10%", out), out[-5000:]
    assert "ROLLBACK_FAILED: ROLLBACK FAILED: traffic may still reach v2 at canary weight 10%" in out  # report
    assert "release rollback_failed" in out  # the outcome task
    # The cluster is as the message says: 10% to the canary, the lock still held by this run.
    vs = vs_of(mesh)
    assert routing_state(vs, REQUEST).canary_weight == 10
    assert lock_of(vs).holder == f"istio_canary_release/{run_id_of(out)}"


def test_second_release_is_refused_while_one_runs_and_a_dead_runs_lock_is_broken_by_the_param(
    mesh: Any, live_airflow: LiveAirflow
) -> None:
    """On the live Airflow, where runs really are concurrent. Run A bakes for minutes; B for the
    same service is refused at preflight naming A, and changes nothing. A is then marked failed
    (as a person does with a stuck run): its lock is stale. C breaks it with break_stale_lock,
    which is logged, and releases; the lock is free again after C's promotion. While A still ran,
    break_stale_lock was refused."""
    before = vs_of(mesh)
    run_a = live_airflow.trigger({**RELEASE, "bake_seconds": 600})
    holder_a = f"istio_canary_release/{run_a}"
    deadline = time.monotonic() + 240
    while routing_state(vs_of(mesh), REQUEST).canary_weight != 10:  # A holds the lock and bakes step 10
        assert time.monotonic() < deadline, live_airflow.task_instances(run_a)
        time.sleep(0.5)
    during_a = vs_of(mesh)

    run_b = live_airflow.trigger(RELEASE)
    assert live_airflow.wait_for_run(run_b) == "failed"
    states_b = {task: ti["state"] for task, ti in live_airflow.task_instances(run_b).items()}
    assert states_b["preflight"] == "failed" and states_b["step_10.set_route"] != "success", states_b
    preflight_b = task_log_with_errors(live_airflow, run_b, "preflight", try_number=2)  # retries=1
    assert f"is locked by release '{holder_a}'" in preflight_b
    assert "no change" in live_airflow.task_log(run_b, "rollback")  # B's rollback leaves A alone
    vs = vs_of(mesh)
    assert vs["spec"] == during_a["spec"] and lock_of(vs).holder == holder_a

    # break_stale_lock cannot take a running release's lock: Airflow says A still runs.
    run_b2 = live_airflow.trigger({**RELEASE, "break_stale_lock": True})
    assert live_airflow.wait_for_run(run_b2) == "failed"
    preflight_b2 = task_log_with_errors(live_airflow, run_b2, "preflight", try_number=2)
    assert f"break_stale_lock refused: the lock holder {holder_a} is still running" in preflight_b2
    assert vs_of(mesh)["spec"] == during_a["spec"] and lock_of(vs_of(mesh)).holder == holder_a

    patched = live_airflow.api("PATCH", f"/dags/istio_canary_release/dagRuns/{run_a}", json={"state": "failed"})
    assert patched.status_code == 200, patched.text
    assert live_airflow.run_state(run_a) == "failed"
    assert lock_of(vs_of(mesh)).holder == holder_a  # nobody released it: a stale lock

    run_c = live_airflow.trigger({**RELEASE, "break_stale_lock": True})
    assert live_airflow.wait_for_run(run_c) == "success"
    assert f"BREAKING the release lock held by '{holder_a}'" in live_airflow.task_log(run_c, "preflight")
    vs = vs_of(mesh)
    assert lock_of(vs) is None
    assert outcome_of(vs).outcome == "promoted" and outcome_of(vs).holder == f"istio_canary_release/{run_c}"
    assert routing_state(vs, REQUEST).canary_weight == 100
    assert snapshot_of(vs) is None and len(vs["spec"]["http"]) == len(before["spec"]["http"])
    assert find_owned_route(vs, REQUEST) == find_owned_route(before, REQUEST)
