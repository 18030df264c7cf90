"""The release page's model (pure): one release run as the page shows it, and what Abort may do.

The Airflow side (`istio_canary.ui.data`) reads a run's task instances and XComs into a
`RunRecord`; this module turns that into what a release engineer asks: which phase ran at
which weight, what each verdict was and when, whether routing was put back, and which of the
run's tasks Abort would fail so that the DAG's `rollback` (trigger rule one_failed) starts.
The chart's PromQL and its reading are in `core.release_chart`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Task states in which a task is still to finish: Abort fails these, so the rollback's
# one_failed trigger rule fires on the scheduler's next pass.
ACTIVE_STATES = frozenset({
    "running", "deferred", "queued", "scheduled", "up_for_retry", "up_for_reschedule",
    "awaiting_input", "restarting",
})
# The tasks that must still run after an abort: failing them would stop the rollback itself.
AFTER_ABORT = frozenset({"rollback", "report", "outcome"})
# Where the abort is recorded: an XCom on the run's `validate` task, which never runs again
# in that run (a task's XComs are cleared when it runs; clearing the whole run clears this too).
ABORT_XCOM_KEY = "istio_canary_abort"
ABORT_XCOM_TASK = "validate"
_STEP = re.compile(r"^step_(\d+)$")


@dataclass(frozen=True)
class TaskRecord:
    state: str | None
    start: float | None = None  # epoch seconds
    end: float | None = None


@dataclass(frozen=True)
class RunRecord:
    """What the page needs of one DAG run: read from Airflow's database by `ui.data`."""

    dag_id: str
    run_id: str
    state: str
    start: float | None
    end: float | None
    conf: Mapping[str, Any]
    tasks: Mapping[str, TaskRecord]
    # {(task_id, key): value} for the XComs the page reads.
    xcoms: Mapping[tuple[str, str], Any] = field(default_factory=dict)

    def xcom(self, task_id: str, key: str = "return_value") -> Any:
        return self.xcoms.get((task_id, key))

    def state_of(self, task_id: str) -> str | None:
        task = self.tasks.get(task_id)
        return task.state if task else None

    @property
    def holder(self) -> str:
        """The name the release lock gives this run (`core.lock`)."""
        return f"{self.dag_id}/{self.run_id}"

    @property
    def release(self) -> Mapping[str, Any]:
        """The validated release parameters, else the run's conf (validate failed or not run yet)."""
        return self.xcom("validate") or self.conf or {}


# Judged phases that run before the weighted steps, in their order.
LEADING_PHASES = ("mirror", "targeted")


def phases_of(task_ids: Iterable[str]) -> list[str]:
    """The run's judged phases in the order they run: `mirror` and `targeted` (when the DAG
    has them), then `step_<w>` by weight."""
    groups = {task_id.split(".", 1)[0] for task_id in task_ids if "." in task_id}
    steps = sorted((int(m.group(1)), g) for g in groups if (m := _STEP.match(g)))
    return [p for p in LEADING_PHASES if p in groups] + [g for _, g in steps]


def weight_label(phase: str) -> str:
    match = _STEP.match(phase)
    if match:
        return f"{match.group(1)}%"
    return "match" if phase == "targeted" else phase


@dataclass(frozen=True)
class PhaseRow:
    phase: str
    weight: str
    routed_at: float | None
    verdict: str | None
    summary: str | None
    judged_at: float | None
    error_rate: float | None
    p99_ms: float | None
    requests: float | None


def phase_rows(run: RunRecord) -> list[PhaseRow]:
    """One row per phase that changed routing or was judged (skipped phases are left out)."""
    rows = []
    for phase in phases_of(run.tasks):
        route, analysis = run.xcom(f"{phase}.set_route"), run.xcom(f"{phase}.analyze") or {}
        routed = run.tasks.get(f"{phase}.set_route")
        judged = run.tasks.get(f"{phase}.analyze")
        if not (routed and routed.state == "success" and route) and not analysis:
            continue
        stats = analysis.get("stats") or {}
        rows.append(PhaseRow(
            phase=phase, weight=weight_label(phase),
            routed_at=routed.end if routed and routed.state == "success" else None,
            verdict=analysis.get("outcome"), summary=analysis.get("summary"),
            judged_at=judged.end if judged and analysis else None,
            error_rate=stats.get("error_rate"), p99_ms=stats.get("p99_ms"), requests=stats.get("requests"),
        ))
    return rows


@dataclass(frozen=True)
class Marker:
    """A moment on the chart: a step's traffic shift, a verdict, the promotion, the rollback."""

    at: float
    kind: str  # "step" | "verdict" | "promote" | "rollback" | "abort"
    label: str
    phase: str = ""
    outcome: str = ""  # for verdicts: pass | fail | inconclusive | dry_run


def markers(run: RunRecord, rows: list[PhaseRow] | None = None) -> list[Marker]:
    found: list[Marker] = []
    for row in phase_rows(run) if rows is None else rows:
        if row.routed_at is not None:
            found.append(Marker(row.routed_at, "step", row.weight, row.phase))
        if row.judged_at is not None and row.verdict:
            found.append(Marker(row.judged_at, "verdict", f"{row.weight} {row.verdict}", row.phase, row.verdict))
    for task_id, kind, label in (("promote", "promote", "promoted"), ("rollback", "rollback", "rolled back")):
        task = run.tasks.get(task_id)
        if task and task.state == "success" and task.end is not None and (run.xcom(task_id) or {}).get("changed"):
            found.append(Marker(task.end, kind, label))
    abort = aborted(run)
    if abort and abort.get("at") is not None:
        found.append(Marker(float(abort["at"]), "abort", f"aborted by {abort.get('by', '?')}"))
    return sorted(found, key=lambda m: m.at)


def aborted(run: RunRecord) -> dict[str, Any] | None:
    """{"by", "at", "tasks"} when someone aborted this run (`ui.abort`)."""
    value = run.xcom(ABORT_XCOM_TASK, ABORT_XCOM_KEY)
    return dict(value) if isinstance(value, Mapping) else None


def outcome(run: RunRecord) -> tuple[str, str]:
    """(outcome, reason): the report's once it ran, else what the run's state says so far."""
    report = run.xcom("report", "release_report")
    if report:
        return str(report.get("outcome")), str(report.get("reason") or "")
    if run.state in ("running", "queued"):
        return "in_progress", "the release is running"
    return run.state, "the run ended without a report"


@dataclass(frozen=True)
class RollbackStatus:
    rolled_back: str  # yes | no | in progress | not needed | -
    warning: str | None = None


STRANDED = "traffic may still be on the canary; use Abort / roll back"


def rollback_status(run: RunRecord, lock_holder: str | None = None) -> RollbackStatus:
    """Whether routing was put back. "no" (with a warning) for a run that changed routing and
    ended without its rollback: what "Mark run as failed" leaves (it skips unfinished tasks,
    `rollback` among them), or a finished run that still holds the service's lock."""
    rollback, promote = run.state_of("rollback"), run.state_of("promote")
    if rollback == "success":
        if (run.xcom("rollback") or {}).get("changed") is False and lock_holder == run.holder:
            return RollbackStatus("no", f"the rollback changed nothing and this run still holds the lock: {STRANDED}")
        return RollbackStatus("yes")
    if rollback in ACTIVE_STATES:
        return RollbackStatus("in progress")
    if promote == "success":
        return RollbackStatus("not needed", None)
    if run.state in ("running", "queued"):
        return RollbackStatus("-")
    if lock_holder == run.holder:
        return RollbackStatus("no", f"the run ended and still holds the service's release lock: {STRANDED}")
    if run.state_of("preflight") == "success" and not _dry_run(run):
        return RollbackStatus("no", f"the run ended ({run.state}) without its rollback ({rollback or 'not run'}): "
                                    f"{STRANDED}")
    return RollbackStatus("not needed", None)


def _dry_run(run: RunRecord) -> bool:
    return bool(run.release.get("dry_run"))


def abort_targets(run: RunRecord) -> list[str]:
    """The tasks Abort fails: every release task still to finish, but the rollback chain."""
    return sorted(t for t, task in run.tasks.items() if task.state in ACTIVE_STATES and t not in AFTER_ABORT)


BETWEEN_TASKS = "no release task is running at this moment (the scheduler is between two tasks); try again"


def abort_refusal(run: RunRecord) -> str | None:
    """Why Abort cannot act on this run now, or None. Only BETWEEN_TASKS passes by itself."""
    if run.state not in ("running", "queued"):
        return f"the run has finished ({run.state}): nothing to abort"
    if run.state_of("rollback") in ACTIVE_STATES | {"success"}:
        return "the release is already rolling back"
    if run.state_of("promote") == "success":
        return "the canary is already promoted"
    if not abort_targets(run):
        return BETWEEN_TASKS
    return None


def abortable(run: RunRecord) -> bool:
    """Whether the page offers Abort: the release runs and neither rolls back nor was promoted."""
    return abort_refusal(run) in (None, BETWEEN_TASKS)


def describe_weights(vs: Mapping[str, Any]) -> list[str]:
    """Each HTTP route of a VirtualService as `name: subset weight%, ...`, in order."""
    lines = []
    for index, route in enumerate((vs.get("spec") or {}).get("http") or []):
        if not isinstance(route, Mapping):
            continue
        parts = []
        for entry in route.get("route") or []:
            destination = entry.get("destination") or {}
            target = destination.get("subset") or destination.get("host") or "?"
            parts.append(f"{target} {entry.get('weight', 100 if len(route.get('route')) == 1 else 0)}%")
        name = route.get("name") or f"http[{index}]"
        lines.append(f"{name}{' (match)' if route.get('match') else ''}: {', '.join(parts) or '-'}")
    return lines
