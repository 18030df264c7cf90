"""Smoke test of what bench.overhead and bench.scale read from a live Airflow and the sandbox.

The benchmarks themselves take minutes (their own Airflow and sandbox, dozens of runs); this
reads one dry-run release on the session's live Airflow with their code: per-task times from
the REST API, the table and JSON, a sample of task states, worker processes and triggerer
memory, and the sandbox's audit log (a dry run writes nothing).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests

from bench import overhead, scale
from tools.live_airflow import RELEASE_DAG_ID, LiveAirflow

pytestmark = [pytest.mark.e2e, pytest.mark.live]


def test_bench_code_reads_a_live_dry_run_that_writes_nothing(live_airflow: LiveAirflow, sandbox: Any) -> None:
    sandbox.reset()
    since = time.time()
    run_id = live_airflow.trigger({**overhead.DRY_RUN_CONF})
    assert live_airflow.wait_for_run(run_id) == "success"

    figures = overhead.run_figures(live_airflow, RELEASE_DAG_ID, run_id)
    assert figures["state"] == "success" and figures["wall_s"] > figures["task_sum_s"] > 0
    assert figures["tasks"]["step_10.set_route"]["state"] == "success"
    assert figures["tasks"]["step_10.set_route"]["seconds"] > 0
    assert figures["tasks"]["rollback"] == {"state": "skipped", "seconds": None}
    result = overhead.compare([figures], [figures])
    assert result["ratio"] == 1.0 and result["same_task_states"]
    assert "step_100.set_route" in overhead.format_table(result)
    json.dumps(result)

    now = scale.sample(live_airflow, time.monotonic())
    assert now["running"] == 0 and now["deferred_watches"] == 0  # the run is over
    assert now["workers"] >= 1 and now["triggerer_rss_kib"] > 10_000

    records = requests.get(f"{sandbox.api_url}/sandbox/audit", timeout=10).json()
    k8s = scale.audit_figures([r for r in records if r["time"] >= since], ["reviews"], "bookinfo")
    assert k8s["writes_per_release"] == [0]
    assert k8s["reads_per_release_mean"] > 0
