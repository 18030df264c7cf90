"""The DAG files: they import cleanly and cheaply, and the release DAG's branches lead where they should."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[3]
DAGS = PROJECT_ROOT / "dags"
HEAVY = ("kubernetes", "kubernetes_asyncio", "prometheus_api_client", "aiohttp", "requests_oauthlib")


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("airflow-parse")
    os.environ.setdefault("AIRFLOW_HOME", str(home))
    return home


def dagbag(folder: Path) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(folder), safe_mode=False)


@pytest.fixture(scope="module")
def release_dag(airflow_home: Path) -> Any:
    bag = dagbag(DAGS)
    assert bag.import_errors == {}
    return bag.dags["istio_canary_release"]


def test_dag_files_import_without_errors_and_define_the_release_and_calendar_dags(airflow_home: Path) -> None:
    bag = dagbag(DAGS)
    assert bag.import_errors == {}
    assert {"istio_canary_release", "release_reviews_v2", "release_ratings_v2"} <= set(bag.dag_ids)


@pytest.mark.parametrize("dag_file", ["istio_canary_release.py", "release_calendar.py"])
def test_dag_files_do_not_import_heavy_clients(dag_file: str, tmp_path: Path) -> None:
    code = (
        "import runpy, sys, json; runpy.run_path(sys.argv[1]); "
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(DAGS / dag_file)],
        env={**os.environ, "AIRFLOW_HOME": str(tmp_path)}, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_steps_are_task_groups_with_the_four_stages(release_dag: Any) -> None:
    for weight in (10, 50, 100):
        for stage in ("capacity", "set_route", "watch", "analyze", "decide"):
            assert f"step_{weight}.{stage}" in release_dag.task_ids


def test_capacity_check_comes_before_each_weight_increase(release_dag: Any) -> None:
    previous = 0
    for weight in (10, 50, 100):
        capacity = release_dag.get_task(f"step_{weight}.capacity")
        assert release_dag.get_task(f"step_{weight}.set_route").upstream_task_ids == {capacity.task_id}
        assert (capacity.current_weight, capacity.next_weight) == (previous, weight)
        assert capacity.mode == "reschedule"
        assert capacity.reference_task_id == (None if weight == 10 else "step_10.capacity")
        previous = weight
    # A passed targeted phase enters the first step through its capacity check.
    task, chosen = _choose(release_dag, "targeted.decide", analysis={"outcome": "pass", "summary": ""},
                           validated={"dry_run": False})
    assert chosen == "step_10.capacity" and chosen in task.downstream_task_ids


def test_params_have_titles_and_the_required_release_fields(release_dag: Any) -> None:
    params = release_dag.params
    for key in ("service", "namespace", "stable_version", "canary_version", "strategy", "header_name",
                "header_value", "cookie_regex", "bake_seconds", "check_interval_seconds", "min_requests",
                "max_error_rate", "max_p99_ms", "require_approval", "dry_run", "kubernetes_conn_id",
                "prometheus_conn_id", "istio_api_version", "release_window", "window_mode", "mesh_domain"):
        assert key in params, key
        assert params.get_param(key).schema.get("title"), key


def test_form_defaults_are_the_requests_defaults(release_dag: Any) -> None:
    from istio_canary.core.request import ReleaseRequest

    defaults = ReleaseRequest(service="reviews", namespace="bookinfo", stable_version="v1", canary_version="v2")
    params = release_dag.params
    assert params["cookie_regex"] == defaults.cookie_regex == "^(.*;\\s*)?canary=true(;.*)?$"
    assert params["mesh_domain"] == defaults.mesh_domain == "cluster.local"
    mesh_domain = params.get_param("mesh_domain")
    assert "svc.<mesh domain>" in (mesh_domain.description or "")
    # The form refuses what ReleaseRequest refuses (the REST trigger answers 400).
    pattern = re.compile(mesh_domain.schema["pattern"])
    assert pattern.search("corp.example") and pattern.search("cluster.local")
    assert not any(pattern.search(bad) for bad in ("Cluster.local", "cluster..local", "cluster.local.", ""))


def test_form_analysis_defaults_are_the_judges(release_dag: Any) -> None:
    from istio_canary.core.analysis_config import AnalysisConfig

    judge = AnalysisConfig(bake_seconds=release_dag.params["bake_seconds"])
    for key in ("check_interval_seconds", "min_requests", "max_error_rate", "max_p99_ms", "plan_bake"):
        assert release_dag.params[key] == getattr(judge, key), key


def _choose(release_dag: Any, task_id: str, **kwargs: Any) -> Any:
    task = release_dag.get_task(task_id)
    return task, task.python_callable(**kwargs)


@pytest.mark.parametrize("require_approval", [False, True])
@pytest.mark.parametrize("outcome", ["pass", "fail", "inconclusive"])
def test_every_decision_leads_to_a_direct_downstream_task(release_dag: Any, outcome: str, require_approval: bool) -> None:
    validated = {"dry_run": False, "require_approval": require_approval}
    for group in ("mirror", "targeted", "step_10", "step_50", "step_100"):
        task, chosen = _choose(release_dag, f"{group}.decide", analysis={"outcome": outcome, "summary": "s"},
                               validated=validated)
        assert chosen in task.downstream_task_ids, (group, chosen)
        if outcome != "pass":
            assert chosen == f"{group}.verdict_failed"
    _, chosen = _choose(release_dag, "step_50.decide", analysis={"outcome": "pass", "summary": ""}, validated=validated)
    assert chosen == ("approve_promotion" if require_approval else "no_approval_needed")
    _, chosen = _choose(release_dag, "mirror.decide", analysis={"outcome": "pass", "summary": ""}, validated=validated)
    assert chosen == "choose_strategy"


def test_mirror_phase_comes_before_the_strategy_and_is_chosen_by_mirror_percent(release_dag: Any) -> None:
    task, chosen = _choose(release_dag, "choose_mirror", validated={"mirror_percent": 25})
    assert chosen == "mirror.set_route" and chosen in task.downstream_task_ids
    _, chosen = _choose(release_dag, "choose_mirror", validated={"mirror_percent": 0})
    assert chosen == "mirror.not_needed" and chosen in task.downstream_task_ids
    assert "destination_rule" in task.upstream_task_ids  # the canary subset exists before the mirror names it
    strategy = release_dag.get_task("choose_strategy")
    assert {"mirror.decide", "mirror.not_needed"} <= strategy.upstream_task_ids
    assert strategy.trigger_rule == "none_failed_min_one_success"
    # The first step carries the judge state of whichever earlier phase ran.
    assert release_dag.get_task("step_10.watch").judge_state_from == ["targeted.analyze", "mirror.analyze"]
    assert release_dag.get_task("mirror.watch").steps == [10, 50, 100]


def test_strategy_branch_and_entry_trigger_rules(release_dag: Any) -> None:
    task, chosen = _choose(release_dag, "choose_strategy", validated={"strategy": "cookie"})
    assert chosen == "targeted.set_route" and chosen in task.downstream_task_ids
    _, chosen = _choose(release_dag, "choose_strategy", validated={"strategy": "weighted"})
    assert chosen == "targeted.not_needed"
    # A step entered after a branch must not be satisfied by validate's success alone.
    for task_id in ("step_10.capacity", "step_50.window", "step_100.window", "promote_window"):
        task = release_dag.get_task(task_id)
        assert "validate" not in task.upstream_task_ids
        assert task.trigger_rule == "none_failed_min_one_success"


def test_rollback_follows_any_failure_of_a_task_that_touches_routing(release_dag: Any) -> None:
    rollback = release_dag.get_task("rollback")
    assert rollback.trigger_rule == "one_failed"
    for task_id in release_dag.task_ids:
        if task_id.endswith(("capacity", "set_route", "watch", "analyze", "decide", "verdict_failed")) or task_id in (
            "preflight", "destination_rule", "approve_promotion", "promote", "promote_window"
        ):
            assert task_id in rollback.upstream_task_ids, task_id


def test_a_broken_calendar_entry_is_one_import_error_and_the_other_dag_loads(
    airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "release_calendar.py").write_text((DAGS / "release_calendar.py").read_text())
    releases = tmp_path / "releases.yaml"
    releases.write_text(yaml.safe_dump({"releases": [
        {"service": "reviews", "namespace": "bookinfo", "stable_version": "v1", "canary_version": "v2",
         "release_window": "office-hours", "earliest": "2027-01-12"},
        {"service": "ratings", "namespace": "bookinfo", "stable_version": "v1", "canary_version": "v1",
         "release_window": "office-hours", "earliest": "2027-01-12"},
    ]}))
    monkeypatch.setenv("ISTIO_CANARY_RELEASES_FILE", str(releases))
    bag = dagbag(dags)
    assert "release_reviews_v2" in bag.dag_ids
    assert len(bag.import_errors) == 1
    message = next(iter(bag.import_errors.values()))
    assert "releases[1]" in message and "ratings" in message and "canary_version" in message
