"""apps/v1 Deployments and autoscaling/v2 HorizontalPodAutoscalers, served read-only (get and
list, with label and field selectors): they are seeded into the Store from the world, one
Deployment per version and an HPA where the world gives one, as Pods are."""

from __future__ import annotations

from sandbox.apiserver.discovery import workload_resource
from sandbox.apiserver.errors import PageNotFound, method_not_allowed, not_found
from sandbox.apiserver.handler_base import Answer, HandlerBase
from sandbox.apiserver.request import ResourceRequest


class WorkloadReads(HandlerBase):
    """The handler's get and list of WORKLOAD_RESOURCES."""

    def _workloads(self, verb: str, req: ResourceRequest, query: dict[str, str]) -> Answer:
        resource = workload_resource(req.group, req.version, req.plural)
        if resource is None or req.subresource or (req.name and req.namespace is None):
            raise PageNotFound()  # as a real server: no API at this path
        if verb not in ("get", "list"):
            raise method_not_allowed(f"the sandbox serves {req.plural} read-only (seeded from the world)")
        api_version = f"{req.group}/{req.version}"
        if verb == "get":
            obj = self.server.store.get(req.plural, req.namespace or "", req.name or "")
            if obj is None:
                raise not_found(req.group, req.plural, req.name or "")
            obj = {**obj, "apiVersion": api_version, "kind": resource.kind}
            return 200, self._maybe_table(req, [obj], single=True) or obj
        items = [{**o, "apiVersion": api_version, "kind": resource.kind} for o in self._selected(req, query)]
        return self._list_answer(req, items, self.server.store.revision, api_version, f"{resource.kind}List")
