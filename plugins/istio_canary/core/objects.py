"""Reading Kubernetes objects held as dicts, as the API server returns them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def spec_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    """`spec` of an object, {} when absent or malformed."""
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def qualified_name(obj: Mapping[str, Any]) -> str:
    """`namespace/name` of an object, `?` for a missing part."""
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '?')}/{meta.get('name', '?')}"
