"""Bake + watch and analysis against the sandbox's real Prometheus.

The operators defer to the real trigger; the test drives the trigger's async generator
itself (as a triggerer would) and hands its event back to `execute_complete`. The full
triggerer path runs in the DAG end-to-end tests.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from airflow.sdk.exceptions import TaskDeferred

from istio_canary.core.validation import ValidationError
from istio_canary.operators.analysis import (
    CanaryAnalysisOperator,
    CanaryBakePlanOperator,
    CanaryWatchOperator,
)
from tests.helpers import dest, route_to

pytestmark = pytest.mark.integration

NS = "bookinfo"
BASE = {"service": "reviews", "namespace": NS, "stable_version": "v1", "canary_version": "v2",
        "check_interval_seconds": 1, "min_requests": 50, "max_p99_ms": 500}


class FakeTI:
    """XCom between the watch and the analysis (the DAG tests use Airflow's real XCom)."""

    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}
        self.pushed: dict[str, Any] = {}

    def xcom_pull(self, task_ids: str) -> Any:
        return self.xcom.get(task_ids)

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def run_watch(params: dict[str, Any], ti: FakeTI | None = None) -> dict[str, Any]:
    ti = ti or FakeTI()
    ctx = {"ti": ti, "dag_run": None, "run_id": "test"}
    op = CanaryWatchOperator(task_id="watch", release=params)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx)

    async def first_event() -> Any:
        async for event in deferred.value.trigger.run():
            return event
        raise AssertionError("trigger ended without an event")

    result = op.execute_complete(ctx, asyncio.run(first_event()).payload)
    ti.xcom["watch"] = result
    return result


def analyse(params: dict[str, Any], ti: FakeTI) -> dict[str, Any]:
    op = CanaryAnalysisOperator(task_id="analyze", release=params, watch_task_id="watch")
    return op.execute({"ti": ti})


def route(sandbox: Any, canary_weight: int) -> None:
    """v1 and v2 weighted 100 - canary_weight / canary_weight, once the generator routes by it."""
    destinations = [dest("v1", 100 - canary_weight)] + ([dest("v2", canary_weight)] if canary_weight else [])
    sandbox.wait_for_routing(route_to(sandbox.istio, [{"route": destinations}]))


@pytest.fixture
def mesh(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    sandbox.reset()
    monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS_DEFAULT", sandbox.env["AIRFLOW_CONN_PROMETHEUS_DEFAULT"])
    yield sandbox
    sandbox.reset()


def test_healthy_canary_passes_the_watch_and_the_analysis(mesh: Any) -> None:
    route(mesh, 50)
    mesh.set_behaviour(rps=200)
    params = {**BASE, "bake_seconds": 6}
    ti = FakeTI()
    watch = run_watch(params, ti)
    assert watch["action"] == "finish", watch["progress"]["checks"]
    result = analyse(params, ti)
    assert result["outcome"] == "pass", result["summary"]
    assert result["stats"]["requests"] >= 50
    assert result["judge_state"]["checks"] >= 5


def test_canary_with_5pct_errors_at_10pct_is_stopped_before_the_bake_ends(
    mesh: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    route(mesh, 10)
    mesh.set_behaviour(rps=200)
    mesh.set_behaviour("v1", error_rate=0.005)
    mesh.set_behaviour("v2", error_rate=0.05)
    params = {**BASE, "bake_seconds": 90}
    ti = FakeTI()
    started = time.monotonic()
    watch = run_watch(params, ti)
    took = time.monotonic() - started
    assert watch["action"] == "stop"
    assert watch["elapsed_seconds"] < 90 and took < 90
    result = analyse(params, ti)
    assert result["outcome"] == "fail"
    out = capfd.readouterr().out
    assert "stopped EARLY after" in out and "canary requests" in out
    canary_requests = result["stats"]["requests"]
    print(f"[watch] 5% canary at 10% weight stopped after {watch['elapsed_seconds']:.0f}s, "
          f"{canary_requests:.0f} canary requests")
    assert canary_requests < 2000


def test_canary_without_traffic_is_inconclusive_after_the_extended_bake(mesh: Any, capfd: pytest.CaptureFixture[str]) -> None:
    route(mesh, 0)
    params = {**BASE, "bake_seconds": 3, "max_bake_seconds": 6}
    ti = FakeTI()
    watch = run_watch(params, ti)
    assert watch["action"] == "finish" and watch["elapsed_seconds"] >= 6
    assert "bake extended" in capfd.readouterr().out
    result = analyse(params, ti)
    assert result["outcome"] == "inconclusive", result["summary"]
    assert result["stats"]["requests"] == 0, (watch["progress"]["start"], watch["progress"]["last"], watch["progress"]["window_counts"], result["verdict"]["reasons"])


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_prometheus_down_is_inconclusive_then_fails_after_the_bound(
    sandbox: Any, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_PROMETHEUS_DEFAULT",
        f'{{"conn_type": "http", "host": "127.0.0.1", "port": {_closed_port()}, "schema": "http"}}',
    )
    params = {**BASE, "bake_seconds": 30, "max_inconclusive": 3}
    watch = run_watch(params)
    assert watch["action"] == "stop"
    verdict = watch["progress"]["verdict"]
    assert verdict["outcome"] == "fail"
    assert watch["progress"]["state"]["checks"] == 4  # three inconclusive, the fourth fails
    out = capfd.readouterr().out
    assert "cannot reach Prometheus" in out
    assert "INCONCLUSIVE" in out and "FAIL" in out


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"custom_metrics": [{"name": "lat", "query": "x{app=\"{svc}\"}", "direction": "lower", "threshold": 1}]},
         "custom_metrics"),
        ({"max_error_rate": 1.5}, "max_error_rate"),
        ({"check_interval_seconds": 0}, "check_interval_seconds"),
        ({"service": 'reviews"} or vector(1) #'}, "service"),
    ],
)
def test_bad_analysis_input_fails_before_any_query(change: dict[str, Any], field: str) -> None:
    op = CanaryWatchOperator(task_id="watch", release={**BASE, "bake_seconds": 10, **change})
    with pytest.raises(ValidationError) as error:
        op.execute({"ti": FakeTI(), "dag_run": None})
    assert error.value.field.startswith(field)


def test_analysis_on_its_own_judges_the_last_window(mesh: Any) -> None:
    route(mesh, 50)
    mesh.set_behaviour(rps=200)
    time.sleep(6)
    op = CanaryAnalysisOperator(task_id="analyze", release={**BASE, "bake_seconds": 5})
    ti = FakeTI()
    result = op.execute({"ti": ti})
    assert result["outcome"] == "pass", result["summary"]
    assert result["stats"]["requests"] > 100
    # The task's "Prometheus graph" link opens the canary's error ratio in Prometheus, and works.
    link = ti.pushed["_link_PrometheusGraphLink"]
    assert link.startswith(f"{mesh.prometheus_url}/graph?g0.expr=")
    query = parse_qs(urlparse(link).query)["g0.expr"][0]
    assert 'destination_version=~"v2|v1"' in query
    assert {r["metric"]["destination_version"] for r in mesh.prom_result(query)} == {"v1", "v2"}


def test_bake_is_planned_from_the_traffic_prometheus_sees(mesh: Any, capfd: pytest.CaptureFixture[str]) -> None:
    """Before the bake the watch reads the service's recent request and error rate, plans how
    long the step must bake to tell a 2x error rate, logs why, and bakes that long (within
    max_bake_seconds); before any write, a release whose traffic cannot be enough even at the
    maximum is refused."""
    route(mesh, 0)
    mesh.set_behaviour(rps=200)
    time.sleep(8)
    params = {**BASE, "bake_seconds": 5, "max_bake_seconds": 600}
    op = CanaryWatchOperator(task_id="watch", release=params, plan_weights=[10, 50, 100])
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"ti": FakeTI(), "dag_run": None})
    planned = deferred.value.trigger.analysis["bake_seconds"]
    captured = capfd.readouterr()
    log = captured.out + captured.err  # the task log as the task process prints it
    assert "planned bake" in log and "requests/s to the service" in log and "alpha 0.01, power 0.8" in log
    assert f"planned bake {planned}s for this step" in log
    assert 5 <= planned <= 600
    needed = re.search(r"needs (\d+) canary requests", log)
    assert needed is not None and 100 <= int(needed.group(1)) <= 50_000, log
    # The release-level plan on the same traffic: enough, and returned for the run's record.
    plan = CanaryBakePlanOperator(task_id="bake_plan", release=params, steps=[10, 50, 100]).execute({})
    assert plan["planned"] and plan["enough"] and plan["service_rps"] > 1
    # A maximum far too short: refused before any change, saying what to change.
    short = CanaryBakePlanOperator(task_id="bake_plan", release={**BASE, "bake_seconds": 1, "max_bake_seconds": 1},
                                   steps=[10, 50, 100])
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match=r"refused before any change: .*raise max_bake_seconds to at least"):
        short.execute({})
