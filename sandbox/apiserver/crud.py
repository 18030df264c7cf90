"""The verbs on Istio's custom resources: get, list, create, update (PUT), patch and delete,
with kube-apiserver's preconditions (resourceVersion, uid), dry-run and no-op writes."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

from sandbox.apiserver.admission import validate_object
from sandbox.apiserver.decoding import JSON, Decoded, decode_body, decode_object
from sandbox.apiserver.errors import (
    RESOURCE_VERSION_REQUIRED,
    ApiError,
    bad_request,
    conflict,
    invalid,
    method_not_allowed,
    not_found,
    qualified,
    uid_conflict,
)
from sandbox.apiserver.handler_base import Answer, HandlerBase, with_type_meta
from sandbox.apiserver.patch import PatchError, json_patch, merge_patch
from sandbox.apiserver.request import ResourceRequest
from sandbox.schema import CrdInfo

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
# A real server also takes application/apply-patch+yaml (server-side apply); the sandbox does not.
ACCEPTED_PATCH_TYPES = f"{JSON_PATCH}, {MERGE_PATCH}"


class CustomResourceVerbs(HandlerBase):
    """The handler's verbs on custom resources, each `(crd, req, query, body) -> Answer`."""

    # ---- reads
    def _crd_get(self, crd: CrdInfo, req: ResourceRequest, query: dict[str, str], body: bytes) -> Answer:
        obj = with_type_meta(crd, self._stored_or_404(crd, req), req.version)
        return 200, self._maybe_table(req, [obj], single=True) or obj

    def _crd_list(self, crd: CrdInfo, req: ResourceRequest, query: dict[str, str], body: bytes) -> Answer:
        with self.server.store.lock:  # items and resourceVersion from the same instant
            items = [with_type_meta(crd, o, req.version) for o in self._selected(req, query)]
            revision = self.server.store.revision
        return self._list_answer(req, items, revision, f"{crd.group}/{req.version}", crd.list_kind)

    def _stored_or_404(self, crd: CrdInfo, req: ResourceRequest) -> dict[str, Any]:
        stored = self.server.store.get(req.plural, req.namespace or "", req.name or "")
        if stored is None:
            raise not_found(crd.group, crd.plural, req.name or "")
        return stored

    # ---- writes
    def _decode(self, body: bytes) -> Any:
        return decode_body(body, self.headers.get("Content-Type") or JSON)

    def _decode_object(
        self, crd: CrdInfo, req: ResourceRequest, query: dict[str, str], obj: Any, url_name: str | None = None
    ) -> Decoded:
        return decode_object(self.server.schemas, crd, req, query, obj, self._warnings, url_name)

    def _validate_object(
        self, crd: CrdInfo, req: ResourceRequest, decoded: Decoded, old: dict[str, Any] | None
    ) -> dict[str, Any]:
        return validate_object(self.server.schemas, self.server.store, crd, req, decoded, old, self._warnings)

    def _store_write(
        self,
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

    def _store_replacement(
        self, crd: CrdInfo, req: ResourceRequest, query: dict[str, str], decoded: Decoded, old: dict[str, Any]
    ) -> dict[str, Any]:
        """An update or patch of `old`, once its preconditions hold: validated, then stored."""
        new = self._validate_object(crd, req, decoded, old)
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        return self._store_write(req, query, new, old)

    def _crd_create(self, crd: CrdInfo, req: ResourceRequest, query: dict[str, str], body: bytes) -> Answer:
        if req.name:
            raise method_not_allowed("POST is not allowed on a named resource")
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
                    f'{qualified(crd.group, crd.plural)} "{name}" already exists',
                    {"name": name, "group": crd.group, "kind": crd.plural},
                )
            stored = self._store_write(req, query, new, None)
        return 201, with_type_meta(crd, stored, req.version)

    def _crd_update(self, crd: CrdInfo, req: ResourceRequest, query: dict[str, str], body: bytes) -> Answer:
        if not req.name:
            raise method_not_allowed("PUT needs a resource name")
        decoded = self._decode_object(crd, req, query, self._decode(body), url_name=req.name)
        metadata = decoded.obj["metadata"]
        with self.server.store.lock:
            # In the order of kube-apiserver's registry: existence, the uid precondition, then the
            # resourceVersion (required for custom resources: no unconditional update), validation.
            old = self._stored_or_404(crd, req)
            uid, stored_uid = metadata.get("uid"), old["metadata"].get("uid")
            if uid and uid != stored_uid:
                raise uid_conflict(crd.group, crd.plural, req.namespace or "", req.name, uid, stored_uid)
            wanted = metadata.get("resourceVersion")
            if not wanted:
                raise invalid(crd.plural, crd.group, req.name, [RESOURCE_VERSION_REQUIRED])
            if wanted != old["metadata"]["resourceVersion"]:
                raise conflict(crd.group, crd.plural, req.name)
            stored = self._store_replacement(crd, req, query, decoded, old)
        return 200, with_type_meta(crd, stored, req.version)

    def _crd_patch(self, crd: CrdInfo, req: ResourceRequest, query: dict[str, str], body: bytes) -> Answer:
        if not req.name:
            raise method_not_allowed("PATCH needs a resource name")
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
            old = self._stored_or_404(crd, req)
            patched = _patched(crd, req, old, content_type, patch)
            decoded = self._decode_object(crd, req, query, patched)
            stored = self._store_replacement(crd, req, query, decoded, old)
        return 200, with_type_meta(crd, stored, req.version)

    def _crd_delete(self, crd: CrdInfo, req: ResourceRequest, query: dict[str, str], body: bytes) -> Answer:
        if not req.name:
            raise method_not_allowed("deleting a collection is not supported by the sandbox")
        options = self._decode(body) if body else {}
        preconditions = (options or {}).get("preconditions") or {} if isinstance(options, dict) else {}
        dry_run = query.get("dryRun") == "All" or "All" in ((options or {}).get("dryRun") or [])
        with self.server.store.lock:
            old = self._stored_or_404(crd, req)
            for key in ("resourceVersion", "uid"):
                if preconditions.get(key) and preconditions[key] != old["metadata"].get(key):
                    raise conflict(crd.group, crd.plural, req.name)
            if not dry_run:
                self.server.store.delete(req.plural, req.namespace or "", req.name)
        details = {
            "name": req.name,
            "group": crd.group,
            "kind": crd.plural,
            "uid": old["metadata"].get("uid"),
        }
        return 200, {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        }


def _patched(crd: CrdInfo, req: ResourceRequest, old: dict[str, Any], content_type: str, patch: Any) -> Any:
    """`old` (as served in the request's version) with the patch applied: 422 if it cannot be,
    400 if it renames the object, 409 if it carries another resourceVersion."""
    current = with_type_meta(crd, copy.deepcopy(old), req.version)
    try:
        patched = merge_patch(current, patch) if content_type == MERGE_PATCH else json_patch(current, patch)
    except PatchError as exc:
        raise ApiError(422, "Invalid", str(exc)) from exc
    metadata = patched.get("metadata") if isinstance(patched, dict) else None
    if not isinstance(metadata, dict) or metadata.get("name") != req.name:
        raise bad_request("a patch may not change metadata.name")
    if metadata.get("resourceVersion") not in (None, old["metadata"]["resourceVersion"]):
        raise conflict(crd.group, crd.plural, req.name or "")
    return patched
