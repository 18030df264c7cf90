"""A task process killed (SIGKILL) in the middle of set-route on a live Airflow (issue 9, item 5).

To be in the middle of the write for sure, every write to the sandbox's API hangs (a "timeout"
fault) from the moment step 10's route is set: the next write is step 50's set-route, which then
waits on the API server (15 s per attempt, client-side, then retries). Once the sandbox has taken
that write, the task's process (the task runner the supervisor forked: the task instance's
`pid`) gets SIGKILL, the fault is disarmed, and Airflow's retry of set-route must finish the
release: one owned route, at the weights the step wanted, then promoted; no duplicate routes.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client, config

from istio_canary.core.lock import lock_of, outcome_of
from sandbox.procs import group_members
from tests.e2e.conftest import DAG_ID
from tools.live_airflow import LiveAirflow

pytestmark = [pytest.mark.e2e, pytest.mark.live]

RELEASE = {"service": "reviews", "namespace": "bookinfo", "stable_version": "v1", "canary_version": "v2",
           "bake_seconds": 5, "check_interval_seconds": 1, "min_requests": 20,
           # Seconds-long bakes on a small sandbox: the traffic plan would stretch or refuse them.
           "plan_bake": False}
TARGET = "step_50.set_route"
HANGING_WRITES = 100  # every write hangs until disarmed, the task's own API retries included


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 180, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def task_instance(live: LiveAirflow, run_id: str, task_id: str) -> dict[str, Any]:
    response = live.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}")
    response.raise_for_status()
    return response.json()


def parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[1])


def xcom_value(live: LiveAirflow, run_id: str, task_id: str, key: str = "return_value") -> Any:
    response = live.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
                        params={"deserialize": "true"})
    response.raise_for_status()
    return response.json()["value"]


def faults(sandbox: Any, method: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = requests.request(method, f"{sandbox.api_url}/sandbox/faults", json=body, timeout=10)
    response.raise_for_status()
    return response.json()


def test_set_route_killed_mid_write_is_retried_to_one_route_at_the_intended_weight(
    live_airflow: LiveAirflow, sandbox: Any
) -> None:
    sandbox.reset()
    sandbox.set_behaviour(rps=200)
    run_id = None
    try:
        run_id = live_airflow.trigger(RELEASE)
        wait_for("step_10.set_route to succeed",
                 lambda: task_instance(live_airflow, run_id, "step_10.set_route")["state"] == "success")
        # From here until step 50's set-route, the release writes nothing (watch, analyze, decide
        # and the window hold only read): the first write to hang is step 50's.
        faults(sandbox, "POST", {"kind": "timeout", "count": HANGING_WRITES, "timeout_seconds": 60})
        wait_for("the sandbox to hold step 50's write",
                 lambda: faults(sandbox, "GET")["count"] < HANGING_WRITES)
        ti = task_instance(live_airflow, run_id, TARGET)
        assert ti["state"] == "running" and ti["try_number"] == 1, ti

        # The task runner (pid recorded by the supervisor at start) is a child of one of this
        # Airflow's LocalExecutor workers, and titles itself with the task instance id.
        pid = ti["pid"]
        assert parent_pid(pid) in group_members(live_airflow.processes["scheduler"].pid)
        assert ti["id"] in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        os.kill(pid, signal.SIGKILL)
        faults(sandbox, "DELETE")

        assert live_airflow.wait_for_run(run_id, timeout=420) == "success"
        retried = task_instance(live_airflow, run_id, TARGET)
        assert (retried["state"], retried["try_number"]) == ("success", 2)
        tries = live_airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TARGET}/tries").json()
        first = next(t for t in tries["task_instances"] if t["try_number"] == 1)
        assert first["state"] in ("up_for_retry", "failed"), first
        assert "Process terminated by signal" in live_airflow.task_log(run_id, TARGET, 1)

        # The retry wrote what step 50 wants: 50 % to the canary, no match route.
        xcom = xcom_value(live_airflow, run_id, TARGET)
        assert (xcom["canary_weight"], xcom["match_route"]) == (50, False), xcom
        assert "+      weight: 50" in live_airflow.task_log(run_id, TARGET, 2)

        # Promoted: one HTTP route (the owned catch-all), all to v2, no duplicates, lock released.
        api = client.CustomObjectsApi(config.new_client_from_config(config_file=str(sandbox.kubeconfig)))
        vs = api.get_namespaced_custom_object("networking.istio.io", "v1", "bookinfo", "virtualservices", "reviews")
        assert vs["spec"]["http"] == [{"route": [{"destination": {"host": "reviews", "subset": "v2"}}]}]
        assert lock_of(vs) is None
        recorded = outcome_of(vs)
        assert recorded is not None and (recorded.outcome, recorded.holder) == ("promoted", f"{DAG_ID}/{run_id}")
        assert xcom_value(live_airflow, run_id, "report", "release_report")["outcome"] == "promoted"
    finally:
        faults(sandbox, "DELETE")
        if run_id and live_airflow.run_state(run_id) not in ("success", "failed"):
            # A failed check must not leave this release running on the shared Airflow.
            live_airflow.api("PATCH", f"/dags/{DAG_ID}/dagRuns/{run_id}", json={"state": "failed"})
        sandbox.reset()
