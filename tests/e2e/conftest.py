"""Airflow for the end-to-end tests: a migrated temporary AIRFLOW_HOME and `airflow dags test`;
`mesh`, the test's cluster at its seeded state with no faults."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sandbox.client import SandboxInfo, sandbox_connections
from tests.istio_analyzer import StepAnalyzer
from tools.live_airflow import AIRFLOW, RELEASE_DAG_ID, LiveAirflow, airflow_env, start_live_airflow

DAG_ID = RELEASE_DAG_ID


@pytest.fixture
def mesh(cluster: SandboxInfo) -> Iterator[SandboxInfo]:
    """The test's `cluster` at its seeded state, 200 rps, no faults, its Istio objects at
    `.api` (the admin's client); every fault off and the seeded state back afterwards."""
    cluster.fault("clear")
    cluster.reset()
    cluster.set_behaviour(rps=200)
    cluster.api = cluster.istio
    yield cluster
    cluster.fault("clear")
    cluster.reset()


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
def run_release(airflow_home: Path, cluster: Any) -> Iterator[Any]:
    """`run_release(conf, timeout=...) -> RunResult`: one `airflow dags test` against the test's
    `cluster` (the sandbox, or the real kube-apiserver under BOTH_APIS)."""

    def run(conf: dict[str, Any], timeout: float = 420, extra_env: dict[str, str] | None = None,
            popen: bool = False) -> Any:
        env = airflow_env(airflow_home, {**sandbox_connections(cluster), **(extra_env or {})})
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


class AnalyzedRelease:
    """`run_release` with Istio's analyzer watching (tests/istio_analyzer.py StepAnalyzer): every
    state the release leaves its VirtualService/DestinationRule in is analyzed by `istioctl
    analyze`, and the call fails unless it saw the release write and no state has an Error-level
    message the state before the release did not have. `.analyzer` is the last run's, for the
    steps it saw (`observed_weights`, `describe()`)."""

    def __init__(self, run_release: Any, target: Any) -> None:
        self.run_release, self.target = run_release, target
        self.analyzer: StepAnalyzer | None = None

    def __call__(self, conf: dict[str, Any], **kwargs: Any) -> RunResult:
        assert not kwargs.get("popen"), "analyzed_release waits for the run; use run_release(popen=True)"
        name = conf.get("virtual_service") or conf["service"]
        self.analyzer = StepAnalyzer(
            self.target.kubeconfig, conf.get("namespace", "bookinfo"), name,
            destination_rule=conf.get("destination_rule") or conf["service"],
            # A real kube-apiserver is analyzed live (every analyzer); the sandbox's stand-in offline.
            live=self.target.real,
        )
        with self.analyzer:
            result = self.run_release(conf, **kwargs)
        print(self.analyzer.describe())  # in the test's captured output: what istioctl said at each step
        try:
            assert len(self.analyzer.records) > 1, "the analyzer saw no write of the release"
            self.analyzer.check()
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- airflow dags test (tail) ---\n{result.output[-3000:]}") from None
        return result


@pytest.fixture
def analyzed_release(run_release: Any, cluster: Any) -> AnalyzedRelease:
    """Like `run_release` (same arguments, returns its RunResult), with `istioctl analyze` after
    every step; see AnalyzedRelease. Watches the cluster run_release runs against."""
    return AnalyzedRelease(run_release, cluster)


def run_with_trigger(process: subprocess.Popen[str], marker: str, action: Callable[[], None],
                     timeout: float = 420) -> str:
    """Read a `run_release(..., popen=True)` run's output to the end; call `action` once, as soon
    as a line contains `marker`. Returns the whole output."""
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if marker in line:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while not seen.wait(0.1):
        if not reader.is_alive() or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"never saw {marker!r} in the run's output:\n{''.join(lines)[-4000:]}")
    action()
    process.wait(timeout=max(1.0, deadline - time.monotonic()))
    reader.join(10)
    return "".join(lines)
