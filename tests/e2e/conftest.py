"""Airflow for the end-to-end tests: a migrated temporary AIRFLOW_HOME and `airflow dags test`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
DAG_ID = "istio_canary_release"


def airflow_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "PYTHONPATH": f"{PROJECT_ROOT / 'plugins'}:{os.environ.get('PYTHONPATH', '')}",
    }
    env.update(extra or {})
    return env


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
        env = airflow_env(airflow_home, {
            "AIRFLOW_CONN_KUBERNETES_DEFAULT": sandbox.env["AIRFLOW_CONN_KUBERNETES_DEFAULT"],
            "AIRFLOW_CONN_PROMETHEUS_DEFAULT": sandbox.env["AIRFLOW_CONN_PROMETHEUS_DEFAULT"],
            **(extra_env or {}),
        })
        args = [AIRFLOW, "dags", "test", DAG_ID, "-c", json.dumps(conf)]
        if popen:
            return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    start_new_session=True)
        result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
        return RunResult(result.returncode, result.stdout + result.stderr)

    yield run
