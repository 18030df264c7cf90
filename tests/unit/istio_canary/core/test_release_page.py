"""The release page's model: phases, markers, the rollback status (the "mark run failed" trap)
and what Abort may fail."""

from __future__ import annotations

from typing import Any

import pytest

from istio_canary.core.release_page import (
    ABORT_XCOM_KEY,
    ABORT_XCOM_TASK,
    BETWEEN_TASKS,
    RunRecord,
    TaskRecord,
    abort_refusal,
    abort_targets,
    abortable,
    describe_weights,
    markers,
    outcome,
    phase_rows,
    phases_of,
    rollback_status,
    weight_label,
)

RELEASE = {"service": "reviews", "namespace": "bookinfo", "stable_version": "v1", "canary_version": "v2"}
TASKS = ("validate", "preflight", "targeted.set_route", "targeted.analyze", "step_10.set_route", "step_10.watch",
         "step_10.analyze", "step_50.set_route", "step_50.watch", "step_50.analyze", "step_100.set_route",
         "step_100.watch", "step_100.analyze", "promote", "rollback", "report", "outcome")


def run(state: str = "running", states: dict[str, str | None] | None = None,
        xcoms: dict[tuple[str, str], Any] | None = None, ends: dict[str, float] | None = None) -> RunRecord:
    states = {t: None for t in TASKS} | {"validate": "success"} | (states or {})
    tasks = {t: TaskRecord(s, None, (ends or {}).get(t)) for t, s in states.items()}
    return RunRecord("istio_canary_release", "manual__1", state, 1000.0, None, dict(RELEASE), tasks,
                     {("validate", "return_value"): dict(RELEASE)} | (xcoms or {}))


def test_phases_run_in_release_order_whatever_the_task_order() -> None:
    ids = ["step_100.watch", "step_50.set_route", "targeted.set_route", "step_10.analyze", "mirror.watch", "report"]
    assert phases_of(ids) == ["mirror", "targeted", "step_10", "step_50", "step_100"]
    assert [weight_label(p) for p in ("targeted", "step_10", "mirror")] == ["match", "10%", "mirror"]


def test_phase_rows_and_markers_come_from_set_route_and_analyze() -> None:
    record = run("success", {"step_10.set_route": "success", "step_10.analyze": "success",
                             "step_50.set_route": "success", "step_50.analyze": "success", "promote": "success",
                             "targeted.set_route": "skipped"},
                 {("step_10.set_route", "return_value"): {"canary_weight": 10, "changed": True},
                  ("step_10.analyze", "return_value"): {"outcome": "pass", "summary": "ok",
                                                        "stats": {"requests": 50, "error_rate": 0.01}},
                  ("step_50.set_route", "return_value"): {"canary_weight": 50, "changed": True},
                  ("step_50.analyze", "return_value"): {"outcome": "fail", "summary": "too many 5xx"},
                  ("promote", "return_value"): {"changed": True}},
                 {"step_10.set_route": 1010.0, "step_10.analyze": 1020.0, "step_50.set_route": 1030.0,
                  "step_50.analyze": 1040.0, "promote": 1050.0})
    rows = phase_rows(record)
    assert [(r.phase, r.weight, r.routed_at, r.verdict, r.judged_at) for r in rows] == [
        ("step_10", "10%", 1010.0, "pass", 1020.0), ("step_50", "50%", 1030.0, "fail", 1040.0)]
    assert rows[0].requests == 50 and rows[0].error_rate == 0.01
    assert [(m.kind, m.label, m.outcome) for m in markers(record)] == [
        ("step", "10%", ""), ("verdict", "10% pass", "pass"), ("step", "50%", ""), ("verdict", "50% fail", "fail"),
        ("promote", "promoted", "")]


def test_an_abort_is_a_marker_and_names_who() -> None:
    record = run("running", xcoms={(ABORT_XCOM_TASK, ABORT_XCOM_KEY): {"by": "alice", "at": 1100.0, "tasks": []}})
    assert [(m.kind, m.label) for m in markers(record)] == [("abort", "aborted by alice")]


@pytest.mark.parametrize(("state", "states", "holder", "expected"), [
    ("success", {"promote": "success", "rollback": "skipped"}, None, "not needed"),
    ("failed", {"preflight": "success", "rollback": "success"}, None, "yes"),
    ("running", {"preflight": "success", "rollback": "running"}, None, "in progress"),
    ("running", {"preflight": "success", "step_10.watch": "deferred"}, None, "-"),
    ("failed", {"preflight": "failed", "rollback": "success"}, None, "yes"),
    ("failed", {"validate": "failed", "rollback": "skipped"}, None, "not needed"),
])
def test_rollback_status(state: str, states: dict[str, str], holder: str | None, expected: str) -> None:
    status = rollback_status(run(state, states), holder)
    assert status.rolled_back == expected and status.warning is None


def test_a_run_marked_failed_after_preflight_is_flagged_as_not_rolled_back() -> None:
    """What "Mark run as failed" leaves: the deferred watch failed, every unfinished task
    skipped, `rollback` among them; routing is wherever the last step put it."""
    record = run("failed", {"preflight": "success", "step_10.set_route": "success", "step_10.watch": "failed",
                            "step_10.analyze": "skipped", "rollback": "skipped", "report": "skipped"})
    status = rollback_status(record)
    assert status.rolled_back == "no"
    assert "without its rollback (skipped)" in status.warning and "traffic may still be on the canary" in status.warning


def test_a_finished_run_still_holding_the_lock_is_flagged() -> None:
    record = run("failed", {"preflight": "success", "rollback": "success"},
                 {("rollback", "return_value"): {"changed": False}})
    assert rollback_status(record, lock_holder="istio_canary_release/manual__1").rolled_back == "no"
    assert rollback_status(record, lock_holder="istio_canary_release/other").rolled_back == "yes"
    stranded = run("failed", {"preflight": "success", "rollback": "skipped"})
    assert "still holds the service's release lock" in rollback_status(stranded, "istio_canary_release/manual__1").warning


def test_a_dry_run_that_ended_without_rollback_is_not_flagged() -> None:
    record = run("failed", {"preflight": "success", "rollback": "skipped"},
                 {("validate", "return_value"): {**RELEASE, "dry_run": True}})
    assert rollback_status(record).warning is None


def test_abort_fails_every_active_release_task_but_the_rollback_chain() -> None:
    record = run("running", {"preflight": "success", "step_10.set_route": "success", "step_10.watch": "deferred",
                             "targeted.analyze": "up_for_retry", "report": "queued"})
    assert abort_targets(record) == ["step_10.watch", "targeted.analyze"]
    assert abort_refusal(record) is None and abortable(record)
    parked = run("running", {"step_50.analyze": "success", "promote": None, "step_100.set_route": "awaiting_input"})
    assert abort_targets(parked) == ["step_100.set_route"]


@pytest.mark.parametrize(("state", "states", "reason"), [
    ("success", {"promote": "success"}, "the run has finished (success)"),
    ("failed", {"step_10.watch": "failed"}, "the run has finished (failed)"),
    ("running", {"rollback": "running", "step_10.watch": "failed"}, "already rolling back"),
    ("running", {"promote": "success", "report": "running"}, "already promoted"),
])
def test_abort_refuses_a_run_it_cannot_stop(state: str, states: dict[str, str], reason: str) -> None:
    record = run(state, states)
    assert reason in abort_refusal(record) and not abortable(record)


def test_between_two_tasks_abort_asks_to_try_again_and_the_button_stays() -> None:
    record = run("running", {"step_10.set_route": "success"})
    assert abort_refusal(record) == BETWEEN_TASKS and abortable(record)


def test_outcome_is_the_reports_once_it_ran() -> None:
    assert outcome(run()) == ("in_progress", "the release is running")
    done = run("failed", xcoms={("report", "release_report"): {"outcome": "rolled_back", "reason": "step_10: fail"}})
    assert outcome(done) == ("rolled_back", "step_10: fail")


def test_weights_describe_each_route() -> None:
    vs = {"spec": {"http": [
        {"name": "reviews-canary", "match": [{"headers": {}}], "route": [{"destination": {"subset": "v2"}}]},
        {"route": [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 90},
                   {"destination": {"host": "reviews", "subset": "v2"}, "weight": 10}]}]}}
    assert describe_weights(vs) == ["reviews-canary (match): v2 100%", "http[1]: v1 90%, v2 10%"]
