"""Which callback announces which release phase, the notifier table, and the messages."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from istio_canary.core.release_phase import (
    ON_EXECUTE,
    ON_FAILURE,
    ON_SUCCESS,
    ReleasePhase,
    callback_phases,
    first_failed_verdict,
    next_after,
    notifiers_by_phase,
    phase_message,
    select_phase,
    step_label,
    verdict_goes_on,
)


def chat(context: Any) -> None:
    pass


def pager(context: Any) -> None:
    pass


def test_a_list_of_notifiers_is_told_every_phase() -> None:
    table = notifiers_by_phase([chat, pager])
    assert set(table) == set(ReleasePhase)
    assert all(items == [chat, pager] for items in table.values())


def test_a_mapping_picks_phases_and_takes_one_notifier_or_several() -> None:
    table = notifiers_by_phase({"rolled_back": pager, ReleasePhase.PROMOTED: [chat, pager]})
    assert table[ReleasePhase.ROLLED_BACK] == [pager]
    assert table[ReleasePhase.PROMOTED] == [chat, pager]
    assert table[ReleasePhase.STARTED] == [] and table[ReleasePhase.STEP_PASSED] == []


def test_no_notifiers_is_an_empty_table() -> None:
    assert notifiers_by_phase(None) == {phase: [] for phase in ReleasePhase}


@pytest.mark.parametrize(("spec", "message"), [
    ({"rolledback": chat}, "unknown release phase 'rolledback'; known phases: started, step_passed"),
    ([chat, "not callable"], "notifiers[1]='not callable': a notifier must be callable"),
    ({"promoted": [chat, 3]}, "notifiers['promoted'][1]=3: a notifier must be callable"),
    (chat, "give a list of notifiers or a mapping phase -> notifiers"),
])
def test_a_bad_notifier_spec_is_refused_naming_the_entry(spec: Any, message: str) -> None:
    with pytest.raises(ValueError, match="notifiers") as error:
        notifiers_by_phase(spec)
    assert message in str(error.value)


def test_callbacks_per_task() -> None:
    assert callback_phases("preflight") == {ON_SUCCESS: (ReleasePhase.STARTED,)}
    assert callback_phases("step_50.decide") == {ON_SUCCESS: (ReleasePhase.STEP_PASSED,)}
    assert callback_phases("approve_promotion") == {ON_EXECUTE: (ReleasePhase.AWAITING_APPROVAL,)}
    assert callback_phases("promote") == {ON_SUCCESS: (ReleasePhase.PROMOTED,)}
    assert callback_phases("rollback") == {
        ON_SUCCESS: (ReleasePhase.ROLLED_BACK, ReleasePhase.ROLLBACK_FAILED),
        ON_FAILURE: (ReleasePhase.ROLLBACK_FAILED,)}
    for quiet in ("validate", "step_50.analyze", "step_50.verdict_failed", "report", "outcome", "promote_window"):
        assert callback_phases(quiet) == {}


def test_every_phase_has_a_task_that_announces_it() -> None:
    announced = {phase for task_id in ("preflight", "step_10.decide", "approve_promotion", "promote", "rollback")
                 for phases in callback_phases(task_id).values() for phase in phases}
    assert announced == set(ReleasePhase)


@pytest.mark.parametrize(("verdict", "dry_run", "expected"), [
    ("pass", False, ReleasePhase.STEP_PASSED),
    ("fail", False, None),
    ("inconclusive", False, None),
    (None, False, None),
    ("dry_run", True, ReleasePhase.STEP_PASSED),
    ("dry_run", False, None),
])
def test_a_decide_announces_a_passed_step_only_when_the_verdict_let_it_go_on(
        verdict: str | None, dry_run: bool, expected: ReleasePhase | None) -> None:
    assert select_phase("step_10.decide", ON_SUCCESS, verdict=verdict, dry_run=dry_run) is expected


def test_the_rule_matches_the_release_dags_decide() -> None:
    from istio_canary.dag_factory import _decider

    decide = _decider("step_10", on_pass="step_50.window")
    for outcome, dry_run in itertools.product(("pass", "fail", "inconclusive", "dry_run", "error"), (True, False)):
        went_on = decide({"outcome": outcome}, {"dry_run": dry_run}) == "step_50.window"
        assert verdict_goes_on(outcome, dry_run) is went_on, (outcome, dry_run)


def test_rollback_success_is_rolled_back_unless_it_recorded_a_failure() -> None:
    assert select_phase("rollback", ON_SUCCESS) is ReleasePhase.ROLLED_BACK
    assert select_phase("rollback", ON_SUCCESS, rollback_failed={"canary_weight": 10}) is ReleasePhase.ROLLBACK_FAILED
    assert select_phase("rollback", ON_FAILURE) is ReleasePhase.ROLLBACK_FAILED


def test_the_approval_is_announced_once_per_try() -> None:
    assert select_phase("approve_promotion", ON_EXECUTE) is ReleasePhase.AWAITING_APPROVAL
    assert select_phase("approve_promotion", ON_EXECUTE, already_announced=True) is None


def test_other_callbacks_announce_nothing() -> None:
    assert select_phase("preflight", ON_SUCCESS) is ReleasePhase.STARTED
    assert select_phase("promote", ON_SUCCESS) is ReleasePhase.PROMOTED
    assert select_phase("preflight", ON_FAILURE) is None
    assert select_phase("promote", ON_EXECUTE) is None
    assert select_phase("validate", ON_SUCCESS) is None


@pytest.mark.parametrize(("task_id", "label"), [
    ("step_50.decide", "step 50%"), ("targeted.decide", "targeted phase"), ("mirror", "mirror phase"),
    ("promote_window", "promotion"), ("step_100.window", "step 100%"), ("choose_strategy", "traffic steps"),
])
def test_step_labels(task_id: str, label: str) -> None:
    assert step_label(task_id) == label


def test_what_comes_after_a_passed_phase() -> None:
    assert next_after({"step_10.verdict_failed", "step_50.window", "rollback"}, require_approval=False,
                      last_step=100) == "step 50%"
    after_50 = {"approve_promotion", "no_approval_needed", "step_50.verdict_failed", "rollback"}
    assert next_after(after_50, require_approval=False, last_step=100) == "step 100%"
    assert next_after(after_50, require_approval=True, last_step=100) == "approval, then step 100%"
    assert next_after({"promote_window", "step_100.verdict_failed", "rollback"}, require_approval=False,
                      last_step=100) == "promotion"


def test_the_first_failed_verdict_is_the_reason() -> None:
    analyses = [("mirror", None), ("step_10", {"outcome": "pass", "summary": "ok"}),
                ("step_50", {"outcome": "fail", "summary": "error rate 5% > 1%"}),
                ("step_100", None)]
    assert first_failed_verdict(analyses) == "step_50: fail: error rate 5% > 1%"
    assert first_failed_verdict(analyses[:2]) is None


FACTS = {"namespace": "bookinfo", "service": "reviews", "stable_version": "v1", "canary_version": "v2",
         "steps": [10, 50, 100], "dry_run": False}


def test_messages_name_the_release_and_what_happened() -> None:
    assert phase_message(ReleasePhase.STARTED, FACTS) == (
        "release bookinfo/reviews v1 -> v2 started: checks passed, lock taken; steps 10% -> 50% -> 100%")
    passed = phase_message(ReleasePhase.STEP_PASSED, {**FACTS, "step": "step 10%", "verdict": "pass: ok",
                                                      "next": "step 50%"})
    assert passed == "release bookinfo/reviews v1 -> v2: step 10% passed (pass: ok); next: step 50%"
    failed = phase_message(ReleasePhase.ROLLBACK_FAILED, {**FACTS, "reason": "routing is at canary weight 10%"})
    assert "ROLLBACK FAILED: routing is at canary weight 10%; traffic may still reach v2" in failed
    assert phase_message(ReleasePhase.PROMOTED, {**FACTS, "dry_run": True}).startswith("[dry run] release")
    for phase in ReleasePhase:  # every phase has a message, from the facts every phase has
        assert "bookinfo/reviews v1 -> v2" in phase_message(phase, FACTS)
