"""Core v1 Pods, Services and Namespaces, served read-only (they are seeded into the Store);
namespaces also appear for every namespace an object lives in, as on a cluster."""

from __future__ import annotations

import uuid
from typing import Any

from sandbox.apiserver.discovery import CORE_RESOURCES
from sandbox.apiserver.errors import method_not_allowed, not_found, resource_not_found
from sandbox.apiserver.handler_base import Answer, HandlerBase, with_core_type_meta
from sandbox.apiserver.request import ResourceRequest
from sandbox.apiserver.selectors import parse_label_selector, select


class CoreReads(HandlerBase):
    """The handler's get and list of core v1 resources."""

    def _core(self, verb: str, req: ResourceRequest, query: dict[str, str]) -> Answer:
        resource = CORE_RESOURCES.get(req.plural)
        if resource is None or req.subresource:
            raise resource_not_found()
        if verb not in ("get", "list"):
            raise method_not_allowed(
                f"the sandbox serves {req.plural} read-only (seed them through the Store)"
            )
        if req.plural == "namespaces":
            return self._core_namespaces(verb, req, query)
        if verb == "get":
            obj = self.server.store.get(req.plural, req.namespace or "", req.name or "")
            if obj is None:
                raise not_found("", req.plural, req.name or "")
            obj = with_core_type_meta(obj, resource.kind)
            return 200, self._maybe_table(req, [obj], single=True) or obj
        items = [with_core_type_meta(item, resource.kind) for item in self._selected(req, query)]
        return self._core_list(req, items)

    def _core_namespaces(self, verb: str, req: ResourceRequest, query: dict[str, str]) -> Answer:
        items = self._namespaces()
        if verb == "get":
            found = [n for n in items if n["metadata"]["name"] == req.name]
            if not found:
                raise not_found("", "namespaces", req.name or "")
            return 200, self._maybe_table(req, found, single=True) or found[0]
        requirements = parse_label_selector(query.get("labelSelector", ""))
        return self._core_list(req, select(items, requirements, query.get("fieldSelector", "")))

    def _core_list(self, req: ResourceRequest, items: list[dict[str, Any]]) -> Answer:
        revision = self.server.store.revision
        return self._list_answer(req, items, revision, "v1", f"{CORE_RESOURCES[req.plural].kind}List")

    def _namespaces(self) -> list[dict[str, Any]]:
        """The stored namespaces, plus `default` and every namespace an object lives in."""
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
