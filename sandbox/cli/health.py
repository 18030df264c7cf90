"""Is a sandbox up: each of its parts answers as it should."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sandbox import prometheus
from sandbox.cli.common import http_get
from sandbox.procs import process_alive


@dataclass
class Health:
    parts: dict[str, tuple[bool, str]] = field(default_factory=dict)  # name: (ok, detail)
    generator_state: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return bool(self.parts) and all(ok for ok, _ in self.parts.values())

    def failing(self) -> str:
        return "; ".join(f"{name}: {detail}" for name, (ok, detail) in self.parts.items() if not ok)


def check_health(urls: dict[str, str], supervisor_pid: int | None = None, api_ca: str | None = None) -> Health:
    """Each part answers as it should: API /version, generator /metrics + /control/state,
    Prometheus /-/ready and has scraped the generator (`up == 1`). `api_ca`: the real
    kube-apiserver's CA (its /version is public, over TLS)."""
    health = Health()
    if supervisor_pid is not None:
        alive = process_alive(supervisor_pid)
        health.parts["supervisor"] = (alive, f"pid {supervisor_pid}" + ("" if alive else " is gone"))
    health.parts["api"] = _api_health(urls["api"], api_ca)
    health.parts["generator"], health.generator_state = _generator_health(urls["generator"])
    health.parts["prometheus"] = _prometheus_health(urls["prometheus"], urls["generator"])
    return health


def _api_health(api: str, api_ca: str | None) -> tuple[bool, str]:
    try:
        status, body = http_get(f"{api}/version", ca_file=api_ca)
        version = json.loads(body).get("gitVersion") if status == 200 else None
        return status == 200, f"{api} ({version or f'HTTP {status}'})"
    except (OSError, ValueError) as exc:
        return False, f"{api} unreachable: {exc}"


def _generator_health(generator: str) -> tuple[tuple[bool, str], dict[str, Any] | None]:
    """((ok, detail), its /control/state when /metrics answers)."""
    state = None
    try:
        status, _ = http_get(f"{generator}/metrics")
        if status == 200:
            _, body = http_get(f"{generator}/control/state")
            state = json.loads(body)
        return (status == 200, f"{generator} (/metrics HTTP {status})"), state
    except (OSError, ValueError) as exc:
        return (False, f"{generator} unreachable: {exc}"), state


def _prometheus_health(prom: str, generator: str) -> tuple[bool, str]:
    if not prometheus.is_ready(prom):
        return False, f"{prom} not ready"
    if not prometheus.has_scraped(prom, generator.removeprefix("http://")):
        return False, f"{prom} ready, but has not scraped the generator yet (up != 1)"
    return True, f"{prom} (scraping the generator)"
