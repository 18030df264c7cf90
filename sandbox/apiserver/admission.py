"""Admission of a decoded write: the CRD strategy's validation (schema errors gated as the CEL
rules gate them, metadata.name), then Istio's validating webhook, emulated (a bare
kube-apiserver has no istiod to call): errors answer 422, warnings go out as `Warning` headers."""

from __future__ import annotations

import json
import re
from typing import Any

from sandbox.apiserver.decoding import Decoded
from sandbox.apiserver.errors import invalid
from sandbox.apiserver.request import ResourceRequest
from sandbox.hosts import fqdn
from sandbox.schema import DUPLICATE, INVALID, REQUIRED, CrdInfo, CrdSchemas, FieldError, gate_rule_errors
from sandbox.store import Store

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def validate_object(
    schemas: CrdSchemas,
    store: Store,
    crd: CrdInfo,
    req: ResourceRequest,
    decoded: Decoded,
    old: dict[str, Any] | None,
    warnings: list[str],
) -> dict[str, Any]:
    """The CRD strategy's validation (422), then Istio's validating webhook (its warnings added
    to `warnings`), as a real server runs them after its preconditions: the object to store."""
    obj = decoded.obj
    name = obj["metadata"].get("name") or ""
    if obj.get("kind") != crd.kind:
        # TypeMeta is checked on its own; the error names the body's kind.
        error = FieldError(
            "kind", INVALID, f"Invalid value: {json.dumps(obj.get('kind'))}: must be {crd.kind}"
        )
        raise invalid(str(obj.get("kind")), crd.group, name, [error])
    errors = gate_rule_errors(
        _metadata_errors(obj["metadata"]) + decoded.schema_errors, schemas.has_rules(crd.plural, req.version)
    )
    if errors:
        raise invalid(crd.kind, crd.group, name, errors)
    # Admission webhooks see only objects that passed validation.
    semantic_errors, semantic_warnings = istio_admission(crd.plural, obj, req.namespace or "", store)
    warnings.extend(semantic_warnings)
    if semantic_errors:
        raise invalid(crd.kind, crd.group, name, semantic_errors)
    # The status subresource owns status: writes to the main resource keep the stored one.
    obj.pop("status", None)
    if old is not None and "status" in old:
        obj["status"] = old["status"]
    obj["apiVersion"] = f"{crd.group}/{crd.storage_version}"
    return obj


def _metadata_errors(metadata: dict[str, Any]) -> list[FieldError]:
    errors = []
    name = metadata.get("name")
    if not name:
        errors.append(
            FieldError("metadata.name", REQUIRED, "Required value: name or generateName is required")
        )
    elif not isinstance(name, str) or len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
        errors.append(
            FieldError(
                "metadata.name",
                INVALID,
                f"Invalid value: {json.dumps(name)}: a lowercase RFC 1123 subdomain must consist of lower case "
                "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            )
        )
    return errors


# --------------------------------------------------------------------------- Istio's webhook


def istio_admission(
    plural: str, obj: dict[str, Any], namespace: str, store: Store
) -> tuple[list[FieldError], list[str]]:
    """Istio's validating webhook and the analyzer checks that matter here: (errors, warnings)."""
    spec = obj.get("spec") or {}
    if plural == "virtualservices":
        return _virtual_service_admission(spec, namespace, store)
    if plural == "destinationrules":
        return _destination_rule_errors(spec), []
    return [], []


def _virtual_service_admission(
    spec: dict[str, Any], namespace: str, store: Store
) -> tuple[list[FieldError], list[str]]:
    errors: list[FieldError] = []
    warnings: list[str] = []
    http = spec.get("http") or []
    for i, route in enumerate(http):
        if not isinstance(route, dict):
            continue
        if not route.get("match") and i < len(http) - 1:
            label = f"#{i}" + (f" {route['name']}" if route.get("name") else "")
            warnings.append(f"virtualService rule {label} not used (only the last rule can have no matches)")
        for j, match in enumerate(route.get("match") or []):
            if isinstance(match, dict):
                _match_regexes(match, f"spec.http[{i}].match[{j}]", errors)
    for section in ("http", "tcp", "tls"):
        for i, route in enumerate(spec.get(section) or []):
            if isinstance(route, dict) and isinstance(route.get("route"), list):
                _route_weights(route["route"], f"spec.{section}[{i}].route", errors)
    warnings.extend(_missing_subsets(spec, namespace, store))
    return errors, warnings


def _destination_rule_errors(spec: dict[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    seen: set[str] = set()
    for i, subset in enumerate(spec.get("subsets") or []):
        name = subset.get("name") if isinstance(subset, dict) else None
        if not isinstance(name, str):
            continue
        if not _DNS1123_LABEL.match(name) or len(name) > 63:
            errors.append(
                FieldError(
                    f"spec.subsets[{i}].name",
                    INVALID,
                    f"Invalid value: {json.dumps(name)}: subset name is invalid: must be a DNS-1123 label",
                )
            )
        if name in seen:
            errors.append(
                FieldError(
                    f"spec.subsets[{i}].name",
                    DUPLICATE,
                    f"Duplicate value: {json.dumps(name)}: duplicate subset names",
                )
            )
        seen.add(name)
    return errors


def _regex_problem(pattern: str) -> str | None:
    if len(pattern) > 1024:
        return "regex is longer than 1024 characters"
    try:
        import re2  # the engine Envoy uses; Python's re accepts patterns RE2 rejects

        re2.compile(pattern)
    except ImportError:
        return None
    except Exception as exc:  # re2.error is not exposed uniformly across versions
        return f"not a valid RE2 regex: {exc}"
    return None


def _route_weights(routes: list[Any], path: str, errors: list[FieldError]) -> None:
    weights = [r.get("weight", 0) for r in routes if isinstance(r, dict)]
    for i, weight in enumerate(weights):
        if isinstance(weight, (int, float)) and weight < 0:
            errors.append(
                FieldError(f"{path}[{i}].weight", INVALID, f"Invalid value: {weight}: weight {weight} < 0")
            )
    numeric = [w for w in weights if isinstance(w, (int, float))]
    if len(weights) > 1 and len(numeric) == len(weights) and sum(numeric) == 0:
        errors.append(FieldError(path, INVALID, 'Invalid value: "array": total destination weight = 0'))


def _match_regexes(match: dict[str, Any], path: str, errors: list[FieldError]) -> None:
    def check(value: Any, where: str) -> None:
        if isinstance(value, dict) and isinstance(value.get("regex"), str):
            problem = _regex_problem(value["regex"])
            if problem:
                errors.append(
                    FieldError(
                        f"{where}.regex", INVALID, f"Invalid value: {json.dumps(value['regex'])}: {problem}"
                    )
                )

    for key in ("uri", "scheme", "method", "authority"):
        check(match.get(key), f"{path}.{key}")
    for key in ("headers", "queryParams", "withoutHeaders"):
        for name, value in (match.get(key) or {}).items():
            check(value, f"{path}.{key}[{name}]")


def _route_destinations(route: Any) -> list[dict[str, Any]]:
    """The destinations a route sends to, its mirror included."""
    entries = list((route or {}).get("route") or []) if isinstance(route, dict) else []
    if isinstance(route, dict) and isinstance(route.get("mirror"), dict):
        entries.append({"destination": route["mirror"]})
    destinations = [entry.get("destination") if isinstance(entry, dict) else None for entry in entries]
    return [d for d in destinations if isinstance(d, dict)]


def _missing_subsets(spec: dict[str, Any], namespace: str, store: Store) -> list[str]:
    """istioctl analyze IST0101: a route names a subset no DestinationRule of its host defines."""
    subsets_by_host: dict[str, set[str]] = {}
    for rule in store.list("destinationrules", namespace):
        host = (rule.get("spec") or {}).get("host")
        if isinstance(host, str):
            names = {s.get("name") for s in (rule["spec"].get("subsets") or []) if isinstance(s, dict)}
            subsets_by_host.setdefault(fqdn(host, namespace), set()).update(n for n in names if n)
    warnings = []
    for section in ("http", "tcp", "tls"):
        for route in spec.get(section) or []:
            for destination in _route_destinations(route):
                host, subset = destination.get("host"), destination.get("subset")
                if isinstance(host, str) and isinstance(subset, str) and subset:
                    known = subsets_by_host.get(fqdn(host, namespace), set())
                    message = f'Referenced host+subset in destinationrule not found: "{host}+{subset}"'
                    if subset not in known and message not in warnings:
                        warnings.append(message)
    return warnings
