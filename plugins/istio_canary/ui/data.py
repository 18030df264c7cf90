"""What the release page reads, in the api-server: release runs and their task instances and
XComs from Airflow's database, the lock and weights from the cluster, the charts from Prometheus.

The api-server has the metadata database (Airflow's own REST API reads it the same way) and,
like the workers, the connections. Every cluster or Prometheus failure becomes a message on
the page, never a failed page: the page is most needed when something is wrong.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from istio_canary.core.lock import lock_of
from istio_canary.core.release_chart import ChartData, chart_queries, chart_range, series_by_role
from istio_canary.core.release_page import ABORT_XCOM_KEY, RunRecord, TaskRecord
from istio_canary.core.request import ReleaseRequest

# The tag build_release_dag gives every release DAG (dag_factory.py).
RELEASE_TAG = "istio"
READ_KEYS = ("return_value", "release_report", ABORT_XCOM_KEY)


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def release_dag_ids(session: Any) -> list[str]:
    from airflow.models.dag import DagTag
    from sqlalchemy import select

    return sorted(session.scalars(select(DagTag.dag_id).where(DagTag.name == RELEASE_TAG)))


def recent_runs(session: Any, dag_ids: Iterable[str], limit: int = 50) -> list[Any]:
    """The latest `limit` runs of `dag_ids`, newest first."""
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    dag_ids = list(dag_ids)
    if not dag_ids:
        return []
    query = select(DagRun).where(DagRun.dag_id.in_(dag_ids)).order_by(DagRun.id.desc()).limit(limit)
    return list(session.scalars(query))


def find_run(session: Any, dag_id: str, run_id: str) -> Any | None:
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    return session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))


def run_record(session: Any, dag_run: Any) -> RunRecord:
    """The run, its task instances (latest try) and the XComs the page reads."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    where = (TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id)
    tasks = {
        ti.task_id: TaskRecord(str(ti.state) if ti.state else None, _epoch(ti.start_date), _epoch(ti.end_date))
        for ti in session.scalars(select(TaskInstance).where(*where))
    }
    rows = session.scalars(select(XComModel).where(
        XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id, XComModel.key.in_(READ_KEYS)))
    xcoms = {(row.task_id, row.key): XComModel.deserialize_value(row) for row in rows}
    return RunRecord(
        dag_id=dag_run.dag_id, run_id=dag_run.run_id, state=str(dag_run.state),
        start=_epoch(dag_run.start_date), end=_epoch(dag_run.end_date), conf=dict(dag_run.conf or {}),
        tasks=tasks, xcoms=xcoms,
    )


def release_request(run: RunRecord) -> ReleaseRequest | None:
    """The run's release, or None when its parameters never were valid."""
    from istio_canary.core.validation import ValidationError

    try:
        return ReleaseRequest.from_params(dict(run.release))
    except (ValidationError, TypeError, ValueError, KeyError):
        return None


def conn_id(run: RunRecord, key: str, default: str) -> str:
    return str(run.conf.get(key) or default)


@dataclass
class ClusterView:
    """The service's VirtualService as it is now: who holds the release lock, the weights."""

    lock_holder: str | None = None
    lock_since: str | None = None
    virtual_service: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def cluster_view(request: ReleaseRequest, kubernetes_conn_id: str) -> ClusterView:
    from istio_canary.hooks.istio import IstioHook

    try:
        vs = IstioHook(kubernetes_conn_id, max_transient_retries=1, request_timeout_seconds=5).get_virtual_service(
            request.namespace, request.virtual_service)
    except Exception as exc:  # the page shows why, whatever the client raised
        return ClusterView(error=f"cannot read VirtualService {request.namespace}/{request.virtual_service} "
                                 f"through {kubernetes_conn_id!r}: {exc}")
    lock = lock_of(vs)
    return ClusterView(lock.holder if lock else None, lock.since if lock else None, vs)


def chart_data(run: RunRecord, request: ReleaseRequest, prometheus_conn_id: str) -> ChartData:
    """Both charts' series over the run (a minute before it to its end), by range queries."""
    from istio_canary.hooks.prometheus import PrometheusHook

    span = chart_range(run.start or time.time(), run.end, time.time())
    data = ChartData(span, queries=chart_queries(request, span.window))
    try:
        client = PrometheusHook(prometheus_conn_id).get_conn()
        for metric, query in data.queries.items():
            matrix = client.custom_query_range(
                query, start_time=datetime.fromtimestamp(span.start, UTC),
                end_time=datetime.fromtimestamp(span.end, UTC), step=f"{span.step}s")
            data.series[metric] = series_by_role(matrix, request.metric_version_label, request)
    except Exception as exc:  # the page says why instead of a chart
        data.error = f"Prometheus ({prometheus_conn_id!r}) did not answer the range queries: {exc}"
    return data
