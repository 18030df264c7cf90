"""What the release page says after its Abort form posted: taken from the run, never from the URL."""

from __future__ import annotations

from istio_canary.core.release_page import ABORT_XCOM_KEY, ABORT_XCOM_TASK, RunRecord, TaskRecord
from istio_canary.ui.views import abort_message


def run(state: str, xcoms: dict[tuple[str, str], object] | None = None) -> RunRecord:
    tasks = {"validate": TaskRecord("success"), "step_10.watch": TaskRecord("failed"), "rollback": TaskRecord(None)}
    return RunRecord("d", "r", state, 0.0, None, {}, tasks, xcoms or {})


def test_after_an_abort_the_page_says_who_and_what_from_the_runs_record() -> None:
    done = run("running", {(ABORT_XCOM_TASK, ABORT_XCOM_KEY): {"by": "bob", "at": 1.0, "tasks": ["step_10.watch"]}})
    assert abort_message(done, "done") == ("aborted by bob: step_10.watch marked failed; rollback starts on the "
                                           "scheduler's next pass")


def test_a_refused_abort_says_why_from_the_runs_state() -> None:
    assert abort_message(run("success"), "refused") == "Abort refused: the run has finished (success): nothing to abort"
    # "done" without an abort on record (a crafted link) is no claim that anything was aborted.
    assert abort_message(run("failed"), "done").startswith("Abort refused:")
    assert abort_message(run("running"), "anything else") is None and abort_message(run("running"), None) is None
