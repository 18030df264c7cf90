"""Phase notifications end to end, against a local HTTP receiver that records what it is sent:
`airflow dags test` of a release DAG file built with `build_release_dag(notifiers=[...])` and the
HTTP provider's real HttpNotifier (pointed at the receiver by Airflow connections), and the stock
DAG on a live Airflow, configured by a connection only, through an approval that parks and resumes."""

from __future__ import annotations

import json
import socket
import subprocess
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from istio_canary.core.lock import outcome_of
from istio_canary.notifications import DEFAULT_PHASE_CONN_ID
from sandbox.client import sandbox_connections
from tests.e2e.conftest import AIRFLOW, RunResult, airflow_env
from tests.e2e.conftest import DAG_ID as LIVE_DAG_ID
from tests.e2e.test_live_airflow import wait_for_task, wait_until_parked
from tests.helpers import vs_of
from tools.live_airflow import LiveAirflow

pytestmark = pytest.mark.e2e

DAG_ID = "istio_canary_release_notified"
RELEASE = {"service": "reviews", "namespace": "bookinfo", "stable_version": "v1", "canary_version": "v2",
           "bake_seconds": 4, "check_interval_seconds": 1, "min_requests": 20, "plan_bake": False}

# What a user writes: their notifiers, rendered with the task context. `release_pager` points at
# a port nobody listens on: it fails at every phase, before `release_chat` is called.
DAG_FILE = f'''
from airflow.providers.http.notifications.http import HttpNotifier

from istio_canary.dag_factory import build_release_dag

chat = HttpNotifier(
    http_conn_id="release_chat", endpoint="hooks/release", extra_options={{"timeout": 10}},
    json={{"phase": "{{{{ release_phase }}}}", "text": "{{{{ release_message }}}}",
          "step": "{{{{ release.step }}}}", "service": "{{{{ params.service }}}}", "task": "{{{{ ti.task_id }}}}"}},
)
pager = HttpNotifier(http_conn_id="release_pager", json={{"text": "{{{{ release_message }}}}"}},
                     extra_options={{"timeout": 10}})
dag = build_release_dag("{DAG_ID}", notifiers=[pager, chat])
'''


class Receiver:
    """A local chat webhook: records each POST's path and JSON body, answers `status`."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.posts: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.posts.append({"path": self.path, "body": json.loads(body or b"null")})
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def phases(self) -> list[tuple[str, str]]:
        return [(p["body"]["phase"], p["body"]["step"]) for p in self.posts]


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    rec = Receiver(getattr(request, "param", 200))
    rec.thread.start()
    yield rec
    rec.server.shutdown()
    rec.server.server_close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def notified_release(airflow_home: Path, cluster: Any, receiver: Receiver,
                     tmp_path: Path) -> Any:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "notified_release.py").write_text(textwrap.dedent(DAG_FILE))
    http = {"conn_type": "http", "host": "127.0.0.1", "schema": "http"}
    connections = {
        "AIRFLOW_CONN_RELEASE_CHAT": json.dumps({**http, "port": receiver.port}),
        "AIRFLOW_CONN_RELEASE_PAGER": json.dumps({**http, "port": closed_port()}),
    }

    def run(conf: dict[str, Any]) -> RunResult:
        env = airflow_env(airflow_home, {**sandbox_connections(cluster), **connections}, dags_folder=dags)
        result = subprocess.run([AIRFLOW, "dags", "test", DAG_ID, "-c", json.dumps(conf)], env=env,
                                capture_output=True, text=True, timeout=420)
        return RunResult(result.returncode, result.stdout + result.stderr)

    return run


def test_promoted_release_announces_start_each_step_and_promotion(mesh: Any, receiver: Receiver,
                                                                  notified_release: Any) -> None:
    result = notified_release(RELEASE)
    assert result.state == "success", result.output[-5000:]
    assert receiver.phases() == [
        ("started", "None"), ("step_passed", "step 10%"), ("step_passed", "step 50%"),
        ("step_passed", "step 100%"), ("promoted", "None"),
    ], receiver.posts
    first, *_, last = (p["body"] for p in receiver.posts)
    assert {p["path"] for p in receiver.posts} == {"/hooks/release"}
    assert first["service"] == "reviews" and first["task"] == "preflight"
    assert first["text"].startswith("release bookinfo/reviews v1 -> v2 started")
    texts = [p["body"]["text"] for p in receiver.posts]
    assert texts[1].startswith("release bookinfo/reviews v1 -> v2: step 10% passed (pass") and texts[1].endswith(
        "next: step 50%"), texts[1]
    assert texts[2].endswith("next: step 100%") and texts[3].endswith("next: promotion"), texts
    assert last["text"] == "release bookinfo/reviews v1 -> v2: promoted, all traffic to v2"
    # The pager's receiver is down at every phase: logged, and the release went on.
    assert result.output.count("notifier HttpNotifier(release_pager) failed (the release goes on)") == 5
    assert outcome_of(vs_of(mesh)).outcome == "promoted"


def test_rolled_back_release_announces_start_and_rollback(mesh: Any, receiver: Receiver,
                                                          notified_release: Any) -> None:
    mesh.set_behaviour("v1", error_rate=0.005)
    mesh.set_behaviour("v2", error_rate=0.05)
    result = notified_release({**RELEASE, "bake_seconds": 60})
    assert result.state == "failed", result.output[-5000:]
    assert [phase for phase, _ in receiver.phases()] == ["started", "rolled_back"], receiver.posts
    text = receiver.posts[-1]["body"]["text"]
    assert text.startswith("release bookinfo/reviews v1 -> v2: rolled back (step_10: fail: "), text
    assert text.endswith("routing is as before the release")
    assert outcome_of(vs_of(mesh)).outcome == "rolled_back"


@pytest.mark.parametrize("receiver", [500], indirect=True)
def test_a_failing_notifier_does_not_change_the_release(mesh: Any, receiver: Receiver,
                                                        notified_release: Any) -> None:
    result = notified_release(RELEASE)
    assert result.state == "success", result.output[-5000:]
    # Every phase was tried, each answered 500, and the release was promoted all the same.
    assert [phase for phase, _ in receiver.phases()] == [
        "started", "step_passed", "step_passed", "step_passed", "promoted"]
    assert "500" in result.output and "(the release goes on)" in result.output
    assert outcome_of(vs_of(mesh)).outcome == "promoted"



def patiently(wait: Any, *args: Any) -> Any:
    """`wait(*args)`, started again when one REST call of its polling times out: on two busy cores
    the api-server can take longer than a call's 30 s while releases run beside it."""
    for _ in range(5):
        try:
            return wait(*args)
        except requests.Timeout:
            continue
    return wait(*args)


@pytest.mark.live
def test_the_stock_dag_announces_to_its_connection_and_asks_for_approval_once(
        live_airflow: LiveAirflow, mesh: Any, receiver: Receiver) -> None:
    """No Python: an HTTP connection `istio_canary_phases`, made through the REST API, is what the
    stock DAG's notifier posts to. The approval parks (awaiting input) and resumes in a new task
    process, running its on_execute callback twice: it is announced once."""
    created = live_airflow.api("POST", "/connections", json={
        "connection_id": DEFAULT_PHASE_CONN_ID, "conn_type": "http", "host": "127.0.0.1", "port": receiver.port,
        "schema": "http"})
    assert created.status_code == 201, created.text
    try:
        run_id = live_airflow.trigger({**RELEASE, "require_approval": True})
        patiently(wait_for_task, live_airflow, run_id, "approve_promotion", ("awaiting_input",))
        wait_until_parked(live_airflow, run_id, "approve_promotion")
        asked = [p["body"]["phase"] for p in receiver.posts]
        assert asked == ["started", "step_passed", "step_passed", "awaiting_approval"], receiver.posts
        assert receiver.posts[2]["body"]["message"].endswith("next: approval, then step 100%")
        hitl = f"/dags/{LIVE_DAG_ID}/dagRuns/{run_id}/taskInstances/approve_promotion/-1/hitlDetails"
        answered = live_airflow.api("PATCH", hitl, json={"chosen_options": ["Approve"]})
        assert answered.status_code == 200, answered.text
        assert patiently(live_airflow.wait_for_run, run_id) == "success"
    finally:
        live_airflow.api("DELETE", f"/connections/{DEFAULT_PHASE_CONN_ID}")
    bodies = [p["body"] for p in receiver.posts]
    assert [b["phase"] for b in bodies] == [
        "started", "step_passed", "step_passed", "awaiting_approval", "step_passed", "promoted"], bodies
    assert [b["release"]["step"] for b in bodies if b["phase"] == "step_passed"] == ["step 10%", "step 50%", "step 100%"]
    assert bodies[-1]["release"]["run_id"] == run_id and bodies[-1]["release"]["canary_version"] == "v2"
    assert outcome_of(vs_of(mesh)).outcome == "promoted"
