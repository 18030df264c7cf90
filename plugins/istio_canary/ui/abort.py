"""Abort: stop a running release and roll it back now.

It marks the run's unfinished release tasks FAILED (what "Mark task as failed" does in the
UI, for every such task at once), never the run: the run stays running, so the scheduler's
next pass finds a failed upstream of `rollback` (trigger rule one_failed) and starts it, then
`report` and `outcome`. A deferred watch's trigger is dropped by the triggerer once its task
is no longer deferred; a running task's supervisor sees the state change on its next
heartbeat and ends the task. Marking the *run* failed instead skips every unfinished task,
`rollback` among them: that is the trap this avoids (see `core.release_page.rollback_status`).

Who aborted, and when, is kept as an XCom of the run's `validate` task (the report reads it)
and as the run's note (shown in the grid).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from istio_canary.core.release_page import (
    ABORT_XCOM_KEY,
    ABORT_XCOM_TASK,
    ACTIVE_STATES,
    BETWEEN_TASKS,
    abort_refusal,
    abort_targets,
)
from istio_canary.ui import data

# Between two tasks no release task is active for a moment: look again a few times.
ATTEMPTS = 10
ATTEMPT_PAUSE_SECONDS = 1.0
FINISHED_MEANWHILE = "the tasks to fail finished while aborting"


class AbortRefused(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class AbortResult:
    dag_id: str
    run_id: str
    failed_tasks: list[str]
    by: str
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {"dag_id": self.dag_id, "run_id": self.run_id, "failed_tasks": self.failed_tasks,
                "aborted_by": self.by, "aborted_at": self.at,
                "message": f"aborted by {self.by}: {', '.join(self.failed_tasks)} marked failed; "
                           "rollback starts on the scheduler's next pass"}


def abort_release(dag_id: str, run_id: str, user_name: str, user_id: str) -> AbortResult:
    """Fail the run's active release tasks; raises AbortRefused (404/409) saying why not."""
    from airflow.utils.session import create_session

    last_refusal = ""
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(ATTEMPT_PAUSE_SECONDS)
        with create_session() as session:
            dag_run = data.find_run(session, dag_id, run_id)
            if dag_run is None or dag_id not in data.release_dag_ids(session):
                raise AbortRefused(404, f"no release run {dag_id}/{run_id}")
            run = data.run_record(session, dag_run)
            refusal = abort_refusal(run)
            if refusal is None:
                failed = _fail(session, dag_id, run_id, abort_targets(run))
                if failed:
                    return _record(session, dag_run, failed, user_name, user_id)
                refusal = FINISHED_MEANWHILE
            last_refusal = refusal
            if refusal not in (BETWEEN_TASKS, FINISHED_MEANWHILE):
                break
    raise AbortRefused(409, f"cannot abort {dag_id}/{run_id}: {last_refusal}")


def _fail(session: Any, dag_id: str, run_id: str, task_ids: list[str]) -> list[str]:
    """Mark these task instances FAILED if they are still active (row-locked: a task finishing
    at this moment keeps its own state)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    query = select(TaskInstance).where(
        TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.task_id.in_(task_ids),
        TaskInstance.state.in_(sorted(ACTIVE_STATES)),
    ).with_for_update()
    failed = []
    for ti in session.scalars(query):
        ti.set_state(TaskInstanceState.FAILED, session=session)
        failed.append(ti.task_id)
    return sorted(failed)


def _record(session: Any, dag_run: Any, failed: list[str], user_name: str, user_id: str) -> AbortResult:
    from airflow.models.xcom import XComModel

    result = AbortResult(dag_run.dag_id, dag_run.run_id, failed, user_name, time.time())
    # Stored as plain JSON (serialize=False), as the tasks' own XComs are: a task reads it back
    # through the execution API as a dict, not as the JSON text `serialize` would store.
    XComModel.set(key=ABORT_XCOM_KEY, value={"by": user_name, "at": result.at, "tasks": failed},
                  dag_id=dag_run.dag_id, task_id=ABORT_XCOM_TASK, run_id=dag_run.run_id, serialize=False,
                  session=session)
    dag_run.note = (f"Aborted by {user_name} from the release page: {', '.join(failed)} marked failed; "
                    "rolled back by the rollback task", user_id)
    session.flush()
    return result
