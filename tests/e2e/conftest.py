"""Airflow for the end-to-end tests: a migrated temporary AIRFLOW_HOME and `airflow dags test`."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tools.live_airflow import AIRFLOW, RELEASE_DAG_ID, LiveAirflow, airflow_env, start_live_airflow

DAG_ID = RELEASE_DAG_ID


def sandbox_connections(sandbox: Any) -> dict[str, str]:
    """The two Airflow connections (env-style) that point at the sandbox."""
    return {key: sandbox.env[key] for key in ("AIRFLOW_CONN_KUBERNETES_DEFAULT", "AIRFLOW_CONN_PROMETHEUS_DEFAULT")}


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("airflow-home")
    result = subprocess.run([AIRFLOW, "db", "migrate"], env=airflow_env(home), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return home


@dataclass
class RunResult:
    returncode: int
    output: str

    @property
    def state(self) -> str | None:
        """The DAG run's final state as `airflow dags test` reports it."""
        marker = "DagRun Finished:"
        for line in reversed(self.output.splitlines()):
            if marker in line and "state=" in line:
                return line.split("state=", 1)[1].split(",", 1)[0].strip()
        return None


@pytest.fixture
def run_release(airflow_home: Path, sandbox: Any) -> Iterator[Any]:
    """`run_release(conf, timeout=...) -> RunResult`: one `airflow dags test` against the sandbox."""

    def run(conf: dict[str, Any], timeout: float = 420, extra_env: dict[str, str] | None = None,
            popen: bool = False) -> Any:
        env = airflow_env(airflow_home, {**sandbox_connections(sandbox), **(extra_env or {})})
        args = [AIRFLOW, "dags", "test", DAG_ID, "-c", json.dumps(conf)]
        if popen:
            return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    start_new_session=True)
        result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
        return RunResult(result.returncode, result.stdout + result.stderr)

    yield run


@pytest.fixture(scope="session")
def live_airflow(sandbox: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveAirflow]:
    """One live Airflow (LocalExecutor, SQLite) for every live test of the session, wired to the
    session sandbox; its processes are stopped (by process group) when the session ends."""
    with start_live_airflow(tmp_path_factory.mktemp("live-airflow"), connections=sandbox_connections(sandbox)) as live:
        yield live
