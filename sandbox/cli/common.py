"""What every `python -m sandbox` command shares: the state dir's files, exit codes, error
output, and the sandbox's HTTP calls."""

from __future__ import annotations

import json
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

DEFAULT_STATE_DIR = ".sandbox"
STATE_FILE = "state.json"
SUPERVISOR_LOG = "supervisor.log"
PROMETHEUS_LOG = "prometheus.log"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
EXIT_UNHEALTHY = 1
EXIT_USAGE = 2
CONTROL_REQUEST_TIMEOUT = 120.0  # a Prometheus restart waits for readiness and a fresh scrape


def err(message: str) -> None:
    print(f"sandbox: {message}", file=sys.stderr)


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """state.json as `up` wrote it, or None when there is none (or it is unreadable)."""
    try:
        return json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def running_state(state_dir: Path) -> dict[str, Any] | None:
    """The state of a sandbox that got its URLs; None (and says so) when none runs there."""
    state = read_state(state_dir)
    if state is None or not state.get("urls"):
        err(f"no sandbox running in {state_dir} (run `python -m sandbox up` first)")
        return None
    return state


def http_get(url: str, timeout: float = 2.0, ca_file: str | None = None) -> tuple[int, bytes]:
    """(status, body) of a GET; `ca_file` verifies a TLS server (the real kube-apiserver)."""
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def call(method: str, url: str, payload: dict[str, Any] | None = None,
         timeout: float = CONTROL_REQUEST_TIMEOUT) -> tuple[int, Any]:
    """(status, JSON answer) of a sandbox control call; raises OSError when it cannot be reached."""
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body or b"null")
        except ValueError:
            return exc.code, {"error": body.decode(errors="replace")}
