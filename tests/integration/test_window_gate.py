"""The window gate operator under `airflow dags test`: open -> proceeds, opening in ~30 s ->
defers and proceeds, refuse -> fails naming the next opening. Plus the operator on its own.

The DAG is a two-task file in a temporary DAGs folder (gate, then a task that prints a
marker), with the policy file given by ISTIO_CANARY_WINDOWS_FILE. No cluster is involved:
the gate must decide before anything else runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from istio_canary.core.window_policy import DAY_NAMES
from istio_canary.operators.window import ReleaseWindowGateOperator

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
DAG_ID = "window_gate_check"
MARKER = "AFTER_GATE_RAN"

DAG_FILE = f'''
from datetime import datetime, timezone

from airflow.sdk import DAG, task

from istio_canary.operators.window import ReleaseWindowGateOperator
from istio_canary.timetables import ReleaseWindowTimetable

with DAG(
    dag_id="{DAG_ID}",
    # Scheduled by the plugin's timetable (so Airflow serializes it); `dags test` runs are
    # manual runs, and manual runs still go through the gate.
    schedule=ReleaseWindowTimetable("always"),
    catchup=False,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    params={{"release_window": "none", "window_mode": "wait"}},
    default_args={{"retries": 0}},
):
    gate = ReleaseWindowGateOperator(
        task_id="window_gate",
        release_window="{{{{ params.release_window }}}}",
        window_mode="{{{{ params.window_mode }}}}",
    )

    @task
    def after_gate():
        print("{MARKER} at", datetime.now(timezone.utc).isoformat())

    gate >> after_gate()
'''


def hhmmss(t: datetime) -> str:
    return t.strftime("%H:%M:%S")


def window_from(start: datetime, length: timedelta) -> dict[str, str]:
    """A UTC window on `start`'s weekday (it may run past midnight: then it ends the next day)."""
    return {"days": DAY_NAMES[start.weekday()].lower(), "start": hhmmss(start), "end": hhmmss(start + length)}


@dataclass
class AirflowEnv:
    home: Path
    dags: Path
    windows_file: Path

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "ISTIO_CANARY_WINDOWS_FILE": str(self.windows_file),
        }

    def write_policies(self, policies: dict[str, dict[str, object]]) -> None:
        self.windows_file.write_text(yaml.safe_dump({"policies": policies}))

    def dags_test(self, conf: dict[str, str], timeout: float = 240) -> tuple[int, str]:
        result = subprocess.run(
            [AIRFLOW, "dags", "test", DAG_ID, "-c", json.dumps(conf)],
            env=self.env(), capture_output=True, text=True, timeout=timeout, start_new_session=True,
        )
        return result.returncode, result.stdout + result.stderr


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowEnv]:
    root = tmp_path_factory.mktemp("window-gate-airflow")
    env = AirflowEnv(root / "home", root / "dags", root / "release_windows.yaml")
    env.home.mkdir()
    env.dags.mkdir()
    (env.dags / "window_gate_check.py").write_text(DAG_FILE)
    env.write_policies({})
    result = subprocess.run([AIRFLOW, "db", "migrate"], env=env.env(), capture_output=True, text=True,
                            timeout=300, start_new_session=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    yield env


def marker_time(output: str) -> datetime:
    """When the task after the gate ran, as it printed it."""
    line = next(line for line in output.splitlines() if f"{MARKER} at " in line)
    return datetime.fromisoformat(line.split(f"{MARKER} at ", 1)[1].split()[0].strip("'\""))


def run_state(output: str) -> str | None:
    for line in reversed(output.splitlines()):
        if "DagRun Finished:" in line and "state=" in line:
            return line.split("state=", 1)[1].split(",", 1)[0].strip()
    return None


def test_open_window_passes_at_once(airflow: AirflowEnv) -> None:
    now = datetime.now(UTC)
    airflow.write_policies({"open-now": {"windows": [window_from(now - timedelta(hours=1), timedelta(hours=2))]}})
    code, output = airflow.dags_test({"release_window": "open-now", "window_mode": "wait"})
    assert code == 0, output[-4000:]
    assert run_state(output) == "success", output[-4000:]
    assert "inside release window 'open-now'" in output
    assert "deferring" not in output
    assert MARKER in output


def test_window_opening_soon_defers_then_proceeds(airflow: AirflowEnv) -> None:
    # `airflow dags test` itself takes 10-20 s to reach the gate: open 30 s from now so the gate
    # still finds the window closed on a busy machine.
    opens = (datetime.now(UTC) + timedelta(seconds=30)).replace(microsecond=0)
    airflow.write_policies({"soon": {"windows": [window_from(opens, timedelta(minutes=30))]}})
    started = time.monotonic()
    code, output = airflow.dags_test({"release_window": "soon", "window_mode": "wait"})
    elapsed = time.monotonic() - started
    assert code == 0, output[-4000:]
    assert run_state(output) == "success", output[-4000:]
    assert f"waiting until {opens.isoformat()}" in output, output[-4000:]
    assert "deferring, no worker slot held" in output
    assert "inside release window 'soon'" in output  # the re-check after the trigger fired
    assert marker_time(output) >= opens  # nothing after the gate ran before the window opened
    assert elapsed >= 15, f"the run did not wait for the window ({elapsed:.1f}s)"


def test_refuse_fails_with_the_next_opening_and_runs_nothing_after(airflow: AirflowEnv) -> None:
    opens = (datetime.now(UTC) + timedelta(hours=3)).replace(microsecond=0)
    airflow.write_policies({"later": {"windows": [window_from(opens, timedelta(hours=1))]}})
    _, output = airflow.dags_test({"release_window": "later", "window_mode": "refuse"})
    assert run_state(output) == "failed", output[-4000:]
    assert "outside release window 'later'" in output
    assert f"Next window opens {opens.isoformat()}" in output
    assert opens.strftime("%a %Y-%m-%d %H:%M UTC") in output  # the human form too
    assert MARKER not in output
    assert "deferring" not in output


# --------------------------------------------------------------------------- operator alone


@pytest.fixture
def windows_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    file = tmp_path / "w.yaml"
    monkeypatch.setenv("ISTIO_CANARY_WINDOWS_FILE", str(file))
    return file


def test_operator_defers_on_a_datetime_trigger_and_rechecks(windows_env: Path) -> None:
    opens = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    windows_env.write_text(yaml.safe_dump({
        "policies": {"later": {"windows": [window_from(opens, timedelta(hours=1))]}},
        "services": {"reviews": "later"},
    }))
    # No release_window: the per-service mapping picks the policy.
    op = ReleaseWindowGateOperator(task_id="gate", service="reviews", release_window="None")
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})
    assert deferred.value.trigger.moment == opens
    assert deferred.value.method_name == "execute_complete"
    # Woken early (or a freeze began): it defers again rather than letting the release through.
    with pytest.raises(TaskDeferred) as again:
        op.execute_complete({}, event=opens)
    assert again.value.trigger.moment == opens


def test_operator_step_phase_holds_and_none_turns_it_off(windows_env: Path) -> None:
    opens = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    windows_env.write_text(yaml.safe_dump({"policies": {"later": {"windows": [window_from(opens, timedelta(hours=1))]}},
                                           "services": {"reviews": "later"}}))
    step = ReleaseWindowGateOperator(task_id="hold", release_window="later", window_mode="refuse", phase="step")
    with pytest.raises(TaskDeferred):
        step.execute({})
    start = ReleaseWindowGateOperator(task_id="gate", release_window="later", window_mode="refuse")
    with pytest.raises(AirflowFailException, match="Next window opens"):
        start.execute({})
    off = ReleaseWindowGateOperator(task_id="off", service="reviews", release_window="none")
    assert off.execute({})["action"] == "proceed"
