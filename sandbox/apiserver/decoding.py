"""Request bodies as kube-apiserver's decoder reads them, before any lookup or validation:
400 for what it cannot read as the resource, unknown fields pruned (or refused)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from sandbox.apiserver.errors import bad_request, cannot_decode, invalid
from sandbox.apiserver.request import ResourceRequest
from sandbox.schema import REQUIRED, UNKNOWN, CrdInfo, CrdSchemas, FieldError

JSON = "application/json"

_GO_JSON_TYPES = {bool: "bool", int: "number", float: "number", str: "string", list: "array", dict: "object"}


@dataclass
class Decoded:
    """A request body as the decoder left it: unknown fields pruned, schema errors kept for
    validation (which runs after the preconditions)."""

    obj: dict[str, Any]
    schema_errors: list[FieldError]


def decode_body(body: bytes, content_type: str) -> Any:
    """A JSON or YAML body (by its Content-Type) as Python values; 400 if unreadable."""
    media_type = content_type.split(";")[0].strip()
    try:
        if "yaml" in media_type:
            return yaml.safe_load(body)
        return json.loads(body or b"null")
    except (ValueError, yaml.YAMLError) as exc:
        raise bad_request(f"the body of the request could not be decoded: {exc}") from exc


def body_name(body: bytes) -> str | None:
    """The object name in a create request, for the audit record (None if unreadable)."""
    try:
        name = json.loads(body).get("metadata", {}).get("name")
    except (ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


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


def _check_type_meta(crd: CrdInfo, req: ResourceRequest, obj: Any) -> None:
    """400 unless the body is an object with a kind and this request's apiVersion."""
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


def _check_url_match(metadata: dict[str, Any], req: ResourceRequest, url_name: str | None) -> None:
    """400 for another name or namespace in the body than the URL's."""
    if url_name is not None and metadata.get("name") != url_name:
        raise bad_request(
            f"the name of the object ({metadata.get('name') or ''}) does not match the name on the URL ({url_name})"
        )
    if metadata.get("namespace") not in (None, "", req.namespace):
        raise bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
        )


def decode_object(
    schemas: CrdSchemas,
    crd: CrdInfo,
    req: ResourceRequest,
    query: dict[str, str],
    obj: Any,
    warnings: list[str],
    url_name: str | None = None,
) -> Decoded:
    """What kube-apiserver's decoder does with a body, before any lookup or validation: 400
    for a body it cannot read as this resource (no kind, another apiVersion, labels that are
    not strings, unknown fields under fieldValidation=Strict, another name or namespace than
    the URL's); unknown fields otherwise pruned, with a Warning (added to `warnings`) under
    Warn (the default)."""
    _check_type_meta(crd, req, obj)
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
    normalized, schema_errors = schemas.check(crd.plural, req.version, obj, prune_unknown=True)
    unknown = sorted(e.field for e in schema_errors if e.type == UNKNOWN)
    if unknown and mode == "Strict":
        raise cannot_decode(
            crd.kind,
            req.version,
            "strict decoding error: " + ", ".join(f'unknown field "{f}"' for f in unknown),
        )
    if mode == "Warn":
        warnings.extend(f'unknown field "{f}"' for f in unknown)
    metadata = normalized["metadata"]
    _check_url_match(metadata, req, url_name)
    metadata["namespace"] = req.namespace
    return Decoded(normalized, [e for e in schema_errors if e.type != UNKNOWN])
