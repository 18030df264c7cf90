"""The webhook notifier against a real local HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from istio_canary.notifications import WebhookNotifier

REPORT = {"service": "reviews", "outcome": "rolled_back", "reason": "step_10: fail", "phases": []}


@pytest.fixture
def receiver() -> Iterator[Any]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.received = received
    yield server
    server.shutdown()
    server.server_close()


def test_report_is_posted_as_json_with_the_bearer_token(receiver: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    port = receiver.server_address[1]
    monkeypatch.setenv("AIRFLOW_CONN_ISTIO_CANARY_WEBHOOK", json.dumps({
        "conn_type": "http", "host": "127.0.0.1", "port": port, "schema": "http", "password": "s3cret",
        "extra": {"endpoint": "hooks/release"},
    }))
    assert WebhookNotifier().send(REPORT) is True
    [call] = receiver.received
    assert call["path"] == "/hooks/release"
    assert call["body"] == REPORT
    assert call["headers"]["Authorization"] == "Bearer s3cret"


def test_nothing_is_sent_when_no_webhook_is_configured(receiver: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_ISTIO_CANARY_WEBHOOK", raising=False)
    assert WebhookNotifier().send(REPORT) is False
    assert receiver.received == []


def test_an_unreachable_webhook_does_not_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_ISTIO_CANARY_WEBHOOK", json.dumps({
        "conn_type": "http", "host": "127.0.0.1", "port": 9, "schema": "http",
    }))
    assert WebhookNotifier(timeout_seconds=2).send(REPORT) is False


# --- phase notifications: the callbacks, with a task instance whose XComs are a dict


class FakeTI:
    """The part of a RuntimeTaskInstance a phase callback reads: its task and XComs."""

    def __init__(self, task_id: str, xcoms: dict[tuple[str, str], Any], downstream: tuple[str, ...] = (),
                 try_number: int = 1) -> None:
        self.task_id, self.xcoms, self.try_number = task_id, dict(xcoms), try_number
        self.task = type("Task", (), {"downstream_task_ids": set(downstream)})()

    def xcom_pull(self, task_ids: str, key: str = "return_value") -> Any:
        return self.xcoms.get((task_ids, key))

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[(self.task_id, key)] = value


VALIDATED = {"service": "reviews", "namespace": "bookinfo", "stable_version": "v1", "canary_version": "v2",
             "strategy": "weighted", "steps": [10, 50, 100], "dry_run": False, "require_approval": False}
PASSED_10 = {("validate", "return_value"): VALIDATED,
             ("step_10.analyze", "return_value"): {"outcome": "pass", "summary": "pass: within limits"},
             ("step_10.set_route", "return_value"): {"canary_weight": 10}}


def context_of(ti: FakeTI, **extra: Any) -> dict[str, Any]:
    return {"ti": ti, "params": {"service": "reviews"}, "run_id": "manual__1", "dag": None, **extra}


class Recorder:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, context: Any) -> None:
        self.calls.append(context)


def callback_for(task_id: str, kind: str, notifiers: list[Any]) -> Any:
    from istio_canary.core.release_phase import callback_phases
    from istio_canary.notifications import PhaseCallback

    return PhaseCallback(kind, {phase: notifiers for phase in callback_phases(task_id)[kind]})


def test_a_passed_step_is_announced_with_its_facts() -> None:
    recorder = Recorder()
    ti = FakeTI("step_10.decide", PASSED_10, downstream=("step_10.verdict_failed", "step_50.window", "rollback"))
    callback_for("step_10.decide", "on_success_callback", [recorder])(context_of(ti))
    [call] = recorder.calls
    assert call["release_phase"] == "step_passed"
    assert call["release_message"] == (
        "release bookinfo/reviews v1 -> v2: step 10% passed (pass: within limits); next: step 50%")
    assert call["release"]["weight"] == 10 and call["release"]["step"] == "step 10%"
    assert call["ti"] is ti and call["params"] == {"service": "reviews"}  # the task context is all there


def test_a_failed_verdict_is_not_a_passed_step() -> None:
    recorder = Recorder()
    failed = {**PASSED_10, ("step_10.analyze", "return_value"): {"outcome": "fail", "summary": "fail: 5% errors"}}
    callback_for("step_10.decide", "on_success_callback", [recorder])(context_of(FakeTI("step_10.decide", failed)))
    assert recorder.calls == []


def test_a_failing_notifier_is_logged_and_the_next_one_still_runs(caplog: pytest.LogCaptureFixture) -> None:
    def broken(context: Any) -> None:
        raise ConnectionError("chat is down")

    recorder = Recorder()
    callback = callback_for("preflight", "on_success_callback", [broken, recorder])
    callback(context_of(FakeTI("preflight", PASSED_10)))  # does not raise
    assert [c["release_phase"] for c in recorder.calls] == ["started"]
    assert "notifier" in caplog.text and "chat is down" in caplog.text and "(the release goes on)" in caplog.text


def test_unreadable_facts_do_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(FakeTI):
        def xcom_pull(self, task_ids: str, key: str = "return_value") -> Any:
            raise RuntimeError("API server unreachable")

    recorder = Recorder()
    callback_for("promote", "on_success_callback", [recorder])(context_of(Broken("promote", {})))
    assert recorder.calls == [] and "API server unreachable" in caplog.text


def test_the_approval_is_announced_once_and_not_again_when_it_resumes() -> None:
    recorder = Recorder()
    callback = callback_for("approve_promotion", "on_execute_callback", [recorder])
    ti = FakeTI("approve_promotion", PASSED_10)
    callback(context_of(ti))
    callback(context_of(ti))  # on_execute runs again when the deferred task resumes
    assert [c["release_phase"] for c in recorder.calls] == ["awaiting_approval"]
    retry = FakeTI("approve_promotion", PASSED_10, try_number=2)  # a new try: its XComs were cleared
    callback(context_of(retry))
    assert len(recorder.calls) == 2


def test_a_rollback_that_recorded_a_failure_is_announced_as_failed() -> None:
    recorder = Recorder()
    where = {"canary_weight": 50, "match_route": False, "error": "HTTP 500 from the API server"}
    ti = FakeTI("rollback", {**PASSED_10, ("rollback", "rollback_failed"): where})
    callback_for("rollback", "on_failure_callback", [recorder])(context_of(ti, exception=RuntimeError("x")))
    [call] = recorder.calls
    assert call["release_phase"] == "rollback_failed"
    assert call["release"]["reason"] == "routing is at canary weight 50% (HTTP 500 from the API server)"


def test_a_rollback_reason_is_the_first_failed_verdict() -> None:
    class Dag:
        task_ids = ["validate", "step_10.analyze", "step_50.analyze", "rollback"]

    recorder = Recorder()
    xcoms = {**PASSED_10, ("step_50.analyze", "return_value"): {"outcome": "fail", "summary": "5% errors"},
             ("rollback", "return_value"): {"changed": True}}
    callback_for("rollback", "on_success_callback", [recorder])(context_of(FakeTI("rollback", xcoms), dag=Dag()))
    assert recorder.calls[0]["release"]["reason"] == "step_50: fail: 5% errors"
    skipped = {("rollback", "return_value"): {"changed": False, "skipped": "release not held by this run"}}
    callback_for("rollback", "on_success_callback", [recorder])(context_of(FakeTI("rollback", skipped), dag=Dag()))
    assert recorder.calls[1]["release"]["reason"] == "nothing to roll back: release not held by this run"


def test_one_notifier_instance_renders_each_phase_afresh() -> None:
    from airflow.sdk import BaseNotifier

    class TextNotifier(BaseNotifier):
        template_fields = ("text",)

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text, self.sent = text, []

        def notify(self, context: Any) -> None:
            self.sent.append(self.text)

    notifier = TextNotifier("{{ release_phase }}: {{ release.step }} of {{ params.service }}")
    callback_for("preflight", "on_success_callback", [notifier])(context_of(FakeTI("preflight", PASSED_10)))
    ti = FakeTI("step_10.decide", PASSED_10, downstream=("step_50.window",))
    callback_for("step_10.decide", "on_success_callback", [notifier])(context_of(ti))
    # Rendered on copies (the list is shared by them): the instance keeps its template.
    assert notifier.sent == ["started: None of reviews", "step_passed: step 10% of reviews"]
    assert notifier.text == "{{ release_phase }}: {{ release.step }} of {{ params.service }}"


def test_webhook_notifier_as_a_phase_notifier_posts_the_phase(receiver: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_RELEASE_PHASES", json.dumps({
        "conn_type": "http", "host": "127.0.0.1", "port": receiver.server_address[1], "schema": "http"}))
    callback = callback_for("promote", "on_success_callback", [WebhookNotifier("release_phases")])
    callback(context_of(FakeTI("promote", PASSED_10)))
    [call] = receiver.received
    assert call["body"]["phase"] == "promoted"
    assert call["body"]["message"] == "release bookinfo/reviews v1 -> v2: promoted, all traffic to v2"
    assert call["body"]["release"]["canary_version"] == "v2"


def test_the_http_providers_notifier_posts_its_rendered_json(receiver: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.providers.http.notifications.http import HttpNotifier

    monkeypatch.setenv("AIRFLOW_CONN_RELEASE_CHAT", json.dumps({
        "conn_type": "http", "host": "127.0.0.1", "port": receiver.server_address[1], "schema": "http"}))
    chat = HttpNotifier(http_conn_id="release_chat", endpoint="hooks/chat",
                        json={"text": "{{ release_message }}", "service": "{{ params.service }}"})
    callback_for("preflight", "on_success_callback", [chat])(context_of(FakeTI("preflight", PASSED_10)))
    [call] = receiver.received
    assert call["path"] == "/hooks/chat"
    assert call["body"] == {"service": "reviews", "text": "release bookinfo/reviews v1 -> v2 started: checks "
                            "passed, lock taken; steps 10% -> 50% -> 100%"}


def test_notifiers_are_wired_into_the_release_dag_next_to_existing_callbacks() -> None:
    from istio_canary.dag_factory import build_release_dag
    from istio_canary.notifications import PhaseCallback, attach_notifiers

    recorder = Recorder()
    dag = build_release_dag("notified", notifiers={"promoted": recorder, "rolled_back": [recorder]})
    wired = {(t.task_id, kind) for t in dag.tasks
             for kind in ("on_success_callback", "on_failure_callback", "on_execute_callback")
             if any(isinstance(c, PhaseCallback) for c in getattr(t, kind))}
    assert wired == {("promote", "on_success_callback"), ("rollback", "on_success_callback")}
    everything = build_release_dag("notified_all", notifiers=[recorder])
    decides = {t.task_id for t in everything.tasks if t.task_id.endswith(".decide") and t.on_success_callback}
    assert {"targeted.decide", "step_10.decide", "step_50.decide", "step_100.decide"} <= decides
    assert everything.get_task("approve_promotion").on_execute_callback
    assert everything.get_task("rollback").on_failure_callback
    promote = everything.get_task("promote")
    promote.on_success_callback = [recorder]
    attach_notifiers(everything, [recorder])
    assert promote.on_success_callback[0] is recorder and isinstance(promote.on_success_callback[1], PhaseCallback)
    plain = build_release_dag("plain")
    assert not any(getattr(t, k) for t in plain.tasks for k in ("on_success_callback", "on_failure_callback"))


def test_a_bad_notifier_spec_fails_the_dag_file() -> None:
    from istio_canary.dag_factory import build_release_dag

    with pytest.raises(ValueError, match="unknown release phase 'promote'"):
        build_release_dag("typo", notifiers={"promote": Recorder()})


def test_a_rollback_after_a_task_failure_names_the_task() -> None:
    class Dag:
        task_ids = ["validate", "step_50.analyze", "approve_promotion", "promote", "rollback"]

    class TIWithStates(FakeTI):
        dag_id, run_id = "istio_canary_release", "manual__1"

        def get_task_states(self, dag_id: str, run_ids: list[str]) -> dict[str, Any]:
            assert (dag_id, run_ids) == (self.dag_id, [self.run_id])
            return {self.run_id: {"approve_promotion": "failed", "promote": "upstream_failed", "rollback": "running"}}

    recorder = Recorder()
    ti = TIWithStates("rollback", {**PASSED_10, ("rollback", "return_value"): {"changed": True}})
    callback_for("rollback", "on_success_callback", [recorder])(context_of(ti, dag=Dag()))
    assert recorder.calls[0]["release"]["reason"] == "approve_promotion failed: see its log"
    assert recorder.calls[0]["release_message"] == (
        "release bookinfo/reviews v1 -> v2: rolled back (approve_promotion failed: see its log); "
        "routing is as before the release")


def test_notifiers_are_named_in_the_log_by_class_and_connection() -> None:
    from airflow.providers.http.notifications.http import HttpNotifier

    from istio_canary.notifications import notifier_name

    assert notifier_name(HttpNotifier(http_conn_id="release_chat")) == "HttpNotifier(release_chat)"
    assert notifier_name(WebhookNotifier("hooks")) == "WebhookNotifier(hooks)"
    assert notifier_name(Recorder()) == "Recorder"
    assert notifier_name(test_notifiers_are_named_in_the_log_by_class_and_connection) == (
        "test_notifiers_are_named_in_the_log_by_class_and_connection")


def test_the_stock_dag_posts_every_phase_to_the_phases_connection() -> None:
    import runpy
    from pathlib import Path

    from istio_canary.core.release_phase import ReleasePhase
    from istio_canary.notifications import DEFAULT_PHASE_CONN_ID, PhaseCallback

    dag_file = Path(__file__).resolve().parents[3] / "dags" / "istio_canary_release.py"
    dag = runpy.run_path(str(dag_file))["dag"]
    [callback] = [c for c in dag.get_task("rollback").on_failure_callback if isinstance(c, PhaseCallback)]
    [notifier] = callback.notifiers[ReleasePhase.ROLLBACK_FAILED]
    assert isinstance(notifier, WebhookNotifier) and notifier.conn_id == DEFAULT_PHASE_CONN_ID == "istio_canary_phases"
