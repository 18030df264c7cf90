"""A release on a live Airflow: api-server, scheduler, dag-processor and triggerer (LocalExecutor,
SQLite, temporary AIRFLOW_HOME), driven through the REST API v2 with a JWT from /auth/token.

This is where the bake + watch runs under the real triggerer (not `airflow dags test`'s
in-process one). The `live_airflow` fixture (tests/e2e/conftest.py, tools/live_airflow.py) runs
each process in its own process group and stops those groups when the session ends.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client, config

from tests.e2e.conftest import DAG_ID
from tools.live_airflow import LiveAirflow

pytestmark = [pytest.mark.e2e, pytest.mark.live]

RELEASE = {"service": "reviews", "namespace": "bookinfo", "stable_version": "v1", "canary_version": "v2",
           "bake_seconds": 5, "check_interval_seconds": 1, "min_requests": 20}


def test_release_triggered_over_rest_is_promoted_with_the_watch_in_the_triggerer(
    live_airflow: LiveAirflow, sandbox: Any
) -> None:
    sandbox.reset()
    sandbox.set_behaviour(rps=200)
    run_id = live_airflow.trigger(RELEASE)
    assert live_airflow.wait_for_run(run_id) == "success"
    api = client.CustomObjectsApi(config.new_client_from_config(config_file=str(sandbox.kubeconfig)))
    vs = api.get_namespaced_custom_object("networking.istio.io", "v1", "bookinfo", "virtualservices", "reviews")
    assert vs["spec"]["http"][-1]["route"] == [{"destination": {"host": "reviews", "subset": "v2"}}]
    # The set-route log has the diff; the watch log has the triggerer's checks and the PromQL.
    assert "+      weight: 10" in live_airflow.task_log(run_id, "step_10.set_route")
    watch_log = live_airflow.task_log(run_id, "step_10.watch")
    assert "PromQL" in watch_log and "check 1:" in watch_log and "bake finished after" in watch_log
    sandbox.reset()


def test_invalid_conf_is_refused_with_400_naming_the_param(live_airflow: LiveAirflow) -> None:
    response = live_airflow.api("POST", f"/dags/{DAG_ID}/dagRuns",
                                json={"logical_date": None, "conf": {**RELEASE, "service": "Reviews!"}})
    assert response.status_code == 400
    assert "service" in response.json()["detail"] and "Reviews!" in response.json()["detail"]
