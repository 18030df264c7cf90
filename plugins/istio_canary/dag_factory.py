"""The release DAG, built by a factory so several pipelines (other step lists) can be declared.

One run is one release. Task structure is static (it must be, for the grid):

    validate -> window_gate -> preflight -> destination_rule -> choose_mirror
      -> [mirror: set_route -> watch -> analyze -> decide]        (mirror_percent > 0)
      -> choose_strategy
      -> [targeted: set_route -> watch -> analyze -> decide]      (header/cookie strategies)
      -> step_<w>: [window ->] capacity -> set_route -> watch -> analyze -> decide   (for each step w)
      -> [approve_promotion, before the last step, if require_approval]
      -> promote_window -> promote
    rollback: trigger rule one_failed, downstream of every task that can fail
    report, outcome: always run; `outcome` fails the run unless the canary was promoted

`decide` branches to the next step or to the step's `verdict_failed` task, which fails
with the verdict's reason: that failure is what triggers `rollback` (trigger rules, so a
crash anywhere triggers it the same way). This module imports only Airflow's authoring
API and our operators, whose clients load lazily: DAG files stay cheap to parse.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import pairwise
from typing import Any

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Param, TaskGroup, task

from istio_canary.core.fields import MATCH_STRATEGIES, RELEASE_FIELDS
from istio_canary.core.release_phase import NotifierSpec
from istio_canary.core.request import DEFAULT_STEPS
from istio_canary.notifications import attach_notifiers
from istio_canary.operators.analysis import (
    CanaryAnalysisOperator,
    CanaryBakePlanOperator,
    CanaryWatchOperator,
)
from istio_canary.operators.capacity import CanaryCapacityOperator
from istio_canary.operators.mirror import CanaryMirrorWatchOperator, IstioMirrorRouteOperator
from istio_canary.operators.preflight import IstioPreflightOperator
from istio_canary.operators.routing import (
    ROLLBACK_FAILED_XCOM,
    IstioDestinationRuleOperator,
    IstioMatchRouteOperator,
    IstioPromoteOperator,
    IstioRollbackOperator,
    IstioTrafficShiftOperator,
)
from istio_canary.operators.window import ReleaseWindowGateOperator

# Operators read the validated parameters through a template, not an XComArg: an XComArg
# would add validate as an upstream of every task, and its success would satisfy the step
# set_route's none_failed_min_one_success after a branch skipped it. Rendered as strings,
# Airflow's default: operators.base.as_bool says why not natively.
VALIDATED = "{{ ti.xcom_pull(task_ids='validate') | tojson }}"
KUBERNETES = {"kubernetes_conn_id": "{{ params.kubernetes_conn_id }}", "dry_run": "{{ params.dry_run }}"}
PROMETHEUS = {"prometheus_conn_id": "{{ params.prometheus_conn_id }}", "dry_run": "{{ params.dry_run }}"}
WINDOW = {"release_window": "{{ params.release_window }}", "window_mode": "{{ params.window_mode }}",
          "service": "{{ params.service }}", "namespace": "{{ params.namespace }}"}
APPROVE_PROMOTION = "approve_promotion"
NO_APPROVAL_NEEDED = "no_approval_needed"
PROMOTE_WINDOW = "promote_window"
# A task entered after a branch: validate's success alone must not satisfy it.
AFTER_BRANCH = "none_failed_min_one_success"


def release_params(overrides: dict[str, Any] | None = None) -> dict[str, Param]:
    """The trigger form, from the field table (core/fields.py); `overrides` are a planned
    release's defaults (the calendar), and may add keys the form does not show."""
    params = {
        row.key: Param(copy.deepcopy(row.default), description=row.description, **row.schema,
                       title=row.title, section=row.section)
        for row in RELEASE_FIELDS
    }
    for key, value in (overrides or {}).items():
        if key in params:
            params[key].value = value
        else:
            params[key] = Param(value)
    return params


def _validate(steps: list[int], **context: Any) -> dict[str, Any]:
    """Typed, checked release parameters, or a failure naming the field, before any write."""
    from airflow.sdk.exceptions import AirflowFailException

    from istio_canary.core.analysis_config import AnalysisConfig
    from istio_canary.core.capacity import CapacityConfig
    from istio_canary.core.mirror import MirrorConfig
    from istio_canary.core.request import ReleaseRequest
    from istio_canary.core.validation import ValidationError

    raw = {k: v for k, v in dict(context["params"]).items() if v is not None}
    try:
        _refuse_unknown_params(raw, context.get("dag"))
        request = ReleaseRequest.from_params(raw)
        analysis = AnalysisConfig.from_params(raw)
        mirror = MirrorConfig.from_params(raw)
        capacity = CapacityConfig.from_params(raw)
        if "steps" in raw and list(request.steps) != list(steps):
            raise ValidationError("steps", raw["steps"], f"this pipeline's steps are fixed at {steps}; declare "
                                  "another pipeline with build_release_dag(steps=...) for other steps")
    except ValidationError as exc:
        raise AirflowFailException(f"invalid release parameter: {exc}") from exc
    # decide() reads dry_run and require_approval from this output, not from the params.
    return {**request.to_params(), **analysis.to_dict(), **mirror.to_params(), **capacity.to_dict(),
            "dry_run": bool(raw.get("dry_run")),
            "require_approval": bool(raw.get("require_approval"))}


def _refuse_unknown_params(raw: dict[str, Any], dag: Any) -> None:
    """A misspelt key ("stratgy") would otherwise be ignored and the release run with defaults."""
    import difflib

    from istio_canary.core.request import known_release_keys
    from istio_canary.core.validation import ValidationError

    # What the DAG declares counts too: a calendar entry may add keys.
    known = known_release_keys() | set(getattr(dag, "params", None) or {})
    for key in sorted(set(raw) - known):
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "see the DAG's params for the known ones"
        raise ValidationError(key, raw[key], f"unknown release parameter: {hint}")


def build_release_dag(
    dag_id: str = "istio_canary_release",
    *,
    steps: Sequence[int] = DEFAULT_STEPS,
    schedule: Any = None,
    params: dict[str, Any] | None = None,
    approval_timeout: timedelta = timedelta(hours=1),
    description: str | None = None,
    tags: Sequence[str] = ("istio", "canary", "release"),
    notifiers: NotifierSpec | None = None,
    **dag_kwargs: Any,
) -> DAG:
    """A release pipeline with `steps` (increasing percentages ending at 100).

    `notifiers`: Airflow notifiers told of the release's phases (started, step_passed,
    awaiting_approval, promoted, rolled_back, rollback_failed): a list for every phase, or
    {phase: notifier or [notifiers]}; see istio_canary.notifications.
    """
    steps = _checked_steps(steps)
    with DAG(
        dag_id=dag_id,
        schedule=schedule,
        params=release_params(params),
        description=description or f"Istio canary release: {' -> '.join(f'{w}%' for w in steps)}, judge, promote or roll back",
        catchup=False,
        tags=list(tags),
        default_args={"retries": 2, "retry_delay": timedelta(seconds=5), "retry_exponential_backoff": True},
        doc_md=__doc__,
        # Releases of different services run side by side (each service's lock keeps one per
        # service); a scheduled (calendar) release runs once at a time. Callers may override.
        **{"max_active_runs": 1 if schedule is not None else 16, **dag_kwargs},
    ) as dag:
        # One XCom, not one per key: a dict return would otherwise be split (multiple_outputs).
        validate = task(task_id="validate", retries=0, multiple_outputs=False)(_validate)(steps=list(steps))
        release = _Release(validate)
        strategy = add_checks_before_any_write(release, steps)
        entries = add_targeted_phase(release, strategy, first_step=steps[0])
        for index in range(len(steps)):
            entries = add_traffic_step(release, steps, index, entries, approval_timeout)
        promote = add_promotion(release, entries)
        add_rollback_and_report(release, promote, steps)
    attach_notifiers(dag, notifiers)
    return dag


def _checked_steps(steps: Sequence[int]) -> tuple[int, ...]:
    checked = tuple(int(w) for w in steps)
    if not checked or checked[-1] != 100 or any(b <= a for a, b in pairwise(checked)):
        raise ValueError(f"steps={checked!r}: must increase strictly and end at 100")
    if checked[0] <= 0:
        raise ValueError(f"steps={checked!r}: the first step must be above 0")
    return checked


@dataclass
class _Release:
    """The release DAG being built: its validate task, and the tasks whose failure rolls back."""

    validate: Any
    failable: list[Any] = field(default_factory=list)

    def can_fail(self, *tasks: Any) -> None:
        self.failable.extend(tasks)


def add_checks_before_any_write(release: _Release, steps: tuple[int, ...]) -> Any:
    """validate -> window_gate -> bake_plan -> preflight -> destination_rule -> [mirror phase]
    -> choose_strategy."""
    window_gate = ReleaseWindowGateOperator(task_id="window_gate", retries=0, **WINDOW)
    # Read-only: refuses a release its traffic cannot judge before the lock or any route.
    bake_plan = CanaryBakePlanOperator(task_id="bake_plan", release=VALIDATED, steps=list(steps), **PROMETHEUS)
    preflight = IstioPreflightOperator(task_id="preflight", release=VALIDATED,
                                       break_stale_lock="{{ params.break_stale_lock }}", retries=1, **KUBERNETES)
    destination_rule = IstioDestinationRuleOperator(task_id="destination_rule", release=VALIDATED, **KUBERNETES)
    # Entered after the mirror phase's branch (it ran, or was not needed).
    strategy = task.branch(task_id="choose_strategy", trigger_rule=AFTER_BRANCH)(_choose_strategy)(release.validate)
    release.validate >> window_gate >> bake_plan >> preflight >> destination_rule
    add_mirror_phase(release, destination_rule, steps) >> strategy
    release.can_fail(preflight, destination_rule)
    return strategy


def _choose_strategy(validated: dict[str, Any]) -> str:
    if validated["strategy"] in MATCH_STRATEGIES:
        return "targeted.set_route"
    return "targeted.not_needed"


def _choose_mirror(validated: dict[str, Any]) -> str:
    return "mirror.set_route" if float(validated.get("mirror_percent") or 0) > 0 else "mirror.not_needed"


def add_mirror_phase(release: _Release, upstream: Any, steps: tuple[int, ...]) -> list[Any]:
    """mirror_percent > 0: the owned route copies that share of its requests to the canary
    (clients get stable's answers), judged like a step; else not_needed. The next phase's
    route removes the mirror. Returns the tasks that may lead into choose_strategy."""
    choose = task.branch(task_id="choose_mirror")(_choose_mirror)(release.validate)
    with TaskGroup("mirror", tooltip="mirror_percent > 0: a copy of that share of requests to the canary, "
                                     "responses discarded"):
        set_route = IstioMirrorRouteOperator(task_id="set_route", release=VALIDATED, **KUBERNETES)
        not_needed = EmptyOperator(task_id="not_needed")
        decided = add_judged_phase(release, "mirror", set_route, "mirror phase", on_pass="choose_strategy",
                                   judge_state_from=None, watch_operator=CanaryMirrorWatchOperator,
                                   steps=list(steps))
    upstream >> choose >> [set_route, not_needed]
    return [decided, not_needed]


def add_targeted_phase(release: _Release, strategy: Any, first_step: int) -> list[Any]:
    """header/cookie strategies: matching requests only, judged like a step; else not_needed.
    Returns the tasks that may lead into the first step."""
    with TaskGroup("targeted", tooltip="header/cookie strategies: only matching requests reach the canary"):
        set_route = IstioMatchRouteOperator(task_id="set_route", release=VALIDATED, enabled=True, **KUBERNETES)
        not_needed = EmptyOperator(task_id="not_needed")
        decided = add_judged_phase(release, "targeted", set_route, "targeted phase",
                                   on_pass=f"step_{first_step}.capacity", judge_state_from="mirror.analyze")
    strategy >> [set_route, not_needed]
    return [decided, not_needed]


def add_traffic_step(
    release: _Release, steps: tuple[int, ...], index: int, entries: list[Any], approval_timeout: timedelta
) -> list[Any]:
    """step_<w>: [window ->] capacity -> set_route -> watch -> analyze -> decide, then the approval
    before the last step. Returns the tasks that may lead into what comes next."""
    weight = steps[index]
    group_id = f"step_{weight}"
    with TaskGroup(group_id, tooltip=f"{weight}% of the owned route's traffic to the canary"):
        # The first step is entered from a branch (targeted phase or not); later steps
        # through their window hold, which carries that trigger rule instead.
        capacity = CanaryCapacityOperator(
            task_id="capacity", release=VALIDATED, current_weight=steps[index - 1] if index else 0,
            next_weight=weight, reference_task_id=f"step_{steps[0]}.capacity" if index else None,
            trigger_rule=AFTER_BRANCH if index == 0 else "all_success", **KUBERNETES,
            prometheus_conn_id=PROMETHEUS["prometheus_conn_id"],
        )
        set_route = IstioTrafficShiftOperator(task_id="set_route", release=VALIDATED, canary_weight=weight,
                                              **KUBERNETES)
        capacity >> set_route
        release.can_fail(capacity)
        # The first step carries the judge state of the phase before it that ran.
        previous = ["targeted.analyze", "mirror.analyze"] if index == 0 else f"step_{steps[index - 1]}.analyze"
        decided = add_judged_phase(release, group_id, set_route, f"step {weight}%", on_pass=_after_step(steps, index),
                                   judge_state_from=previous, plan_weights=steps[index:])
        if index == 0:
            entries >> capacity
        else:
            # Hold at the current weight while the release window is closed.
            hold = ReleaseWindowGateOperator(task_id="window", phase="step", trigger_rule=AFTER_BRANCH, **WINDOW)
            entries >> hold >> capacity
            release.can_fail(hold)
    if index == len(steps) - 2:
        return add_approval(release, decided, approval_timeout, steps[-1])
    return [decided]


def _after_step(steps: tuple[int, ...], index: int) -> str:
    """Where a passed step goes: the next step's window hold, the approval before the last
    step, or (after the last) the promotion's window gate."""
    if index == len(steps) - 1:
        return PROMOTE_WINDOW
    if index == len(steps) - 2:
        return APPROVE_PROMOTION
    return f"step_{steps[index + 1]}.window"


def add_judged_phase(
    release: _Release, group_id: str, set_route: Any, label: str, *, on_pass: str,
    judge_state_from: str | Sequence[str] | None, plan_weights: Sequence[int] | None = None,
    watch_operator: type[CanaryWatchOperator] = CanaryWatchOperator, **watch_kwargs: Any,
) -> Any:
    """set_route -> watch -> analyze -> decide: `on_pass`, or verdict_failed, whose failure
    triggers rollback (as a crash anywhere does). Returns decide."""
    watch = watch_operator(task_id="watch", release=VALIDATED, judge_state_from=judge_state_from,
                           plan_weights=plan_weights, **watch_kwargs, **PROMETHEUS)
    analyze = CanaryAnalysisOperator(task_id="analyze", release=VALIDATED, watch_task_id=f"{group_id}.watch",
                                     **PROMETHEUS)
    decided = task.branch(task_id="decide")(_decider(group_id, on_pass))(analyze.output, release.validate)
    failed = task(task_id="verdict_failed", retries=0)(_verdict_failure(label))(analyze.output)
    set_route >> watch >> analyze >> decided >> failed
    release.can_fail(set_route, watch, analyze, decided, failed)
    return decided


def _decider(group_id: str, on_pass: str) -> Callable[[dict[str, Any], dict[str, Any]], str]:
    """The phase's branch: `on_pass` when the canary passed (or a dry run ran), else verdict_failed.
    The approval is asked only when the release requires one."""

    def decide(analysis: dict[str, Any], validated: dict[str, Any]) -> str:
        dry_run_pass = validated["dry_run"] and analysis["outcome"] == "dry_run"
        if analysis["outcome"] != "pass" and not dry_run_pass:
            return f"{group_id}.verdict_failed"
        if on_pass == APPROVE_PROMOTION and not validated.get("require_approval"):
            return NO_APPROVAL_NEEDED
        return on_pass

    return decide


def _verdict_failure(label: str) -> Callable[[dict[str, Any]], None]:
    """The task that fails with the verdict's reason: that failure is what triggers rollback."""

    def verdict_failed(analysis: dict[str, Any]) -> None:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"{label}: canary {analysis['outcome']}: {analysis['summary']}")

    return verdict_failed


def add_approval(release: _Release, decided: Any, timeout: timedelta, last_step: int) -> list[Any]:
    """A person approves the last step when the release asks for it; else no_approval_needed."""
    approval = _approval_task(timeout, last_step)
    no_approval = EmptyOperator(task_id=NO_APPROVAL_NEEDED)
    decided >> [approval, no_approval]
    release.can_fail(approval)
    return [approval, no_approval]


def add_promotion(release: _Release, entries: list[Any]) -> Any:
    """promote_window -> promote: never promotes outside a window."""
    promote_window = ReleaseWindowGateOperator(task_id=PROMOTE_WINDOW, phase="step", trigger_rule=AFTER_BRANCH,
                                               **WINDOW)
    promote = IstioPromoteOperator(task_id="promote", release=VALIDATED, **KUBERNETES)
    entries >> promote_window >> promote
    release.can_fail(promote_window, promote)
    return promote


def add_rollback_and_report(release: _Release, promote: Any, steps: tuple[int, ...]) -> None:
    """rollback when any failable task failed; report and outcome always run."""
    rollback = IstioRollbackOperator(
        task_id="rollback",
        # Templates: rollback must start even when validate or preflight failed.
        release=VALIDATED,
        snapshot="{{ (ti.xcom_pull(task_ids='preflight') or {}).get('snapshot') | tojson }}",
        reason="a release task failed; its log says why",
        trigger_rule="one_failed", retries=3, **KUBERNETES,
    )
    release.failable >> rollback
    report = task(task_id="report", trigger_rule="all_done", retries=0)(_report)(steps=list(steps))
    outcome = task(task_id="outcome", trigger_rule="all_done", retries=0)(_outcome)()
    [promote, rollback] >> report >> outcome


def _approval_task(timeout: timedelta, last_step: int) -> Any:
    from istio_canary.operators.approval import PromotionApprovalOperator

    # A rejected (or timed out) promotion is a failed release and rolls back through the same
    # trigger rule as any other failure. One retry: Airflow 3.3 can fail a deferred task whose
    # answer arrives within seconds ("state mismatch"); the question is then asked again, while
    # a rejection is final (AirflowFailException).
    return PromotionApprovalOperator(
        task_id=APPROVE_PROMOTION,
        subject=f"Go to {last_step}%: {{{{ params.service }}}} {{{{ params.canary_version }}}}?",
        body="Every step so far passed its analysis. Approve to continue to the last step; "
             "reject (or no answer before the timeout) rolls the release back.",
        defaults=["Reject"],
        response_timeout=timeout,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )


def _report(steps: list[int], **context: Any) -> dict[str, Any]:
    from istio_canary.core.release_page import ABORT_XCOM_KEY, ABORT_XCOM_TASK
    from istio_canary.core.report import build_report, render_report

    ti = context["ti"]
    phases = ["mirror", "targeted"] + [f"step_{w}" for w in steps]
    analyses = {p: ti.xcom_pull(task_ids=f"{p}.analyze") for p in phases}
    routes = {p: ti.xcom_pull(task_ids=f"{p}.set_route") for p in phases}
    report = build_report(
        phases=phases,
        routes=routes,
        analyses=analyses,
        promoted=ti.xcom_pull(task_ids="promote"),
        rolled_back=ti.xcom_pull(task_ids="rollback"),
        validated=ti.xcom_pull(task_ids="validate"),
        rollback_failed=ti.xcom_pull(task_ids="rollback", key=ROLLBACK_FAILED_XCOM),
        aborted=ti.xcom_pull(task_ids=ABORT_XCOM_TASK, key=ABORT_XCOM_KEY),
    )
    print(render_report(report))  # the table belongs in the task log as is
    ti.xcom_push(key="release_report", value=report)
    from istio_canary.notifications import notify_outcome

    notify_outcome(report, context)
    return report


def _outcome(**context: Any) -> str:
    from airflow.sdk.exceptions import AirflowFailException

    report = context["ti"].xcom_pull(task_ids="report", key="release_report") or {}
    result = report.get("outcome", "unknown")
    if result in ("promoted", "dry_run"):
        return f"{result}: {report.get('reason', '')}"
    raise AirflowFailException(f"release {result}: {report.get('reason', 'see the failed task')}")
