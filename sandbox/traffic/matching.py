"""Istio's request matching: StringMatch, HTTPMatchRequest and the first matching HTTP route.

Pure functions of a `Request` and the VirtualService's spec, evaluated as Envoy does.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import re2

from sandbox.traffic.request import Request


def applies_to_mesh(gateways: Any) -> bool:
    """Whether a rule with these `gateways` applies to sidecars: no gateways means "mesh";
    listing gateways without "mesh" makes a rule ingress-only."""
    return not gateways or "mesh" in gateways


def _compile_regex(pattern: str) -> Any:
    return _REGEX_CACHE.get(pattern) or _REGEX_CACHE.setdefault(pattern, _try_compile(pattern))


def _try_compile(pattern: str) -> Any:
    try:
        return re2.compile(pattern)
    except Exception:  # re2.error: a pattern Envoy would reject; it matches nothing
        return False


_REGEX_CACHE: dict[str, Any] = {}


def string_matches(spec: Any, value: str | None, ignore_case: bool = False) -> bool:
    """Istio StringMatch: exact | prefix | regex (RE2, whole value). An empty match means present."""
    if value is None:
        return False
    if not isinstance(spec, dict) or not spec:
        return True
    if ignore_case:
        value = value.lower()
    if "exact" in spec:
        expected = str(spec["exact"])
        return value == (expected.lower() if ignore_case else expected)
    if "prefix" in spec:
        prefix = str(spec["prefix"])
        return value.startswith(prefix.lower() if ignore_case else prefix)
    if "regex" in spec:
        compiled = _compile_regex(str(spec["regex"]))
        return bool(compiled) and compiled.fullmatch(value) is not None
    return True


def match_block_matches(block: Any, request: Request) -> bool:
    """One HTTPMatchRequest: every condition in it must hold."""
    if not isinstance(block, dict):
        return False
    if not applies_to_mesh(block.get("gateways")):
        return False
    headers = request.headers
    split = urlsplit(request.path)
    ignore_case = bool(block.get("ignoreUriCase"))
    if "uri" in block and not string_matches(block["uri"], split.path, ignore_case):
        return False
    if "scheme" in block and not string_matches(block["scheme"], request.scheme):
        return False
    if "method" in block and not string_matches(block["method"], request.method):
        return False
    if "authority" in block and not string_matches(block["authority"], f"{request.host}:{request.port}"):
        return False
    if "port" in block and block["port"] != request.port:
        return False
    for name, spec in (block.get("headers") or {}).items():
        if not string_matches(spec, headers.get(str(name).lower())):
            return False
    for name, spec in (block.get("withoutHeaders") or {}).items():
        if string_matches(spec, headers.get(str(name).lower())):
            return False
    if block.get("queryParams"):
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        for name, spec in block["queryParams"].items():
            if not string_matches(spec, params.get(name)):
                return False
    for key, value in (block.get("sourceLabels") or {}).items():
        if request.source_labels.get(key) != value:
            return False
    source_ns = request.source_namespace or request.namespace
    return not ("sourceNamespace" in block and block["sourceNamespace"] != source_ns)


def route_matches(route: dict[str, Any], request: Request) -> bool:
    """A route without `match` (or with an empty list) matches everything; else any block."""
    blocks = route.get("match")
    if not blocks:
        return True
    return any(match_block_matches(b, request) for b in blocks)


def select_http_route(request: Request, vs: dict[str, Any]) -> dict[str, Any] | None:
    """First HTTP route whose match holds, as Envoy evaluates them: in order."""
    for route in (vs.get("spec") or {}).get("http") or []:
        if isinstance(route, dict) and route_matches(route, request):
            return route
    return None
