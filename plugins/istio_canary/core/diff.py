"""Human-readable change reports for task logs: YAML diffs of the objects a release writes."""

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
