"""`python -m sandbox up|down|status|set|fault`: start, stop, inspect and steer the local sandbox.

up      start the API stand-in, traffic generator and Prometheus in one background
        process group; return when all three answer (idempotent)
down    stop exactly what `up` started (idempotent)
status  health, ports, uptime, behaviour per version, generator CPU (exit 1 if unhealthy)
set     change a service's or version's behaviour while it runs (exit 2 on bad values)
fault   inject faults at run time: API write errors, Prometheus down or erroring, a
        concurrent writer, traffic at zero (`fault --help`; exit 2 on bad values)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandbox import prometheus
from sandbox.config import load_config
from sandbox.errors import SandboxInputError
from sandbox.kubeconfig import kubeconfig_yaml
from sandbox.kubeenv import ISTIO_CRDS_DIR, KubeEnvError, find_binaries
from sandbox.supervisor import (
    RUNTIME_FILE,
    group_members,
    log_tail,
    process_alive,
    process_starttime,
    write_json_atomic,
)

DEFAULT_STATE_DIR = ".sandbox"
STATE_FILE = "state.json"
SUPERVISOR_LOG = "supervisor.log"
PROMETHEUS_LOG = "prometheus.log"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXIT_UNHEALTHY = 1
EXIT_USAGE = 2


def _err(message: str) -> None:
    print(f"sandbox: {message}", file=sys.stderr)


# --- state and health -----------------------------------------------------------------------


def read_state(state_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def _http_get(url: str, timeout: float = 2.0, ca_file: str | None = None) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class Health:
    parts: dict[str, tuple[bool, str]] = field(default_factory=dict)
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
    try:
        status, body = _http_get(f"{urls['api']}/version", ca_file=api_ca)
        version = json.loads(body).get("gitVersion") if status == 200 else None
        health.parts["api"] = (status == 200, f"{urls['api']} ({version or f'HTTP {status}'})")
    except (OSError, ValueError) as exc:
        health.parts["api"] = (False, f"{urls['api']} unreachable: {exc}")
    try:
        status, _ = _http_get(f"{urls['generator']}/metrics")
        if status == 200:
            _, body = _http_get(f"{urls['generator']}/control/state")
            health.generator_state = json.loads(body)
        health.parts["generator"] = (status == 200, f"{urls['generator']} (/metrics HTTP {status})")
    except (OSError, ValueError) as exc:
        health.parts["generator"] = (False, f"{urls['generator']} unreachable: {exc}")
    prom = urls["prometheus"]
    if not prometheus.is_ready(prom):
        health.parts["prometheus"] = (False, f"{prom} not ready")
    elif not prometheus.has_scraped(prom, urls["generator"].removeprefix("http://")):
        health.parts["prometheus"] = (False, f"{prom} ready, but has not scraped the generator yet (up != 1)")
    else:
        health.parts["prometheus"] = (True, f"{prom} (scraping the generator)")
    return health


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


def stop_sandbox(state_dir: Path, grace_seconds: float = 5.0) -> str:
    """SIGTERM the recorded process group, SIGKILL after `grace_seconds`; remove the state."""
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
    stop_sandbox(state_dir, grace_seconds=3.0)
    _err(message)
    for name in (SUPERVISOR_LOG, PROMETHEUS_LOG):
        print(f"--- last lines of {state_dir / name}:\n{log_tail(state_dir / name)}", file=sys.stderr)
    return EXIT_UNHEALTHY


def cmd_up(args: argparse.Namespace) -> int:
    started = time.monotonic()
    state_dir = Path(args.state_dir).resolve()
    config_path = str(Path(args.config).resolve()) if args.config else None
    try:
        world = load_config(config_path)
    except SandboxInputError as exc:
        _err(f"bad config {args.config or '(default)'}: {exc}")
        return EXIT_USAGE
    if args.crd_dir and not (Path(args.crd_dir) / "virtualservices.crd.yaml").is_file():
        _err(
            f"--crd-dir={args.crd_dir!r}: no virtualservices.crd.yaml there (from $SANDBOX_CRDS or the flag)"
        )
        return EXIT_USAGE
    if prometheus.find_binary() is None:
        _err("the `prometheus` binary is not on PATH; install the Debian package `prometheus` (make setup)")
        return EXIT_UNHEALTHY

    state = read_state(state_dir)
    if state is not None:
        health = Health()
        if state.get("urls"):
            health = check_health(state["urls"], state.get("pids", {}).get("supervisor"), state.get("api_ca"))
        if health.ok:
            print(f"sandbox already up in {state_dir} (API {state['urls']['api']}); nothing to do")
            return 0
        print(
            f"sandbox: found a stale sandbox in {state_dir} ({health.failing() or 'starting'}); stopping it"
        )
        stop_sandbox(state_dir)

    state_dir.mkdir(parents=True, exist_ok=True)
    for name in (RUNTIME_FILE, "kubeconfig", "env"):
        (state_dir / name).unlink(missing_ok=True)
    command = [sys.executable, "-m", "sandbox.supervisor", "--state-dir", str(state_dir)]
    if config_path:
        command += ["--config", config_path]
    if args.crd_dir:
        command += ["--crd-dir", str(Path(args.crd_dir).resolve())]
    if args.real_apiserver:
        if not args.crd_dir and (ISTIO_CRDS_DIR / "virtualservices.crd.yaml").is_file():
            command += ["--crd-dir", str(ISTIO_CRDS_DIR)]
        elif not args.crd_dir:
            _err(f"--real-apiserver needs Istio's CRDs: give --crd-dir, set $SANDBOX_CRDS, or run "
                 f"`make setup` (it writes them to {ISTIO_CRDS_DIR})")
            return EXIT_USAGE
        try:
            find_binaries()
        except KubeEnvError as exc:
            _err(str(exc))
            return EXIT_UNHEALTHY
        command.append("--real-apiserver")
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
    # Recorded at once, so `down` can stop it even if this command is interrupted.
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
    try:
        runtime, failure = _wait_ready(state_dir, proc, args.timeout)
    except KeyboardInterrupt:
        return _fail_up(state_dir, "interrupted; stopped what was started")
    if runtime is None:
        return _fail_up(state_dir, failure)

    namespace = world.services[0].namespace
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
    took = time.monotonic() - started
    print(f"sandbox up in {state_dir} ({took:.1f}s)")
    print(f"  Kubernetes API  {runtime['urls']['api']}")
    print(f"  generator       {runtime['urls']['generator']}  (/metrics, /control/state)")
    print(f"  Prometheus      {runtime['urls']['prometheus']}")
    print(f"  kubeconfig      {state_dir / 'kubeconfig'}")
    print(f"  environment     source {state_dir / 'env'}")
    return 0


def _wait_ready(
    state_dir: Path, proc: subprocess.Popen[bytes], timeout: float
) -> tuple[dict[str, Any] | None, str]:
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


# --- down / status --------------------------------------------------------------------------


def cmd_down(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir).resolve()
    print(f"sandbox in {state_dir}: {stop_sandbox(state_dir)}")
    return 0


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def cmd_status(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir).resolve()
    state = read_state(state_dir)
    if state is None or not state.get("urls"):
        if args.json:
            print(json.dumps({"healthy": False, "running": False, "state_dir": str(state_dir)}))
        else:
            print(f"sandbox in {state_dir}: not running")
        return EXIT_UNHEALTHY
    health = check_health(state["urls"], state["pids"].get("supervisor"), state.get("api_ca"))
    gen = health.generator_state or {}
    faults = _active_faults(state)
    started = datetime.fromisoformat(state["started_at"])
    uptime = (datetime.now(UTC) - started).total_seconds()
    if args.json:
        print(
            json.dumps(
                {
                    "healthy": health.ok,
                    "running": True,
                    "state_dir": str(state_dir),
                    "uptime_s": round(uptime, 1),
                    "parts": {k: {"ok": ok, "detail": d} for k, (ok, d) in health.parts.items()},
                    "pids": state["pids"],
                    "pgid": state["pgid"],
                    "ports": state["ports"],
                    "urls": state["urls"],
                    "cpu": gen.get("cpu"),
                    "services": gen.get("services"),
                    "faults": faults,
                },
                indent=2,
            )
        )
        return 0 if health.ok else EXIT_UNHEALTHY
    print(f"sandbox in {state_dir}: {'healthy' if health.ok else 'UNHEALTHY'}, up {_duration(uptime)}")
    for name, (ok, detail) in health.parts.items():
        print(f"  {name:<11} {'ok' if ok else 'FAIL':<5} {detail}")
    print(f"  pgid {state['pgid']}, pids {state['pids']}, ports {state['ports']}")
    cpu = gen.get("cpu")
    if cpu:
        print(
            f"  generator CPU: {cpu['generator_percent_recent']:.1f}% of a core (last 10 s), "
            f"{cpu['generator_percent_average']:.1f}% average; whole supervisor "
            f"{cpu['process_percent_recent']:.1f}%"
        )
    for svc in gen.get("services") or []:
        print(
            f"  {svc['namespace']}/{svc['name']}: rps {svc['rps']:g}, header_fraction "
            f"{svc['header_fraction']:g}, cookie_fraction {svc['cookie_fraction']:g}, "
            f"{svc['totals']['requests']} requests so far"
        )
        served = svc["totals"]["by_version"]
        for version, b in svc["versions"].items():
            seen = served.get(version, {"requests": 0, "errors": 0})
            print(
                f"    {version}: error_rate {b['error_rate']:g}, latency p50 {b['latency_ms_p50']:g} ms "
                f"p99 {b['latency_ms_p99']:g} ms; served {seen['requests']} ({seen['errors']} 5xx)"
            )
        if "unknown" in served:
            print(f"    no pod (404/503 from the proxy): {served['unknown']['requests']}")
    if faults is not None:
        print("  faults (`python -m sandbox fault clear` ends them):")
        print("\n".join(f"  {line}" for line in describe_faults(faults)))
    return 0 if health.ok else EXIT_UNHEALTHY


def _active_faults(state: dict[str, Any]) -> dict[str, Any] | None:
    """Every fault's state if any is on (so `status` never hides one), else None."""
    try:
        status, faults = _call("GET", f"{state['urls']['generator']}/control/faults")
    except OSError:
        return None
    if status != 200 or not isinstance(faults, dict):
        return None
    active = (faults["api"]["kind"] is not None or faults["prometheus"]["mode"] != "up"
              or faults["writer"].get("running") or faults["traffic"]["zero"])
    return faults if active else None


# --- set ------------------------------------------------------------------------------------

_SET_FIELDS = (
    "error_rate",
    "latency_ms_p50",
    "latency_ms_p99",
    "rps",
    "header_fraction",
    "cookie_fraction",
)


def _flag(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _check_set_args(values: dict[str, float]) -> None:
    """Range checks that need no sandbox; raise SandboxInputError naming the flag."""
    for name, value in values.items():
        if not math.isfinite(value):
            raise SandboxInputError(_flag(name), value, "must be a finite number")
    for name in ("error_rate", "header_fraction", "cookie_fraction"):
        if name in values and not 0.0 <= values[name] <= 1.0:
            raise SandboxInputError(_flag(name), values[name], "must be in [0, 1]")
    if "rps" in values and values["rps"] < 0:
        raise SandboxInputError("--rps", values["rps"], "must be at least 0")
    for name in ("latency_ms_p50", "latency_ms_p99"):
        if name in values and values[name] <= 0:
            raise SandboxInputError(_flag(name), values[name], "must be greater than 0")
    p50, p99 = values.get("latency_ms_p50"), values.get("latency_ms_p99")
    if p50 is not None and p99 is not None and p99 < p50:
        raise SandboxInputError(
            "--latency-ms-p99",
            values["latency_ms_p99"],
            f"must be at least --latency-ms-p50 ({values['latency_ms_p50']:g})",
        )


def cmd_set(args: argparse.Namespace) -> int:
    values = {name: getattr(args, name) for name in _SET_FIELDS if getattr(args, name) is not None}
    if not values:
        _err(f"nothing to change: give at least one of {', '.join(_flag(n) for n in _SET_FIELDS)}")
        return EXIT_USAGE
    try:
        _check_set_args(values)
    except SandboxInputError as exc:
        _err(f"{exc}; nothing changed")
        return EXIT_USAGE
    state = _running_state(Path(args.state_dir).resolve())
    if state is None:
        return EXIT_UNHEALTHY
    payload: dict[str, Any] = {"service": args.service, "namespace": args.namespace, "version": args.version}
    payload = {k: v for k, v in {**payload, **values}.items() if v is not None}
    try:
        status, result = _call("POST", f"{state['urls']['generator']}/control/behaviour", payload, timeout=5)
    except OSError as exc:
        _err(f"cannot reach the sandbox control endpoint: {exc}")
        return EXIT_UNHEALTHY
    if status == 400 and isinstance(result, dict) and result.get("field"):
        problem = str(result.get("problem"))
        for name in (*_SET_FIELDS, "version", "service", "namespace"):
            problem = problem.replace(name, _flag(name))
        value = result.get("value")
        shown = _flag(result["field"]) + ("" if value is None else f"={value!r}")
        _err(f"{shown}: {problem}; nothing changed")
        return EXIT_USAGE
    if status != 200:
        _err(f"the sandbox refused the change (HTTP {status}): {(result or {}).get('error')}")
        return EXIT_UNHEALTHY
    print(f"{result['namespace']}/{result['service']}: {json.dumps({k: v for k, v in result.items()})}")
    return 0


# --- fault ----------------------------------------------------------------------------------

# CLI names of the API server's fault kinds (sandbox.apiserver.Faults.KINDS).
API_FAULT_KINDS = {"500": "error500", "timeout": "timeout", "409": "conflict", "403": "forbidden"}
FAULT_REQUEST_TIMEOUT = 120.0  # a Prometheus restart waits for readiness and a fresh scrape


def _running_state(state_dir: Path) -> dict[str, Any] | None:
    state = read_state(state_dir)
    if state is None or not state.get("urls"):
        _err(f"no sandbox running in {state_dir} (run `python -m sandbox up` first)")
        return None
    return state


def _call(method: str, url: str, payload: dict[str, Any] | None = None,
          timeout: float = FAULT_REQUEST_TIMEOUT) -> tuple[int, Any]:
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


def _check_fault_args(args: argparse.Namespace) -> None:
    """Range checks that need no sandbox; raise SandboxInputError naming the flag."""
    if getattr(args, "count", None) is not None and args.count < 1:
        raise SandboxInputError("--count", args.count, "must be at least 1")
    if getattr(args, "after", None) is not None and args.after < 0:
        raise SandboxInputError("--after", args.after, "must be at least 0")
    seconds = getattr(args, "seconds", None)
    if seconds is not None and not (math.isfinite(seconds) and 0 <= seconds <= 3600):
        raise SandboxInputError("--seconds", seconds, "must be a number of seconds in [0, 3600]")
    interval = getattr(args, "interval", None)
    if interval is not None and not (math.isfinite(interval) and 0.05 <= interval <= 3600):
        raise SandboxInputError("--interval", interval, "must be a number of seconds in [0.05, 3600]")


def _describe_api_faults(api: dict[str, Any]) -> str:
    queue = [s for s in api.get("queue") or [] if s["count"]]
    if not queue:
        return f"none armed ({api.get('injected', 0)} injected so far)"
    names = {kind: name for name, kind in API_FAULT_KINDS.items()}
    parts = []
    for segment in queue:
        text = f"{names.get(segment['kind'], segment['kind'])} x{segment['count']}"
        if segment["after"]:
            text = f"after {segment['after']} more writes, {text}"
        if segment["kind"] == "timeout":
            text += f" ({segment['timeout_seconds']:g}s each)"
        parts.append(text)
    return "next writes: " + ", then ".join(parts) + f" ({api.get('injected', 0)} injected so far)"


def describe_faults(faults: dict[str, Any]) -> list[str]:
    """One line per fault area, for `fault status` and after every change."""
    prom = faults["prometheus"]
    prom_text = {
        "up": "up",
        "down": "DOWN (stopped; its port refuses connections)",
        "errors": "ERRORS (answers, but every aggregating or range query fails with HTTP 422)",
    }[prom["mode"]]
    if prom.get("pid"):
        prom_text += f", pid {prom['pid']}"
    writer = faults["writer"]
    if writer.get("running"):
        writer_text = (f"RUNNING on {writer['namespace']}/{writer['name']} every {writer['interval_seconds']:g}s: "
                       f"{writer['edit_count']} edits, {len(writer['lost'])} lost")
    elif writer.get("edit_count"):
        writer_text = f"stopped after {writer['edit_count']} edits, {len(writer['lost'])} lost"
    else:
        writer_text = "off"
    return [
        f"  api         {_describe_api_faults(faults['api'])}",
        f"  prometheus  {prom_text}",
        f"  writer      {writer_text}",
        f"  traffic     {'ZERO (no requests)' if faults['traffic']['zero'] else 'normal'}",
    ]


def _record_prometheus(state_dir: Path, state: dict[str, Any], prom: dict[str, Any]) -> None:
    """state.json names the live Prometheus (a restart gives it a new pid) for `status`."""
    if prom.get("pid") and state.get("pids", {}).get("prometheus") != prom["pid"]:
        state["pids"]["prometheus"] = prom["pid"]
        state["starttimes"] = {**state.get("starttimes", {}), str(prom["pid"]): prom["starttime"]}
        write_json_atomic(state_dir / STATE_FILE, state)


def cmd_fault(args: argparse.Namespace) -> int:
    try:
        _check_fault_args(args)
    except SandboxInputError as exc:
        _err(f"{exc}; nothing changed")
        return EXIT_USAGE
    state_dir = Path(args.state_dir).resolve()
    state = _running_state(state_dir)
    if state is None:
        return EXIT_UNHEALTHY
    control = f"{state['urls']['generator']}/control/faults"
    if args.target == "api" and state.get("kube_api", "sandbox") != "sandbox":
        _err("API write faults are the sandbox API server's own; this sandbox runs a real kube-apiserver "
             "(start it without --real-apiserver to inject them); nothing changed")
        return EXIT_USAGE
    try:
        if args.target == "api":
            if args.kind == "off":
                status, answer = _call("DELETE", f"{state['urls']['api']}/sandbox/faults")
            else:
                payload: dict[str, Any] = {"kind": API_FAULT_KINDS[args.kind], "count": args.count or 1,
                                           "after": args.after or 0, "append": args.append}
                if args.seconds is not None:
                    payload["timeout_seconds"] = args.seconds
                status, answer = _call("POST", f"{state['urls']['api']}/sandbox/faults", payload)
        elif args.target == "status":
            status, answer = _call("GET", control)
        elif args.target == "clear":
            status, answer = _call("POST", control, {"target": "all", "action": "clear"})
        else:
            payload = {"target": args.target, "action": args.action}
            if args.target == "writer" and args.action == "start":
                extra = {"service": args.service, "namespace": args.namespace, "interval_seconds": args.interval}
                payload.update({k: v for k, v in extra.items() if v is not None})
            status, answer = _call("POST", control, payload)
        if status == 200 and args.target == "api":
            status, answer = _call("GET", control)
    except OSError as exc:
        _err(f"cannot reach the sandbox in {state_dir}: {exc}")
        return EXIT_UNHEALTHY
    if status == 400 and isinstance(answer, dict) and answer.get("field"):
        flag = {"service": "--service", "namespace": "--namespace", "interval_seconds": "--interval"}.get(
            answer["field"], answer["field"])
        _err(f"{flag}={answer.get('value')!r}: {answer.get('problem')}; nothing changed")
        return EXIT_USAGE
    if status != 200:
        message = answer.get("error") or answer.get("message") if isinstance(answer, dict) else answer
        _err(f"the sandbox refused (HTTP {status}): {message}")
        return EXIT_USAGE if status == 400 else EXIT_UNHEALTHY
    _record_prometheus(state_dir, state, answer["prometheus"])
    if getattr(args, "json", False):
        print(json.dumps(answer, indent=2))
    else:
        print(f"sandbox faults in {state_dir}:")
        print("\n".join(describe_faults(answer)))
    return 0


# --- argument parsing -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def with_state_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="default: .sandbox")
        return p

    up = with_state_dir(sub.add_parser("up", help="start the sandbox in the background"))
    up.add_argument("--config", help="world YAML (default: sandbox/default_world.yaml)")
    up.add_argument(
        "--crd-dir",
        default=os.environ.get("SANDBOX_CRDS") or None,
        help="folder with Istio's CRD YAML to validate writes with (default: $SANDBOX_CRDS, else built-in)",
    )
    up.add_argument("--real-apiserver", action="store_true",
                    help="a real etcd + kube-apiserver (built by make setup) instead of the sandbox's API server; "
                         "the pipeline's kubeconfig is then the istio-canary ServiceAccount's token")
    up.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for readiness")
    up.set_defaults(func=cmd_up)

    down = with_state_dir(sub.add_parser("down", help="stop what `up` started"))
    down.set_defaults(func=cmd_down)

    status = with_state_dir(sub.add_parser("status", help="health, ports, behaviour, CPU"))
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    set_ = with_state_dir(sub.add_parser("set", help="change behaviour while running"))
    set_.add_argument("--service", default=None, help="default: the only service, or `reviews`")
    set_.add_argument("--namespace", default=None)
    set_.add_argument("--version", default=None, help="the version whose error rate/latency to change")
    set_.add_argument("--error-rate", dest="error_rate", type=float)
    set_.add_argument("--latency-ms-p50", dest="latency_ms_p50", type=float)
    set_.add_argument("--latency-ms-p99", dest="latency_ms_p99", type=float)
    set_.add_argument("--rps", type=float, help="requests per second for the whole service")
    set_.add_argument("--header-fraction", dest="header_fraction", type=float)
    set_.add_argument("--cookie-fraction", dest="cookie_fraction", type=float)
    set_.set_defaults(func=cmd_set)
    _add_fault_parser(sub, with_state_dir)
    return parser


FAULT_HELP = """Switch faults on and off while the sandbox runs (each prints every fault's state):

  fault api 500|timeout|409|403 [--count N] [--after M] [--seconds S] [--append]
        the next N writes of Istio objects fail (after letting M through): 500, a 504 after
        S seconds (default 30, as kube-apiserver times a request out), 409 Conflict, 403;
        --append queues this after what is armed. `fault api off` disarms.
  fault prometheus down|errors|up
        down: the Prometheus process is stopped (its port refuses connections); errors: it is
        restarted with --query.max-samples=1, so every aggregating or range query fails with
        its real HTTP 422 error; up: restarted normally on the same port, data kept.
  fault writer start [--service S] [--namespace N] [--interval SECONDS] | stop
        another controller edits the service's VirtualService every second: one route of its
        own (`sandbox-writer`), one header added per edit; it records each edit and any edit
        it finds lost (`fault status --json`).
  fault traffic zero|restore
        the traffic generator sends no requests at all / as configured again.
  fault status [--json]   fault clear   (everything off, Prometheus up)
"""


def _add_fault_parser(sub: Any, with_state_dir: Any) -> None:
    fault = with_state_dir(sub.add_parser("fault", help="inject faults at run time", description=FAULT_HELP,
                                          formatter_class=argparse.RawDescriptionHelpFormatter))
    fault.set_defaults(func=cmd_fault)
    targets = fault.add_subparsers(dest="target", required=True)

    def leaf(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = targets.add_parser(name, help=help_text)
        # Also accepted after the target; SUPPRESS keeps the value given before it.
        parser.add_argument("--state-dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return parser

    api = leaf("api", "fail the next writes of Istio objects")
    api.add_argument("kind", choices=[*API_FAULT_KINDS, "off"])
    api.add_argument("--count", type=int, default=None, help="how many writes fail (default 1)")
    api.add_argument("--after", type=int, default=None, help="let this many writes through first")
    api.add_argument("--seconds", type=float, default=None, help="timeout: seconds before the 504")
    api.add_argument("--append", action="store_true", help="queue after the faults already armed")
    prom = leaf("prometheus", "stop Prometheus, make it answer errors, or bring it back")
    prom.add_argument("action", choices=["down", "errors", "up"])
    writer = leaf("writer", "a concurrent writer editing the VirtualService's other routes")
    writer.add_argument("action", choices=["start", "stop"])
    writer.add_argument("--service", default=None, help="default: the only service, or give it")
    writer.add_argument("--namespace", default=None)
    writer.add_argument("--interval", type=float, default=None, help="seconds between edits (default 1)")
    traffic = leaf("traffic", "stop all traffic, or restore it")
    traffic.add_argument("action", choices=["zero", "restore"])
    status = leaf("status", "every fault's state")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    leaf("clear", "every fault off, Prometheus up")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
