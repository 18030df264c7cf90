"""Istio's semantic rules for the objects a release writes, checked before writing.

The CRD schema (structure, types) is checked by the API server; these are the rules Istio's
validating webhook and Envoy add on top, plus the cross-object rule the mesh needs at
runtime: a subset a route uses must exist in the host's DestinationRule, or Envoy answers
503 for that route. Errors carry the field path (`spec.http[1].route[0].destination.host`).

Where the brief and Istio differ, Istio wins and the difference is noted:
- a StringMatch may hold at most one of exact/prefix/regex; an empty one is accepted only
  under `headers`/`withoutHeaders`/`queryParams`, where Istio reads it as "present";
- subsets are checked for destinations whose host one of the given DestinationRules
  covers; for other hosts we cannot know the subsets, so nothing is claimed.
"""

from __future__ import annotations

import re
from typing import Any

from istio_canary.core.validation import ValidationError, re2_problem, require_dns1123_label

TLS_MODES = ("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL")
_INT32_MAX = 2**31 - 1
_STRING_MATCH_KINDS = ("exact", "prefix", "regex")
# Match fields holding one StringMatch / a map of them; maps accept {} meaning "present".
_SINGLE_STRING_MATCH_FIELDS = ("uri", "scheme", "method", "authority")
_MAP_STRING_MATCH_FIELDS = ("headers", "withoutHeaders", "queryParams")
_LOWER_HEADER = re.compile(r"^:?[a-z0-9!#$%&'*+\-.^_`|~]+$")


class IstioValidationError(ValueError):
    """An object Istio would reject (or route to nowhere). Lists every problem with its path."""

    def __init__(self, kind: str, name: str, problems: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.problems = problems
        super().__init__(f"{kind} {name} is not valid Istio config: " + "; ".join(problems))


def _name_of(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '?')}/{meta.get('name', '?')}"


def _canonical_host(host: str, namespace: str | None) -> str:
    """A Kubernetes service host as its FQDN; Istio resolves short names in the object's namespace."""
    parts = host.split(".")
    if host.endswith(".svc.cluster.local") and len(parts) == 5:
        return host
    if len(parts) == 3 and parts[2] == "svc":
        return f"{host}.cluster.local"
    if len(parts) == 2 and namespace is not None:
        return f"{host}.svc.cluster.local"
    if len(parts) == 1 and namespace is not None:
        return f"{host}.{namespace}.svc.cluster.local"
    return host


def _same_host(a: str, a_ns: str | None, b: str, b_ns: str | None) -> bool:
    return _canonical_host(a, a_ns) == _canonical_host(b, b_ns)


def _check_regex(path: str, value: Any, problems: list[str]) -> None:
    if not isinstance(value, str):
        problems.append(f"{path}: regex must be a string")
        return
    problem = re2_problem(value)
    if problem:
        problems.append(f"{path}: regex {value[:80]!r} {problem}")


def _check_string_match(path: str, match: Any, problems: list[str], *, empty_ok: bool) -> None:
    if not isinstance(match, dict):
        problems.append(f"{path}: must be a StringMatch object (exact, prefix or regex), got {match!r}")
        return
    kinds = [k for k in _STRING_MATCH_KINDS if k in match]
    if len(kinds) > 1:
        problems.append(f"{path}: exactly one of exact/prefix/regex allowed, found {', '.join(kinds)}")
    elif not kinds and not empty_ok:
        problems.append(f"{path}: one of exact/prefix/regex is required")
    if "regex" in match:
        _check_regex(f"{path}.regex", match["regex"], problems)


def _check_match_request(path: str, match: Any, problems: list[str]) -> None:
    if not isinstance(match, dict):
        problems.append(f"{path}: must be an HTTPMatchRequest object")
        return
    for field in _SINGLE_STRING_MATCH_FIELDS:
        if field in match:
            _check_string_match(f"{path}.{field}", match[field], problems, empty_ok=False)
    for field in _MAP_STRING_MATCH_FIELDS:
        if field not in match:
            continue
        entries = match[field]
        if not isinstance(entries, dict):
            problems.append(f"{path}.{field}: must be a map of name to StringMatch")
            continue
        for key, value in entries.items():
            if field != "queryParams" and not (isinstance(key, str) and _LOWER_HEADER.match(key)):
                problems.append(f"{path}.{field}.{key}: header names must be lower-case HTTP tokens")
            if value is None:
                problems.append(f"{path}.{field}.{key}: cannot be null")
                continue
            _check_string_match(f"{path}.{field}.{key}", value, problems, empty_ok=True)


class _SubsetIndex:
    """Subsets per DestinationRule host, for the cross-object check."""

    def __init__(self, destination_rules: list[dict[str, Any]], default_namespace: str | None) -> None:
        self._rules: list[tuple[str, str | None, set[str], str]] = []
        for dr in destination_rules:
            spec = dr.get("spec") or {}
            host = spec.get("host")
            if not isinstance(host, str):
                continue
            namespace = (dr.get("metadata") or {}).get("namespace") or default_namespace
            names = {s.get("name") for s in spec.get("subsets") or [] if isinstance(s, dict)}
            self._rules.append((host, namespace, names, _name_of(dr)))

    def check(self, path: str, host: str, subset: str, vs_namespace: str | None, problems: list[str]) -> None:
        covering = [r for r in self._rules if _same_host(host, vs_namespace, r[0], r[1])]
        if covering and not any(subset in names for _, _, names, _ in covering):
            rules = ", ".join(
                f"{dr} (subsets: {sorted(n for n in names if n) or 'none'})" for _, _, names, dr in covering
            )
            problems.append(
                f"{path}: subset {subset!r} of host {host!r} is not defined in DestinationRule {rules}"
            )


def _check_destination(
    path: str, dest: Any, subsets: _SubsetIndex, vs_namespace: str | None, problems: list[str]
) -> None:
    if not isinstance(dest, dict):
        problems.append(f"{path}: Required value (a destination with host, subset, port)")
        return
    host = dest.get("host")
    if not isinstance(host, str) or not host:
        problems.append(f"{path}.host: Required value")
        return
    subset = dest.get("subset")
    if subset is None:
        return
    try:
        require_dns1123_label(f"{path}.subset", subset)
    except ValidationError as exc:
        problems.append(str(exc))
        return
    subsets.check(f"{path}.subset", host, subset, vs_namespace, problems)


def _check_route_destinations(
    path: str, entries: Any, subsets: _SubsetIndex, vs_namespace: str | None, problems: list[str]
) -> None:
    if not isinstance(entries, list):
        problems.append(f"{path}: must be a list of route destinations")
        return
    weights: list[int] = []
    for j, entry in enumerate(entries):
        entry_path = f"{path}[{j}]"
        if not isinstance(entry, dict):
            problems.append(f"{entry_path}: must be an object")
            continue
        if entry.get("destination") is None and ("host" in entry or "subset" in entry):
            problems.append(
                f"{entry_path}.destination: Required value (host/subset are nested one level too high: "
                "write `destination: {host: ..., subset: ...}`)"
            )
            continue
        _check_destination(
            f"{entry_path}.destination", entry.get("destination"), subsets, vs_namespace, problems
        )
        weight = entry.get("weight", 0)
        if isinstance(weight, bool) or not isinstance(weight, int):
            problems.append(f"{entry_path}.weight: must be an integer, got {weight!r}")
            continue
        if weight < 0 or weight > _INT32_MAX:
            problems.append(f"{entry_path}.weight: must be a non-negative int32, got {weight}")
            continue
        weights.append(weight)
    if len(entries) > 1 and len(weights) == len(entries) and sum(weights) == 0:
        problems.append(f"{path}: weights of several destinations must not all be zero")


def validate_virtual_service(
    vs: dict[str, Any], destination_rules: list[dict[str, Any]] | dict[str, Any] | None = None
) -> None:
    """Raise IstioValidationError listing every problem (with its field path); None when valid."""
    problems: list[str] = []
    rules = [destination_rules] if isinstance(destination_rules, dict) else list(destination_rules or [])
    vs_namespace = (vs.get("metadata") or {}).get("namespace")
    subsets = _SubsetIndex(rules, vs_namespace)
    spec = vs.get("spec")
    if not isinstance(spec, dict):
        raise IstioValidationError("VirtualService", _name_of(vs), ["spec: Required value"])
    hosts = spec.get("hosts")
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) and h for h in hosts):
        problems.append("spec.hosts: must be a non-empty list of host names")

    http = spec.get("http") or []
    if not isinstance(http, list):
        problems.append("spec.http: must be a list")
        http = []
    for i, route in enumerate(http):
        path = f"spec.http[{i}]"
        if not isinstance(route, dict):
            problems.append(f"{path}: must be an object")
            continue
        matches = route.get("match")
        if not matches and i < len(http) - 1:
            problems.append(
                f"{path}: only the last http route may have no match (this one hides routes after it)"
            )
        if matches is not None and not isinstance(matches, list):
            problems.append(f"{path}.match: must be a list")
            matches = []
        for k, match in enumerate(matches or []):
            _check_match_request(f"{path}.match[{k}]", match, problems)
        has_target = any(key in route for key in ("route", "redirect", "directResponse", "delegate"))
        if not has_target:
            problems.append(f"{path}: one of route, redirect, directResponse or delegate is required")
        if "route" in route:
            _check_route_destinations(f"{path}.route", route["route"], subsets, vs_namespace, problems)
        if "mirror" in route:
            _check_destination(f"{path}.mirror", route["mirror"], subsets, vs_namespace, problems)

    for kind in ("tcp", "tls"):
        section = spec.get(kind) or []
        if not isinstance(section, list):
            problems.append(f"spec.{kind}: must be a list")
            continue
        for i, route in enumerate(section):
            if not isinstance(route, dict):
                problems.append(f"spec.{kind}[{i}]: must be an object")
                continue
            _check_route_destinations(
                f"spec.{kind}[{i}].route", route.get("route"), subsets, vs_namespace, problems
            )

    if problems:
        raise IstioValidationError("VirtualService", _name_of(vs), problems)


def _check_tls(path: str, policy: Any, problems: list[str]) -> None:
    if not isinstance(policy, dict):
        return
    tls = policy.get("tls")
    if isinstance(tls, dict) and "mode" in tls and tls["mode"] not in TLS_MODES:
        problems.append(f"{path}.tls.mode: {tls['mode']!r} is not one of {', '.join(TLS_MODES)}")
    for k, port_policy in enumerate(policy.get("portLevelSettings") or []):
        if isinstance(port_policy, dict):
            tls = port_policy.get("tls")
            if isinstance(tls, dict) and "mode" in tls and tls["mode"] not in TLS_MODES:
                problems.append(
                    f"{path}.portLevelSettings[{k}].tls.mode: {tls['mode']!r} "
                    f"is not one of {', '.join(TLS_MODES)}"
                )


def validate_destination_rule(dr: dict[str, Any]) -> None:
    """Raise IstioValidationError for subsets Istio rejects or a bad TLS mode."""
    problems: list[str] = []
    spec = dr.get("spec")
    if not isinstance(spec, dict):
        raise IstioValidationError("DestinationRule", _name_of(dr), ["spec: Required value"])
    if not isinstance(spec.get("host"), str) or not spec.get("host"):
        problems.append("spec.host: Required value")
    _check_tls("spec.trafficPolicy", spec.get("trafficPolicy"), problems)
    seen: dict[str, int] = {}
    subsets = spec.get("subsets") or []
    if not isinstance(subsets, list):
        problems.append("spec.subsets: must be a list")
        subsets = []
    for i, subset in enumerate(subsets):
        path = f"spec.subsets[{i}]"
        if not isinstance(subset, dict):
            problems.append(f"{path}: must be an object")
            continue
        name = subset.get("name")
        try:
            require_dns1123_label(f"{path}.name", name)
        except ValidationError as exc:
            problems.append(str(exc))
        else:
            if name in seen:
                problems.append(f"{path}.name: duplicate subset {name!r} (also spec.subsets[{seen[name]}])")
            seen.setdefault(name, i)
        labels = subset.get("labels")
        if not isinstance(labels, dict) or not labels:
            problems.append(f"{path}.labels: Required value (a subset selects pods by labels)")
        elif not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            problems.append(f"{path}.labels: keys and values must be strings")
        _check_tls(f"{path}.trafficPolicy", subset.get("trafficPolicy"), problems)
    if problems:
        raise IstioValidationError("DestinationRule", _name_of(dr), problems)
