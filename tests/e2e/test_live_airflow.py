"""A release on a live Airflow: api-server, scheduler, dag-processor and triggerer (LocalExecutor,
SQLite, temporary AIRFLOW_HOME), driven through the REST API v2 with a JWT from /auth/token.

This is where the bake + watch runs under the real triggerer (not `airflow dags test`'s
in-process one). Each process runs in its own process group and is stopped by this module.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client, config

from tests.e2e.conftest import AIRFLOW, DAG_ID, airflow_env

pytestmark = [pytest.mark.e2e, pytest.mark.live]

PROCESSES = ("api-server", "scheduler", "dag-processor", "triggerer")
RELEASE = {"service": "reviews", "namespace": "bookinfo", "stable_version": "v1", "canary_version": "v2",
           "bake_seconds": 5, "check_interval_seconds": 1, "min_requests": 20}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveAirflow:
    url: str
    token: str
    home: Path

    def api(self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any) -> requests.Response:
        return requests.request(method, f"{self.url}/api/v2{path}", timeout=30,
                                headers={"Authorization": f"Bearer {self.token}", **(headers or {})}, **kwargs)

    def wait_for_run(self, run_id: str, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}").json()["state"]
            if state in ("success", "failed"):
                return state
            time.sleep(2)
        raise TimeoutError(f"run {run_id} still not finished after {timeout:.0f}s")

    def task_log(self, run_id: str, task_id: str, try_number: int = 1) -> str:
        body = self.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
                        headers={"Accept": "application/json"}).json()
        content = body.get("content")
        if isinstance(content, list):
            return "\n".join(str(e.get("event", e)) if isinstance(e, dict) else str(e) for e in content)
        return str(content)


@pytest.fixture(scope="module")
def live_airflow(sandbox: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveAirflow]:
    home = tmp_path_factory.mktemp("live-airflow")
    port = _free_port()
    (home / "passwords.json").write_text(json.dumps({"admin": "admin-pass"}))
    env = airflow_env(home, {
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(24).hex(),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW_CONN_KUBERNETES_DEFAULT": sandbox.env["AIRFLOW_CONN_KUBERNETES_DEFAULT"],
        "AIRFLOW_CONN_PROMETHEUS_DEFAULT": sandbox.env["AIRFLOW_CONN_PROMETHEUS_DEFAULT"],
    })
    migrated = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    started: list[subprocess.Popen[bytes]] = []
    try:
        for name in PROCESSES:
            log = (home / f"{name}.log").open("wb")
            args = [AIRFLOW, name] + (["--port", str(port)] if name == "api-server" else [])
            started.append(subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True))
        url = f"http://127.0.0.1:{port}"
        token = _wait_for_token(url, started, home)
        live = LiveAirflow(url, token, home)
        _wait_for_dag(live)
        yield live
    finally:
        for process in started:  # each in its own process group: stop the group, only ours
            with _suppress():
                os.killpg(process.pid, signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with _suppress():
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is ProcessLookupError


def _wait_for_token(url: str, started: list[subprocess.Popen[bytes]], home: Path) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        dead = [p for p in started if p.poll() is not None]
        assert not dead, f"an Airflow process exited early; see {home}/*.log"
        try:
            response = requests.post(f"{url}/auth/token", json={"username": "admin", "password": "admin-pass"},
                                     timeout=5)
            if response.status_code in (200, 201):
                return response.json()["access_token"]
        except requests.ConnectionError:
            pass
        time.sleep(1)
    raise TimeoutError(f"api-server not answering /auth/token; see {home}/api-server.log")


def _wait_for_dag(live: LiveAirflow) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if live.api("GET", f"/dags/{DAG_ID}").status_code == 200:
            return
        time.sleep(2)
    raise TimeoutError(f"{DAG_ID} never parsed; see {live.home}/dag-processor.log")


def test_release_triggered_over_rest_is_promoted_with_the_watch_in_the_triggerer(
    live_airflow: LiveAirflow, sandbox: Any
) -> None:
    sandbox.reset()
    sandbox.set_behaviour(rps=200)
    response = live_airflow.api("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": RELEASE})
    assert response.status_code == 200, response.text
    run_id = response.json()["dag_run_id"]
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
