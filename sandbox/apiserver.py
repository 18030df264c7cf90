"""The sandbox's Kubernetes API stand-in: enough of the real HTTP API for the official Python
client and kubectl to work unmodified against VirtualService, DestinationRule, Pod, Service
and Namespace.

What it does as a real API server would: discovery, OpenAPI v3 built from the CRD schemas,
get/list/watch/create/update/patch/delete, resourceVersion preconditions (409), 404, 422 with
field causes from CRD-schema validation, label and field selectors, server-side Table printing
(for `kubectl get`), and Istio's webhook rules (negative or all-zero weights are rejected;
unused routes and missing subsets become `Warning` headers, which kubectl prints).

Checked against a real kube-apiserver (tests/integration/test_apiserver_contract.py sends the
pipeline's requests to both): unknown fields are pruned with a `Warning` (the default
`fieldValidation=Warn`; `Strict` answers 400, `Ignore` prunes silently); an update must carry
`metadata.resourceVersion` (422) and a matching `metadata.uid` if it has one (409); a body the
real decoder cannot read (no kind, another apiVersion, labels that are not strings) is a 400;
schema errors that stop the CRD's CEL rules add the real `<nil>` cause; a resource the server
does not serve is a plain-text `404 page not found`; and RBAC is enforced for tokens from
`ApiServer.service_account_token` (Roles and bindings loaded with `load_rbac`), authorization
coming before everything else, as on a real server. Any other bearer token is the sandbox's
admin (group system:masters): the sandbox authenticates no one.

Where it differs, on purpose: strategic merge patch and server-side apply answer 415; Pods,
Services and Namespaces are read-only (seeded into the Store directly); and Istio's validating
webhook is emulated (a bare kube-apiserver has no istiod to call).

Test hooks: `server.audit` records every resource request (with `fault` set on injected
answers); `server.faults.arm(kind, count, after=N)` makes upcoming writes fail (500, a slow
504 timeout, a 409 conflict or a 403), also over HTTP: `POST /sandbox/faults`
`{"kind", "count", "after", "timeout_seconds", "append"}`, `GET` (state), `DELETE` (disarm).
"""

from __future__ import annotations

import collections
import copy
import hashlib
import json
import re
import secrets
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from sandbox.schema import (
    DUPLICATE,
    GROUP,
    INVALID,
    REQUIRED,
    UNKNOWN,
    CrdInfo,
    CrdSchemas,
    FieldError,
    gate_rule_errors,
    load_schemas,
)
from sandbox.store import Store

SERVER_VERSION = {
    "major": "1",
    "minor": "36",
    "gitVersion": "v1.36.0",
    "gitCommit": "sandbox",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.25.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
AUDIT_LIMIT = 10000
WATCH_POLL_SECONDS = 0.1
MAX_WATCH_SECONDS = 1800
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
# A real server also takes application/apply-patch+yaml (server-side apply); the sandbox does not.
ACCEPTED_PATCH_TYPES = f"{JSON_PATCH}, {MERGE_PATCH}"

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class _CoreResource:
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...]


CORE_RESOURCES = {
    "namespaces": _CoreResource("namespaces", "namespace", "Namespace", False, ("ns",)),
    "pods": _CoreResource("pods", "pod", "Pod", True, ("po",)),
    "services": _CoreResource("services", "service", "Service", True, ("svc",)),
}


# --------------------------------------------------------------------------- errors


class ApiError(Exception):
    """An error answered as a Kubernetes `Status` object."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


class PageNotFound(ApiError):
    """What kube-apiserver answers for a path no API serves (an unknown group, version or
    resource): Go's plain-text `404 page not found`, not a Status."""

    BODY = b"404 page not found\n"

    def __init__(self) -> None:
        super().__init__(404, "NotFound", "404 page not found")


def _qualified(group: str, plural: str) -> str:
    return f"{plural}.{group}" if group else plural


def not_found(group: str, plural: str, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{_qualified(group, plural)} "{name}" not found',
        {"name": name, "group": group, "kind": plural},
    )


def conflict(group: str, plural: str, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_qualified(group, plural)} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        {"name": name, "group": group, "kind": plural},
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def cannot_decode(kind: str, version: str, reason: str) -> ApiError:
    """A body the real server's decoder refuses (before any lookup or validation)."""
    return bad_request(f'{kind} in version "{version}" cannot be handled as a {kind}: {reason}')


def forbidden(user: str, verb: str, req: ResourceRequest) -> ApiError:
    """RBAC's refusal, worded as kube-apiserver words it."""
    resource = req.plural + (f"/{req.subresource}" if req.subresource else "")
    what = _qualified(req.group, req.plural) + (f' "{req.name}"' if req.name else "")
    scope = f'in the namespace "{req.namespace}"' if req.namespace else "at the cluster scope"
    details = {k: v for k, v in {"name": req.name, "group": req.group, "kind": req.plural}.items() if v}
    return ApiError(
        403,
        "Forbidden",
        f'{what} is forbidden: User "{user}" cannot {verb} resource "{resource}" in API group '
        f'"{req.group}" {scope}',
        details,
    )


def invalid(kind: str, group: str, name: str, errors: list[FieldError]) -> ApiError:
    """422 Invalid. `kind` is the Kind for validation errors, the resource plural for the
    registry's own checks (as kube-apiserver names them: `virtualservices.networking.istio.io`)."""
    rendered = [str(e) for e in errors]
    summary = rendered[0] if len(rendered) == 1 else "[" + ", ".join(rendered) + "]"
    qualified_kind = f"{kind}.{group}" if group else kind
    return ApiError(
        422,
        "Invalid",
        f'{qualified_kind} "{name}" is invalid: {summary}',
        {
            "name": name,
            "group": group,
            "kind": kind,
            "causes": [{"reason": e.type, "message": e.message, "field": e.field} for e in errors],
        },
    )


# The registry's answer to an update without metadata.resourceVersion (custom resources allow
# no unconditional update).
RESOURCE_VERSION_REQUIRED = FieldError(
    "metadata.resourceVersion", INVALID, "Invalid value: 0: must be specified for an update"
)


def uid_conflict(
    group: str, plural: str, namespace: str, name: str, uid: str, stored_uid: str | None
) -> ApiError:
    """409 for an update whose metadata.uid is another object's (deleted and created again)."""
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_qualified(group, plural)} "{name}": StorageError: invalid object, '
        f"Code: 4, Key: /registry/{group}/{plural}/{namespace}/{name}, ResourceVersion: 0, AdditionalErrorMsg: "
        f"Precondition failed: UID in precondition: {uid}, UID in object meta: {stored_uid}",
        {"name": name, "group": group, "kind": plural},
    )


_GO_JSON_TYPES = {bool: "bool", int: "number", float: "number", str: "string", list: "array", dict: "object"}


def _decoded_string_map(kind: str, version: str, key: str, value: Any) -> dict[str, str] | None:
    """metadata.labels/annotations as Go decodes them into ObjectMeta (map[string]string): null
    values become "", anything else that is not a string is a 400."""
    if value is None:
        return None
    if not isinstance(value, dict):
        found = _GO_JSON_TYPES.get(type(value), "value")
        raise cannot_decode(
            kind,
            version,
            f"json: cannot unmarshal {found} into Go struct field ObjectMeta.{key} of type map[string]string",
        )
    decoded = {}
    for name, item in value.items():
        if item is not None and not isinstance(item, str):
            found = _GO_JSON_TYPES.get(type(item), "value")
            raise cannot_decode(
                kind,
                version,
                f"json: cannot unmarshal {found} into Go struct field ObjectMeta.{key} of type string",
            )
        decoded[name] = item or ""
    return decoded


@dataclass
class _Decoded:
    """A request body as the decoder left it: unknown fields pruned, schema errors kept for
    validation (which runs after the preconditions)."""

    obj: dict[str, Any]
    schema_errors: list[FieldError]


# --------------------------------------------------------------------------- faults and audit


class Faults:
    """Fault injection for upcoming writes (create/update/patch/delete of Istio objects).

    A queue of segments, each "let `after` writes through, then fail the next `count`";
    `arm` replaces the queue, `arm(..., append=True)` adds a segment after the queued ones,
    so one plan can say e.g. "skip the lock write, then 2 timeouts, then 13 errors".
    Reads are never faulted.
    """

    KINDS = ("error500", "timeout", "conflict", "forbidden")
    DEFAULT_TIMEOUT_SECONDS = 30.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[dict[str, Any]] = []
        self.injected = 0  # faults answered since the server started (for tests and status)
        self.stopping = threading.Event()  # set on server close: a "timeout" sleep ends early

    def arm(
        self,
        kind: str,
        count: int = 1,
        timeout_seconds: float | None = None,
        *,
        after: int = 0,
        append: bool = False,
    ) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(self.KINDS)}, not {kind!r}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"fault count must be a whole number >= 0, not {count!r}")
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise ValueError(f"fault after must be a whole number >= 0, not {after!r}")
        seconds = self.DEFAULT_TIMEOUT_SECONDS if timeout_seconds is None else float(timeout_seconds)
        if not 0 <= seconds <= 3600:  # also refuses NaN
            raise ValueError(f"fault timeout_seconds must be in [0, 3600], not {timeout_seconds!r}")
        segment = {"kind": kind, "count": count, "after": after, "timeout_seconds": seconds}
        with self._lock:
            self._queue = [*self._queue, segment] if append else [segment]
            self._drop_spent()

    def disarm(self) -> None:
        with self._lock:
            self._queue = []

    def _drop_spent(self) -> None:
        while self._queue and self._queue[0]["count"] == 0:
            self._queue.pop(0)

    def take(self) -> dict[str, Any] | None:
        """The fault segment for this write ({kind, timeout_seconds, ...}), if one is due (and count it)."""
        with self._lock:
            self._drop_spent()
            if not self._queue:
                return None
            head = self._queue[0]
            if head["after"] > 0:
                head["after"] -= 1
                return None
            head["count"] -= 1
            self.injected += 1
            due = dict(head)
            self._drop_spent()
            return due

    def state(self) -> dict[str, Any]:
        """The next segment's kind/count/after/timeout_seconds (kind None when nothing is armed),
        the whole queue, and how many faults were injected so far."""
        with self._lock:
            head = self._queue[0] if self._queue else None
            return {
                "kind": head["kind"] if head else None,
                "count": head["count"] if head else 0,
                "after": head["after"] if head else 0,
                "timeout_seconds": head["timeout_seconds"] if head else self.DEFAULT_TIMEOUT_SECONDS,
                "queue": [dict(s) for s in self._queue],
                "injected": self.injected,
            }


# --------------------------------------------------------------------------- selectors and helpers

_SELECTOR_TERM = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9_./-]+)\s*"
    r"(?:(?P<op>==|!=|=|\s+in\s+|\s+notin\s+)\s*(?P<value>\([^)]*\)|[A-Za-z0-9_.-]*))?\s*$"
)


def _split_selector(text: str) -> list[str]:
    """Split on commas outside parentheses: `a in (x,y),b=c` -> two terms."""
    terms, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        terms.append(current)
    return terms


def parse_label_selector(text: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """`a=b,c!=d,e in (x,y),f notin (z),g,!h` -> [(key, op, values)]; raises ApiError 400."""
    requirements = []
    for term in _split_selector(text or ""):
        found = _SELECTOR_TERM.match(term)
        if not found:
            raise bad_request(f"unable to parse requirement: {term.strip()!r}")
        key, op, value = found["key"], (found["op"] or "").strip(), found["value"] or ""
        if found["neg"]:
            if op:
                raise bad_request(f"unable to parse requirement: {term.strip()!r}")
            requirements.append((key, "!", ()))
        elif not op:
            requirements.append((key, "exists", ()))
        elif op in ("in", "notin"):
            if not (value.startswith("(") and value.endswith(")")):
                raise bad_request(f"unable to parse requirement: {term.strip()!r}: expected (values)")
            values = tuple(v.strip() for v in value[1:-1].split(",") if v.strip())
            requirements.append((key, op, values))
        else:
            requirements.append((key, "!=" if op == "!=" else "=", (value,)))
    return requirements


def labels_match(labels: dict[str, str], requirements: list[tuple[str, str, tuple[str, ...]]]) -> bool:
    for key, op, values in requirements:
        present = key in labels
        if op == "exists" and not present:
            return False
        if op == "!" and present:
            return False
        if op in ("=", "in") and (not present or labels[key] not in values):
            return False
        if op in ("!=", "notin") and present and labels[key] in values:
            return False
    return True


def _field_value(obj: dict[str, Any], dotted: str) -> Any:
    value: Any = obj
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def fields_match(obj: dict[str, Any], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in (selector or "").split(","))):
        negate = "!=" in term
        key, _, wanted = term.partition("!=" if negate else "=")
        wanted = wanted.lstrip("=")
        actual = _field_value(obj, key.strip())
        actual_text = "" if actual is None else str(actual)
        if (actual_text == wanted) == negate:
            return False
    return True


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class PatchError(Exception):
    """A JSON patch that could not be applied (422), as opposed to a malformed one (400)."""


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _container(doc: Any, parts: list[str], path: str) -> Any:
    node = doc
    for part in parts:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise PatchError(f"path {path!r} does not exist")
    return node


def _index(node: list[Any], part: str, path: str, for_add: bool) -> int:
    if for_add and part == "-":
        return len(node)
    if not part.isdigit():
        raise PatchError(f"invalid array index {part!r} in {path!r}")
    index = int(part)
    if index > len(node) or (not for_add and index == len(node)):
        raise PatchError(f"array index {index} out of range in {path!r}")
    return index


def _get(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    return _container(doc, parts, path) if parts else doc


def _remove(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        raise PatchError("cannot remove the whole document")
    parent = _container(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path {path!r} does not exist")
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, path, for_add=False))
    raise PatchError(f"path {path!r} does not exist")


def _add(doc: Any, path: str, value: Any, replace: bool = False) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent = _container(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise PatchError(f"path {path!r} does not exist")
        parent[last] = value
    elif isinstance(parent, list):
        index = _index(parent, last, path, for_add=not replace)
        if replace:
            parent[index] = value
        else:
            parent.insert(index, value)
    else:
        raise PatchError(f"path {path!r} does not exist")
    return doc


def json_patch(doc: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch. Malformed operations raise ApiError 400; failures PatchError."""
    if not isinstance(operations, list):
        raise bad_request(
            "json patch must be a list of operations "
            "(a JSON object body is a merge patch: send Content-Type application/merge-patch+json)"
        )
    doc = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request(f"invalid json patch operation: {json.dumps(op)}")
        kind, path = op["op"], op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise bad_request(f"json patch operation {kind} at {path!r} needs a value")
        if kind in ("move", "copy") and "from" not in op:
            raise bad_request(f"json patch operation {kind} at {path!r} needs from")
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            doc = _add(doc, path, copy.deepcopy(op["value"]), replace=True) if path else op["value"]
        elif kind == "move":
            doc = _add(doc, path, _remove(doc, op["from"]))
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
        elif kind == "test":
            if _get(doc, path) != op["value"]:
                raise PatchError(f"testing value {path} failed: test failed")
        else:
            raise bad_request(f"unknown json patch operation {kind!r}")
    return doc


def human_age(timestamp: str | None, now: float | None = None) -> str:
    """`kubectl get`'s AGE column: 45s, 5m10s, 3h, 2d..."""
    if not timestamp:
        return "<unknown>"
    try:
        created = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return "<invalid>"
    seconds = max(0, int((now or time.time()) - created))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d" if days < 730 else f"{days // 365}y"


def _fqdn(host: str, namespace: str) -> str:
    """The host a rule names, as Istio reads it: only a dot-free short name is expanded,
    relative to the rule's namespace; `reviews.bookinfo` and `*` are taken as written."""
    from sandbox.config import MESH_DOMAIN

    if "." in host or host == "*":
        return host
    return f"{host}.{namespace}.svc.{MESH_DOMAIN}"


# --------------------------------------------------------------------------- Istio admission


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


def istio_admission(
    plural: str, obj: dict[str, Any], namespace: str, store: Store
) -> tuple[list[FieldError], list[str]]:
    """Istio's validating webhook and the analyzer checks that matter here: (errors, warnings)."""
    errors: list[FieldError] = []
    warnings: list[str] = []
    spec = obj.get("spec") or {}
    if plural == "virtualservices":
        http = spec.get("http") or []
        for i, route in enumerate(http):
            if not isinstance(route, dict):
                continue
            if not route.get("match") and i < len(http) - 1:
                label = f"#{i}" + (f" {route['name']}" if route.get("name") else "")
                warnings.append(
                    f"virtualService rule {label} not used (only the last rule can have no matches)"
                )
            for j, match in enumerate(route.get("match") or []):
                if isinstance(match, dict):
                    _match_regexes(match, f"spec.http[{i}].match[{j}]", errors)
        for section in ("http", "tcp", "tls"):
            for i, route in enumerate(spec.get(section) or []):
                if isinstance(route, dict) and isinstance(route.get("route"), list):
                    _route_weights(route["route"], f"spec.{section}[{i}].route", errors)
        warnings.extend(_missing_subsets(spec, namespace, store))
    elif plural == "destinationrules":
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
                        f"Invalid value: {json.dumps(name)}: subset name is invalid: "
                        "must be a DNS-1123 label",
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
    return errors, warnings


def _missing_subsets(spec: dict[str, Any], namespace: str, store: Store) -> list[str]:
    """istioctl analyze IST0101: a route names a subset no DestinationRule of its host defines."""
    subsets_by_host: dict[str, set[str]] = {}
    for rule in store.list("destinationrules", namespace):
        host = (rule.get("spec") or {}).get("host")
        if isinstance(host, str):
            names = {s.get("name") for s in (rule["spec"].get("subsets") or []) if isinstance(s, dict)}
            subsets_by_host.setdefault(_fqdn(host, namespace), set()).update(n for n in names if n)
    warnings = []
    for section in ("http", "tcp", "tls"):
        for route in spec.get(section) or []:
            entries = list((route or {}).get("route") or []) if isinstance(route, dict) else []
            if isinstance(route, dict) and isinstance(route.get("mirror"), dict):
                entries.append({"destination": route["mirror"]})
            for entry in entries:
                destination = entry.get("destination") if isinstance(entry, dict) else None
                if not isinstance(destination, dict):
                    continue
                host, subset = destination.get("host"), destination.get("subset")
                if isinstance(host, str) and isinstance(subset, str) and subset:
                    known = subsets_by_host.get(_fqdn(host, namespace), set())
                    message = f'Referenced host+subset in destinationrule not found: "{host}+{subset}"'
                    if subset not in known and message not in warnings:
                        warnings.append(message)
    return warnings


# --------------------------------------------------------------------------- request model


@dataclass
class ResourceRequest:
    group: str  # "" for core
    version: str
    plural: str
    namespace: str | None
    name: str | None
    subresource: str | None = None

    @property
    def is_crd(self) -> bool:
        return self.group != ""


_CRD_PATH = re.compile(
    r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)"
    r"(?:/namespaces/(?P<namespace>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$"
)
_CORE_PATH = re.compile(
    r"^/api/v1(?:/namespaces/(?P<namespace>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$"
)


def _parse_resource_path(path: str) -> ResourceRequest | None:
    # The regexes backtrack so that /api/v1/namespaces/{name} is the namespace {name}.
    found = _CRD_PATH.match(path)
    if found:
        return ResourceRequest(
            found["group"], found["version"], found["plural"], found["namespace"], found["name"], found["sub"]
        )
    found = _CORE_PATH.match(path)
    if found:
        return ResourceRequest("", "v1", found["plural"], found["namespace"], found["name"], found["sub"])
    return None


# --------------------------------------------------------------------------- authentication and RBAC


@dataclass(frozen=True)
class UserInfo:
    name: str
    groups: tuple[str, ...]


# Who a request is when its token is not one the server handed out: the sandbox authenticates
# no one, so kubeconfigs with any token (tests put secrets in them) act as the cluster admin.
ADMIN = UserInfo("sandbox-admin", ("system:masters", "system:authenticated"))

# The RBAC kinds `ApiServer.load_rbac` takes: kind -> (Store resource, namespaced).
RBAC_KINDS = {
    "ServiceAccount": ("serviceaccounts", True),
    "Role": ("roles", True),
    "RoleBinding": ("rolebindings", True),
    "ClusterRole": ("clusterroles", False),
    "ClusterRoleBinding": ("clusterrolebindings", False),
}


def _listed(values: Any, wanted: str) -> bool:
    return isinstance(values, list) and ("*" in values or wanted in values)


def _rule_allows(rule: Any, verb: str, req: ResourceRequest) -> bool:
    if not isinstance(rule, dict):
        return False
    resource = req.plural + (f"/{req.subresource}" if req.subresource else "")
    names = rule.get("resourceNames") or []
    return (
        _listed(rule.get("verbs"), verb)
        and _listed(rule.get("apiGroups"), req.group)
        and _listed(rule.get("resources"), resource)
        and (not names or req.name in names)
    )


def _subject_is(subject: Any, user: UserInfo) -> bool:
    if not isinstance(subject, dict):
        return False
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "ServiceAccount":
        return user.name == f"system:serviceaccount:{subject.get('namespace')}:{name}"
    if kind == "User":
        return user.name == name
    return kind == "Group" and name in user.groups


def rbac_allows(store: Store, user: UserInfo, verb: str, req: ResourceRequest) -> bool:
    """Kubernetes RBAC over the Roles and bindings in `store`: ClusterRoleBindings grant their
    ClusterRole everywhere, RoleBindings grant their Role or ClusterRole in their namespace only."""
    if "system:masters" in user.groups:
        return True

    def role_rules(ref: Any, namespace: str) -> list[Any]:
        if not isinstance(ref, dict):
            return []
        if ref.get("kind") == "ClusterRole":
            role = store.get("clusterroles", "", str(ref.get("name")))
        elif ref.get("kind") == "Role" and namespace:
            role = store.get("roles", namespace, str(ref.get("name")))
        else:
            role = None
        return list((role or {}).get("rules") or [])

    bindings = [(b, "") for b in store.list("clusterrolebindings")]
    if req.namespace:
        bindings += [(b, req.namespace) for b in store.list("rolebindings", req.namespace)]
    for binding, namespace in bindings:
        if any(_subject_is(s, user) for s in binding.get("subjects") or []) and any(
            _rule_allows(rule, verb, req) for rule in role_rules(binding.get("roleRef"), namespace)
        ):
            return True
    return False


# --------------------------------------------------------------------------- the server


class ApiServer(ThreadingHTTPServer):
    """Kubernetes API stand-in. Run `serve_forever()` in a thread; `url` is where it listens."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, store: Store, schemas: CrdSchemas, host: str = "127.0.0.1", port: int = 0, verbose: bool = False
    ) -> None:
        self.store = store
        self.schemas = schemas
        self.verbose = verbose
        self.tokens: dict[str, UserInfo] = {}  # tokens handed out by service_account_token
        self.audit: collections.deque[dict[str, Any]] = collections.deque(maxlen=AUDIT_LIMIT)
        self.faults = Faults()
        self.started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._openapi = self._build_openapi()
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def audit_records(self) -> list[dict[str, Any]]:
        return list(self.audit)

    def load_rbac(self, manifest: str) -> int:
        """Store the ServiceAccounts, Roles, ClusterRoles and bindings of a YAML manifest (e.g.
        include/manifests/rbac.yaml); returns how many. Other kinds raise ValueError."""
        documents = [d for d in yaml.safe_load_all(manifest) if d]
        for doc in documents:
            kind = doc.get("kind") if isinstance(doc, dict) else None
            if kind not in RBAC_KINDS:
                raise ValueError(f"load_rbac takes {', '.join(RBAC_KINDS)}, not {kind!r}")
            resource, namespaced = RBAC_KINDS[kind]
            metadata = doc.setdefault("metadata", {})
            if namespaced and not metadata.get("namespace"):
                raise ValueError(f"{kind} {metadata.get('name')!r} needs metadata.namespace")
            if not namespaced:
                metadata.pop("namespace", None)
            self.store.put(resource, doc)
        return len(documents)

    def service_account_token(self, namespace: str, name: str) -> str:
        """A bearer token for the ServiceAccount (stored by `load_rbac`): requests with it are
        judged by RBAC, as with a TokenRequest token on a real server."""
        if self.store.get("serviceaccounts", namespace, name) is None:
            raise KeyError(f"no ServiceAccount {namespace}/{name}: load it with load_rbac first")
        token = f"sandbox-sa-{secrets.token_urlsafe(24)}"
        self.tokens[token] = UserInfo(
            f"system:serviceaccount:{namespace}:{name}",
            ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"),
        )
        return token

    def user_for(self, authorization: str | None) -> UserInfo:
        """Who sent a request with this Authorization header."""
        scheme, _, token = (authorization or "").partition(" ")
        return self.tokens.get(token.strip(), ADMIN) if scheme.lower() == "bearer" else ADMIN

    def server_close(self) -> None:
        self.faults.stopping.set()  # ends pending "timeout" faults and open watches
        super().server_close()

    def shutdown(self) -> None:
        self.faults.stopping.set()
        super().shutdown()

    # ---- OpenAPI v3, built once: the schemas never change while serving
    def _build_openapi(self) -> dict[str, tuple[bytes, str]]:
        documents: dict[str, dict[str, Any]] = {"api/v1": _core_openapi()}
        for version in self.schemas.group_versions():
            documents[f"apis/{GROUP}/{version}"] = self.schemas.openapi_v3_document(f"{GROUP}/{version}")
        built = {}
        for key, document in documents.items():
            body = json.dumps(document, separators=(",", ":")).encode()
            built[key] = (body, hashlib.sha512(body).hexdigest()[:64].upper())
        return built


def _core_openapi() -> dict[str, Any]:
    """A minimal core/v1 document: loose Pod/Service/Namespace schemas carrying their GVK."""
    schemas = {}
    for resource in CORE_RESOURCES.values():
        schemas[f"io.k8s.api.core.v1.{resource.kind}"] = {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "x-kubernetes-group-version-kind": [{"group": "", "version": "v1", "kind": resource.kind}],
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": SERVER_VERSION["gitVersion"]},
        "paths": {},
        "components": {"schemas": schemas},
    }


def make_api_server(
    store: Store, host: str = "127.0.0.1", port: int = 0, crd_dir: str | None = None, verbose: bool = False
) -> ApiServer:
    """An API server over `store`, validating against Istio's CRDs in `crd_dir` (built-in schema
    if None). The caller runs `serve_forever()` in a thread and `shutdown()`/`server_close()`."""
    return ApiServer(store, load_schemas(crd_dir), host, port, verbose)


# --------------------------------------------------------------------------- the handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as client-go and urllib3 expect
    # Headers and body go out in separate writes: with Nagle's algorithm on, each answer on a
    # kept-alive connection waited ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    server: ApiServer

    # ---- plumbing
    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            sys.stderr.write(f"apiserver: {format % args}\n")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _send(
        self,
        code: int,
        body: Any,
        content_type: str = JSON,
        warnings: list[str] = (),
        raw: bytes | None = None,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        data = raw if raw is not None else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        for warning in warnings:
            # RFC 7234 warn-text, as the API server sends admission warnings.
            escaped = warning.replace("\\", "\\\\").replace('"', '\\"')
            self.send_header("Warning", f'299 - "{escaped}"')
        for key, value in (extra_headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, error: ApiError, warnings: list[str] = ()) -> None:
        if isinstance(error, PageNotFound):
            self._send(
                404,
                None,
                "text/plain; charset=utf-8",
                raw=PageNotFound.BODY,
                extra_headers={"X-Content-Type-Options": "nosniff"},
            )
        else:
            self._send(error.code, error.status(), warnings=warnings)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        body = self._read_body()
        request = _parse_resource_path(path)
        try:
            if request is None:
                self._non_resource(method, path, query, body)
                return
        except ApiError as exc:
            self._send_error(exc)
            return
        except Exception as exc:  # never leave a client hanging without a Status
            self._send(500, ApiError(500, "InternalError", f"internal error: {exc!r}").status())
            return
        self._resource(method, request, query, body)

    # ---- non-resource endpoints: discovery, OpenAPI, health, sandbox controls
    def _non_resource(self, method: str, path: str, query: dict[str, str], body: bytes) -> None:
        if path == "/sandbox/faults":
            self._faults(method, body)
            return
        if method != "GET":
            raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on {path}")
        if path in ("/healthz", "/livez", "/readyz"):
            self._send(200, None, "text/plain; charset=utf-8", raw=b"ok")
            return
        if path == "/sandbox/audit":
            self._send(200, self.server.audit_records())
            return
        if path.startswith("/openapi/"):
            self._openapi(path)
            return
        document = self._discovery(path)
        if document is None:
            raise PageNotFound()
        self._send(200, document)

    def _faults(self, method: str, body: bytes) -> None:
        faults = self.server.faults
        if method == "DELETE":
            faults.disarm()
        elif method == "POST":
            try:
                request = json.loads(body or b"{}")
                faults.arm(
                    request["kind"],
                    request.get("count", 1),
                    request.get("timeout_seconds"),
                    after=request.get("after", 0),
                    append=bool(request.get("append", False)),
                )
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise bad_request(
                    f"fault request needs {{kind, count[, after, timeout_seconds, append]}}: {exc}"
                ) from exc
        elif method != "GET":
            raise ApiError(405, "MethodNotAllowed", "use GET, POST or DELETE on /sandbox/faults")
        self._send(200, faults.state())

    def _discovery(self, path: str) -> dict[str, Any] | None:
        schemas = self.server.schemas
        if path == "/version":
            return SERVER_VERSION
        if path == "/api":
            host, port = self.server.server_address[:2]
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{host}:{port}"}
                ],
            }
        if path == "/api/v1":
            resources = []
            for resource in CORE_RESOURCES.values():
                resources.append(
                    {
                        "name": resource.plural,
                        "singularName": resource.singular,
                        "namespaced": resource.namespaced,
                        "kind": resource.kind,
                        "verbs": ["get", "list", "watch"],
                        "shortNames": list(resource.short_names),
                        **({"categories": ["all"]} if resource.namespaced else {}),
                    }
                )
            return {"kind": "APIResourceList", "groupVersion": "v1", "resources": resources}
        group = self._group_document()
        if path == "/apis":
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]}
        if path == f"/apis/{GROUP}":
            return {"kind": "APIGroup", "apiVersion": "v1", **group}
        prefix = f"/apis/{GROUP}/"
        if path.startswith(prefix) and path[len(prefix) :] in schemas.group_versions():
            version = path[len(prefix) :]
            resources = [self._crd_resource(crd) for crd in schemas.resources() if version in crd.versions]
            return {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": f"{GROUP}/{version}",
                "resources": resources,
            }
        return None

    def _group_document(self) -> dict[str, Any]:
        versions = [
            {"groupVersion": f"{GROUP}/{v}", "version": v} for v in self.server.schemas.group_versions()
        ]
        return {"name": GROUP, "versions": versions, "preferredVersion": versions[0]}

    @staticmethod
    def _crd_resource(crd: CrdInfo) -> dict[str, Any]:
        return {
            "name": crd.plural,
            "singularName": crd.singular,
            "namespaced": crd.namespaced,
            "kind": crd.kind,
            "verbs": ["delete", "get", "list", "patch", "create", "update", "watch"],
            "shortNames": list(crd.short_names),
            "categories": list(crd.categories),
        }

    def _openapi(self, path: str) -> None:
        documents = self.server._openapi
        if path == "/openapi/v3":
            index = {
                "paths": {
                    key: {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest}"}
                    for key, (_, digest) in documents.items()
                }
            }
            self._send(200, index)
            return
        key = path[len("/openapi/v3/") :] if path.startswith("/openapi/v3/") else None
        if key not in documents:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        body, digest = documents[key]
        self._send(200, None, raw=body, extra_headers={"Etag": f'"{digest}"'})

    # ---- resources
    def _resource(self, method: str, req: ResourceRequest, query: dict[str, str], body: bytes) -> None:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
        if verb is None:
            verb = (
                "get"
                if req.name
                else ("watch" if query.get("watch", "").lower() in ("true", "1") else "list")
            )
        record = {
            "verb": verb,
            "group": req.group,
            "version": req.version,
            "resource": req.plural,
            "namespace": req.namespace,
            "name": req.name,
            "code": 0,
            "user_agent": self.headers.get("User-Agent", ""),
            "dry_run": "dryRun" in query,
            "time": time.time(),
        }
        if req.subresource:
            record["subresource"] = req.subresource
        # RBAC's name for deleting a collection (which the handler then refuses, 405).
        authz_verb = "deletecollection" if verb == "delete" and not req.name else verb
        self._fault: str | None = None
        # Warnings raised while handling (pruned unknown fields, the webhook's): like a real
        # server, sent with whatever answer goes out, an error included.
        self._warnings: list[str] = []
        error: ApiError | None = None
        try:
            # As on a real server, authorization comes first: before routing (a forbidden
            # request for an unknown resource is 403, not 404) and before any check of the body.
            user = self.server.user_for(self.headers.get("Authorization"))
            if not rbac_allows(self.server.store, user, authz_verb, self._authz_request(req)):
                raise forbidden(user.name, authz_verb, req)
            if verb == "watch":
                record["code"] = 200
                self.server.audit.append(record)
                self._watch(req, query)
                return
            code, result = self._handle(method, verb, req, query, body)
        except ApiError as exc:
            error, code = exc, exc.code
        except Exception as exc:
            error = ApiError(500, "InternalError", f"internal error: {exc!r}")
            code = 500
        record["code"] = code
        if self._fault:
            record["fault"] = self._fault  # which answers were injected, not the server's own
        if verb == "create" and not record["name"]:
            record["name"] = _body_name(body)
        self.server.audit.append(record)
        if error is not None:
            self._send_error(error, self._warnings)
        else:
            self._send(code, result, warnings=self._warnings)

    @staticmethod
    def _authz_request(req: ResourceRequest) -> ResourceRequest:
        # A namespace is its own namespace to RBAC (a RoleBinding in it may grant `get` on it).
        if req.plural == "namespaces" and not req.group and req.name and not req.namespace:
            return ResourceRequest(req.group, req.version, req.plural, req.name, req.name, req.subresource)
        return req

    def _handle(
        self, method: str, verb: str, req: ResourceRequest, query: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        if req.is_crd:
            crd = self._crd_for(req)
            if req.subresource:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if verb in ("create", "update", "patch", "delete"):
                self._maybe_fault(req)
            handler = {
                "get": self._crd_get,
                "list": self._crd_list,
                "create": self._crd_create,
                "update": self._crd_update,
                "patch": self._crd_patch,
                "delete": self._crd_delete,
            }[verb]
            return handler(crd, req, query, body)
        return self._core(verb, req, query)

    def _crd_for(self, req: ResourceRequest) -> CrdInfo:
        # No API serves these paths on a real server either: Go's plain 404, not a Status.
        crd = self.server.schemas.crd_info(req.plural)
        if crd is None or crd.group != req.group or req.version not in crd.versions:
            raise PageNotFound()
        if req.name and req.namespace is None:
            raise PageNotFound()
        return crd

    def _maybe_fault(self, req: ResourceRequest) -> None:
        faults = self.server.faults
        due = faults.take()
        if due is None:
            return
        kind = due["kind"]
        self._fault = kind  # for the audit record
        if kind == "error500":
            raise ApiError(500, "InternalError", "Internal error occurred: injected fault (sandbox)")
        if kind == "timeout":
            # As kube-apiserver answers a request that ran past its deadline: 504 after a wait.
            faults.stopping.wait(due["timeout_seconds"])
            raise ApiError(
                504,
                "Timeout",
                "Timeout: request did not complete within the allowed duration "
                "(injected fault, sandbox); the write was not applied",
            )
        if kind == "conflict":
            raise conflict(req.group, req.plural, req.name or "")
        if kind == "forbidden":
            # Not transient: what a client sees when RBAC or an admission policy refuses it.
            raise ApiError(
                403, "Forbidden", f'{req.plural} "{req.name or ""}" is forbidden: injected fault (sandbox)'
            )

    def _serve(self, crd: CrdInfo, obj: dict[str, Any], version: str) -> dict[str, Any]:
        obj["apiVersion"] = f"{crd.group}/{version}"
        obj["kind"] = crd.kind
        return obj

    # ---- reads
    def _crd_get(self, crd: CrdInfo, req: ResourceRequest, query: dict[str, str], body: bytes):
        obj = self.server.store.get(req.plural, req.namespace or "", req.name or "")
        if obj is None:
            raise not_found(req.group, req.plural, req.name or "")
        obj = self._serve(crd, obj, req.version)
        return 200, self._maybe_table(req, [obj], single=True) or obj

    def _selected(self, req: ResourceRequest, query: dict[str, str]) -> list[dict[str, Any]]:
        requirements = parse_label_selector(query.get("labelSelector", ""))
        field_selector = query.get("fieldSelector", "")
        items = self.server.store.list(req.plural, req.namespace)
        return [
            o
            for o in items
            if labels_match((o.get("metadata") or {}).get("labels") or {}, requirements)
            and fields_match(o, field_selector)
        ]

    def _crd_list(self, crd: CrdInfo, req: ResourceRequest, query: dict[str, str], body: bytes):
        with self.server.store.lock:  # items and resourceVersion from the same instant
            items = [self._serve(crd, o, req.version) for o in self._selected(req, query)]
            revision = self.server.store.revision
        table = self._maybe_table(req, items, revision=revision)
        if table:
            return 200, table
        return (
            200,
            {
                "apiVersion": f"{crd.group}/{req.version}",
                "kind": crd.list_kind,
                "metadata": {"resourceVersion": str(revision)},
                "items": items,
            },
        )

    # ---- writes
    def _decode(self, body: bytes) -> Any:
        content_type = (self.headers.get("Content-Type") or JSON).split(";")[0].strip()
        try:
            if "yaml" in content_type:
                return yaml.safe_load(body)
            return json.loads(body or b"null")
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"the body of the request could not be decoded: {exc}") from exc

    def _decode_object(
        self, crd: CrdInfo, req: ResourceRequest, query: dict[str, str], obj: Any, url_name: str | None = None
    ) -> _Decoded:
        """What kube-apiserver's decoder does with a body, before any lookup or validation: 400
        for a body it cannot read as this resource (no kind, another apiVersion, labels that are
        not strings, unknown fields under fieldValidation=Strict, another name or namespace than
        the URL's); unknown fields otherwise pruned, with a Warning under Warn (the default)."""
        if not isinstance(obj, dict):
            raise bad_request("the body must be a JSON object")
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if not kind:
            raise bad_request(
                f"the object provided is unrecognized (must be of type {crd.kind}): "
                f"Object 'Kind' is missing in '{json.dumps(obj)[:200]}'"
            )
        expected = f"{crd.group}/{req.version}"
        if api_version != expected:
            raise bad_request(
                f"the API version in the data ({api_version or ''}) does not match the expected "
                f"API version ({expected})"
            )
        mode = query.get("fieldValidation") or "Warn"
        if mode not in ("Strict", "Warn", "Ignore"):
            raise bad_request(f'fieldValidation must be Strict, Warn or Ignore, not "{mode}"')
        metadata = obj.get("metadata")
        if not isinstance(metadata, dict):
            raise invalid(crd.kind, crd.group, "", [FieldError("metadata", REQUIRED, "Required value")])
        for key in ("labels", "annotations"):
            metadata[key] = _decoded_string_map(crd.kind, req.version, key, metadata.get(key))
            if metadata[key] is None:
                del metadata[key]
        normalized, schema_errors = self.server.schemas.check(
            crd.plural, req.version, obj, prune_unknown=True
        )
        unknown = sorted(e.field for e in schema_errors if e.type == UNKNOWN)
        if unknown and mode == "Strict":
            raise cannot_decode(
                crd.kind,
                req.version,
                "strict decoding error: " + ", ".join(f'unknown field "{f}"' for f in unknown),
            )
        if mode == "Warn":
            self._warnings += [f'unknown field "{f}"' for f in unknown]
        metadata = normalized["metadata"]
        if url_name is not None and metadata.get("name") != url_name:
            raise bad_request(
                f"the name of the object ({metadata.get('name') or ''}) does not match the name on the URL ({url_name})"
            )
        if metadata.get("namespace") not in (None, "", req.namespace):
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        metadata["namespace"] = req.namespace
        return _Decoded(normalized, [e for e in schema_errors if e.type != UNKNOWN])

    def _validate_object(
        self, crd: CrdInfo, req: ResourceRequest, decoded: _Decoded, old: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The CRD strategy's validation (422), then Istio's validating webhook, as a real server
        runs them after its preconditions: the object to store."""
        obj = decoded.obj
        name = obj["metadata"].get("name") or ""
        if obj.get("kind") != crd.kind:
            # TypeMeta is checked on its own; the error names the body's kind.
            error = FieldError(
                "kind", INVALID, f"Invalid value: {json.dumps(obj.get('kind'))}: must be {crd.kind}"
            )
            raise invalid(str(obj.get("kind")), crd.group, name, [error])
        errors = gate_rule_errors(
            self._metadata_errors(obj["metadata"]) + decoded.schema_errors,
            self.server.schemas.has_rules(crd.plural, req.version),
        )
        if errors:
            raise invalid(crd.kind, crd.group, name, errors)
        # Admission webhooks see only objects that passed validation.
        semantic_errors, semantic_warnings = istio_admission(
            crd.plural, obj, req.namespace or "", self.server.store
        )
        self._warnings += semantic_warnings
        if semantic_errors:
            raise invalid(crd.kind, crd.group, name, semantic_errors)
        # The status subresource owns status: writes to the main resource keep the stored one.
        obj.pop("status", None)
        if old is not None and "status" in old:
            obj["status"] = old["status"]
        obj["apiVersion"] = f"{crd.group}/{crd.storage_version}"
        return obj

    @staticmethod
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

    def _store_write(
        self,
        crd: CrdInfo,
        req: ResourceRequest,
        query: dict[str, str],
        new: dict[str, Any],
        old: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """Store unless dry-run; a write that changes nothing keeps the stored revision, as etcd would."""
        if old is not None:
            comparable = {
                **new,
                "metadata": {**new["metadata"], "resourceVersion": old["metadata"]["resourceVersion"]},
            }
            for key in ("uid", "creationTimestamp", "generation"):
                comparable["metadata"][key] = old["metadata"].get(key)
            if comparable == old:
                return old
        if query.get("dryRun") == "All":
            preview = copy.deepcopy(new)
            if old is None:
                preview["metadata"].update(
                    uid=str(uuid.uuid4()), creationTimestamp=self.server.started, generation=1
                )
            return preview
        return self.server.store.put(req.plural, new)

    def _crd_create(self, crd: CrdInfo, req: ResourceRequest, query: dict[str, str], body: bytes):
        if req.name:
            raise ApiError(405, "MethodNotAllowed", "POST is not allowed on a named resource")
        decoded = self._decode_object(crd, req, query, self._decode(body))
        metadata = decoded.obj["metadata"]
        if metadata.get("resourceVersion"):
            raise bad_request("resourceVersion should not be set on objects to be created")
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = metadata["generateName"] + uuid.uuid4().hex[:5]
        for key in ("uid", "creationTimestamp", "generation", "managedFields"):
            metadata.pop(key, None)
        with self.server.store.lock:
            new = self._validate_object(crd, req, decoded, None)
            name = new["metadata"]["name"]
            if self.server.store.get(req.plural, req.namespace or "", name) is not None:
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'{_qualified(crd.group, crd.plural)} "{name}" already exists',
                    {"name": name, "group": crd.group, "kind": crd.plural},
                )
            stored = self._store_write(crd, req, query, new, None)
        return 201, self._serve(crd, stored, req.version)

    def _crd_update(self, crd: CrdInfo, req: ResourceRequest, query: dict[str, str], body: bytes):
        if not req.name:
            raise ApiError(405, "MethodNotAllowed", "PUT needs a resource name")
        decoded = self._decode_object(crd, req, query, self._decode(body), url_name=req.name)
        metadata = decoded.obj["metadata"]
        with self.server.store.lock:
            # In the order of kube-apiserver's registry: existence, the uid precondition, then the
            # resourceVersion (required for custom resources: no unconditional update), validation.
            old = self.server.store.get(req.plural, req.namespace or "", req.name)
            if old is None:
                raise not_found(crd.group, crd.plural, req.name)
            uid, stored_uid = metadata.get("uid"), old["metadata"].get("uid")
            if uid and uid != stored_uid:
                raise uid_conflict(crd.group, crd.plural, req.namespace or "", req.name, uid, stored_uid)
            wanted = metadata.get("resourceVersion")
            if not wanted:
                raise invalid(crd.plural, crd.group, req.name, [RESOURCE_VERSION_REQUIRED])
            if wanted != old["metadata"]["resourceVersion"]:
                raise conflict(crd.group, crd.plural, req.name)
            new = self._validate_object(crd, req, decoded, old)
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            stored = self._store_write(crd, req, query, new, old)
        return 200, self._serve(crd, stored, req.version)

    def _crd_patch(self, crd: CrdInfo, req: ResourceRequest, query: dict[str, str], body: bytes):
        if not req.name:
            raise ApiError(405, "MethodNotAllowed", "PATCH needs a resource name")
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type not in (MERGE_PATCH, JSON_PATCH):
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types include: "
                f"{ACCEPTED_PATCH_TYPES}",
            )
        try:
            patch = json.loads(body or b"null")
        except ValueError as exc:
            raise bad_request(f"the body of the request could not be decoded: {exc}") from exc
        with self.server.store.lock:
            old = self.server.store.get(req.plural, req.namespace or "", req.name)
            if old is None:
                raise not_found(crd.group, crd.plural, req.name)
            current = self._serve(crd, copy.deepcopy(old), req.version)
            try:
                patched = (
                    merge_patch(current, patch) if content_type == MERGE_PATCH else json_patch(current, patch)
                )
            except PatchError as exc:
                raise ApiError(422, "Invalid", str(exc)) from exc
            metadata = patched.get("metadata") if isinstance(patched, dict) else None
            if not isinstance(metadata, dict) or metadata.get("name") != req.name:
                raise bad_request("a patch may not change metadata.name")
            if metadata.get("resourceVersion") not in (None, old["metadata"]["resourceVersion"]):
                raise conflict(crd.group, crd.plural, req.name)
            decoded = self._decode_object(crd, req, query, patched)
            new = self._validate_object(crd, req, decoded, old)
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            stored = self._store_write(crd, req, query, new, old)
        return 200, self._serve(crd, stored, req.version)

    def _crd_delete(self, crd: CrdInfo, req: ResourceRequest, query: dict[str, str], body: bytes):
        if not req.name:
            raise ApiError(405, "MethodNotAllowed", "deleting a collection is not supported by the sandbox")
        options = self._decode(body) if body else {}
        preconditions = (options or {}).get("preconditions") or {} if isinstance(options, dict) else {}
        dry_run = query.get("dryRun") == "All" or "All" in ((options or {}).get("dryRun") or [])
        with self.server.store.lock:
            old = self.server.store.get(req.plural, req.namespace or "", req.name)
            if old is None:
                raise not_found(crd.group, crd.plural, req.name)
            for key in ("resourceVersion", "uid"):
                if preconditions.get(key) and preconditions[key] != old["metadata"].get(key):
                    raise conflict(crd.group, crd.plural, req.name)
            if not dry_run:
                self.server.store.delete(req.plural, req.namespace or "", req.name)
        return (
            200,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    "name": req.name,
                    "group": crd.group,
                    "kind": crd.plural,
                    "uid": old["metadata"].get("uid"),
                },
            },
        )

    # ---- core v1 (read-only)
    def _core(self, verb: str, req: ResourceRequest, query: dict[str, str]) -> tuple[int, Any]:
        resource = CORE_RESOURCES.get(req.plural)
        if resource is None or req.subresource:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if verb not in ("get", "list"):
            raise ApiError(
                405,
                "MethodNotAllowed",
                f"the sandbox serves {req.plural} read-only (seed them through the Store)",
            )
        if req.plural == "namespaces":
            items = self._namespaces()
            if verb == "get":
                found = [n for n in items if n["metadata"]["name"] == req.name]
                if not found:
                    raise not_found("", "namespaces", req.name or "")
                return 200, self._maybe_table(req, found, single=True) or found[0]
            requirements = parse_label_selector(query.get("labelSelector", ""))
            items = [
                n
                for n in items
                if labels_match(n["metadata"].get("labels") or {}, requirements)
                and fields_match(n, query.get("fieldSelector", ""))
            ]
        elif verb == "get":
            obj = self.server.store.get(req.plural, req.namespace or "", req.name or "")
            if obj is None:
                raise not_found("", req.plural, req.name or "")
            obj.setdefault("apiVersion", "v1")
            obj.setdefault("kind", resource.kind)
            return 200, self._maybe_table(req, [obj], single=True) or obj
        else:
            items = self._selected(req, query)
            for item in items:
                item.setdefault("apiVersion", "v1")
                item.setdefault("kind", resource.kind)
        revision = self.server.store.revision
        table = self._maybe_table(req, items, revision=revision)
        if table:
            return 200, table
        return (
            200,
            {
                "apiVersion": "v1",
                "kind": f"{resource.kind}List",
                "metadata": {"resourceVersion": str(revision)},
                "items": items,
            },
        )

    def _namespaces(self) -> list[dict[str, Any]]:
        store = self.server.store
        stored = {n["metadata"]["name"]: n for n in store.list("namespaces")}
        names = set(stored) | {"default"}
        for plural in ("pods", "services", *(c.plural for c in self.server.schemas.resources())):
            names.update(o["metadata"].get("namespace") for o in store.list(plural))
        names.discard(None)
        names.discard("")
        result = []
        for name in sorted(names):
            namespace = stored.get(name) or {
                "metadata": {
                    "name": name,
                    "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
                    "creationTimestamp": self.server.started,
                    "resourceVersion": "1",
                    "labels": {"kubernetes.io/metadata.name": name},
                },
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            }
            namespace.update(apiVersion="v1", kind="Namespace")
            result.append(namespace)
        return result

    # ---- server-side printing for `kubectl get`
    def _wants_table(self) -> bool:
        accept = self.headers.get("Accept") or ""
        first = accept.split(",")[0]
        return "as=Table" in first

    def _maybe_table(
        self,
        req: ResourceRequest,
        items: list[dict[str, Any]],
        single: bool = False,
        revision: int | None = None,
    ) -> dict[str, Any] | None:
        if not self._wants_table():
            return None
        columns, cells = _table_layout(req, self.server.schemas)
        include = urlsplit(self.path).query
        include_object = (
            "Object"
            if "includeObject=Object" in include
            else ("None" if "includeObject=None" in include else "Metadata")
        )
        rows = []
        for obj in items:
            row: dict[str, Any] = {"cells": cells(obj)}
            if include_object == "Object":
                row["object"] = obj
            elif include_object == "Metadata":
                row["object"] = {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj.get("metadata", {}),
                }
            rows.append(row)
        metadata = {} if single else {"resourceVersion": str(revision or self.server.store.revision)}
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": metadata,
            "columnDefinitions": columns,
            "rows": rows,
        }

    # ---- watch: current state as ADDED events, then changes, until timeout or disconnect
    def _watch(self, req: ResourceRequest, query: dict[str, str]) -> None:
        if req.is_crd:
            try:
                crd: CrdInfo | None = self._crd_for(req)
            except ApiError as exc:
                self._send_error(exc)
                return
        else:
            crd = None
            if req.plural not in ("pods", "services"):
                self._send(
                    405, ApiError(405, "MethodNotAllowed", f"watch is not supported on {req.plural}").status()
                )
                return
        try:
            timeout = min(float(query.get("timeoutSeconds") or MAX_WATCH_SECONDS), MAX_WATCH_SECONDS)
            since = int(query.get("resourceVersion") or 0)
            requirements = parse_label_selector(query.get("labelSelector", ""))
        except (ValueError, ApiError) as exc:
            error = exc if isinstance(exc, ApiError) else bad_request(str(exc))
            self._send_error(error)
            return
        table = self._wants_table()
        self.send_response(200)
        self.send_header("Content-Type", JSON)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.close_connection = True
        deadline = time.monotonic() + timeout
        known: dict[tuple[str, str], str] = {}
        last_revision = -1
        stopping = self.server.faults.stopping
        try:
            while time.monotonic() < deadline and not stopping.is_set():
                revision = self.server.store.revision
                if revision != last_revision:
                    last_revision = revision
                    current = {}
                    for obj in self._selected(req, {"fieldSelector": query.get("fieldSelector", "")}):
                        if not labels_match(obj["metadata"].get("labels") or {}, requirements):
                            continue
                        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
                        current[key] = obj
                    for key, obj in current.items():
                        version = obj["metadata"].get("resourceVersion", "0")
                        if key not in known:
                            if int(version) > since or since == 0:
                                self._event("ADDED", obj, crd, req, table)
                        elif known[key] != version:
                            self._event("MODIFIED", obj, crd, req, table)
                    for key in set(known) - set(current):
                        gone = {
                            "metadata": {
                                "namespace": key[0],
                                "name": key[1],
                                "resourceVersion": str(revision),
                            }
                        }
                        self._event("DELETED", gone, crd, req, table)
                    known = {k: o["metadata"].get("resourceVersion", "0") for k, o in current.items()}
                stopping.wait(WATCH_POLL_SECONDS)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _event(
        self, kind: str, obj: dict[str, Any], crd: CrdInfo | None, req: ResourceRequest, table: bool
    ) -> None:
        if crd is not None:
            obj = self._serve(crd, obj, req.version)
        else:
            obj.setdefault("apiVersion", "v1")
            obj.setdefault("kind", CORE_RESOURCES[req.plural].kind)
        if table:
            obj = self._maybe_table(req, [obj], single=True) or obj
        data = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _body_name(body: bytes) -> str | None:
    """The object name in a create request, for the audit record (None if unreadable)."""
    try:
        name = json.loads(body).get("metadata", {}).get("name")
    except (ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def _render_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return value


def _table_layout(req: ResourceRequest, schemas: CrdSchemas):
    """Column definitions and a row function, as the real server prints each resource."""
    name_column = {
        "name": "Name",
        "type": "string",
        "format": "name",
        "priority": 0,
        "description": "Name must be unique within a namespace.",
    }
    if req.is_crd:
        crd = schemas.crd_info(req.plural)
        printer = (crd.printer_columns.get(req.version) if crd else None) or []
        printer = [c for c in printer if not c.get("priority")]
        columns = [name_column] + [
            {
                "name": c["name"],
                "type": "string" if c["type"] == "date" else c["type"],
                "format": "",
                "priority": 0,
                "description": c.get("description", ""),
            }
            for c in printer
        ]

        def crd_cells(obj: dict[str, Any]) -> list[Any]:
            cells: list[Any] = [obj["metadata"]["name"]]
            for column in printer:
                value = _field_value(obj, column["jsonPath"].lstrip("."))
                cells.append(human_age(value) if column["type"] == "date" else _render_cell(value))
            return cells

        return columns, crd_cells

    def col(name: str) -> dict[str, Any]:
        return {"name": name, "type": "string", "format": "", "priority": 0, "description": ""}

    if req.plural == "pods":

        def pod_cells(obj: dict[str, Any]) -> list[Any]:
            status = obj.get("status") or {}
            containers = (obj.get("spec") or {}).get("containers") or []
            statuses = status.get("containerStatuses") or []
            ready = sum(1 for s in statuses if s.get("ready"))
            restarts = sum(int(s.get("restartCount", 0)) for s in statuses)
            return [
                obj["metadata"]["name"],
                f"{ready}/{len(containers)}",
                status.get("phase", "Unknown"),
                str(restarts),
                human_age(obj["metadata"].get("creationTimestamp")),
            ]

        return [name_column, col("Ready"), col("Status"), col("Restarts"), col("Age")], pod_cells
    if req.plural == "services":

        def service_cells(obj: dict[str, Any]) -> list[Any]:
            spec = obj.get("spec") or {}
            ports = ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or [])
            return [
                obj["metadata"]["name"],
                spec.get("type", "ClusterIP"),
                spec.get("clusterIP", "<none>"),
                "<none>",
                ports or "<none>",
                human_age(obj["metadata"].get("creationTimestamp")),
            ]

        return [
            name_column,
            col("Type"),
            col("Cluster-IP"),
            col("External-IP"),
            col("Port(s)"),
            col("Age"),
        ], service_cells

    def namespace_cells(obj: dict[str, Any]) -> list[Any]:
        return [
            obj["metadata"]["name"],
            (obj.get("status") or {}).get("phase", "Active"),
            human_age(obj["metadata"].get("creationTimestamp")),
        ]

    return [name_column, col("Status"), col("Age")], namespace_cells
