"""What every part of the request handler shares: writing answers (JSON, Status errors,
`Warning` headers), the Table form of an answer, and finding the objects a request names."""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sandbox.apiserver.decoding import JSON
from sandbox.apiserver.errors import ApiError, PageNotFound
from sandbox.apiserver.request import ResourceRequest
from sandbox.apiserver.selectors import parse_label_selector, select
from sandbox.apiserver.tables import table, wants_table
from sandbox.schema import CrdInfo

if TYPE_CHECKING:
    from sandbox.apiserver.server import ApiServer

# What every verb answers: (HTTP status, body).
Answer = tuple[int, Any]


def with_type_meta(crd: CrdInfo, obj: dict[str, Any], version: str) -> dict[str, Any]:
    """A stored custom object as served in the requested version."""
    obj["apiVersion"] = f"{crd.group}/{version}"
    obj["kind"] = crd.kind
    return obj


def with_core_type_meta(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    """A seeded core v1 object with apiVersion and kind filled in where the seed left them out."""
    obj.setdefault("apiVersion", "v1")
    obj.setdefault("kind", kind)
    return obj


class HandlerBase(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as client-go and urllib3 expect
    # Headers and body go out in separate writes: with Nagle's algorithm on, each answer on a
    # kept-alive connection waited ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    server: ApiServer
    # Per resource request: which fault was injected (for the audit record), and the warnings
    # raised while handling (pruned unknown fields, the webhook's), sent with whatever answer
    # goes out, an error included, as a real server does.
    _fault: str | None
    _warnings: list[str]

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            sys.stderr.write(f"apiserver: {format % args}\n")

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

    def _wants_table(self) -> bool:
        return wants_table(self.headers.get("Accept") or "")

    def _maybe_table(
        self,
        req: ResourceRequest,
        items: list[dict[str, Any]],
        single: bool = False,
        revision: int | None = None,
    ) -> dict[str, Any] | None:
        """The Table form of the answer if the client asked for one, else None."""
        if not self._wants_table():
            return None
        resource_version = None if single else str(revision or self.server.store.revision)
        return table(req, items, self.server.schemas, urlsplit(self.path).query, resource_version)

    def _list_answer(
        self,
        req: ResourceRequest,
        items: list[dict[str, Any]],
        revision: int,
        api_version: str,
        list_kind: str,
    ) -> Answer:
        """A list as of store `revision`: a Table if the client asked for one, else a `<Kind>List`."""
        table = self._maybe_table(req, items, revision=revision)
        if table:
            return 200, table
        return (
            200,
            {
                "apiVersion": api_version,
                "kind": list_kind,
                "metadata": {"resourceVersion": str(revision)},
                "items": items,
            },
        )

    def _selected(self, req: ResourceRequest, query: dict[str, str]) -> list[dict[str, Any]]:
        """The stored objects a list request selects (by namespace, labels and fields)."""
        requirements = parse_label_selector(query.get("labelSelector", ""))
        items = self.server.store.list(req.plural, req.namespace)
        return select(items, requirements, query.get("fieldSelector", ""))

    def _crd_for(self, req: ResourceRequest) -> CrdInfo:
        # No API serves these paths on a real server either: Go's plain 404, not a Status.
        crd = self.server.schemas.crd_info(req.plural)
        if crd is None or crd.group != req.group or req.version not in crd.versions:
            raise PageNotFound()
        if req.name and req.namespace is None:
            raise PageNotFound()
        return crd
