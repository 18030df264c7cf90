"""The generator's HTTP server: `/metrics` (Prometheus text format) for Prometheus to scrape,
and the control API (`GET /control/state`, `GET /control/clients`, `POST /control/behaviour`, `POST /control/reset`,
and `/control/faults` when the supervisor wires its fault control in:
`python -m sandbox fault ...`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from sandbox.config import reseed_world
from sandbox.errors import SandboxInputError
from sandbox.traffic.generator import TrafficGenerator

log = logging.getLogger(__name__)

# (method, JSON body) -> (HTTP status, JSON answer): the supervisor's fault control.
FaultHandler = Callable[[str, Any], tuple[int, Any]]


class GeneratorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], generator: TrafficGenerator) -> None:
        super().__init__(address, _GeneratorHandler)
        self.generator = generator
        # Set by the supervisor, which owns what faults act on (Prometheus, the store, the API).
        self.fault_control: FaultHandler | None = None
        # What /control/reset re-seeds: the store, or (on a real kube-apiserver) that server.
        self.reseed: Callable[[], int] = lambda: reseed_world(generator.store, generator.world)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class _GeneratorHandler(BaseHTTPRequestHandler):
    server: GeneratorServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # scrapes every second: keep logs quiet
        log.debug("generator http: " + format, *args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        gen = self.server.generator
        if path == "/metrics":
            self._send(200, gen.render_metrics().encode(), "text/plain; version=0.0.4; charset=utf-8")
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain")
        elif path == "/control/state":
            self._json(200, gen.state())
        elif path == "/control/clients":
            self._json(200, gen.clients_report())
        elif path == "/control/faults":
            self._faults("GET", None)
        else:
            self._json(404, {"error": f"no such path {path}"})

    def _faults(self, method: str, payload: Any) -> None:
        control = self.server.fault_control
        if control is None:
            self._json(404, {"error": "no fault control in this server (run it under the supervisor)"})
            return
        status, answer = control(method, payload)
        self._json(status, answer)

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        gen = self.server.generator
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            payload = json.loads(raw) if raw else {}
        except json.JSONDecodeError as exc:
            self._json(400, {"error": f"body is not JSON: {exc}", "field": "body", "value": None})
            return
        if path == "/control/behaviour":
            try:
                result = gen.update_behaviour(payload)
            except SandboxInputError as exc:
                self._json(
                    400, {"error": str(exc), "field": exc.field, "value": exc.value, "problem": exc.problem}
                )
                return
            log.info("behaviour changed: %s", json.dumps(payload, sort_keys=True))
            self._json(200, result)
        elif path == "/control/reset":
            written = self.server.reseed()
            gen.reset_behaviour()
            log.info("world reset: %d objects re-seeded, behaviour back to config", written)
            self._json(200, {"reseeded": written})
        elif path == "/control/faults":
            self._faults("POST", payload)
        else:
            self._json(404, {"error": f"no such path {path}"})


def make_generator_server(
    generator: TrafficGenerator, host: str = "127.0.0.1", port: int = 0
) -> GeneratorServer:
    """The generator's HTTP server (call `serve_forever()` in a thread)."""
    return GeneratorServer((host, port), generator)
