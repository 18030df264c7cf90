"""The release pages' HTML: what a release engineer reads, and the Abort button only where it works."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

from istio_canary.core.release_chart import ChartData, chart_range
from istio_canary.core.release_page import (
    ABORT_XCOM_KEY,
    ABORT_XCOM_TASK,
    RunRecord,
    TaskRecord,
    markers,
    phase_rows,
    rollback_status,
)
from istio_canary.ui.render import Links, ReleaseView, ServiceView, list_page, release_page

RELEASE = {"service": "reviews", "namespace": "bookinfo", "stable_version": "v1", "canary_version": "v2"}
LINKS = Links(app="/base/istio-canary", airflow="/base")
VS = {"spec": {"http": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 90},
                                   {"destination": {"host": "reviews", "subset": "v2"}, "weight": 10}]}]}}


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: dict[str, dict[str, Any]] = {}
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if "id" in found:
            self.ids[str(found["id"])] = {"tag": tag, **found}
        if tag == "form":
            self.forms.append(found)


def parsed(html: str) -> _Ids:
    parser = _Ids()
    parser.feed(html)
    return parser


def record(state: str, states: dict[str, str], xcoms: dict[tuple[str, str], Any] | None = None) -> RunRecord:
    tasks = {t: TaskRecord(s, 1000.0, 1010.0) for t, s in states.items()}
    return RunRecord("istio_canary_release", "manual__2026-01-01T00:00:00+00:00", state, 1000.0, None, RELEASE,
                     tasks, {("validate", "return_value"): RELEASE} | (xcoms or {}))


def view(run: RunRecord, holder: str | None = None) -> ReleaseView:
    rows = phase_rows(run)
    charts = ChartData(chart_range(1000.0, 1100.0, 1100.0), {"error_rate": {"canary": [(1000.0, 0.0), (1050.0, 0.2)]}},
                       {"error_rate": 'sum(x{a="b"})', "p99_ms": "p99"})
    return ReleaseView(run, rows, markers(run, rows), rollback_status(run, holder), holder, VS, None, charts)


def test_a_running_release_has_the_abort_form_posting_to_the_api() -> None:
    run = record("running", {"validate": "success", "preflight": "success", "step_10.set_route": "success",
                             "step_10.watch": "deferred", "rollback": None})
    html = release_page(view(run, "istio_canary_release/x"), LINKS)
    page = parsed(html)
    assert page.ids["abort"]["tag"] == "button"
    assert page.forms == [{"class": "abort", "method": "post", "onsubmit": page.forms[0]["onsubmit"],
                           "action": "/base/istio-canary/api/releases/istio_canary_release/"
                                     "manual__2026-01-01T00%3A00%3A00%2B00%3A00/abort"}]
    assert "v1 90%, v2 10%" in html and "istio_canary_release/x" in html
    assert html.count('class="release-chart"') == 2 and "series-canary" in html
    assert 'href="/base/dags/istio_canary_release/runs/manual__2026-01-01T00%3A00%3A00%2B00%3A00"' in html


def test_a_finished_release_has_no_abort_button_and_says_who_aborted_it() -> None:
    run = record("failed", {"validate": "success", "preflight": "success", "rollback": "success"},
                 {(ABORT_XCOM_TASK, ABORT_XCOM_KEY): {"by": "alice", "at": 1050.0, "tasks": ["step_10.watch"]},
                  ("report", "release_report"): {"outcome": "rolled_back", "reason": "aborted by alice"}})
    page = parsed(html := release_page(view(run), LINKS, message="aborted by alice: rollback starts"))
    assert "abort" not in page.ids and not page.forms
    assert "aborted by alice at" in html and page.ids["rolled-back"]["tag"] == "td"
    assert page.ids["message"]["class"] == "notice"
    assert "marker-abort" in html


def test_a_run_marked_failed_without_rollback_is_flagged() -> None:
    run = record("failed", {"validate": "success", "preflight": "success", "step_10.watch": "failed",
                            "rollback": "skipped"})
    html = release_page(view(run), LINKS)
    assert 'id="stranded"' in html and "Rolled back: no" in html and "traffic may still be on the canary" in html


def test_text_from_the_run_is_escaped() -> None:
    run = record("failed", {"validate": "success"},
                 {("report", "release_report"): {"outcome": "failed", "reason": "<script>alert(1)</script>"}})
    html = release_page(view(run), LINKS)
    assert "<script>alert" not in html and "&lt;script&gt;" in html


def test_the_list_groups_runs_by_service_with_lock_and_weights() -> None:
    running = record("running", {"validate": "success", "step_10.watch": "deferred"})
    stranded = record("failed", {"validate": "success", "preflight": "success", "rollback": "skipped"})
    service = ServiceView("bookinfo/reviews", "istio_canary_release/r1", ["http[0]: v1 90%, v2 10%"], None,
                          [(running, rollback_status(running)), (stranded, rollback_status(stranded))])
    html = list_page([service], LINKS)
    assert '<h2 class="service">bookinfo/reviews</h2>' in html and "istio_canary_release/r1" in html
    assert html.count('<tr class="run"') == 2 and "traffic may still be on the canary" in html
    assert 'href="/base/istio-canary/releases/istio_canary_release/manual__' in html
    assert "No release has run yet" in list_page([], LINKS)
