"""The HTTP request handler: routes each request to the non-resource endpoints (discovery,
OpenAPI, health, sandbox controls) or to a resource verb, after authorization, and records
every resource request in the server's audit log."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sandbox.apiserver.core import CoreReads
from sandbox.apiserver.crud import CustomResourceVerbs
from sandbox.apiserver.decoding import body_name
from sandbox.apiserver.discovery import WORKLOAD_GROUPS, discovery_document, openapi_document, openapi_index
from sandbox.apiserver.errors import (
    ApiError,
    PageNotFound,
    forbidden,
    internal_error,
    method_not_allowed,
    resource_not_found,
)
from sandbox.apiserver.events import EventVerbs
from sandbox.apiserver.faults import control_faults, injected_error
from sandbox.apiserver.handler_base import Answer
from sandbox.apiserver.rbac import authz_request, authz_verb, rbac_allows
from sandbox.apiserver.request import ResourceRequest, parse_resource_path
from sandbox.apiserver.watch import WatchStream
from sandbox.apiserver.workloads import WorkloadReads

_WRITE_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


class Handler(CustomResourceVerbs, CoreReads, EventVerbs, WorkloadReads, WatchStream):
    """One connection's requests (kept alive, as clients expect)."""

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

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        body = self._read_body()
        request = parse_resource_path(path)
        try:
            if request is None:
                self._non_resource(method, path, body)
                return
        except ApiError as exc:
            self._send_error(exc)
            return
        except Exception as exc:  # never leave a client hanging without a Status
            self._send(500, internal_error(exc).status())
            return
        self._resource(method, request, query, body)

    # ---- non-resource endpoints: discovery, OpenAPI, health, sandbox controls
    def _non_resource(self, method: str, path: str, body: bytes) -> None:
        if path == "/sandbox/faults":
            self._send(200, control_faults(self.server.faults, method, body))
            return
        if method != "GET":
            raise method_not_allowed(f"the server does not allow this method on {path}")
        if path in ("/healthz", "/livez", "/readyz"):
            self._send(200, None, "text/plain; charset=utf-8", raw=b"ok")
        elif path == "/sandbox/audit":
            self._send(200, self.server.audit_records())
        elif path == "/openapi/v3":
            self._send(200, openapi_index(self.server.openapi_documents))
        elif path.startswith("/openapi/"):
            document, digest = openapi_document(self.server.openapi_documents, path)
            self._send(200, None, raw=document, extra_headers={"Etag": f'"{digest}"'})
        else:
            host, port = self.server.server_address[:2]
            document = discovery_document(path, self.server.schemas, f"{host}:{port}")
            if document is None:
                raise PageNotFound()
            self._send(200, document)

    # ---- resources
    def _resource(self, method: str, req: ResourceRequest, query: dict[str, str], body: bytes) -> None:
        verb = _verb(method, req, query)
        record = self._audit_record(verb, req, query)
        self._fault = None
        self._warnings = []
        error: ApiError | None = None
        try:
            # As on a real server, authorization comes first: before routing (a forbidden
            # request for an unknown resource is 403, not 404) and before any check of the body.
            user = self.server.user_for(self.headers.get("Authorization"))
            if not rbac_allows(self.server.store, user, authz_verb(verb, req), authz_request(req)):
                raise forbidden(user.name, authz_verb(verb, req), req)
            if verb == "watch":
                record["code"] = 200
                self.server.audit.append(record)
                self._watch(req, query)
                return
            code, result = self._handle(verb, req, query, body)
        except ApiError as exc:
            error, code = exc, exc.code
        except Exception as exc:
            error, code = internal_error(exc), 500
        record["code"] = code
        if self._fault:
            record["fault"] = self._fault  # which answers were injected, not the server's own
        if verb == "create" and not record["name"]:
            record["name"] = body_name(body)
        self.server.audit.append(record)
        if error is not None:
            self._send_error(error, self._warnings)
        else:
            self._send(code, result, warnings=self._warnings)

    def _audit_record(self, verb: str, req: ResourceRequest, query: dict[str, str]) -> dict[str, Any]:
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
        return record

    def _handle(self, verb: str, req: ResourceRequest, query: dict[str, str], body: bytes) -> Answer:
        if not req.is_crd and req.plural == "events":
            return self._events(verb, req, query, body)
        if not req.is_crd:
            return self._core(verb, req, query)
        if req.group in WORKLOAD_GROUPS:
            return self._workloads(verb, req, query)
        crd = self._crd_for(req)
        if req.subresource:
            raise resource_not_found()
        if verb in _WRITE_VERBS.values():
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

    def _maybe_fault(self, req: ResourceRequest) -> None:
        due = self.server.faults.take()
        if due is not None:
            self._fault = due["kind"]  # for the audit record
            raise injected_error(due, req, self.server.faults.stopping)


def _verb(method: str, req: ResourceRequest, query: dict[str, str]) -> str:
    """The Kubernetes verb of a request: GET is get, list or watch."""
    verb = _WRITE_VERBS.get(method)
    if verb is not None:
        return verb
    if req.name:
        return "get"
    return "watch" if query.get("watch", "").lower() in ("true", "1") else "list"
