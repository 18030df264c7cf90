"""Human-readable change reports for task logs: YAML diffs and one-line route summaries."""

from __future__ import annotations

import copy
import difflib
from typing import Any

import yaml

# Server-maintained metadata that changes on every write and says nothing about routing.
VOLATILE_METADATA: tuple[str, ...] = (
    "resourceVersion",
    "generation",
    "managedFields",
    "creationTimestamp",
    "uid",
)


def strip_volatile(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """A copy without server-maintained metadata fields."""
    if obj is None:
        return None
    out = copy.deepcopy(obj)
    meta = out.get("metadata")
    if isinstance(meta, dict):
        for key in VOLATILE_METADATA:
            meta.pop(key, None)
    return out


def _dump(obj: dict[str, Any] | None) -> list[str]:
    if obj is None:
        return []
    text = yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000)
    return text.splitlines(keepends=True)


def yaml_diff(before: dict[str, Any] | None, after: dict[str, Any] | None, name: str) -> str:
    """Unified diff of the two objects as YAML; empty string when they are equal.

    `None` stands for "does not exist" (creation or deletion). Volatile metadata is ignored,
    so a write that only bumped resourceVersion shows no diff.
    """
    old, new = strip_volatile(before), strip_volatile(after)
    if old == new:
        return ""
    lines = difflib.unified_diff(
        _dump(old),
        _dump(new),
        fromfile=f"{name} (before)" if before is not None else "/dev/null",
        tofile=f"{name} (after)" if after is not None else "/dev/null",
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def _string_match(value: Any) -> str:
    if isinstance(value, dict):
        for kind, symbol in (("exact", "="), ("prefix", "^="), ("regex", "~")):
            if kind in value:
                return f"{symbol}{value[kind]!r}"
        return " present"
    return f"={value!r}"


def _match_summary(match: Any) -> str:
    if not isinstance(match, dict) or not match:
        return "*"
    parts: list[str] = []
    for key in ("uri", "scheme", "method", "authority"):
        if key in match:
            parts.append(f"{key}{_string_match(match[key])}")
    for key, label in (("headers", "header"), ("withoutHeaders", "!header"), ("queryParams", "query")):
        for name, value in (match.get(key) or {}).items():
            parts.append(f"{label}[{name}]{_string_match(value)}")
    for key in ("port", "sourceNamespace", "gateways", "sourceLabels"):
        if key in match:
            parts.append(f"{key}={match[key]}")
    return " & ".join(parts) if parts else "*"


def _destinations_summary(route: dict[str, Any]) -> str:
    entries = [e for e in route.get("route") or [] if isinstance(e, dict)]
    if not entries:
        for key in ("redirect", "directResponse", "delegate"):
            if key in route:
                return key
        return "(no destinations)"
    weights = [e.get("weight") or 0 for e in entries]
    as_percent = sum(weights) == 100  # Istio weights are relative; say % only when they are
    parts = []
    for entry in entries:
        dest = entry.get("destination") or {}
        target = str(dest.get("host"))
        if dest.get("subset"):
            target += f"/{dest['subset']}"
        if isinstance(dest.get("port"), dict) and "number" in dest["port"]:
            target += f":{dest['port']['number']}"
        weight = entry.get("weight")
        if len(entries) == 1:
            parts.append(target)
        else:
            parts.append(f"{target} {weight or 0}%" if as_percent else f"{target} weight={weight or 0}")
    return ", ".join(parts)


def summarize_routes(vs: dict[str, Any]) -> str:
    """One line per http route: index, name, match, destinations with weights (for logs)."""
    routes = ((vs.get("spec") or {}).get("http")) or []
    lines = []
    for i, route in enumerate(routes):
        if not isinstance(route, dict):
            lines.append(f"http[{i}] (not an object)")
            continue
        matches = route.get("match") or []
        match_text = " | ".join(_match_summary(m) for m in matches) if matches else "*"
        extras = [key for key in ("fault", "retries", "timeout", "mirror", "rewrite") if key in route]
        extra_text = f" [{', '.join(extras)}]" if extras else ""
        lines.append(
            f"http[{i}] {route.get('name') or '-'}: match {match_text} "
            f"-> {_destinations_summary(route)}{extra_text}"
        )
    return "\n".join(lines) if lines else "(no http routes)"
