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
