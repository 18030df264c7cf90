"""`up` and `down`: start the sandbox's supervisor in its own process group, wait until every
part answers, write the env file and kubeconfig; stop exactly that group again."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandbox import prometheus
from sandbox.cli.common import (
    EXIT_UNHEALTHY,
    EXIT_USAGE,
    PROJECT_ROOT,
    PROMETHEUS_LOG,
    STATE_FILE,
    SUPERVISOR_LOG,
    err,
    read_state,
)
from sandbox.cli.health import Health, check_health
from sandbox.config import WorldConfig, load_config
from sandbox.errors import SandboxInputError
from sandbox.kubeconfig import kubeconfig_yaml
from sandbox.kubeenv import ISTIO_CRDS_DIR, KubeEnvError, find_binaries
from sandbox.procs import group_members, log_tail, process_starttime, write_json_atomic
from sandbox.supervisor import RUNTIME_FILE

# --- stopping -------------------------------------------------------------------------------


def _owned_members(state: dict[str, Any]) -> list[int]:
    """Live processes of the recorded group, if the group is still ours: one of the recorded
    pids is alive with the recorded start time (guards against a recycled pgid)."""
    pgid = state.get("pgid")
    if not isinstance(pgid, int) or pgid <= 1:
        return []
    members = group_members(pgid)
    starttimes = state.get("starttimes") or {}
    for pid in members:
        recorded = starttimes.get(str(pid))
        if recorded is not None and process_starttime(pid) == recorded:
            return members
    return []


def _wait_gone(pgid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not group_members(pgid):
            return True
        time.sleep(0.05)
    return not group_members(pgid)


def stop_process_group(state_dir: Path, grace_seconds: float = 5.0) -> str:
    """SIGTERM the recorded process group, SIGKILL after `grace_seconds`; remove the state.
    Returns what it did, for `down` to print."""
    state = read_state(state_dir)
    if state is None:
        return "not running"
    members = _owned_members(state)
    outcome = "already stopped"
    if members:
        pgid = state["pgid"]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        outcome = f"stopped process group {pgid} ({len(members)} processes)"
        if not _wait_gone(pgid, grace_seconds):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            _wait_gone(pgid, 2.0)
            outcome += ", after SIGKILL"
    # Files that would point at dead ports go; the logs stay for a post-mortem.
    for name in (STATE_FILE, RUNTIME_FILE, "env", "kubeconfig", "pipeline-kubeconfig"):
        (state_dir / name).unlink(missing_ok=True)
    if not _owned_members(state):
        shutil.rmtree(state_dir / "prometheus-data", ignore_errors=True)
    return outcome


def cmd_down(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir).resolve()
    print(f"sandbox in {state_dir}: {stop_process_group(state_dir)}")
    return 0


# --- up -------------------------------------------------------------------------------------


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def env_lines(state_dir: Path, urls: dict[str, str], ports: dict[str, int], namespace: str,
              kube_api: str = "sandbox") -> str:
    """KUBECONFIG is the admin's; the pipeline's connection uses PIPELINE_KUBECONFIG, which on
    a real kube-apiserver is the istio-canary ServiceAccount's token (the sandbox's API has
    one user, so there both are the same file)."""
    kubeconfig = str(state_dir / "kubeconfig")
    pipeline_kubeconfig = str(state_dir / "pipeline-kubeconfig") if kube_api != "sandbox" else kubeconfig
    values = {
        "KUBECONFIG": kubeconfig,
        "PIPELINE_KUBECONFIG": pipeline_kubeconfig,
        "SANDBOX_KUBE_API": kube_api,
        "PROMETHEUS_URL": urls["prometheus"],
        "SANDBOX_API_URL": urls["api"],
        "SANDBOX_CONTROL_URL": urls["generator"],
        # Field names as the cncf-kubernetes provider's KubernetesHook reads its extras.
        "AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps(
            {"conn_type": "kubernetes", "extra": {"kube_config_path": pipeline_kubeconfig, "namespace": namespace}}
        ),
        "AIRFLOW_CONN_PROMETHEUS_DEFAULT": json.dumps(
            {"conn_type": "http", "host": "127.0.0.1", "port": ports["prometheus"], "schema": "http"}
        ),
    }
    return "".join(f"{key}={_shell_quote(value)}\n" for key, value in values.items())


def _fail_up(state_dir: Path, message: str) -> int:
    stop_process_group(state_dir, grace_seconds=3.0)
    err(message)
    for name in (SUPERVISOR_LOG, PROMETHEUS_LOG):
        print(f"--- last lines of {state_dir / name}:\n{log_tail(state_dir / name)}", file=sys.stderr)
    return EXIT_UNHEALTHY


def _load_world(args: argparse.Namespace, config_path: str | None) -> WorldConfig | int:
    """The world to start, or the exit code when the arguments or the machine cannot give it."""
    try:
        world = load_config(config_path)
    except SandboxInputError as exc:
        err(f"bad config {args.config or '(default)'}: {exc}")
        return EXIT_USAGE
    if args.crd_dir and not (Path(args.crd_dir) / "virtualservices.crd.yaml").is_file():
        err(f"--crd-dir={args.crd_dir!r}: no virtualservices.crd.yaml there (from $SANDBOX_CRDS or the flag)")
        return EXIT_USAGE
    if prometheus.find_binary() is None:
        err("the `prometheus` binary is not on PATH; install the Debian package `prometheus` (make setup)")
        return EXIT_UNHEALTHY
    return world


def _already_up(state_dir: Path) -> bool:
    """True when a healthy sandbox runs in `state_dir`; a stale one there is stopped."""
    state = read_state(state_dir)
    if state is None:
        return False
    health = Health()
    if state.get("urls"):
        health = check_health(state["urls"], state.get("pids", {}).get("supervisor"), state.get("api_ca"))
    if health.ok:
        print(f"sandbox already up in {state_dir} (API {state['urls']['api']}); nothing to do")
        return True
    print(f"sandbox: found a stale sandbox in {state_dir} ({health.failing() or 'starting'}); stopping it")
    stop_process_group(state_dir)
    return False


def _supervisor_command(args: argparse.Namespace, state_dir: Path, config_path: str | None) -> list[str] | int:
    """`python -m sandbox.supervisor ...` for these arguments, or the exit code when the real
    kube-apiserver cannot be started here."""
    command = [sys.executable, "-m", "sandbox.supervisor", "--state-dir", str(state_dir)]
    if config_path:
        command += ["--config", config_path]
    if args.crd_dir:
        command += ["--crd-dir", str(Path(args.crd_dir).resolve())]
    if not args.real_apiserver:
        return command
    if not args.crd_dir and (ISTIO_CRDS_DIR / "virtualservices.crd.yaml").is_file():
        command += ["--crd-dir", str(ISTIO_CRDS_DIR)]
    elif not args.crd_dir:
        err(f"--real-apiserver needs Istio's CRDs: give --crd-dir, set $SANDBOX_CRDS, or run "
            f"`make setup` (it writes them to {ISTIO_CRDS_DIR})")
        return EXIT_USAGE
    try:
        find_binaries()
    except KubeEnvError as exc:
        err(str(exc))
        return EXIT_UNHEALTHY
    return [*command, "--real-apiserver"]


def _spawn_supervisor(state_dir: Path, command: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    """(the supervisor, when it started), recorded in state.json at once so that `down` can stop
    it even if `up` is interrupted."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PROJECT_ROOT), str(PROJECT_ROOT / "plugins"), env.get("PYTHONPATH")) if p
    )
    with (state_dir / SUPERVISOR_LOG).open("ab") as log:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=state_dir,
            start_new_session=True,  # its own process group: `down` stops it and Prometheus together
        )
    started_at = datetime.now(UTC).isoformat()
    write_json_atomic(
        state_dir / STATE_FILE,
        {
            "pgid": proc.pid,
            "pids": {"supervisor": proc.pid},
            "starttimes": {str(proc.pid): process_starttime(proc.pid)},
            "started_at": started_at,
            "phase": "starting",
        },
    )
    return proc, started_at


def _wait_ready(
    state_dir: Path, proc: subprocess.Popen[bytes], timeout: float
) -> tuple[dict[str, Any] | None, str]:
    """(the supervisor's runtime file, "") once every part is healthy, else (None, why not)."""
    deadline = time.monotonic() + timeout
    last = "the supervisor has not reported its ports yet"
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            return None, f"the supervisor exited with code {code} before the sandbox was ready"
        try:
            runtime = json.loads((state_dir / RUNTIME_FILE).read_text())
        except (OSError, ValueError):
            runtime = None
        if runtime is not None:
            health = check_health(runtime["urls"], api_ca=runtime.get("api_ca"))
            if health.ok:
                return runtime, ""
            last = health.failing()
        time.sleep(0.2)
    return None, f"not ready after {timeout:.0f}s: {last}"


def _record_up(state_dir: Path, runtime: dict[str, Any], namespace: str, started_at: str) -> None:
    """The kubeconfig, env file and final state.json of a sandbox that is ready."""
    kube_api = runtime.get("kube_api", "sandbox")
    if kube_api == "sandbox":  # on a real kube-apiserver the supervisor wrote both kubeconfigs
        (state_dir / "kubeconfig").write_text(kubeconfig_yaml(runtime["urls"]["api"], namespace=namespace))
    (state_dir / "env").write_text(env_lines(state_dir, runtime["urls"], runtime["ports"], namespace, kube_api))
    write_json_atomic(
        state_dir / STATE_FILE,
        {
            "pgid": runtime["pgid"],
            "pids": {"supervisor": runtime["supervisor_pid"], "prometheus": runtime["prometheus_pid"]},
            "starttimes": runtime["starttimes"],
            "ports": runtime["ports"],
            "urls": runtime["urls"],
            "config": runtime["config"],
            "kube_api": kube_api,
            "api_ca": runtime.get("api_ca"),
            "started_at": started_at,
            "ready_at": datetime.now(UTC).isoformat(),
            "phase": "up",
            "state_dir": str(state_dir),
        },
    )


def cmd_up(args: argparse.Namespace) -> int:
    started = time.monotonic()
    state_dir = Path(args.state_dir).resolve()
    config_path = str(Path(args.config).resolve()) if args.config else None
    world = _load_world(args, config_path)
    if isinstance(world, int):
        return world
    if _already_up(state_dir):
        return 0
    state_dir.mkdir(parents=True, exist_ok=True)
    for name in (RUNTIME_FILE, "kubeconfig", "env"):
        (state_dir / name).unlink(missing_ok=True)
    command = _supervisor_command(args, state_dir, config_path)
    if isinstance(command, int):
        return command
    proc, started_at = _spawn_supervisor(state_dir, command)
    try:
        runtime, failure = _wait_ready(state_dir, proc, args.timeout)
    except KeyboardInterrupt:
        return _fail_up(state_dir, "interrupted; stopped what was started")
    if runtime is None:
        return _fail_up(state_dir, failure)
    _record_up(state_dir, runtime, world.services[0].namespace, started_at)
    took = time.monotonic() - started
    print(f"sandbox up in {state_dir} ({took:.1f}s)")
    print(f"  Kubernetes API  {runtime['urls']['api']}")
    print(f"  generator       {runtime['urls']['generator']}  (/metrics, /control/state)")
    print(f"  Prometheus      {runtime['urls']['prometheus']}")
    print(f"  kubeconfig      {state_dir / 'kubeconfig'}")
    print(f"  environment     source {state_dir / 'env'}")
    return 0
