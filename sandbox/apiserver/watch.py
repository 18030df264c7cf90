"""Watch: the current state as ADDED events, then every change, streamed as chunked JSON lines
until the timeout, a disconnect or server shutdown. Changes are found by polling the Store."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sandbox.apiserver.decoding import JSON
from sandbox.apiserver.discovery import CORE_RESOURCES
from sandbox.apiserver.errors import ApiError, bad_request, method_not_allowed
from sandbox.apiserver.handler_base import HandlerBase, with_core_type_meta, with_type_meta
from sandbox.apiserver.request import ResourceRequest
from sandbox.apiserver.selectors import LabelRequirement, parse_label_selector, select
from sandbox.schema import CrdInfo

WATCH_POLL_SECONDS = 0.1
MAX_WATCH_SECONDS = 1800

# An object's place in a watch: (namespace, name).
ObjectKey = tuple[str, str]


@dataclass(frozen=True)
class _Watch:
    """One watch request: what it watches and how its events are shaped."""

    req: ResourceRequest
    crd: CrdInfo | None  # None for core pods, services and events
    requirements: list[LabelRequirement]
    field_selector: str
    since: int  # resourceVersion the client has seen (0: send everything)
    timeout: float
    table: bool  # events carry Tables (kubectl get --watch)


class WatchStream(HandlerBase):
    """The handler's watch verb."""

    def _watch(self, req: ResourceRequest, query: dict[str, str]) -> None:
        try:
            watch = self._watch_request(req, query)
        except ApiError as exc:
            self._send_error(exc)
            return
        self.send_response(200)
        self.send_header("Content-Type", JSON)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.close_connection = True
        try:
            self._stream_changes(watch)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _watch_request(self, req: ResourceRequest, query: dict[str, str]) -> _Watch:
        """The watch a request asks for: 404/405 for what cannot be watched, 400 for bad parameters."""
        crd = self._crd_for(req) if req.is_crd else None
        if crd is None and req.plural not in ("pods", "services", "events"):
            raise method_not_allowed(f"watch is not supported on {req.plural}")
        try:
            timeout = min(float(query.get("timeoutSeconds") or MAX_WATCH_SECONDS), MAX_WATCH_SECONDS)
            since = int(query.get("resourceVersion") or 0)
        except ValueError as exc:
            raise bad_request(str(exc)) from exc
        requirements = parse_label_selector(query.get("labelSelector", ""))
        field_selector = query.get("fieldSelector", "")
        return _Watch(req, crd, requirements, field_selector, since, timeout, self._wants_table())

    def _stream_changes(self, watch: _Watch) -> None:
        """Poll the Store until the watch ends, sending an event for each change seen."""
        deadline = time.monotonic() + watch.timeout
        known: dict[ObjectKey, str] = {}  # resourceVersion of each object the client was told of
        last_revision = -1
        stopping = self.server.faults.stopping
        while time.monotonic() < deadline and not stopping.is_set():
            revision = self.server.store.revision
            if revision != last_revision:
                last_revision = revision
                current = self._watched_objects(watch)
                self._send_changes(watch, known, current, revision)
                known = {k: o["metadata"].get("resourceVersion", "0") for k, o in current.items()}
            stopping.wait(WATCH_POLL_SECONDS)

    def _watched_objects(self, watch: _Watch) -> dict[ObjectKey, dict[str, Any]]:
        items = self.server.store.list(watch.req.plural, watch.req.namespace)
        selected = select(items, watch.requirements, watch.field_selector)
        return {(o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in selected}

    def _send_changes(
        self,
        watch: _Watch,
        known: dict[ObjectKey, str],
        current: dict[ObjectKey, dict[str, Any]],
        revision: int,
    ) -> None:
        """ADDED/MODIFIED/DELETED events from what the client knows to what is stored now."""
        for key, obj in current.items():
            version = obj["metadata"].get("resourceVersion", "0")
            if key not in known:
                if int(version) > watch.since or watch.since == 0:
                    self._event(watch, "ADDED", obj)
            elif known[key] != version:
                self._event(watch, "MODIFIED", obj)
        for namespace, name in set(known) - set(current):
            gone = {"metadata": {"namespace": namespace, "name": name, "resourceVersion": str(revision)}}
            self._event(watch, "DELETED", gone)

    def _event(self, watch: _Watch, kind: str, obj: dict[str, Any]) -> None:
        if watch.crd is not None:
            obj = with_type_meta(watch.crd, obj, watch.req.version)
        else:
            obj = with_core_type_meta(obj, CORE_RESOURCES[watch.req.plural].kind)
        if watch.table:
            obj = self._maybe_table(watch.req, [obj], single=True) or obj
        data = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()
