"""`status`: health, ports, uptime, behaviour per version, generator CPU and any fault that is on."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandbox.cli.common import EXIT_UNHEALTHY, call, read_state
from sandbox.cli.faults import describe_faults
from sandbox.cli.health import Health, check_health


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _active_faults(state: dict[str, Any]) -> dict[str, Any] | None:
    """Every fault's state if any is on (so `status` never hides one), else None."""
    try:
        status, faults = call("GET", f"{state['urls']['generator']}/control/faults")
    except OSError:
        return None
    if status != 200 or not isinstance(faults, dict):
        return None
    active = (faults["api"]["kind"] is not None or faults["prometheus"]["mode"] != "up"
              or faults["writer"].get("running") or faults["traffic"]["zero"])
    return faults if active else None


def _status_json(state_dir: Path, state: dict[str, Any], health: Health, uptime: float,
                 faults: dict[str, Any] | None) -> str:
    gen = health.generator_state or {}
    return json.dumps(
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


def _generator_lines(gen: dict[str, Any]) -> list[str]:
    """The generator's CPU use, then each service's traffic and each version's behaviour."""
    lines = []
    cpu = gen.get("cpu")
    if cpu:
        lines.append(
            f"  generator CPU: {cpu['generator_percent_recent']:.1f}% of a core (last 10 s), "
            f"{cpu['generator_percent_average']:.1f}% average; whole supervisor "
            f"{cpu['process_percent_recent']:.1f}%"
        )
    for svc in gen.get("services") or []:
        lines.append(
            f"  {svc['namespace']}/{svc['name']}: rps {svc['rps']:g}, header_fraction "
            f"{svc['header_fraction']:g}, cookie_fraction {svc['cookie_fraction']:g}, "
            f"{svc['totals']['requests']} requests so far"
        )
        served = svc["totals"]["by_version"]
        for version, b in svc["versions"].items():
            seen = served.get(version, {"requests": 0, "errors": 0})
            lines.append(
                f"    {version}: error_rate {b['error_rate']:g}, latency p50 {b['latency_ms_p50']:g} ms "
                f"p99 {b['latency_ms_p99']:g} ms; served {seen['requests']} ({seen['errors']} 5xx)"
            )
        if "unknown" in served:
            lines.append(f"    no pod (404/503 from the proxy): {served['unknown']['requests']}")
    return lines


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
    faults = _active_faults(state)
    uptime = (datetime.now(UTC) - datetime.fromisoformat(state["started_at"])).total_seconds()
    if args.json:
        print(_status_json(state_dir, state, health, uptime, faults))
        return 0 if health.ok else EXIT_UNHEALTHY
    print(f"sandbox in {state_dir}: {'healthy' if health.ok else 'UNHEALTHY'}, up {_duration(uptime)}")
    for name, (ok, detail) in health.parts.items():
        print(f"  {name:<11} {'ok' if ok else 'FAIL':<5} {detail}")
    print(f"  pgid {state['pgid']}, pids {state['pids']}, ports {state['ports']}")
    for line in _generator_lines(health.generator_state or {}):
        print(line)
    if faults is not None:
        print("  faults (`python -m sandbox fault clear` ends them):")
        print("\n".join(f"  {line}" for line in describe_faults(faults)))
    return 0 if health.ok else EXIT_UNHEALTHY
