"""Core v1 Events: create, get, list (watch is in `watch`) and delete, with kube-apiserver's
checks on a created Event and the field selectors it supports, so a controller can record
events and `kubectl describe` finds them (it lists events with
`fieldSelector=involvedObject.name=...,involvedObject.namespace=...,involvedObject.kind=...,
involvedObject.uid=...`)."""

from __future__ import annotations

import re
import uuid
from typing import Any

from sandbox.apiserver.decoding import JSON, decode_body
from sandbox.apiserver.errors import (
    ApiError,
    bad_request,
    invalid,
    method_not_allowed,
    not_found,
    resource_not_found,
)
from sandbox.apiserver.handler_base import Answer, HandlerBase, with_core_type_meta
from sandbox.apiserver.request import ResourceRequest
from sandbox.apiserver.selectors import parse_label_selector, select
from sandbox.schema import INVALID, REQUIRED, FieldError

PLURAL = "events"
# The fields kube-apiserver lets a selector name for events (its event strategy's field set).
SELECTABLE_FIELDS = frozenset({
    "metadata.name", "metadata.namespace",
    "involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
    "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
    "reason", "reportingComponent", "source", "type",
})
# Limits core/v1 validation puts on an Event that has eventTime set.
LENGTH_LIMITS = {"reportingInstance": 128, "action": 128, "reason": 128, "message": 1024}


class EventVerbs(HandlerBase):
    """The handler's verbs on core v1 events."""

    def _events(self, verb: str, req: ResourceRequest, query: dict[str, str], body: bytes) -> Answer:
        if req.subresource:
            raise resource_not_found()
        if verb == "create":
            return self._event_create(req, query, body)
        if verb == "list":
            items = [with_core_type_meta(e, "Event") for e in self._selected_events(req, query)]
            return self._list_answer(req, items, self.server.store.revision, "v1", "EventList")
        if verb in ("get", "delete"):
            with self.server.store.lock:
                stored = self.server.store.get(PLURAL, req.namespace or "", req.name or "")
                if stored is None or not req.namespace:
                    raise not_found("", PLURAL, req.name or "")
                if verb == "delete":
                    self.server.store.delete(PLURAL, req.namespace, req.name or "")
                    return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                 "details": {"name": req.name, "kind": PLURAL, "uid": stored["metadata"]["uid"]}}
            event = with_core_type_meta(stored, "Event")
            return 200, self._maybe_table(req, [event], single=True) or event
        raise method_not_allowed(f"the sandbox serves events with create, get, list, watch and delete, not {verb}")

    def _selected_events(self, req: ResourceRequest, query: dict[str, str]) -> list[dict[str, Any]]:
        selector = query.get("fieldSelector", "")
        for term in filter(None, (t.strip() for t in selector.split(","))):
            field = re.split(r"!=|==|=", term, maxsplit=1)[0].strip()
            if field not in SELECTABLE_FIELDS:
                raise bad_request(f'field label not supported: {field}')
        items = self.server.store.list(PLURAL, req.namespace)
        return select(items, parse_label_selector(query.get("labelSelector", "")), selector)

    def _event_create(self, req: ResourceRequest, query: dict[str, str], body: bytes) -> Answer:
        if req.name or not req.namespace:
            raise method_not_allowed("events are created with POST to /api/v1/namespaces/<namespace>/events")
        event = _decoded_event(decode_body(body, self.headers.get("Content-Type") or JSON), req)
        metadata = event["metadata"]
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = metadata["generateName"] + uuid.uuid4().hex[:5]
        errors = event_errors(event)
        if errors:
            raise invalid("Event", "", metadata.get("name") or "", errors)
        for key in ("uid", "creationTimestamp", "generation", "managedFields"):
            metadata.pop(key, None)
        with self.server.store.lock:
            name = metadata["name"]
            if self.server.store.get(PLURAL, req.namespace, name) is not None:
                raise ApiError(409, "AlreadyExists", f'events "{name}" already exists',
                               {"name": name, "kind": PLURAL})
            if query.get("dryRun") == "All":
                return 201, event
            stored = self.server.store.put(PLURAL, event)
        stored["metadata"].pop("generation", None)  # events have no spec: the API gives them none
        return 201, with_core_type_meta(stored, "Event")


def _decoded_event(obj: Any, req: ResourceRequest) -> dict[str, Any]:
    """The body as the decoder reads it: 400 for another kind, version or namespace."""
    if not isinstance(obj, dict):
        raise bad_request("the body must be a JSON object")
    if obj.get("apiVersion") not in (None, "v1"):
        raise bad_request(f"the API version in the data ({obj.get('apiVersion')}) does not match the "
                          "expected API version (v1)")
    if obj.get("kind") not in (None, "Event"):
        raise bad_request(f"the object provided is unrecognized (must be of type Event): {obj.get('kind')}")
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        metadata = obj["metadata"] = {}
    if metadata.get("namespace") not in (None, "", req.namespace):
        raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
    if metadata.get("resourceVersion"):
        raise bad_request("resourceVersion should not be set on objects to be created")
    metadata["namespace"] = req.namespace
    obj.update(apiVersion="v1", kind="Event")
    return obj


def event_errors(event: dict[str, Any]) -> list[FieldError]:
    """What core/v1 validation refuses in a created Event: a missing or bad name, an
    involvedObject in another namespace, and (when eventTime is set, the newer form) a missing
    reportingComponent, reportingInstance, action or reason, or a field over its length."""
    name = event["metadata"].get("name") or ""
    errors: list[FieldError] = []
    if not name:
        errors.append(FieldError("metadata.name", REQUIRED, "Required value: name or generateName is required"))
    elif name in (".", "..") or "/" in name or "%" in name:
        # The only name rule for core/v1 Events: a path segment (events.k8s.io is stricter).
        errors.append(FieldError("metadata.name", INVALID, f'Invalid value: "{name}": may not be \'.\' or '
                                 "'..' and may not contain '/' or '%'"))
    involved = event.get("involvedObject") if isinstance(event.get("involvedObject"), dict) else {}
    namespace, involved_ns = event["metadata"]["namespace"], involved.get("namespace") or ""
    if not event.get("eventTime"):
        if involved_ns != namespace and not (not involved_ns and namespace == "default"):
            errors.append(_mismatch(involved_ns))
        return errors
    if not involved_ns and namespace not in ("default", "kube-system"):
        errors.append(_mismatch(involved_ns))
    for field in ("reportingComponent", "reportingInstance", "action", "reason"):
        if not event.get(field):
            errors.append(FieldError(field, REQUIRED, "Required value"))
    for field, limit in LENGTH_LIMITS.items():
        if len(str(event.get(field) or "")) > limit:
            errors.append(FieldError(field, INVALID, f"Invalid value: \"\": can have at most {limit} characters"))
    return errors


def _mismatch(involved_ns: str) -> FieldError:
    return FieldError("involvedObject.namespace", INVALID, f'Invalid value: "{involved_ns}": does not match event.namespace')
