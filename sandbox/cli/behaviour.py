"""`set`: change a service's or version's behaviour while the sandbox runs."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from sandbox.cli.common import EXIT_UNHEALTHY, EXIT_USAGE, call, err, running_state
from sandbox.errors import SandboxInputError

SETTABLE_FIELDS = (
    "error_rate",
    "latency_ms_p50",
    "latency_ms_p99",
    "rps",
    "header_fraction",
    "cookie_fraction",
    "clients",
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
    if "clients" in values and not 0 <= values["clients"] <= 100_000:
        raise SandboxInputError("--clients", values["clients"], "must be in [0, 100000]")
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
    values = {name: getattr(args, name) for name in SETTABLE_FIELDS if getattr(args, name) is not None}
    if not values:
        err(f"nothing to change: give at least one of {', '.join(_flag(n) for n in SETTABLE_FIELDS)}")
        return EXIT_USAGE
    try:
        _check_set_args(values)
    except SandboxInputError as exc:
        err(f"{exc}; nothing changed")
        return EXIT_USAGE
    state = running_state(Path(args.state_dir).resolve())
    if state is None:
        return EXIT_UNHEALTHY
    payload: dict[str, Any] = {"service": args.service, "namespace": args.namespace, "version": args.version}
    payload = {k: v for k, v in {**payload, **values}.items() if v is not None}
    try:
        status, result = call("POST", f"{state['urls']['generator']}/control/behaviour", payload, timeout=5)
    except OSError as exc:
        err(f"cannot reach the sandbox control endpoint: {exc}")
        return EXIT_UNHEALTHY
    if status == 400 and isinstance(result, dict) and result.get("field"):
        problem = str(result.get("problem"))
        for name in (*SETTABLE_FIELDS, "version", "service", "namespace"):
            problem = problem.replace(name, _flag(name))
        value = result.get("value")
        shown = _flag(result["field"]) + ("" if value is None else f"={value!r}")
        err(f"{shown}: {problem}; nothing changed")
        return EXIT_USAGE
    if status != 200:
        err(f"the sandbox refused the change (HTTP {status}): {(result or {}).get('error')}")
        return EXIT_UNHEALTHY
    print(f"{result['namespace']}/{result['service']}: {json.dumps({k: v for k, v in result.items()})}")
    return 0

