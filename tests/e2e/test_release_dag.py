"""The release DAG end to end: `airflow dags test` against the sandbox (real Prometheus, real
Kubernetes client writes, the real trigger resumed by Airflow)."""

from __future__ import annotations

import json
import re
import subprocess
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
import yaml

from istio_canary.core.lock import lock_of, outcome_of
from istio_canary.core.request import ReleaseRequest
from istio_canary.core.routing import routing_state
from tests.conftest import BOTH_APIS
from tests.e2e.conftest import AIRFLOW, DAG_ID, airflow_env, run_with_trigger
from tests.helpers import VirtualServicePoller, dr_of, vs_of

pytestmark = pytest.mark.e2e

NS = "bookinfo"
RELEASE = {"service": "reviews", "namespace": NS, "stable_version": "v1", "canary_version": "v2"}
FAST = {"bake_seconds": 4, "check_interval_seconds": 1, "min_requests": 20,
           # Seconds-long bakes on a small sandbox: the traffic plan would stretch or refuse them.
           "plan_bake": False}


@BOTH_APIS
def test_healthy_weighted_release_is_promoted(mesh: Any, analyzed_release: Any) -> None:
    result = analyzed_release({**RELEASE, **FAST})
    assert result.state == "success", result.output[-5000:]
    assert analyzed_release.analyzer.observed_weights("v2") >= {10, 50, 100}  # istioctl analyzed each step
    vs = vs_of(mesh)
    assert [d["destination"] for d in vs["spec"]["http"][-1]["route"]] == [{"host": "reviews", "subset": "v2"}]
    assert lock_of(vs) is None and outcome_of(vs).outcome == "promoted"
    # Each set-route task logged the YAML diff it wrote.
    for weight in ("10", "50"):
        assert f"+      weight: {weight}" in result.output
    assert "set route: 100% canary: wrote VirtualService bookinfo/reviews" in result.output
    # The report shows the three steps.
    report = result.output[result.output.index("release bookinfo/reviews v1 -> v2: PROMOTED"):]
    assert all(re.search(rf"^step_{w}\s+{w}\s+\d+", report, re.M) for w in (10, 50, 100)), report[:800]
    assert "PromQL" in result.output and "check 1:" in result.output


@BOTH_APIS
def test_canary_with_errors_is_rolled_back_during_step_10(mesh: Any, analyzed_release: Any) -> None:
    mesh.set_behaviour("v1", error_rate=0.005)
    mesh.set_behaviour("v2", error_rate=0.05)
    before, before_dr = vs_of(mesh), dr_of(mesh)
    result = analyzed_release({**RELEASE, **FAST, "bake_seconds": 60})
    assert result.state == "failed", result.output[-5000:]
    assert 10 in analyzed_release.analyzer.observed_weights("v2")  # istioctl analyzed step 10 and the rollback
    vs = vs_of(mesh)
    assert vs["spec"] == before["spec"]
    # The subset v2 the release added is gone again: both objects are as they were.
    assert dr_of(mesh)["spec"] == before_dr["spec"]
    assert "rollback: remove the subsets the release added: wrote DestinationRule bookinfo/reviews" in result.output
    assert lock_of(vs) is None and outcome_of(vs).outcome == "rolled_back"
    assert "stopped EARLY" in result.output
    assert "ROLLED_BACK: step_10: fail" in result.output
    assert "release rolled_back: step_10: fail" in result.output  # the outcome task's failure
    for later in ("step_50", "step_100"):
        assert f"task_id='{later}.set_route'" not in result.output


class PhaseTracker(VirtualServicePoller):
    """Records instants when only the match route sends to v2."""

    def __init__(self, mesh: Any, request: ReleaseRequest) -> None:
        super().__init__(mesh, request)
        self.targeted: list[float] = []

    def observe(self, vs: dict[str, Any]) -> None:
        state = routing_state(vs, self.request)
        if state.match_route_present and state.canary_weight == 0:
            self.targeted.append(time.time())


def _counts_at(mesh: Any, at: float) -> dict[tuple[str, str], float]:
    rows = mesh.prom_result('sum by (version, user_agent_canary, cookie_canary) '
                            f'(sandbox_requests_total{{service="reviews",namespace="{NS}"}})', at=at)
    out: dict[tuple[str, str], float] = {}
    for r in rows:
        labels = r["metric"]
        out[(labels["version"], f"{labels['user_agent_canary']}/{labels['cookie_canary']}")] = float(r["value"][1])
    return out


@BOTH_APIS
@pytest.mark.parametrize(("strategy", "marker_index"), [("header", 0), ("cookie", 1)])
def test_targeted_phase_sends_only_matching_requests_then_completes(
    mesh: Any, analyzed_release: Any, strategy: str, marker_index: int
) -> None:
    params = {**RELEASE, **FAST, "strategy": strategy, "bake_seconds": 8}
    with PhaseTracker(mesh, ReleaseRequest.from_params(params)) as tracker:
        result = analyzed_release(params)
    assert result.state == "success", result.output[-5000:]
    assert analyzed_release.analyzer.observed_weights("v2") >= {10, 50, 100}  # istioctl analyzed each step
    assert len(tracker.targeted) >= 5, "never saw the targeted phase"
    # Prometheus samples taken strictly inside the phase (scrapes every 1 s).
    start, end = tracker.targeted[0] + 1.5, tracker.targeted[-1] - 0.2
    assert end - start >= 3
    before, after = _counts_at(mesh, start), _counts_at(mesh, end)
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}

    def matching(key: tuple[str, str]) -> bool:
        return key[1].split("/")[marker_index] == "true"

    to_v2 = {k: v for k, v in delta.items() if k[0] == "v2" and v > 0}
    assert to_v2 and all(matching(k) for k in to_v2), delta
    assert sum(v for k, v in delta.items() if k[0] == "v1" and matching(k)) == 0, delta
    assert "targeted.set_route" in result.output and "canary match route on" in result.output
    vs = vs_of(mesh)
    assert routing_state(vs, ReleaseRequest.from_params(params)).match_route_present is False
    assert outcome_of(vs).outcome == "promoted"


def test_failure_in_a_middle_task_rolls_back(mesh: Any, run_release: Any) -> None:
    before = vs_of(mesh)
    process = run_release({**RELEASE, **FAST, "bake_seconds": 6}, popen=True)
    # Once step 10 is written (its Event is the task's last write), refuse the next three writes
    # (step 50's tries). The output is read as it comes: a full pipe would stall the run.
    output = run_with_trigger(process, "CanaryStepApplied on VirtualService bookinfo/reviews: Step 10%", lambda: (
        requests.post(f"{mesh.api_url}/sandbox/faults", json={"kind": "forbidden", "count": 3}, timeout=5)))
    assert "injected fault" in output and "HTTP 403" in output
    assert re.search(r"DagRun Finished:.*state=failed", output), output[-4000:]
    vs = vs_of(mesh)
    assert vs["spec"] == before["spec"]
    assert outcome_of(vs).outcome == "rolled_back"
    assert "rollback: wrote VirtualService bookinfo/reviews" in output


def test_rerunning_a_finished_step_changes_nothing(mesh: Any, run_release: Any, airflow_home: Any) -> None:
    result = run_release({**RELEASE, **FAST})
    assert result.state == "success", result.output[-3000:]
    run_id = re.search(r"run_id=(manual__[^,\s]+)", result.output).group(1)
    rv = vs_of(mesh)["metadata"]["resourceVersion"]
    rerun = subprocess.run(
        [AIRFLOW, "tasks", "test", DAG_ID, "step_10.set_route", run_id, "-t", json.dumps(RELEASE)],
        env=airflow_env(airflow_home, {
            "AIRFLOW_CONN_KUBERNETES_DEFAULT": mesh.env["AIRFLOW_CONN_KUBERNETES_DEFAULT"],
        }),
        capture_output=True, text=True, timeout=180,
    )
    output = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, output[-3000:]
    assert "no change" in output and "already finished: promoted" in output
    assert vs_of(mesh)["metadata"]["resourceVersion"] == rv


def test_dry_run_writes_nothing_and_logs_the_plan(mesh: Any, run_release: Any) -> None:
    before = (vs_of(mesh)["metadata"]["resourceVersion"], dr_of(mesh)["metadata"]["resourceVersion"])
    started = time.monotonic()
    result = run_release({**RELEASE, "bake_seconds": 600, "dry_run": True})
    assert result.state == "success", result.output[-3000:]
    assert time.monotonic() - started < 300  # no 600 s bakes
    assert (vs_of(mesh)["metadata"]["resourceVersion"], dr_of(mesh)["metadata"]["resourceVersion"]) == before
    out = result.output
    assert "DRY RUN" in out and "+      weight: 10" in out and "+      weight: 50" in out
    assert "would write DestinationRule bookinfo/reviews" in out
    assert "DRY_RUN" in out


@pytest.mark.parametrize(
    ("cluster", "conf", "field"),
    [
        ("sandbox", {**RELEASE, "canary_version": "v1"}, "canary_version"),
        ("sandbox", {**RELEASE, "service": "Reviews!"}, "service"),
        ("sandbox", {**RELEASE, "steps": [10, 50]}, "steps"),
        ("sandbox", {**RELEASE, "max_error_rate": 2}, "max_error_rate"),
        # Refused in validate, before any client exists: one row shows it on the real server too.
        ("kube-apiserver", {**RELEASE, "canary_version": "v1"}, "canary_version"),
    ],
    indirect=["cluster"],
)
def test_bad_conf_is_rejected_naming_the_field_with_zero_writes(
    mesh: Any, run_release: Any, conf: dict[str, Any], field: str
) -> None:
    before = vs_of(mesh)["metadata"]["resourceVersion"]
    result = run_release({**FAST, **conf}, timeout=180)
    assert result.returncode != 0 or result.state == "failed"
    assert field in result.output
    assert "preflight" not in re.findall(r"task_id='([^']+)'", result.output)
    assert vs_of(mesh)["metadata"]["resourceVersion"] == before


@BOTH_APIS
def test_release_its_traffic_cannot_judge_is_refused_before_any_write(mesh: Any, run_release: Any) -> None:
    """The bake plan reads the traffic first: at the sandbox's few hundred requests/s at most, 5 s
    per step cannot give the ~2,500 canary requests that tell a 2x error rate, so the run fails
    at bake_plan, saying why and what to change, and nothing in the cluster moves (no lock, no
    subset, no route)."""
    before = (vs_of(mesh)["metadata"]["resourceVersion"], dr_of(mesh)["metadata"]["resourceVersion"])
    result = run_release({**RELEASE, **FAST, "plan_bake": True, "max_bake_seconds": 5}, timeout=240)
    assert result.state == "failed", result.output[-3000:]
    assert "planned bake" in result.output and "requests/s to the service" in result.output
    assert "needs" in result.output and "alpha 0.01, power 0.8" in result.output
    assert "release refused before any change" in result.output
    assert "raise max_bake_seconds to at least" in result.output
    assert (vs_of(mesh)["metadata"]["resourceVersion"], dr_of(mesh)["metadata"]["resourceVersion"]) == before
    assert "task_id='preflight'" not in result.output


def _windows_file(tmp_path: Any, opens: datetime, hours: float = 1.0) -> str:
    end = opens + timedelta(hours=hours)
    days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    path = tmp_path / "windows.yaml"
    path.write_text(yaml.safe_dump({"policies": {"soon": {"timezone": "UTC", "windows": [
        {"days": days[opens.weekday()], "start": opens.strftime("%H:%M:%S"), "end": end.strftime("%H:%M:%S")},
    ]}}}))
    return str(path)


def test_window_refuse_fails_naming_the_next_opening_with_zero_writes(
    mesh: Any, run_release: Any, tmp_path: Any
) -> None:
    opens = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    before = (vs_of(mesh)["metadata"]["resourceVersion"], dr_of(mesh)["metadata"]["resourceVersion"])
    result = run_release({**RELEASE, **FAST, "release_window": "soon", "window_mode": "refuse"},
                         extra_env={"ISTIO_CANARY_WINDOWS_FILE": _windows_file(tmp_path, opens)}, timeout=240)
    assert result.state == "failed", result.output[-3000:]
    assert opens.strftime("%Y-%m-%dT%H:%M") in result.output  # the next opening, in the message
    assert (vs_of(mesh)["metadata"]["resourceVersion"], dr_of(mesh)["metadata"]["resourceVersion"]) == before
    assert "task_id='preflight'" not in result.output


def test_window_wait_defers_until_it_opens_then_releases(mesh: Any, run_release: Any, tmp_path: Any) -> None:
    opens = (datetime.now(UTC) + timedelta(seconds=40)).replace(microsecond=0)
    result = run_release({**RELEASE, **FAST, "release_window": "soon", "window_mode": "wait"},
                         extra_env={"ISTIO_CANARY_WINDOWS_FILE": _windows_file(tmp_path, opens)})
    assert result.state == "success", result.output[-3000:]
    assert outcome_of(vs_of(mesh)).outcome == "promoted"
    # preflight (the first cluster access) started only after the window opened
    first_preflight = min(
        datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
        for m in re.finditer(r"^(\S+Z) .*task_id='preflight'", result.output, re.M)
    )
    assert first_preflight >= opens, (first_preflight, opens)
