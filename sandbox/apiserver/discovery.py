"""What the server says it serves: `/version`, the discovery documents (`/api`, `/apis/...`)
and the OpenAPI v3 documents kubectl and the Python client read."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sandbox.apiserver.errors import resource_not_found
from sandbox.schema import GROUP, CrdInfo, CrdSchemas

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


@dataclass(frozen=True)
class CoreResource:
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...]
    verbs: tuple[str, ...] = ("get", "list", "watch")
    categories: tuple[str, ...] = ()  # "all": listed by `kubectl get all`


# The core v1 resources the sandbox serves: read-only but for events, which controllers write.
CORE_RESOURCES = {
    "namespaces": CoreResource("namespaces", "namespace", "Namespace", False, ("ns",)),
    "pods": CoreResource("pods", "pod", "Pod", True, ("po",), categories=("all",)),
    "services": CoreResource("services", "service", "Service", True, ("svc",), categories=("all",)),
    "events": CoreResource("events", "event", "Event", True, ("ev",),
                           verbs=("create", "delete", "get", "list", "watch")),
}

# Built-in resources of other API groups the sandbox serves read-only (seeded from the world,
# as pods are): plural -> (group, version, resource).
WORKLOAD_RESOURCES: dict[str, tuple[str, str, CoreResource]] = {
    "deployments": ("apps", "v1", CoreResource("deployments", "deployment", "Deployment", True, ("deploy",),
                                               verbs=("get", "list"), categories=("all",))),
    "horizontalpodautoscalers": ("autoscaling", "v2", CoreResource(
        "horizontalpodautoscalers", "horizontalpodautoscaler", "HorizontalPodAutoscaler", True, ("hpa",),
        verbs=("get", "list"), categories=("all",))),
}
WORKLOAD_GROUPS: frozenset[str] = frozenset(group for group, _, _ in WORKLOAD_RESOURCES.values())


def workload_resource(group: str, version: str, plural: str) -> CoreResource | None:
    """The built-in resource a group/version/plural names, or None."""
    found = WORKLOAD_RESOURCES.get(plural)
    return found[2] if found and found[:2] == (group, version) else None


# An OpenAPI document as served: (JSON body, its hash), by path below /openapi/v3/.
OpenApiDocuments = dict[str, tuple[bytes, str]]


def discovery_document(path: str, schemas: CrdSchemas, address: str) -> dict[str, Any] | None:
    """The document at a discovery path (`address` is host:port, as `/api` names it), or None."""
    if path == "/version":
        return SERVER_VERSION
    if path == "/api":
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
        }
    if path == "/api/v1":
        return {"kind": "APIResourceList", "groupVersion": "v1", "resources": _core_resource_list()}
    group = _group_document(schemas)
    if path == "/apis":
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [*_workload_groups().values(), group]}
    workload = _workload_document(path)
    if workload is not None:
        return workload
    if path == f"/apis/{GROUP}":
        return {"kind": "APIGroup", "apiVersion": "v1", **group}
    prefix = f"/apis/{GROUP}/"
    if path.startswith(prefix) and path[len(prefix) :] in schemas.group_versions():
        version = path[len(prefix) :]
        resources = [_crd_resource(crd) for crd in schemas.resources() if version in crd.versions]
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{GROUP}/{version}",
            "resources": resources,
        }
    return None


def _core_resource_list() -> list[dict[str, Any]]:
    return [
        {
            "name": resource.plural,
            "singularName": resource.singular,
            "namespaced": resource.namespaced,
            "kind": resource.kind,
            "verbs": list(resource.verbs),
            "shortNames": list(resource.short_names),
            **({"categories": list(resource.categories)} if resource.categories else {}),
        }
        for resource in CORE_RESOURCES.values()
    ]


def _workload_groups() -> dict[str, dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for group, version, _ in WORKLOAD_RESOURCES.values():
        entry = {"groupVersion": f"{group}/{version}", "version": version}
        groups[group] = {"name": group, "versions": [entry], "preferredVersion": entry}
    return groups


def _workload_document(path: str) -> dict[str, Any] | None:
    """`/apis/apps`, `/apis/apps/v1` and the like for WORKLOAD_RESOURCES, or None."""
    for name, group in _workload_groups().items():
        if path == f"/apis/{name}":
            return {"kind": "APIGroup", "apiVersion": "v1", **group}
        group_version = group["preferredVersion"]["groupVersion"]
        if path == f"/apis/{group_version}":
            resources = [
                {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
                 "verbs": list(r.verbs), "shortNames": list(r.short_names), "categories": list(r.categories)}
                for g, v, r in WORKLOAD_RESOURCES.values() if f"{g}/{v}" == group_version
            ]
            return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                    "resources": resources}
    return None


def _group_document(schemas: CrdSchemas) -> dict[str, Any]:
    versions = [{"groupVersion": f"{GROUP}/{v}", "version": v} for v in schemas.group_versions()]
    return {"name": GROUP, "versions": versions, "preferredVersion": versions[0]}


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


# ---- OpenAPI v3


def build_openapi(schemas: CrdSchemas) -> OpenApiDocuments:
    """Every OpenAPI v3 document, serialized once: the schemas never change while serving."""
    documents: dict[str, dict[str, Any]] = {"api/v1": _core_openapi()}
    for version in schemas.group_versions():
        documents[f"apis/{GROUP}/{version}"] = schemas.openapi_v3_document(f"{GROUP}/{version}")
    for group, version, resource in WORKLOAD_RESOURCES.values():
        documents[f"apis/{group}/{version}"] = _loose_openapi(group, version, [resource])
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


def _loose_openapi(group: str, version: str, resources: list[CoreResource]) -> dict[str, Any]:
    """A minimal document for built-in resources of another group (apps/v1, autoscaling/v2)."""
    schemas = {
        f"io.k8s.api.{group}.{version}.{r.kind}": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "x-kubernetes-group-version-kind": [{"group": group, "version": version, "kind": r.kind}],
        }
        for r in resources
    }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": SERVER_VERSION["gitVersion"]},
        "paths": {},
        "components": {"schemas": schemas},
    }


def openapi_index(documents: OpenApiDocuments) -> dict[str, Any]:
    """`/openapi/v3`: where each document is, with its hash (clients cache by it)."""
    return {
        "paths": {
            key: {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest}"}
            for key, (_, digest) in documents.items()
        }
    }


def openapi_document(documents: OpenApiDocuments, path: str) -> tuple[bytes, str]:
    """The (body, hash) served at `/openapi/v3/<key>`; 404 for any other path."""
    key = path[len("/openapi/v3/") :] if path.startswith("/openapi/v3/") else None
    if key not in documents:
        raise resource_not_found()
    return documents[key]
