"""Malformed release requests are refused before anything touches the cluster, naming the field and value.

Each row of `ROWS` takes one of two real paths, and the table says which:

- `schema`: the DAG's Param JSON schema refuses it. That is the check the REST API runs when a run
  is triggered (`SerializedDAG.create_dagrun` -> `params.deep_merge(conf).validate()`: HTTP 400), the
  one `airflow dags test` runs before creating a run, and the one every task runs on its context.
- `validate`: the schema lets it through (it is not a declared param, or the problem is between
  fields) and the DAG's `validate` task fails the run with `invalid release parameter: field=value`.

`test_each_malformed_request_is_refused_naming_field_and_value` checks every row in process, with
the same Airflow functions the API server and the task runner call. `test_malformed_requests_...`
sends a few rows through real `airflow dags test` runs and, around the whole table, checks that the
sandbox's API server saw no request at all and the Istio objects' resourceVersions did not move.
"""

from __future__ import annotations

import os
import re
import runpy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
import requests
from kubernetes import client, config

from tests.e2e.conftest import RunResult

pytestmark = pytest.mark.e2e

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "istio_canary_release.py"
RELEASE = {"service": "reviews", "namespace": "bookinfo", "stable_version": "v1", "canary_version": "v2",
           "bake_seconds": 5, "check_interval_seconds": 1, "min_requests": 20,
           # Seconds-long bakes on a small sandbox: the traffic plan would stretch or refuse them.
           "plan_bake": False}
# Tasks that may run after validate failed: none of them reads or writes the cluster.
TASKS_AFTER_A_REFUSAL = {"validate", "rollback", "report", "outcome"}

Layer = Literal["schema", "validate"]


@dataclass(frozen=True)
class BadInput:
    id: str
    conf: dict[str, Any]  # merged over RELEASE
    field: str  # the field the message must name
    value: Any  # ... and the value, as repr() shows it
    layer: Layer
    dags_test: bool = False  # also run through a real `airflow dags test`


def row(id: str, conf: dict[str, Any], layer: Layer, *, name: str | None = None, value: Any = None,
        dags_test: bool = False) -> Any:
    """A table row; the field and value named default to the row's only (or first) conf key."""
    key = name or next(iter(conf))
    shown = conf[key] if value is None else value
    return pytest.param(BadInput(id, conf, key, shown, layer, dags_test), id=id)


ROWS = [
    # names
    row("service-punctuation", {"service": "Reviews!"}, "schema"),
    row("service-leading-dash", {"service": "-v2"}, "schema"),
    row("service-300-chars", {"service": "a" * 300}, "schema"),
    row("namespace-space", {"namespace": "Book Info"}, "schema"),
    row("service-promql-injection", {"service": 'reviews"} or vector(1) #'}, "schema"),
    row("host-empty-label", {"host": "reviews..bookinfo"}, "validate"),
    row("virtual-service-slash", {"virtual_service": "a/b"}, "validate"),
    row("destination-rule-uppercase", {"destination_rule": "Reviews"}, "validate"),
    row("route-name-int", {"route_name": 7}, "schema"),
    row("canary-route-name-int", {"canary_route_name": 5}, "validate"),
    # versions and subsets
    row("canary-leading-dash", {"canary_version": "-v2"}, "validate"),
    row("stable-trailing-space", {"stable_version": "v1 "}, "validate"),
    row("version-promql-injection", {"canary_version": 'v1",x="'}, "validate"),
    row("stable-equals-canary", {"canary_version": "v1"}, "validate"),
    row("version-not-a-subset", {"canary_version": "1.3.0"}, "validate"),
    row("subsets-collide", {"stable_subset": "v2"}, "validate", name="canary_subset", value="v2"),
    row("subset-uppercase", {"canary_subset": "V2"}, "validate"),
    row("version-label-space", {"version_label": "ver sion"}, "validate"),
    # steps
    row("steps-decreasing", {"steps": [50, 10]}, "validate", dags_test=True),
    row("steps-over-100", {"steps": [10, 150]}, "validate"),
    row("steps-text", {"steps": "abc"}, "validate"),
    row("steps-bool", {"steps": [10, True, 100]}, "validate"),
    row("steps-not-this-pipeline", {"steps": [10, 100]}, "validate"),
    # thresholds and timing
    row("error-rate-above-1", {"max_error_rate": 1.5}, "schema"),
    row("error-rate-string", {"max_error_rate": "0.01"}, "schema", dags_test=True),
    row("p99-zero", {"max_p99_ms": 0}, "schema"),
    row("alpha-too-high", {"alpha": 0.5}, "validate"),
    row("negative-bake", {"bake_seconds": -5}, "schema"),
    row("bake-string", {"bake_seconds": "60"}, "schema"),
    row("min-requests-bool", {"min_requests": True}, "schema"),
    row("interval-above-bake", {"check_interval_seconds": 10}, "validate"),
    row("max-bake-below-bake", {"max_bake_seconds": 2}, "validate"),
    row("custom-metrics-text", {"custom_metrics": "x"}, "validate"),
    # strategies and regexes
    row("unknown-strategy", {"strategy": "blue-green"}, "schema"),
    row("header-name-space", {"strategy": "header", "header_name": "X Canary"}, "validate", name="header_name"),
    row("header-value-newline", {"strategy": "header", "header_value": "can\nary"}, "validate",
        name="header_value"),
    row("cookie-regex-unbalanced", {"strategy": "cookie", "cookie_regex": "("}, "validate", name="cookie_regex"),
    row("cookie-regex-pcre-lookbehind", {"strategy": "cookie", "cookie_regex": "(?<=x)canary"}, "validate",
        name="cookie_regex"),
    row("cookie-regex-too-long", {"cookie_regex": "a" * 1025}, "schema"),
    # connection ids
    row("k8s-conn-id-space", {"kubernetes_conn_id": "my conn"}, "validate", dags_test=True),
    row("prom-conn-id-newline", {"prometheus_conn_id": "prom\n"}, "validate"),
    row("k8s-conn-id-traversal", {"kubernetes_conn_id": "../../etc/x"}, "validate"),
    row("k8s-conn-id-empty", {"kubernetes_conn_id": ""}, "schema"),
    # API versions, types
    row("istio-api-v2", {"istio_api_version": "v2"}, "schema"),
    row("dry-run-string", {"dry_run": "true"}, "schema"),
    row("approval-string", {"require_approval": "yes"}, "schema"),
    row("window-mode-unknown", {"window_mode": "later"}, "schema"),
    row("release-window-int", {"release_window": 5}, "schema"),
    # a misspelt key would otherwise be ignored and the release run with the defaults
    row("unknown-key-typo", {"stratgy": "header"}, "validate"),
]


@pytest.fixture(scope="module")
def serialized_dag(airflow_home: Path) -> Any:
    """The release DAG as the API server holds it (serialized, then loaded back)."""
    # Airflow reads its home when first imported; keep it out of ~/airflow.
    os.environ.setdefault("AIRFLOW_HOME", str(airflow_home))
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.from_dict(DagSerialization.to_dict(runpy.run_path(str(DAG_FILE))["dag"]))


def refusal(bad: BadInput, serialized_dag: Any) -> tuple[Layer | None, str]:
    """Which layer refuses `bad`'s conf, and its message (None, "" when nothing refuses it)."""
    from airflow.sdk.definitions.param import process_params

    conf = {**RELEASE, **bad.conf}
    # A triggered run's conf, validated as the API server does (HTTP 400 on failure).
    try:
        serialized_dag.params.deep_merge(conf).validate()
    except Exception as exc:
        return "schema", str(exc)
    # What the task runner gives the validate task as `params`, then the task's callable. A fresh
    # DAG from the DAG file: merging conf changes the Param objects in place.
    dag = runpy.run_path(str(DAG_FILE))["dag"]
    task = dag.get_task("validate")
    params = process_params(dag, task, conf, suppress_exception=False)
    try:
        task.python_callable(**task.op_kwargs, params=params)
    except Exception as exc:
        return "validate", str(exc)
    return None, ""


def check_refusal(bad: BadInput, serialized_dag: Any) -> list[str]:
    """Problems with how `bad` is refused (empty: refused by its layer, naming field and value)."""
    layer, message = refusal(bad, serialized_dag)
    problems = []
    if layer != bad.layer:
        problems.append(f"{bad.id}: expected the {bad.layer} layer to refuse it, got {layer}: {message[:300]}")
    if bad.field not in message or repr(bad.value) not in message:
        problems.append(f"{bad.id}: message does not name {bad.field}={bad.value!r}: {message[:300]}")
    return problems


@pytest.mark.parametrize("bad", ROWS)
def test_each_malformed_request_is_refused_naming_field_and_value(bad: BadInput, serialized_dag: Any) -> None:
    assert check_refusal(bad, serialized_dag) == []


def test_the_table_covers_every_kind_of_input() -> None:
    fields = {r.values[0].field for r in ROWS}
    assert len(ROWS) >= 25
    for expected in ("service", "namespace", "canary_version", "steps", "max_error_rate", "strategy",
                     "cookie_regex", "kubernetes_conn_id", "istio_api_version", "bake_seconds", "virtual_service"):
        assert expected in fields, expected
    assert {r.values[0].layer for r in ROWS} == {"schema", "validate"}


def started_tasks(output: str) -> set[str]:
    return set(re.findall(r"\[DAG TEST\] starting task_id=(\S+)", output))


def istio_resource_versions(kubeconfig: Path) -> dict[str, str]:
    api = client.CustomObjectsApi(config.new_client_from_config(config_file=str(kubeconfig)))
    return {
        plural: api.get_namespaced_custom_object("networking.istio.io", "v1", "bookinfo", plural, "reviews")[
            "metadata"]["resourceVersion"]
        for plural in ("virtualservices", "destinationrules")
    }


def test_malformed_requests_fail_at_validate_and_never_reach_the_cluster(
    sandbox: Any, run_release: Any, serialized_dag: Any
) -> None:
    before = istio_resource_versions(sandbox.kubeconfig)
    started = time.time()  # the audit holds our own reads above; count only what follows

    problems = [p for r in ROWS for p in check_refusal(r.values[0], serialized_dag)]
    runs: dict[str, RunResult] = {}
    for bad in (r.values[0] for r in ROWS if r.values[0].dags_test):
        result = run_release({**RELEASE, **bad.conf}, timeout=240)
        runs[bad.id] = result
        output = result.output
        if result.returncode == 0 or bad.field not in output or repr(bad.value) not in output:
            problems.append(f"{bad.id}: `airflow dags test` exited {result.returncode} without naming "
                            f"{bad.field}={bad.value!r}:\n{output[-2500:]}")
        ran = started_tasks(output)
        if bad.layer == "schema" and ran:
            problems.append(f"{bad.id}: the schema should refuse it before any task, yet {sorted(ran)} ran")
        if bad.layer == "validate":
            if "validate" not in ran or not ran <= TASKS_AFTER_A_REFUSAL or result.state != "failed":
                problems.append(f"{bad.id}: expected the run to fail at validate; ran {sorted(ran)}, "
                                f"state {result.state}")
            if f"invalid release parameter: {bad.field}={bad.value!r}" not in output:
                problems.append(f"{bad.id}: validate's failure does not name {bad.field}={bad.value!r}")

    audit = requests.get(f"{sandbox.api_url}/sandbox/audit", timeout=10).json()
    after = istio_resource_versions(sandbox.kubeconfig)
    assert problems == [], "\n".join(problems)
    assert len(runs) >= 3
    touched = [f"{a['verb']} {a['resource']} {a.get('namespace')}/{a.get('name')}" for a in audit
               if a["time"] >= started]
    assert touched == [], f"the cluster saw requests while refusing bad input: {touched}"
    assert after == before
