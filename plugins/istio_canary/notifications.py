"""Release notifications.

- Phase notifications (started, step passed, awaiting approval, promoted, rolled back, rollback
  failed) through Airflow's own notifiers: `build_release_dag(notifiers=...)` takes any
  BaseNotifier (Slack, SMTP, HTTP, Apprise providers, or ours below) or a function of the
  context, and `attach_notifiers` wires them as task callbacks (core/release_phase.py says which
  task announces which phase). The notifier is rendered with the task's context plus
  `release_phase`, `release_message` and `release` (the release's facts).
- The release report: the `report` task POSTs it to the `istio_canary_webhook` connection
  (`notify_outcome`), when that connection exists.

A notifier failing never changes the release: it is logged as a warning and the next one runs.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseNotifier

from istio_canary.core.release_phase import (
    APPROVAL,
    ON_EXECUTE,
    ROLLBACK,
    Notifier,
    NotifierSpec,
    ReleasePhase,
    callback_phases,
    first_failed_verdict,
    next_after,
    notifiers_by_phase,
    phase_message,
    select_phase,
    step_label,
)
from istio_canary.operators.routing import ROLLBACK_FAILED_XCOM

DEFAULT_WEBHOOK_CONN_ID = "istio_canary_webhook"
# The stock DAG sends phase events to this connection when it exists (no Python needed).
DEFAULT_PHASE_CONN_ID = "istio_canary_phases"
# The approval's on_execute runs again when it resumes from deferral: this XCom (kept across
# a deferral, cleared on a new try) says the current try already announced it.
ANNOUNCED_XCOM = "awaiting_approval_announced"

log = logging.getLogger(__name__)


class WebhookNotifier(BaseNotifier):
    """POST JSON to the webhook of an HTTP connection (host, port, schema, `extra.endpoint`
    for the path, a bearer token in the password); nothing is sent when it does not exist.

    As a phase notifier (`build_release_dag(notifiers=[WebhookNotifier("my_conn")])`) it POSTs
    {"phase", "message", "release"}; as any other callback, the release report of task `report`.
    """

    template_fields = ("conn_id",)

    def __init__(self, conn_id: str = DEFAULT_WEBHOOK_CONN_ID, *, timeout_seconds: float = 10.0) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.timeout_seconds = timeout_seconds

    def _target(self) -> tuple[str, dict[str, str]] | None:
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            conn = BaseHook.get_connection(self.conn_id)
        except AirflowNotFoundException:
            return None
        host = conn.host or ""
        if "://" not in host:
            host = f"{conn.schema or 'https'}://{host}"
        if conn.port:
            host = f"{host}:{conn.port}"
        endpoint = str(conn.extra_dejson.get("endpoint", "")).lstrip("/")
        headers = {"Content-Type": "application/json"}
        if conn.password:
            headers["Authorization"] = f"Bearer {conn.password}"
        return (f"{host}/{endpoint}" if endpoint else host), headers

    def send(self, report: Mapping[str, Any]) -> bool:
        """POST `report`; True when the webhook answered 2xx, False when not configured/failed."""
        import requests

        target = self._target()
        if target is None:
            self.log.info("no notification sent: connection %r is not configured", self.conn_id)
            return False
        url, headers = target
        try:
            response = requests.post(url, data=json.dumps(report, default=str), headers=headers,
                                     timeout=self.timeout_seconds)
            response.raise_for_status()
        except requests.RequestException as exc:
            self.log.warning("release notification to %s failed: %s", url, exc)
            return False
        self.log.info("release notification sent to %s: HTTP %s", url, response.status_code)
        return True

    def notify(self, context: Mapping[str, Any]) -> None:
        if context.get("release_phase"):
            self.send({"phase": context["release_phase"], "message": context.get("release_message"),
                       "release": context.get("release")})
            return
        report = context["ti"].xcom_pull(task_ids="report", key="release_report")
        if report:
            self.send(report)


def notify_outcome(report: Mapping[str, Any], context: Mapping[str, Any]) -> None:
    """Called by the report task: send the outcome to every configured notifier."""
    WebhookNotifier().send(report)


def attach_notifiers(dag: Any, notifiers: NotifierSpec | None) -> None:
    """Wire `notifiers` (a list for every phase, or {phase: notifier(s)}) into the release DAG
    as callbacks of the tasks that announce each phase, after any callbacks already there."""
    by_phase = notifiers_by_phase(notifiers)
    for task in dag.tasks:
        for kind, phases in callback_phases(task.task_id).items():
            wanted = {phase: by_phase[phase] for phase in phases if by_phase[phase]}
            if wanted:
                setattr(task, kind, [*getattr(task, kind), PhaseCallback(kind, wanted)])


class PhaseCallback:
    """One task callback: works out the phase (or that there is none to announce), adds the
    release's facts to the context and calls each notifier on a copy of it."""

    def __init__(self, kind: str, notifiers: Mapping[ReleasePhase, Sequence[Notifier]]) -> None:
        self.kind = kind
        self.notifiers = {phase: list(items) for phase, items in notifiers.items()}

    def __repr__(self) -> str:
        return f"PhaseCallback({self.kind}, {sorted(self.notifiers)})"

    def __call__(self, context: Mapping[str, Any]) -> None:
        try:
            phase = self._phase(context)
            if phase is None or not self.notifiers.get(phase):
                return
            facts = release_facts(phase, context)
        except Exception:  # reading the facts must not fail the task either
            log.warning("release notification: could not work out the phase", exc_info=True)
            return
        message = phase_message(phase, facts)
        log.info("release notification %s: %s", phase.value, message)
        for notifier in self.notifiers[phase]:
            extended = {**context, "release_phase": phase.value, "release_message": message, "release": facts}
            try:
                _fresh(notifier)(extended)
            except Exception as exc:
                log.warning("release notification %s: notifier %s failed (the release goes on): %s",
                            phase.value, notifier_name(notifier), exc)

    def _phase(self, context: Mapping[str, Any]) -> ReleasePhase | None:
        ti = context["ti"]
        task_id = ti.task_id
        verdict = rollback_failed = None
        dry_run = announced = False
        if task_id.endswith(".decide"):
            verdict = (ti.xcom_pull(task_ids=f"{task_id.rsplit('.', 1)[0]}.analyze") or {}).get("outcome")
            dry_run = bool((ti.xcom_pull(task_ids="validate") or {}).get("dry_run"))
        elif task_id == ROLLBACK:
            rollback_failed = ti.xcom_pull(task_ids=task_id, key=ROLLBACK_FAILED_XCOM)
        elif task_id == APPROVAL and self.kind == ON_EXECUTE:
            announced = ti.xcom_pull(task_ids=task_id, key=ANNOUNCED_XCOM) is not None
        phase = select_phase(task_id, self.kind, verdict=verdict, dry_run=dry_run,
                             rollback_failed=rollback_failed, already_announced=announced)
        if phase is ReleasePhase.AWAITING_APPROVAL:
            ti.xcom_push(key=ANNOUNCED_XCOM, value=ti.try_number)
        return phase


def notifier_name(notifier: Notifier) -> str:
    """`HttpNotifier(release_chat)`: its class and connection, for the log (never its secrets)."""
    conn = next((str(v) for k, v in sorted(vars(notifier).items()) if k.endswith("conn_id") and v), None) \
        if hasattr(notifier, "__dict__") else None
    name = getattr(notifier, "__name__", None) or type(notifier).__name__
    return f"{name}({conn})" if conn else name


def _fresh(notifier: Notifier) -> Notifier:
    """A BaseNotifier renders its template fields in place, once: each call gets a copy, so the
    same instance can announce every phase (and every step) with its own text."""
    return copy.copy(notifier) if isinstance(notifier, BaseNotifier) else notifier


def release_facts(phase: ReleasePhase, context: Mapping[str, Any]) -> dict[str, Any]:
    """What a message template can use as `{{ release.<key> }}`."""
    ti = context["ti"]
    validated = ti.xcom_pull(task_ids="validate") or {}
    params = context.get("params") or {}
    facts: dict[str, Any] = {
        key: validated.get(key, params.get(key))
        for key in ("service", "namespace", "stable_version", "canary_version", "strategy")
    }
    # Every key, always: Airflow renders templates with StrictUndefined, so a key missing in
    # one phase would fail a template that reads it (`{{ release.step }}` at `started`).
    facts.update(phase=phase.value, task_id=ti.task_id, run_id=context.get("run_id"),
                 dry_run=bool(validated.get("dry_run")), steps=list(validated.get("steps") or []),
                 step=None, weight=None, verdict=None, next=None, reason=None)
    if phase is ReleasePhase.STEP_PASSED:
        facts.update(_step_facts(ti, validated))
    elif phase is ReleasePhase.ROLLED_BACK:
        facts["reason"] = _rollback_reason(ti, context.get("dag"))
    elif phase is ReleasePhase.ROLLBACK_FAILED:
        facts["reason"] = _rollback_failure(ti.xcom_pull(task_ids=ROLLBACK, key=ROLLBACK_FAILED_XCOM),
                                            context.get("exception"))
    return facts


def _step_facts(ti: Any, validated: Mapping[str, Any]) -> dict[str, Any]:
    group = ti.task_id.rsplit(".", 1)[0]
    analysis = ti.xcom_pull(task_ids=f"{group}.analyze") or {}
    route = ti.xcom_pull(task_ids=f"{group}.set_route") or {}
    steps = validated.get("steps") or []
    nxt = next_after(getattr(ti.task, "downstream_task_ids", ()), require_approval=bool(
        validated.get("require_approval")), last_step=steps[-1] if steps else None)
    return {"step": step_label(group), "weight": route.get("canary_weight"),
            "verdict": analysis.get("summary") or analysis.get("outcome"), "next": nxt}


def _rollback_reason(ti: Any, dag: Any) -> str:
    result = ti.xcom_pull(task_ids=ROLLBACK) or {}
    if result.get("skipped"):
        return f"nothing to roll back: {result['skipped']}"
    task_ids = list(getattr(dag, "task_ids", []))
    groups = [t.rsplit(".", 1)[0] for t in task_ids if t.endswith(".analyze")]
    failed = first_failed_verdict([(g, ti.xcom_pull(task_ids=f"{g}.analyze")) for g in groups])
    if failed:
        return failed
    failed_tasks = _failed_tasks(ti)
    tasks = [t for t in task_ids if t in failed_tasks]
    return f"{', '.join(tasks)} failed: see its log" if tasks else "a release task failed: see the first failed task's log"


def _failed_tasks(ti: Any) -> set[str]:
    """The run's failed tasks (the Task SDK's task-state query), or none when it cannot say."""
    try:
        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id) or {}
    except Exception:  # an older Task SDK, or no supervisor: the generic reason will do
        return set()
    return {task_id for task_id, state in states.items() if state == "failed"}


def _rollback_failure(where: Mapping[str, Any] | None, error: Any) -> str:
    if not where:
        return f"the rollback task failed: {error}"
    weight = where.get("canary_weight")
    at = "at an unknown weight" if weight is None else f"at canary weight {weight}%"
    if where.get("match_route"):
        at += " and through the canary match route"
    return f"routing is {at} ({where.get('error')})"

