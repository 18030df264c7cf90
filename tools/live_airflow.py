"""A live Airflow for tests and benchmarks: api-server, scheduler, dag-processor and triggerer
(plus a Celery worker when asked) in a temporary AIRFLOW_HOME, driven through REST API v2.

    with start_live_airflow(home, connections=sandbox_connections(box)) as live:  # sandbox.client
        run_id = live.trigger({"service": "reviews", ...})
        assert live.wait_for_run(run_id) == "success"

Every process runs in its own process group; leaving the `with` block stops those groups
(SIGTERM, then SIGKILL after a grace period) and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

PROJECT_ROOT = Path(__file__).resolve().parent.parent
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
RELEASE_DAG_ID = "istio_canary_release"
BASE_PROCESSES = ("api-server", "scheduler", "dag-processor", "triggerer")
FINISHED_RUN_STATES = ("success", "failed")
ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin-pass"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def airflow_env(home: Path, extra: dict[str, str] | None = None, dags_folder: Path | None = None) -> dict[str, str]:
    """The environment every Airflow command of ours runs with: this project's DAGs and plugin."""
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder or PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT / "plugins"), str(PROJECT_ROOT),
                                                  os.environ.get("PYTHONPATH", "")) if p),
    }
    env.update(extra or {})
    return env


@dataclass
class LiveAirflow:
    url: str
    home: Path
    env: dict[str, str]
    token: str = ""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    # --- REST API v2
    def api(self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return requests.request(method, f"{self.url}/api/v2{path}",
                                headers={"Authorization": f"Bearer {self.token}", **(headers or {})}, **kwargs)

    def trigger(self, conf: dict[str, Any], dag_id: str = RELEASE_DAG_ID, run_id: str | None = None) -> str:
        body: dict[str, Any] = {"logical_date": None, "conf": conf}
        if run_id:
            body["dag_run_id"] = run_id
        response = self.api("POST", f"/dags/{dag_id}/dagRuns", json=body)
        if response.status_code != 200:
            raise RuntimeError(f"trigger {dag_id}: HTTP {response.status_code} {response.text}")
        return response.json()["dag_run_id"]

    def run_state(self, run_id: str, dag_id: str = RELEASE_DAG_ID) -> str:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}").json()["state"]

    def wait_for_run(self, run_id: str, dag_id: str = RELEASE_DAG_ID, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.run_state(run_id, dag_id)
            if state in FINISHED_RUN_STATES:
                return state
            time.sleep(1)
        raise TimeoutError(f"run {run_id} of {dag_id} not finished after {timeout:.0f}s; logs in {self.home}")

    def task_instances(self, run_id: str, dag_id: str = RELEASE_DAG_ID) -> dict[str, dict[str, Any]]:
        """{task_id: task instance} of one run (mapped tasks are not used by our DAGs)."""
        body = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000}).json()
        return {ti["task_id"]: ti for ti in body["task_instances"]}

    def task_log(self, run_id: str, task_id: str, try_number: int = 1, dag_id: str = RELEASE_DAG_ID) -> str:
        """The task's log as the UI shows it: one line per event."""
        response = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
                            headers={"Accept": "application/json"}, params={"full_content": "true"})
        response.raise_for_status()
        content = response.json().get("content")
        if isinstance(content, list):
            return "\n".join(str(e.get("event", e)) if isinstance(e, dict) else str(e) for e in content)
        return str(content)

    # --- CLI, with the same configuration as the running services
    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def log_path(self, process: str) -> Path:
        return self.home / f"{process}.log"


@contextlib.contextmanager
def start_live_airflow(
    home: Path,
    *,
    connections: dict[str, str] | None = None,
    executor: str = "LocalExecutor",
    extra_env: dict[str, str] | None = None,
    dags_folder: Path | None = None,
    extra_processes: tuple[tuple[str, ...], ...] = (),
    startup_timeout: float = 180,
) -> Iterator[LiveAirflow]:
    """Migrate the metadata DB, start the services, wait until the API hands out tokens and the
    release DAG is parsed; stop every process group on exit. `connections` are env-style
    (`AIRFLOW_CONN_<ID>`: URI or JSON). `extra_processes`: more `airflow` sub-commands, e.g.
    `(("celery", "worker"),)`."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({ADMIN_USER: ADMIN_PASSWORD}))
    url = f"http://127.0.0.1:{port}"
    env = airflow_env(home, {
        "AIRFLOW__CORE__EXECUTOR": executor,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(24).hex(),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        **(connections or {}),
        **(extra_env or {}),
    }, dags_folder=dags_folder)
    live = LiveAirflow(url=url, home=home, env=env)
    migrated = live.cli("db", "migrate")
    if migrated.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{migrated.stdout[-2000:]}\n{migrated.stderr[-3000:]}")
    commands = [(name,) for name in BASE_PROCESSES] + list(extra_processes)
    try:
        for command in commands:
            name = "-".join(command)
            args = [AIRFLOW, *command] + (["--port", str(port)] if command == ("api-server",) else [])
            with live.log_path(name).open("wb") as log:
                live.processes[name] = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                        start_new_session=True)
        live.token = _wait_for_token(live, startup_timeout)
        _wait_for_dag(live, RELEASE_DAG_ID if dags_folder is None else None, startup_timeout)
        yield live
    finally:
        stop_processes(live.processes.values())


# The role tools/local_services.sh creates (`make setup`); another server through the variable.
POSTGRES_ADMIN_URL = os.environ.get("ISTIO_CANARY_POSTGRES_URL",
                                    "postgresql://istio_canary:istio_canary@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def postgres_database(admin_url: str = POSTGRES_ADMIN_URL, prefix: str = "istio_canary") -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database on the server at `admin_url` (a libpq URL of a
    role that may create databases); yields its SQLAlchemy URL, drops it on exit."""
    import psycopg2
    from psycopg2.extensions import parse_dsn

    try:
        admin = psycopg2.connect(admin_url, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        raise RuntimeError(f"PostgreSQL not reachable at {admin_url}: {str(exc).strip()} (start it: "
                           "`bash tools/local_services.sh`, or set ISTIO_CANARY_POSTGRES_URL)") from exc
    admin.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        dsn = parse_dsn(admin_url)
        password = f":{dsn['password']}" if dsn.get("password") else ""
        yield (f"postgresql+psycopg2://{dsn.get('user', '')}{password}@{dsn.get('host', '127.0.0.1')}:"
               f"{dsn.get('port', '5432')}/{name}")
    finally:
        with admin.cursor() as cursor:
            # FORCE: a stopped Airflow may leave a pooled connection behind for a moment.
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def stop_processes(processes: Any, grace_seconds: float = 20) -> None:
    """SIGTERM each process's own group, then SIGKILL what is still there after the grace period."""
    processes = list(processes)
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        # Children (task runners, gunicorn workers) may outlive the leader: end the whole group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)


def fetch_token(url: str, username: str = ADMIN_USER, password: str = ADMIN_PASSWORD) -> str:
    response = requests.post(f"{url}/auth/token", json={"username": username, "password": password}, timeout=10)
    response.raise_for_status()
    return response.json()["access_token"]


def _check_alive(live: LiveAirflow) -> None:
    dead = [name for name, p in live.processes.items() if p.poll() is not None]
    if dead:
        tails = "\n".join(f"--- {name}.log\n{live.log_path(name).read_text(errors='replace')[-2000:]}"
                          for name in dead)
        raise RuntimeError(f"Airflow process(es) {dead} exited early:\n{tails}")


def _wait_for_token(live: LiveAirflow, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _check_alive(live)
        with contextlib.suppress(requests.RequestException):
            return fetch_token(live.url)
        time.sleep(1)
    raise TimeoutError(f"api-server not answering /auth/token after {timeout:.0f}s; see {live.log_path('api-server')}")


def _wait_for_dag(live: LiveAirflow, dag_id: str | None, timeout: float) -> None:
    """Until `dag_id` (or, with None, any DAG) is parsed and visible in the API."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _check_alive(live)
        if dag_id is not None:
            if live.api("GET", f"/dags/{dag_id}").status_code == 200:
                return
        elif live.api("GET", "/dags").json().get("total_entries", 0) > 0:
            return
        time.sleep(1)
    raise TimeoutError(f"DAG {dag_id or '(any)'} not parsed after {timeout:.0f}s; see {live.log_path('dag-processor')}")
