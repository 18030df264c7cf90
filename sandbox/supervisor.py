"""The sandbox's one background process: `python -m sandbox.supervisor --state-dir DIR`.

It runs the Kubernetes API stand-in and the traffic generator in threads and the real
Prometheus as its child, all in the process group `sandbox up` created for it. When it is
ready it writes `<state-dir>/runtime.json` (pids, ports, URLs). On SIGTERM/SIGINT/SIGHUP it
stops Prometheus, then its own servers. If Prometheus exits on its own, the supervisor
stops too (fail fast: a sandbox is either whole or gone).

Also here: the /proc helpers `sandbox down` uses to find and stop exactly what was started.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from istio_canary.core.validation import ValidationError
from sandbox import prometheus

log = logging.getLogger("sandbox.supervisor")

RUNTIME_FILE = "runtime.json"
PROMETHEUS_START_ATTEMPTS = 3
PROMETHEUS_READY_SECONDS = 30.0
STOP_GRACE_SECONDS = 5.0


# --- /proc helpers --------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state is [0], pgrp [2], starttime [19])."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def process_alive(pid: int) -> bool:
    """The process exists and is not a zombie (an exited process nobody has reaped yet)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def process_starttime(pid: int) -> int | None:
    """Clock ticks since boot when `pid` started: with the pid, identifies a process for sure."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no {path.name})"
    tail = text.splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in tail) if tail else f"({path.name} is empty)"


# --- the supervisor -------------------------------------------------------------------------


def _start_prometheus(state_dir: Path, generator_target: str) -> tuple[subprocess.Popen[bytes], int]:
    """Start Prometheus and wait for /-/ready; a new port if it lost the race for one."""
    for attempt in range(1, PROMETHEUS_START_ATTEMPTS + 1):
        port = prometheus.free_port()
        proc = prometheus.start(state_dir, port, generator_target)
        deadline = time.monotonic() + PROMETHEUS_READY_SECONDS
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if prometheus.is_ready(f"http://127.0.0.1:{port}", timeout=1.0):
                return proc, port
            time.sleep(0.1)
        if proc.poll() is None:
            _stop_child(proc)
            raise RuntimeError(
                f"Prometheus not ready after {PROMETHEUS_READY_SECONDS:.0f}s (see prometheus.log)"
            )
        log.warning("Prometheus exited with %s on attempt %d (port %d)", proc.returncode, attempt, port)
    raise RuntimeError(f"Prometheus failed to start {PROMETHEUS_START_ATTEMPTS} times (see prometheus.log)")


def _stop_child(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _thread(target: Callable[..., Any], name: str, *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    thread.start()
    return thread


def run(state_dir: Path, config_path: str | None, crd_dir: str | None) -> int:
    # Imported here: the CLI imports this module for its /proc helpers and should start fast.
    from sandbox.apiserver import make_api_server
    from sandbox.config import load_config, seed_world
    from sandbox.store import Store
    from sandbox.traffic import TrafficGenerator, make_generator_server

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    world = load_config(config_path)
    store = Store()
    seeded = seed_world(store, world)
    log.info("seeded %d objects for %d services from %s", seeded, len(world.services), world.source)

    api = make_api_server(store, "127.0.0.1", 0, crd_dir=crd_dir)
    generator = TrafficGenerator(store, world)
    gen_server = make_generator_server(generator, "127.0.0.1", 0)
    gen_port = gen_server.server_address[1]
    prom: subprocess.Popen[bytes] | None = None
    threads: list[threading.Thread] = []
    try:
        threads.append(_thread(api.serve_forever, "apiserver"))
        threads.append(_thread(gen_server.serve_forever, "generator-http"))
        threads.append(_thread(generator.run_forever, "generator", stop))
        prom, prom_port = _start_prometheus(state_dir, f"127.0.0.1:{gen_port}")
        runtime = {
            "supervisor_pid": os.getpid(),
            "pgid": os.getpgid(0),
            "prometheus_pid": prom.pid,
            "starttimes": {
                str(os.getpid()): process_starttime(os.getpid()),
                str(prom.pid): process_starttime(prom.pid),
            },
            "ports": {"api": api.server_address[1], "generator": gen_port, "prometheus": prom_port},
            "urls": {
                "api": api.url,
                "generator": gen_server.url,
                "prometheus": f"http://127.0.0.1:{prom_port}",
            },
            "config": world.source,
            "crd_dir": crd_dir,
            "started_at": generator.started_at.isoformat(),
        }
        write_json_atomic(state_dir / RUNTIME_FILE, runtime)
        log.info(
            "running: api %s, generator %s, prometheus %s (pid %d)",
            api.url,
            gen_server.url,
            runtime["urls"]["prometheus"],
            prom.pid,
        )
        while not stop.wait(0.5):
            if prom.poll() is not None:
                log.error("Prometheus exited with code %s; stopping the sandbox", prom.returncode)
                return 1
        return 0
    finally:
        stop.set()
        if prom is not None:
            _stop_child(prom)
        for server in (api, gen_server):
            if threads:
                server.shutdown()
            server.server_close()
        log.info("stopped at %s", datetime.now(UTC).isoformat())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.supervisor", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--config", default=None, help="world YAML (default: sandbox/default_world.yaml)")
    parser.add_argument("--crd-dir", default=os.environ.get("SANDBOX_CRDS") or None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stdout,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    state_dir = Path(args.state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        return run(state_dir, args.config, args.crd_dir)
    except ValidationError as exc:
        log.error("bad config: %s", exc)
        return 2
    except Exception:
        log.exception("supervisor failed")
        return 1


if __name__ == "__main__":
    sys.exit(main())
