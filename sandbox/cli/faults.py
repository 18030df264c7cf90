"""`fault`: inject faults at run time (API write errors, Prometheus down or erroring, a
concurrent writer, traffic at zero) and describe the faults that are on."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from sandbox.cli.common import EXIT_UNHEALTHY, EXIT_USAGE, STATE_FILE, call, err, running_state
from sandbox.errors import SandboxInputError
from sandbox.procs import write_json_atomic

# CLI names of the API server's fault kinds (sandbox.apiserver.Faults.KINDS).
API_FAULT_KINDS = {"500": "error500", "timeout": "timeout", "409": "conflict", "403": "forbidden"}


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


def _send_fault(args: argparse.Namespace, state: dict[str, Any]) -> tuple[int, Any]:
    """(status, answer) of the change `args` asks for; after an API fault, every fault's state.
    Raises OSError when the sandbox cannot be reached."""
    control = f"{state['urls']['generator']}/control/faults"
    if args.target == "api":
        if args.kind == "off":
            status, answer = call("DELETE", f"{state['urls']['api']}/sandbox/faults")
        else:
            payload: dict[str, Any] = {"kind": API_FAULT_KINDS[args.kind], "count": args.count or 1,
                                       "after": args.after or 0, "append": args.append}
            if args.seconds is not None:
                payload["timeout_seconds"] = args.seconds
            status, answer = call("POST", f"{state['urls']['api']}/sandbox/faults", payload)
        return call("GET", control) if status == 200 else (status, answer)
    if args.target == "status":
        return call("GET", control)
    if args.target == "clear":
        return call("POST", control, {"target": "all", "action": "clear"})
    payload = {"target": args.target, "action": args.action}
    if args.target == "writer" and args.action == "start":
        extra = {"service": args.service, "namespace": args.namespace, "interval_seconds": args.interval}
        payload.update({k: v for k, v in extra.items() if v is not None})
    return call("POST", control, payload)


def _refused(status: int, answer: Any) -> int:
    """The exit code for an answer other than 200, said on stderr."""
    if status == 400 and isinstance(answer, dict) and answer.get("field"):
        flag = {"service": "--service", "namespace": "--namespace", "interval_seconds": "--interval"}.get(
            answer["field"], answer["field"])
        err(f"{flag}={answer.get('value')!r}: {answer.get('problem')}; nothing changed")
        return EXIT_USAGE
    message = answer.get("error") or answer.get("message") if isinstance(answer, dict) else answer
    err(f"the sandbox refused (HTTP {status}): {message}")
    return EXIT_USAGE if status == 400 else EXIT_UNHEALTHY


def cmd_fault(args: argparse.Namespace) -> int:
    try:
        _check_fault_args(args)
    except SandboxInputError as exc:
        err(f"{exc}; nothing changed")
        return EXIT_USAGE
    state_dir = Path(args.state_dir).resolve()
    state = running_state(state_dir)
    if state is None:
        return EXIT_UNHEALTHY
    if args.target == "api" and state.get("kube_api", "sandbox") != "sandbox":
        err("API write faults are the sandbox API server's own; this sandbox runs a real kube-apiserver "
            "(start it without --real-apiserver to inject them); nothing changed")
        return EXIT_USAGE
    try:
        status, answer = _send_fault(args, state)
    except OSError as exc:
        err(f"cannot reach the sandbox in {state_dir}: {exc}")
        return EXIT_UNHEALTHY
    if status != 200:
        return _refused(status, answer)
    _record_prometheus(state_dir, state, answer["prometheus"])
    if getattr(args, "json", False):
        print(json.dumps(answer, indent=2))
    else:
        print(f"sandbox faults in {state_dir}:")
        print("\n".join(describe_faults(answer)))
    return 0
