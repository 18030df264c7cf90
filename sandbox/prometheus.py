"""The real Prometheus server (Debian's `prometheus` binary), configured to scrape the
traffic generator every second, plus the few HTTP calls the sandbox makes to it."""

from __future__ import annotations

import ctypes
import json
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

SCRAPE_JOB = "sandbox-traffic"
PROMETHEUS_BINARY = "prometheus"


def find_binary() -> str | None:
    return shutil.which(PROMETHEUS_BINARY)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now. Prometheus binds it itself a moment later; if
    another process wins the race, the supervisor sees Prometheus exit and reports it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def config_yaml(generator_target: str, job: str = SCRAPE_JOB) -> str:
    # 1 s scrape and evaluation: tests and the demo see new traffic within seconds.
    return (
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        f"  - job_name: {job}\n"
        "    metrics_path: /metrics\n"
        "    static_configs:\n"
        f"      - targets: ['{generator_target}']\n"
    )


def _load_prctl() -> object | None:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Loaded up front: the child runs only this call between fork and exec (no imports, no locks).
_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Linux: the kernel sends SIGTERM to Prometheus if the supervisor dies, even by SIGKILL,
    # so a crashed supervisor never leaves Prometheus behind.
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)  # type: ignore[operator]


def start(
    state_dir: Path,
    port: int,
    generator_target: str,
    host: str = "127.0.0.1",
    *,
    fresh: bool = True,
    extra_args: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    """Start Prometheus as a child of the calling process, in its process group (so stopping
    the group stops it too). Output goes to `<state_dir>/prometheus.log`. `fresh=False` keeps
    the TSDB (a restart, as after an outage); `extra_args` are more Prometheus flags.

    Linux ties the child's death signal to the calling *thread*: call this from a thread that
    lives as long as Prometheus should (the supervisor's main thread)."""
    binary = find_binary()
    if binary is None:
        raise FileNotFoundError("the `prometheus` binary is not on PATH (Debian package `prometheus`)")
    config_path = state_dir / "prometheus.yml"
    config_path.write_text(config_yaml(generator_target))
    data_dir = state_dir / "prometheus-data"
    # A fresh TSDB each start: samples of an earlier run (other ports, counters from zero)
    # would mix into rates and could pass the readiness check before the first real scrape.
    if fresh:
        shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    log = (state_dir / "prometheus.log").open("ab")
    try:
        return subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={data_dir}",
                f"--web.listen-address={host}:{port}",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
                *extra_args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=state_dir,
            preexec_fn=_die_with_parent,
        )
    finally:
        log.close()


def _get(url: str, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def is_ready(base_url: str, timeout: float = 2.0) -> bool:
    try:
        status, _ = _get(f"{base_url}/-/ready", timeout)
    except OSError:
        return False
    return status == 200


def query(base_url: str, promql: str, at: float | None = None, timeout: float = 5.0) -> list[dict[str, Any]]:
    """An instant query; returns Prometheus' `data.result` (vector samples, or one scalar as
    a single `{"metric": {}, "value": [...]}`). Raises RuntimeError on a query error."""
    params = {"query": promql}
    if at is not None:
        params["time"] = f"{at:.3f}"
    status, body = _get(f"{base_url}/api/v1/query?{urllib.parse.urlencode(params)}", timeout)
    payload = json.loads(body)
    if status != 200 or payload.get("status") != "success":
        raise RuntimeError(f"PromQL {promql!r} failed ({status}): {payload.get('error', body[:200])}")
    data = payload["data"]
    if data["resultType"] in ("scalar", "string"):
        return [{"metric": {}, "value": data["result"]}]
    return data["result"]


def scalar(base_url: str, promql: str, at: float | None = None, timeout: float = 5.0) -> float | None:
    """The single value a query returns (first sample of a vector), or None when it returns none."""
    result = query(base_url, promql, at, timeout)
    if not result:
        return None
    return float(result[0]["value"][1])


def has_scraped(base_url: str, target: str, job: str = SCRAPE_JOB) -> bool:
    """Prometheus has scraped the generator at `target` (host:port) successfully."""
    try:
        return scalar(base_url, f'up{{job="{job}",instance="{target}"}}', timeout=2.0) == 1.0
    except (OSError, RuntimeError, ValueError):
        return False
