"""Release phases a notifier can be told about, which task callback announces each, and the
one-line message for it (pure: the Airflow wiring is istio_canary.notifications).

A phase is announced by a task's callback, never by a task of its own: a notifier that fails
cannot fail, retry or delay the release.

    started            on_success of preflight (checks passed, the service's lock taken)
    step_passed        on_success of <phase>.decide, when the verdict let it go on (decide
                       branches, so it pushes no XCom: its phase's analysis verdict says)
    awaiting_approval  on_execute of approve_promotion (once per try, not again on resume)
    promoted           on_success of promote
    rolled_back        on_success of rollback
    rollback_failed    on_failure of rollback (its last try), or its `rollback_failed` XCom
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any


class ReleasePhase(StrEnum):
    STARTED = "started"
    STEP_PASSED = "step_passed"
    AWAITING_APPROVAL = "awaiting_approval"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"


ON_SUCCESS = "on_success_callback"
ON_FAILURE = "on_failure_callback"
ON_EXECUTE = "on_execute_callback"

PREFLIGHT, PROMOTE, ROLLBACK, APPROVAL = "preflight", "promote", "rollback", "approve_promotion"
DECIDE_SUFFIX = ".decide"
VERDICT_FAILED_SUFFIX = ".verdict_failed"

Notifier = Callable[..., Any]
NotifierSpec = Sequence[Notifier] | Mapping[str, Notifier | Sequence[Notifier]]


def notifiers_by_phase(notifiers: NotifierSpec | None) -> dict[ReleasePhase, list[Notifier]]:
    """`[n, ...]` (every phase) or `{phase: n or [n, ...]}` -> {phase: [n, ...]} for every phase.

    Raises ValueError naming the key or item at fault, so a typo fails the DAG file's import
    (visible as an import error) instead of silently notifying nobody."""
    table: dict[ReleasePhase, list[Notifier]] = {phase: [] for phase in ReleasePhase}
    if notifiers is None:
        return table
    if isinstance(notifiers, Mapping):
        for key, value in notifiers.items():
            try:
                phase = ReleasePhase(key)
            except ValueError:
                known = ", ".join(p.value for p in ReleasePhase)
                raise ValueError(f"notifiers: unknown release phase {key!r}; known phases: {known}") from None
            table[phase].extend(_checked(value if _is_sequence(value) else [value], f"notifiers[{key!r}]"))
        return table
    if not _is_sequence(notifiers):
        raise ValueError(f"notifiers={notifiers!r}: give a list of notifiers or a mapping phase -> notifiers")
    checked = _checked(notifiers, "notifiers")
    for phase in ReleasePhase:
        table[phase].extend(checked)
    return table


def _is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _checked(items: Any, where: str) -> list[Notifier]:
    for index, item in enumerate(items):
        if not callable(item):
            raise ValueError(f"{where}[{index}]={item!r}: a notifier must be callable with the task context "
                             "(an Airflow BaseNotifier, or a function of the context)")
    return list(items)


def callback_phases(task_id: str) -> dict[str, tuple[ReleasePhase, ...]]:
    """Which callbacks of task `task_id` may announce which phases ({} for most tasks)."""
    if task_id == PREFLIGHT:
        return {ON_SUCCESS: (ReleasePhase.STARTED,)}
    if task_id.endswith(DECIDE_SUFFIX):
        return {ON_SUCCESS: (ReleasePhase.STEP_PASSED,)}
    if task_id == APPROVAL:
        return {ON_EXECUTE: (ReleasePhase.AWAITING_APPROVAL,)}
    if task_id == PROMOTE:
        return {ON_SUCCESS: (ReleasePhase.PROMOTED,)}
    if task_id == ROLLBACK:
        return {ON_SUCCESS: (ReleasePhase.ROLLED_BACK, ReleasePhase.ROLLBACK_FAILED),
                ON_FAILURE: (ReleasePhase.ROLLBACK_FAILED,)}
    return {}


def verdict_goes_on(outcome: str | None, dry_run: bool) -> bool:
    """The rule the release's decide tasks branch by: a pass, or a dry run's planned step."""
    return outcome == "pass" or (dry_run and outcome == "dry_run")


def select_phase(
    task_id: str, kind: str, *, verdict: str | None = None, dry_run: bool = False, rollback_failed: Any = None,
    already_announced: bool = False,
) -> ReleasePhase | None:
    """The phase this callback announces, or None (nothing to say).

    `verdict`: the outcome of the decide's phase analysis (a failed one goes to verdict_failed,
    which announces nothing: the rollback does); `rollback_failed`: the rollback's
    `rollback_failed` XCom; `already_announced`: this try of the approval already said it
    waits (its on_execute runs again when it resumes)."""
    if kind not in callback_phases(task_id):
        return None
    if task_id.endswith(DECIDE_SUFFIX):
        return ReleasePhase.STEP_PASSED if verdict_goes_on(verdict, dry_run) else None
    if task_id == APPROVAL:
        return None if already_announced else ReleasePhase.AWAITING_APPROVAL
    if task_id == ROLLBACK:
        if kind == ON_FAILURE or rollback_failed:
            return ReleasePhase.ROLLBACK_FAILED
        return ReleasePhase.ROLLED_BACK
    return callback_phases(task_id)[kind][0]


def step_label(group_or_task: str) -> str:
    """`step_50.decide` -> `step 50%`; `targeted...` -> `targeted phase`; other task ids as they are."""
    group = group_or_task.split(".", 1)[0]
    if group in ("targeted", "mirror"):
        return f"{group} phase"
    if group == "choose_strategy":
        return "traffic steps"
    if group.startswith("step_") and group[5:].isdigit():
        return f"step {group[5:]}%"
    if group == APPROVAL:
        return "the promotion approval"
    if group in ("promote_window", PROMOTE):
        return "promotion"
    if group == "no_approval_needed":
        return "the last step"
    return group


def next_after(downstream: Iterable[str], *, require_approval: bool, last_step: int | None) -> str:
    """What a passed phase leads to, from its decide's downstream task ids."""
    # Every phase task is also upstream of rollback (any failure rolls back): not what is next.
    ids = sorted(t for t in downstream if not t.endswith(VERDICT_FAILED_SUFFIX) and t != ROLLBACK)
    last = f"step {last_step}%" if last_step else "the last step"
    if APPROVAL in ids:
        return f"approval, then {last}" if require_approval else last
    return step_label(ids[0]) if ids else "promotion"


def first_failed_verdict(analyses: Sequence[tuple[str, Mapping[str, Any] | None]]) -> str | None:
    """`step_10: fail: <summary>` for the first phase whose verdict stopped the release, else None."""
    for phase, analysis in analyses:
        if analysis and analysis.get("outcome") not in (None, "pass", "dry_run"):
            return f"{phase}: {analysis.get('outcome')}: {analysis.get('summary')}"
    return None


def phase_message(phase: ReleasePhase, facts: Mapping[str, Any]) -> str:
    """One line a person reads in a chat channel or a mail subject."""
    who = (f"{facts.get('namespace')}/{facts.get('service')} "
           f"{facts.get('stable_version')} -> {facts.get('canary_version')}")
    prefix = "[dry run] " if facts.get("dry_run") else ""
    canary = facts.get("canary_version")
    texts = {
        ReleasePhase.STARTED: f"release {who} started: checks passed, lock taken; steps "
                              f"{' -> '.join(f'{w}%' for w in facts.get('steps') or [])}",
        ReleasePhase.STEP_PASSED: f"release {who}: {facts.get('step')} passed ({facts.get('verdict')}); "
                                  f"next: {facts.get('next')}",
        ReleasePhase.AWAITING_APPROVAL: f"release {who}: waiting for approval before the last step "
                                        "(Airflow: Required Actions); no answer before the timeout rolls back",
        ReleasePhase.PROMOTED: f"release {who}: promoted, all traffic to {canary}",
        ReleasePhase.ROLLED_BACK: f"release {who}: rolled back ({facts.get('reason')}); "
                                  "routing is as before the release",
        ReleasePhase.ROLLBACK_FAILED: f"release {who}: ROLLBACK FAILED: {facts.get('reason')}; traffic may still "
                                      f"reach {canary}: fix routing by hand or clear the rollback task",
    }
    return prefix + texts[phase]
