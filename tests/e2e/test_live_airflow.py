"""Releases on a live Airflow: api-server, scheduler, dag-processor and triggerer (LocalExecutor,
SQLite, temporary AIRFLOW_HOME), driven as a release engineer would: the REST API v2 with a JWT
from /auth/token (trigger, clear a task, answer the approval) and the `airflow` CLI.

This is where the bake + watch runs under the real triggerer (not `airflow dags test`'s
in-process one) and where a Human-in-the-loop answer resumes a parked task. The `live_airflow`
fixture (tests/e2e/conftest.py, tools/live_airflow.py) runs each process in its own process
group and stops those groups when the session ends. The tests share that one Airflow and the
session sandbox, so each starts from reset routing and resets it when done.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from istio_canary.core.lock import lock_of, outcome_of
from istio_canary.core.request import ReleaseRequest
from istio_canary.core.routing import routing_state
from tests.e2e.conftest import DAG_ID
from tools.live_airflow import LiveAirflow

pytestmark = [pytest.mark.e2e, pytest.mark.live]

NS = "bookinfo"
RELEASE = {"service": "reviews", "namespace": NS, "stable_version": "v1", "canary_version": "v2",
           "bake_seconds": 5, "check_interval_seconds": 1, "min_requests": 20,
           # Seconds-long bakes on a small sandbox: the traffic plan would stretch or refuse them.
           "plan_bake": False}
REQUEST = ReleaseRequest.from_params(RELEASE)
ALL_TO_V2 = [{"destination": {"host": "reviews", "subset": "v2"}}]


class Mesh:
    """The session sandbox seen through the official Kubernetes client."""

    def __init__(self, sandbox: Any) -> None:
        self.sandbox = sandbox
        self.api = sandbox.istio

    def get(self, plural: str) -> dict[str, Any]:
        return self.sandbox.istio_object(plural, "reviews", NS)

    def vs(self) -> dict[str, Any]:
        return self.get("virtualservices")

    def dr(self) -> dict[str, Any]:
        return self.get("destinationrules")

    def canary_weight(self) -> int:
        return routing_state(self.vs(), REQUEST).canary_weight


@pytest.fixture
def mesh(sandbox: Any) -> Iterator[Mesh]:
    """Seeded routing (100% v1) and enough traffic for 5-second bakes; reset again afterwards."""
    sandbox.reset()
    sandbox.set_behaviour(rps=200)
    try:
        yield Mesh(sandbox)
    finally:
        sandbox.reset()


def latest_log(live: LiveAirflow, run_id: str, task_id: str) -> str:
    """The log of the task's latest try, as the UI opens it.

    Not always try 1: Airflow 3.3 can fail a deferred task whose trigger fired before the
    scheduler saw its worker exit ("state mismatch", apache/airflow#67287, #72716); the DAG's
    retries run it again.
    """
    try_number = live.task_instances(run_id)[task_id]["try_number"]
    return live.task_log(run_id, task_id, try_number)


def wait_for_task(live: LiveAirflow, run_id: str, task_id: str, states: tuple[str, ...],
                  timeout: float = 240) -> dict[str, Any]:
    """Poll until `task_id` is in one of `states`; fail at once if the run ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ti = live.task_instances(run_id).get(task_id) or {}
        if ti.get("state") in states:
            return ti
        run_state = live.run_state(run_id)
        if run_state in ("success", "failed"):
            pytest.fail(f"run {run_id} ended {run_state} while {task_id} was {ti.get('state')}, "
                        f"never {states}; logs in {live.home}")
        time.sleep(1)
    raise TimeoutError(f"{task_id} of {run_id} not in {states} after {timeout:.0f}s; logs in {live.home}")


def wait_until_parked(live: LiveAirflow, run_id: str, task_id: str, timeout: float = 120) -> None:
    """Until the scheduler has seen the worker exit after `task_id` parked (awaiting input).

    Airflow 3.3.2 fails a resumed task whose worker-exit event the scheduler handles only
    after the resume queued it again ("state mismatch", apache/airflow#67287): an answer
    given in those first seconds fails the approval (retries=0) and rolls back even an
    approved release. This test answers right after that window.
    """
    finished = f"TaskInstance Finished: dag_id={DAG_ID}, task_id={task_id}, run_id={run_id},"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in live.log_path("scheduler").read_text(errors="replace").splitlines():
            if finished in line and "state=awaiting_input" in line:
                return
        time.sleep(0.5)
    raise TimeoutError(f"scheduler never saw {task_id} of {run_id} park; see {live.log_path('scheduler')}")


def report_requests(report_log: str, phase: str) -> int:
    """Canary requests of `phase` in the release report table the `report` task logs."""
    match = re.search(rf"^{phase}\s+\d+\s+(\d+)\s", report_log, re.M)
    assert match, report_log
    return int(match.group(1))


def test_release_triggered_over_rest_is_promoted_with_the_watch_in_the_triggerer(
    live_airflow: LiveAirflow, mesh: Mesh
) -> None:
    run_id = live_airflow.trigger(RELEASE)
    assert live_airflow.wait_for_run(run_id) == "success"
    assert mesh.vs()["spec"]["http"][-1]["route"] == ALL_TO_V2
    # The set-route log has the diff; the watch log has the triggerer's checks with the counts.
    assert "+      weight: 10" in latest_log(live_airflow, run_id, "step_10.set_route")
    watch_log = latest_log(live_airflow, run_id, "step_10.watch")
    assert "PromQL" in watch_log and "bake finished after" in watch_log
    checks = re.findall(r"^requests\s+pass\s+(\d+)\s+20\s+canary \1 requests in the window", watch_log, re.M)
    assert checks and re.search(r"^check \d+: PASS", watch_log, re.M), watch_log

    # The analysis log says what was asked of Prometheus and what came back: the query a
    # person can paste into Prometheus, the canary's request count against min_requests and
    # the error ratios of both versions against max_error_rate, and the verdict.
    analyze_log = latest_log(live_airflow, run_id, "step_10.analyze")
    query = re.search(r"^PromQL \(counters, differenced between checks\): (.+)$", analyze_log, re.M)
    assert query, analyze_log
    assert 'destination_service_name="reviews"' in query.group(1)
    assert 'destination_version=~"v2|v1"' in query.group(1)
    assert {"v1", "v2"} <= set(mesh.sandbox.prom_by(query.group(1), "destination_version"))
    requests_row = re.search(r"^requests\s+pass\s+(\d+)\s+20\s+canary (\d+) requests in the window$",
                             analyze_log, re.M)
    assert requests_row and requests_row.group(1) == requests_row.group(2), analyze_log
    error_row = re.search(r"^error_rate\s+pass\s+(\d+\.\d\d)%\s+1\.00%\s+canary (\d+\.\d\d)%, stable \d+\.\d\d%$",
                          analyze_log, re.M)
    assert error_row and float(error_row.group(1)) < 1.0, analyze_log
    assert "final verdict: PASS" in analyze_log and "verdict: pass:" in analyze_log
    # The report's step_10 row counts the same canary requests the analysis judged.
    report_log = latest_log(live_airflow, run_id, "report")
    assert report_requests(report_log, "step_10") == int(requests_row.group(1)) >= 20


def test_clearing_a_set_route_after_promotion_reruns_it_and_changes_nothing(
    live_airflow: LiveAirflow, mesh: Mesh
) -> None:
    """A release engineer re-runs a finished step (here the 10% shift, the step that would do
    harm if replayed) of a promoted release: the task runs again and succeeds, says the release
    already finished, and traffic stays 100% on v2: nothing is written."""
    run_id = live_airflow.trigger(RELEASE)
    assert live_airflow.wait_for_run(run_id) == "success"
    before_tis = live_airflow.task_instances(run_id)
    vs_before, dr_before = mesh.vs(), mesh.dr()
    assert mesh.canary_weight() == 100

    task_id = "step_10.set_route"
    response = live_airflow.api("POST", f"/dags/{DAG_ID}/clearTaskInstances", json={
        "dry_run": False, "only_failed": False, "task_ids": [task_id], "dag_run_id": run_id,
    })
    assert response.status_code == 200, response.text
    assert [ti["task_id"] for ti in response.json()["task_instances"]] == [task_id]  # downstream untouched

    tries = before_tis[task_id]["try_number"]
    deadline = time.monotonic() + 180
    while live_airflow.task_instances(run_id)[task_id]["try_number"] <= tries:
        assert time.monotonic() < deadline, f"{task_id} not re-run after the clear; logs in {live_airflow.home}"
        time.sleep(1)
    assert live_airflow.wait_for_run(run_id) == "success"
    after_tis = live_airflow.task_instances(run_id)
    assert after_tis[task_id]["state"] == "success"
    assert after_tis[task_id]["try_number"] == tries + 1
    assert {t: ti["try_number"] for t, ti in after_tis.items() if t != task_id} == {
        t: ti["try_number"] for t, ti in before_tis.items() if t != task_id}

    log = latest_log(live_airflow, run_id, task_id)
    assert f"no change: release '{DAG_ID}/{run_id}' already finished: promoted at" in log, log
    # Nothing written: same objects, same resourceVersions, same routing.
    vs_after, dr_after = mesh.vs(), mesh.dr()
    assert vs_after == vs_before and dr_after == dr_before
    assert vs_after["spec"]["http"][-1]["route"] == ALL_TO_V2
    assert lock_of(vs_after) is None and outcome_of(vs_after).outcome == "promoted"


@pytest.mark.parametrize("answer", ["Approve", "Reject"])
def test_approval_over_rest_promotes_or_rolls_back(live_airflow: LiveAirflow, mesh: Mesh, answer: str) -> None:
    """require_approval: the release stops at 50% and asks (Required actions); the answer given
    through the HITL endpoint promotes it, or rolls it back and fails the run."""
    seeded_spec = mesh.vs()["spec"]
    run_id = live_airflow.trigger({**RELEASE, "require_approval": True})
    wait_for_task(live_airflow, run_id, "approve_promotion", ("awaiting_input",))
    wait_until_parked(live_airflow, run_id, "approve_promotion")
    assert mesh.canary_weight() == 50  # held at the last step before the approval
    hitl = f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/approve_promotion/-1/hitlDetails"
    detail = live_airflow.api("GET", hitl).json()
    assert detail["subject"] == "Go to 100%: reviews v2?" and detail["options"] == ["Approve", "Reject"]
    assert detail["response_received"] is False

    response = live_airflow.api("PATCH", hitl, json={"chosen_options": [answer]})
    assert response.status_code == 200, response.text
    assert response.json()["responded_by"]["name"] == "admin"
    state = live_airflow.wait_for_run(run_id)
    tis = {t: ti["state"] for t, ti in live_airflow.task_instances(run_id).items()}
    vs = mesh.vs()
    if answer == "Approve":
        assert state == "success"
        assert tis["approve_promotion"] == "success" and tis["promote"] == "success"
        assert vs["spec"]["http"][-1]["route"] == ALL_TO_V2
        assert lock_of(vs) is None and outcome_of(vs).outcome == "promoted"
    else:
        # fail_on_reject: a rejection fails the approval task, which rolls back like any failure.
        assert state == "failed"
        assert tis["approve_promotion"] == "failed" and tis["rollback"] == "success"
        assert tis["step_100.set_route"] != "success" and tis["promote"] != "success"
        assert vs["spec"] == seeded_spec  # 100% v1, exactly as before the release
        assert lock_of(vs) is None and outcome_of(vs).outcome == "rolled_back"
        assert "release bookinfo/reviews v1 -> v2: ROLLED_BACK" in latest_log(live_airflow, run_id, "report")


def test_release_triggered_from_the_cli_is_promoted(live_airflow: LiveAirflow, mesh: Mesh) -> None:
    result = live_airflow.cli("dags", "trigger", DAG_ID, "-c", json.dumps(RELEASE), "-o", "json")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    # stdout: log lines (e.g. a graphviz warning), then the new run as one JSON line.
    runs = json.loads(next(line for line in reversed(result.stdout.splitlines()) if line.startswith("[{")))
    assert len(runs) == 1 and runs[0]["dag_id"] == DAG_ID
    run_id = runs[0]["dag_run_id"]
    run = live_airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}").json()
    assert run["conf"] == RELEASE and run["run_type"] == "manual" and run["triggered_by"] == "cli"
    assert live_airflow.wait_for_run(run_id) == "success"
    vs = mesh.vs()
    assert vs["spec"]["http"][-1]["route"] == ALL_TO_V2
    assert outcome_of(vs).outcome == "promoted" and outcome_of(vs).holder == f"{DAG_ID}/{run_id}"


def test_invalid_conf_is_refused_with_400_naming_the_param(live_airflow: LiveAirflow) -> None:
    response = live_airflow.api("POST", f"/dags/{DAG_ID}/dagRuns",
                                json={"logical_date": None, "conf": {**RELEASE, "service": "Reviews!"}})
    assert response.status_code == 400
    assert "service" in response.json()["detail"] and "Reviews!" in response.json()["detail"]
