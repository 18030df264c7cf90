"""The release pages' data put together: the database read, the cluster and Prometheus asked,
the pure model (`core.release_page`, `core.release_chart`) applied, HTML or JSON out."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from fastapi import HTTPException

from istio_canary.core.release_chart import ChartData, chart_range
from istio_canary.core.release_page import (
    RunRecord,
    abort_refusal,
    abortable,
    aborted,
    describe_weights,
    markers,
    outcome,
    phase_rows,
    rollback_status,
)
from istio_canary.ui import data
from istio_canary.ui.render import Links, ReleaseView, ServiceView, list_page, release_page

KUBERNETES_CONN = ("kubernetes_conn_id", "kubernetes_default")
PROMETHEUS_CONN = ("prometheus_conn_id", "prometheus_default")


def _records(user: Any) -> list[RunRecord]:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.utils.session import create_session

    with create_session() as session:
        allowed = get_auth_manager().get_authorized_dag_ids(user=user, method="GET", session=session)
        dag_ids = [d for d in data.release_dag_ids(session) if d in allowed]
        return [data.run_record(session, run) for run in data.recent_runs(session, dag_ids)]


def services(user: Any) -> list[ServiceView]:
    """Recent releases grouped by service, newest first; each service's lock and weights now."""
    grouped: dict[str, list[RunRecord]] = {}
    for run in _records(user):
        release = run.release
        grouped.setdefault(f"{release.get('namespace', '?')}/{release.get('service', '?')}", []).append(run)
    out = []
    for name, runs in grouped.items():
        request = next((r for r in map(data.release_request, runs) if r is not None), None)
        cluster = data.cluster_view(request, data.conn_id(runs[0], *KUBERNETES_CONN)) if request else \
            data.ClusterView(error="no valid release parameters")
        weights = describe_weights(cluster.virtual_service) if cluster.virtual_service else []
        out.append(ServiceView(name, cluster.lock_holder, weights, cluster.error,
                               [(run, rollback_status(run, cluster.lock_holder)) for run in runs]))
    return out


def list_html(user: Any, links: Links) -> str:
    return list_page(services(user), links)


def list_json(user: Any) -> dict[str, Any]:
    return {"services": [
        {"service": s.name, "lock_holder": s.lock_holder, "weights": s.weights, "error": s.error,
         "releases": [_run_summary(run, status.rolled_back, status.warning) for run, status in s.runs]}
        for s in services(user)]}


def _run_summary(run: RunRecord, rolled_back: str, warning: str | None) -> dict[str, Any]:
    result, reason = outcome(run)
    return {"dag_id": run.dag_id, "run_id": run.run_id, "state": run.state, "outcome": result, "reason": reason,
            "rolled_back": rolled_back, "warning": warning, "aborted": aborted(run), "abortable": abortable(run)}


def release_view(dag_id: str, run_id: str) -> ReleaseView:
    from airflow.utils.session import create_session

    with create_session() as session:
        dag_run = data.find_run(session, dag_id, run_id)
        if dag_run is None or dag_id not in data.release_dag_ids(session):
            raise HTTPException(404, f"no release run {dag_id}/{run_id}")
        run = data.run_record(session, dag_run)
    request = data.release_request(run)
    if request is None:
        cluster = data.ClusterView(error="the run's release parameters are not valid: nothing was released")
        charts = ChartData(chart_range(run.start or time.time(), run.end, time.time()),
                           error="no chart: the release parameters are not valid")
    else:
        cluster = data.cluster_view(request, data.conn_id(run, *KUBERNETES_CONN))
        charts = data.chart_data(run, request, data.conn_id(run, *PROMETHEUS_CONN))
    rows = phase_rows(run)
    return ReleaseView(run, rows, markers(run, rows), rollback_status(run, cluster.lock_holder),
                       cluster.lock_holder, cluster.virtual_service, cluster.error, charts)


def release_html(dag_id: str, run_id: str, links: Links, abort: str | None) -> str:
    """`abort`: "done" or "refused" after the page's Abort form posted."""
    view = release_view(dag_id, run_id)
    return release_page(view, links, abort_message(view.run, abort))


def abort_message(run: RunRecord, abort: str | None) -> str | None:
    if abort == "done" and (done := aborted(run)):
        return (f"aborted by {done.get('by')}: {', '.join(done.get('tasks') or [])} marked failed; "
                "rollback starts on the scheduler's next pass")
    if abort in ("done", "refused"):
        return f"Abort refused: {abort_refusal(run) or 'the release had nothing left to abort'}"
    return None


def release_json(dag_id: str, run_id: str) -> dict[str, Any]:
    view = release_view(dag_id, run_id)
    return {
        **_run_summary(view.run, view.status.rolled_back, view.status.warning),
        "release": dict(view.run.release),
        "lock_holder": view.lock_holder,
        "weights": describe_weights(view.virtual_service) if view.virtual_service else [],
        "cluster_error": view.cluster_error,
        "phases": [dataclasses.asdict(row) for row in view.rows],
        "markers": [dataclasses.asdict(mark) for mark in view.marks],
        "chart_error": view.charts.error,
        "queries": view.charts.queries,
    }
