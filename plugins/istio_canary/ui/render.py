"""The release pages as server-rendered HTML (no Airflow imports: tested as plain functions).

Self-contained: inline CSS and SVG, no external script or font (the UI may run where there is
no internet). The one script is the Abort button's confirm dialog; the form posts without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote

from istio_canary.core.release_chart import ChartData, render_chart
from istio_canary.core.release_page import (
    Marker,
    PhaseRow,
    RollbackStatus,
    RunRecord,
    abortable,
    aborted,
    describe_weights,
    outcome,
)

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:16px;color:#212529;background:#fff}
h1{font-size:20px;margin:0 0 8px}h2{font-size:16px;margin:20px 0 8px}
table{border-collapse:collapse;margin:4px 0 12px}td,th{border:1px solid #dee2e6;padding:4px 8px;text-align:left;
font-size:13px;vertical-align:top}th{background:#f8f9fa}
.outcome{font-weight:bold}.o-promoted{color:#2b8a3e}.o-rolled_back,.o-failed,.o-rollback_failed{color:#c92a2a}
.o-in_progress,.o-running{color:#1c7ed6}.warning{background:#fff5f5;border:1px solid #c92a2a;color:#c92a2a;
padding:8px;margin:8px 0;font-weight:bold}.notice{background:#f3f0ff;border:1px solid #862e9c;padding:8px;margin:8px 0}
.muted{color:#868e96}button.abort{background:#c92a2a;color:#fff;border:0;padding:8px 14px;font-size:14px;
border-radius:4px;cursor:pointer}code{font-size:12px}.chart{max-width:900px}
"""


def page(title: str, body: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>{body}</body></html>")


def _when(epoch: float | None) -> str:
    return "-" if epoch is None else datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.2f}%"


def _num(value: Any, unit: str = "") -> str:
    return "-" if value is None else f"{float(value):.0f}{unit}"


@dataclass
class Links:
    """URLs the pages point at: this app's (under its mount) and Airflow's UI."""

    app: str  # e.g. /istio-canary
    airflow: str  # Airflow's base path, "" at the root

    def release(self, dag_id: str, run_id: str) -> str:
        return f"{self.app}/releases/{quote(dag_id, safe='')}/{quote(run_id, safe='')}"

    def abort(self, dag_id: str, run_id: str) -> str:
        return f"{self.app}/api/releases/{quote(dag_id, safe='')}/{quote(run_id, safe='')}/abort"

    def grid(self, dag_id: str, run_id: str) -> str:
        return f"{self.airflow}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


@dataclass
class ServiceView:
    """One service on the list page: its lock and weights now, and its recent releases."""

    name: str  # namespace/service
    lock_holder: str | None
    weights: list[str]
    error: str | None
    runs: list[tuple[RunRecord, RollbackStatus]] = field(default_factory=list)


def list_page(services: Sequence[ServiceView], links: Links) -> str:
    parts = ["<h1>Canary releases</h1>",
             '<p class="muted">Releases in progress and recent ones, per service. A release\'s page has its '
             "charts, verdicts and the Abort button.</p>"]
    if not services:
        parts.append("<p>No release has run yet.</p>")
    for service in services:
        parts.append(f'<h2 class="service">{escape(service.name)}</h2>')
        parts.append(_cluster_table(service.lock_holder, service.weights, service.error))
        rows = "".join(_list_row(run, status, links) for run, status in service.runs)
        parts.append("<table class=\"runs\"><tr><th>run</th><th>state</th><th>outcome</th><th>versions</th>"
                     f"<th>started</th><th>rolled back</th></tr>{rows}</table>")
    return page("Canary releases", "".join(parts))


def _list_row(run: RunRecord, status: RollbackStatus, links: Links) -> str:
    result, _ = outcome(run)
    release = run.release
    flag = f' <span class="warning-flag">&#9888; {escape(status.warning)}</span>' if status.warning else ""
    return (f'<tr class="run" data-run-id="{escape(run.run_id)}"><td><a href="{links.release(run.dag_id, run.run_id)}">'
            f"{escape(run.dag_id)} / {escape(run.run_id)}</a></td><td>{escape(run.state)}</td>"
            f'<td class="outcome o-{escape(result)}">{escape(result)}</td>'
            f"<td>{escape(str(release.get('stable_version', '?')))} &rarr; "
            f"{escape(str(release.get('canary_version', '?')))}</td><td>{_when(run.start)}</td>"
            f"<td>{escape(status.rolled_back)}{flag}</td></tr>")


def _cluster_table(holder: str | None, weights: Sequence[str], error: str | None) -> str:
    if error:
        return f'<p class="cluster-error muted">{escape(error)}</p>'
    weight_lines = "<br>".join(escape(w) for w in weights) or "-"
    return (f'<table class="cluster"><tr><th>release lock</th><td class="lock-holder">{escape(holder or "free")}'
            f'</td></tr><tr><th>current weights</th><td class="weights">{weight_lines}</td></tr></table>')


@dataclass
class ReleaseView:
    """Everything the release page shows of one run."""

    run: RunRecord
    rows: list[PhaseRow]
    marks: list[Marker]
    status: RollbackStatus
    lock_holder: str | None
    virtual_service: Mapping[str, Any]
    cluster_error: str | None
    charts: ChartData


def release_page(view: ReleaseView, links: Links, message: str | None = None) -> str:
    run, release = view.run, view.run.release
    result, reason = outcome(run)
    title = f"{release.get('namespace', '?')}/{release.get('service', '?')}: " \
            f"{release.get('stable_version', '?')} -> {release.get('canary_version', '?')}"
    parts = [f"<h1>Release {escape(title)}</h1>",
             f'<p><a href="{links.app}/">All releases</a> &middot; '
             f'<a href="{links.grid(run.dag_id, run.run_id)}" target="_top">Airflow run {escape(run.run_id)}</a></p>']
    if message:
        parts.append(f'<div class="notice" id="message">{escape(message)}</div>')
    parts.append(_summary(view, result, reason))
    if view.status.warning:
        parts.append(f'<div class="warning" id="stranded">Rolled back: no &mdash; {escape(view.status.warning)}</div>')
    parts.append(_abort_control(view, links))
    parts.append(_cluster_table(view.lock_holder, describe_weights(view.virtual_service), view.cluster_error))
    parts.append(_phase_table(view.rows))
    parts.append(_charts(view))
    return page(f"Release {title}", "".join(parts))


def _summary(view: ReleaseView, result: str, reason: str) -> str:
    abort = aborted(view.run)
    by = f'<tr><th>aborted</th><td id="aborted-by">aborted by {escape(str(abort.get("by")))} at ' \
         f'{_when(abort.get("at"))}</td></tr>' if abort else ""
    return (f'<table class="summary"><tr><th>run state</th><td id="run-state">{escape(view.run.state)}</td></tr>'
            f'<tr><th>outcome</th><td id="outcome" class="outcome o-{escape(result)}">{escape(result)}: '
            f"{escape(reason)}</td></tr>{by}"
            f'<tr><th>rolled back</th><td id="rolled-back">{escape(view.status.rolled_back)}</td></tr>'
            f"<tr><th>started</th><td>{_when(view.run.start)}</td></tr>"
            f"<tr><th>ended</th><td>{_when(view.run.end)}</td></tr></table>")


def _abort_control(view: ReleaseView, links: Links) -> str:
    if not abortable(view.run):
        return ""
    action = links.abort(view.run.dag_id, view.run.run_id)
    return (f'<form class="abort" method="post" action="{action}" '
            "onsubmit=\"return confirm('Abort this release and roll it back now?')\">"
            '<button class="abort" id="abort" type="submit">Abort and roll back</button> '
            '<span class="muted">fails the running release task; the rollback task puts routing back and '
            "releases the lock</span></form>")


def _phase_table(rows: Sequence[PhaseRow]) -> str:
    if not rows:
        return '<p class="muted">No phase has changed routing yet.</p>'
    body = "".join(
        f'<tr class="phase" data-phase="{escape(r.phase)}"><td>{escape(r.phase)}</td><td>{escape(r.weight)}</td>'
        f"<td>{_when(r.routed_at)}</td><td class=\"verdict verdict-{escape(r.verdict or 'none')}\">"
        f"{escape(r.verdict or '-')}</td><td>{_num(r.requests)}</td><td>{_pct(r.error_rate)}</td>"
        f"<td>{_num(r.p99_ms, ' ms')}</td><td>{escape(r.summary or '')}</td></tr>"
        for r in rows)
    return ("<h2>Phases</h2><table class=\"phases\"><tr><th>phase</th><th>weight</th><th>routed at</th>"
            "<th>verdict</th><th>canary requests</th><th>canary error rate</th><th>canary p99</th><th>why</th>"
            f"</tr>{body}</table>")


def _charts(view: ReleaseView) -> str:
    charts = view.charts
    if charts.error:
        return f'<h2>Canary vs stable</h2><p class="chart-error">{escape(charts.error)}</p>'
    out = ["<h2>Canary vs stable</h2>"]
    for metric, title, unit in (("error_rate", "5xx error rate", "%"), ("p99_ms", "p99 latency", "ms")):
        svg = render_chart(title, unit, charts.series.get(metric) or {}, view.marks, charts.span, metric)
        query = charts.queries.get(metric, "")
        out.append(f'<div class="chart">{svg}<details><summary class="muted">PromQL</summary>'
                   f"<code>{escape(query)}</code></details></div>")
    return "".join(out)
