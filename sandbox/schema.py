"""CRD schemas for the sandbox API server: structural-schema validation, as a real API server does.

The schemas come from Istio's real CRD files when a directory holding them is given (the same
files a cluster installs), else from a compact built-in schema (`builtin_schemas`) that covers
the fields this project writes. Validation follows the Kubernetes rules for structural
schemas (type, required, properties, additionalProperties, enum, bounds, oneOf/anyOf/allOf/not,
x-kubernetes-* extensions). Unknown fields are reported as FieldValueUnknown errors; the API
server decides, as a real one does by `fieldValidation`, whether they are pruned (with a
warning) or refuse the request.

Only a few `x-kubernetes-validations` CEL rules are evaluated (the ones Istio's CRDs use for
durations and label selectors, see `_CEL_RULES`); any other rule is skipped and remembered in
`CrdSchemas.skipped_rules`.
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

GROUP = "networking.istio.io"
CRD_FILES = ("virtualservices.crd.yaml", "destinationrules.crd.yaml")

# k8s field.ErrorType values, as they appear in Status details.causes[].reason.
REQUIRED = "FieldValueRequired"
INVALID = "FieldValueInvalid"
NOT_SUPPORTED = "FieldValueNotSupported"
TYPE_INVALID = "FieldValueTypeInvalid"
UNKNOWN = "FieldValueUnknown"
TOO_LONG = "FieldValueTooLong"
TOO_MANY = "FieldValueTooMany"
DUPLICATE = "FieldValueDuplicate"

# Error types after which kube-apiserver does not evaluate a CRD's x-kubernetes-validations
# rules (apiextensions-apiserver `hasBlockingErr`); it says so with one extra cause instead.
BLOCKING = frozenset({NOT_SUPPORTED, REQUIRED, TOO_LONG, TOO_MANY, TYPE_INVALID})
RULES_NOT_CHECKED_FIELD = "<nil>"  # field.Invalid(nil, ...): no path, printed as Go's nil
RULES_NOT_CHECKED_MESSAGE = (
    "Invalid value: null: some validation rules were not checked because the object was invalid; "
    "correct the existing errors to complete validation"
)

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class FieldError:
    """One problem in an object, shaped like a Kubernetes `StatusCause`."""

    field: str
    type: str
    message: str
    rule: bool = False  # from an x-kubernetes-validations (CEL) rule, not the OpenAPI schema

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def gate_rule_errors(errors: list[FieldError], has_rules: bool) -> list[FieldError]:
    """The errors as kube-apiserver reports them for a CRD: schema errors first, then the CEL
    rules' errors, unless a blocking schema error (wrong type, missing, unsupported...) stopped
    the rules from running: then one `<nil>` cause says so instead. `has_rules`: the version's
    schema has any rule (else the server has no rule validator and adds nothing)."""
    schema_errors = [e for e in errors if not e.rule]
    rule_errors = [e for e in errors if e.rule]
    if has_rules and any(e.type in BLOCKING for e in schema_errors):
        return [*schema_errors, FieldError(RULES_NOT_CHECKED_FIELD, INVALID, RULES_NOT_CHECKED_MESSAGE)]
    return schema_errors + rule_errors


@dataclass(frozen=True)
class CrdInfo:
    """What discovery and the OpenAPI document need to know about one custom resource."""

    group: str
    plural: str
    singular: str
    kind: str
    list_kind: str
    short_names: tuple[str, ...]
    categories: tuple[str, ...]
    versions: tuple[str, ...]  # served versions, in the CRD's order
    storage_version: str
    namespaced: bool = True
    printer_columns: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


# --------------------------------------------------------------------------- validation core


# JSON type names by Python type; bool before int, as bool is an int to isinstance.
_JSON_TYPE_NAMES = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    for python_type, name in _JSON_TYPE_NAMES:
        if isinstance(value, python_type):
            return name
    return type(value).__name__


def _render(value: Any) -> str:
    """A value as Kubernetes prints it in a field error: strings quoted, containers by type."""
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + '..."'


def _is_type(value: Any, expected: str) -> bool:
    if expected == "int-or-string":  # x-kubernetes-int-or-string
        return _is_type(value, "integer") or isinstance(value, str)
    if expected == "object":
        return isinstance(value, dict)
    if expected == "array":
        return isinstance(value, list)
    if expected == "string":
        return isinstance(value, str)
    if expected == "boolean":
        return isinstance(value, bool)
    if expected == "integer":
        # JSON has one number type: 3.0 decodes to a float but is an integer value.
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if expected == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return True


_DURATION = re.compile(r"^[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(text: str) -> float | None:
    """Seconds in a Go duration string ("1.5s", "300ms", "1h2m"), or None if it is not one."""
    if text == "0":
        return 0.0
    if not isinstance(text, str) or not _DURATION.match(text):
        return None
    seconds = sum(float(num) * _UNIT_SECONDS[unit] for num, unit in _DURATION_PART.findall(text))
    return -seconds if text.startswith("-") else seconds


def _at_least_1ms(value: Any) -> bool:
    seconds = parse_go_duration(value)
    return seconds is not None and seconds >= 0.001 - 1e-12


# The CEL rules Istio's CRDs carry, evaluated by hand: rule text -> check(self) -> ok.
_CEL_RULES: dict[str, Any] = {
    "duration(self) >= duration('1ms')": _at_least_1ms,
    '!self.contains("*")': lambda v: "*" not in v,
    'self.all(key, !key.contains("*"))': lambda v: all("*" not in k for k in v),
    "self.all(key, key.size() != 0)": lambda v: all(len(k) != 0 for k in v),
}


def _one_of_keys(branches: list[dict[str, Any]]) -> list[str] | None:
    """For Istio's "at most one of" idiom (oneOf: [not anyOf required..., required a, ...]),
    the keys involved, so the error message can name them."""
    keys = [b["required"][0] for b in branches if list(b) == ["required"] and len(b["required"]) == 1]
    return keys if len(keys) == len(branches) - 1 else None


class _Validator:
    """Walks one object against one schema, collecting errors and building the normalized
    object (nulls of non-nullable fields dropped, unknown fields dropped when pruning)."""

    def __init__(self, prune_unknown: bool, skipped_rules: set[str]) -> None:
        self.errors: list[FieldError] = []
        self.prune_unknown = prune_unknown
        self.skipped_rules = skipped_rules

    def error(self, path: str, kind: str, message: str) -> None:
        self.errors.append(FieldError(path, kind, message))

    def invalid(self, path: str, value: Any, detail: str) -> None:
        self.error(path, INVALID, f"Invalid value: {_render(value)}: {path} in body {detail}")

    def type_invalid(self, path: str, value: Any, expected: str) -> None:
        # kube-openapi's InvalidType: the bad "value" is the JSON type found.
        found = _json_type(value)
        self.error(
            path,
            TYPE_INVALID,
            f'Invalid value: "{found}": {path} in body must be of type {expected}: "{found}"',
        )

    def check(self, schema: dict[str, Any], value: Any, path: str, structural: bool = True) -> Any:
        if value is None:
            if schema.get("nullable") or (
                schema.get("x-kubernetes-preserve-unknown-fields") and "type" not in schema
            ):
                return None
            self.type_invalid(path, value, schema.get("type", "object"))
            return None
        expected = "int-or-string" if schema.get("x-kubernetes-int-or-string") else schema.get("type")
        if expected and not _is_type(value, expected):
            self.type_invalid(path, value, expected)
            return value
        self._value_checks(schema, value, path)
        if isinstance(value, dict):
            value = self._object(schema, value, path, structural)
        elif isinstance(value, list) and "items" in schema:
            value = [
                self.check(schema["items"], item, f"{path}[{i}]", structural) for i, item in enumerate(value)
            ]
        self._combinators(schema, value, path)
        return value

    def _value_checks(self, schema: dict[str, Any], value: Any, path: str) -> None:
        if "enum" in schema and value not in schema["enum"]:
            supported = ", ".join(json.dumps(v) for v in schema["enum"])
            self.error(
                path, NOT_SUPPORTED, f"Unsupported value: {_render(value)}: supported values: {supported}"
            )
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self._number_checks(schema, value, path)
        elif isinstance(value, str):
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                self.error(path, TOO_LONG, f"Too long: may not be more than {schema['maxLength']} bytes")
            if "minLength" in schema and len(value) < schema["minLength"]:
                self.invalid(path, value, f"should be at least {schema['minLength']} chars long")
            if "pattern" in schema and not re.search(schema["pattern"], value):
                self.invalid(path, value, f"should match '{schema['pattern']}'")
            if schema.get("format") == "byte":
                try:
                    base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError):
                    self.invalid(path, value, "must be of format byte (base64)")
        elif isinstance(value, list):
            if "maxItems" in schema and len(value) > schema["maxItems"]:
                self.error(
                    path, TOO_MANY, f"Too many: {len(value)}: must have at most {schema['maxItems']} items"
                )
            if "minItems" in schema and len(value) < schema["minItems"]:
                self.invalid(path, value, f"should have at least {schema['minItems']} items")
        elif isinstance(value, dict):
            if "maxProperties" in schema and len(value) > schema["maxProperties"]:
                self.error(
                    path,
                    TOO_MANY,
                    f"Too many: {len(value)}: must have at most {schema['maxProperties']} items",
                )
            if "minProperties" in schema and len(value) < schema["minProperties"]:
                self.invalid(path, value, f"should have at least {schema['minProperties']} properties")
        for rule in schema.get("x-kubernetes-validations", ()):
            check = _CEL_RULES.get(rule.get("rule", ""))
            if check is None:
                self.skipped_rules.add(rule.get("rule", ""))
                continue
            try:
                ok = check(value)
            except (TypeError, AttributeError):
                ok = False
            if not ok:
                message = rule.get("message") or f"failed rule: {rule['rule']}"
                self.errors.append(
                    FieldError(path, INVALID, f"Invalid value: {_render(value)}: {message}", rule=True)
                )

    def _number_checks(self, schema: dict[str, Any], value: float, path: str) -> None:
        if "minimum" in schema and value < schema["minimum"]:
            self.invalid(path, value, f"should be greater than or equal to {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            self.invalid(path, value, f"should be less than or equal to {schema['maximum']}")
        bounds = {"int32": _INT32, "int64": _INT64}.get(schema.get("format", ""))
        if bounds and not bounds[0] <= value <= bounds[1]:
            self.invalid(
                path, value, f"must be of format {schema['format']} (between {bounds[0]} and {bounds[1]})"
            )

    def _object(
        self, schema: dict[str, Any], value: dict[str, Any], path: str, structural: bool
    ) -> dict[str, Any]:
        properties = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
        prefix = f"{path}." if path else ""
        for key in schema.get("required", ()):
            # Checked first so "Required value" leads the list; a non-nullable null counts as missing.
            if value.get(key) is None and not (key in value and properties.get(key, {}).get("nullable")):
                self.error(prefix + key, REQUIRED, "Required value")
        result: dict[str, Any] = {}
        for key, item in value.items():
            sub = properties.get(key)
            if sub is not None:
                if item is None and not sub.get("nullable"):
                    continue  # as a real API server: null of a non-nullable field is pruned
                result[key] = self.check(sub, item, prefix + key, structural)
            elif isinstance(additional, dict):
                result[key] = self.check(additional, item, f"{path}[{key}]", structural)
            elif additional is True or preserve or not structural:
                result[key] = item
            else:
                self.error(prefix + key, UNKNOWN, "field not declared in schema")
                if not self.prune_unknown:
                    result[key] = item
        return result

    def _matches(self, schema: dict[str, Any], value: Any, path: str) -> bool:
        probe = _Validator(False, self.skipped_rules)
        probe.check(schema, value, path, structural=False)
        return not probe.errors

    def _combinators(self, schema: dict[str, Any], value: Any, path: str) -> None:
        for sub in schema.get("allOf", ()):
            probe = _Validator(False, self.skipped_rules)
            probe.check(sub, value, path, structural=False)
            self.errors.extend(probe.errors)
        if "anyOf" in schema and not any(self._matches(s, value, path) for s in schema["anyOf"]):
            self.invalid(path, value, "must validate at least one schema (anyOf)")
        if "oneOf" in schema:
            matched = sum(self._matches(s, value, path) for s in schema["oneOf"])
            if matched != 1:
                keys = _one_of_keys(schema["oneOf"])
                hint = f": set at most one of {', '.join(keys)}" if keys else ""
                self.invalid(path, value, f"must validate one and only one schema (oneOf){hint}")
        if "not" in schema and self._matches(schema["not"], value, path):
            self.invalid(path, value, "must not validate the schema (not)")


# --------------------------------------------------------------------------- schemas


def _root_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The CRD's schema plus the fields every object has; metadata is checked by the server."""
    root = dict(schema)
    root["properties"] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        **schema.get("properties", {}),
    }
    return root


class CrdSchemas:
    """The custom resources the sandbox serves: metadata for discovery, schemas per version."""

    def __init__(
        self, crds: list[CrdInfo], schemas: dict[tuple[str, str], dict[str, Any]], source: str
    ) -> None:
        self._crds = {crd.plural: crd for crd in crds}
        self._schemas = {key: _root_schema(value) for key, value in schemas.items()}
        self._raw = schemas
        self._has_rules = {key: _has_rules(value) for key, value in schemas.items()}
        self.source = source  # "builtin" or the CRD directory
        self.skipped_rules: set[str] = set()

    # ---- metadata
    def resources(self) -> list[CrdInfo]:
        return list(self._crds.values())

    def crd_info(self, plural: str) -> CrdInfo | None:
        return self._crds.get(plural)

    def group_versions(self) -> list[str]:
        """Versions served for the group, preferred (storage) version first."""
        versions: list[str] = []
        for crd in self._crds.values():
            for version in (crd.storage_version, *crd.versions):
                if version not in versions:
                    versions.append(version)
        return versions

    # ---- validation
    def check(
        self, plural: str, version: str, obj: dict[str, Any], prune_unknown: bool = False
    ) -> tuple[dict[str, Any], list[FieldError]]:
        """Validate `obj`; return the normalized object (as a real server would store it: nulls
        of non-nullable fields dropped, and unknown fields dropped if `prune_unknown`) and the
        errors. Unknown fields are errors of type FieldValueUnknown either way."""
        schema = self._schemas.get((plural, version))
        if schema is None:
            raise KeyError(f"no schema for {plural} version {version}")
        validator = _Validator(prune_unknown, self.skipped_rules)
        normalized = validator.check(schema, obj, "")
        return normalized, validator.errors

    def validate(self, resource_plural: str, version: str, obj: dict[str, Any]) -> list[FieldError]:
        return self.check(resource_plural, version, obj)[1]

    def has_rules(self, plural: str, version: str) -> bool:
        """Whether the version's schema carries any x-kubernetes-validations rule."""
        return self._has_rules.get((plural, version), False)

    # ---- OpenAPI v3, as a real API server publishes it for CRDs
    def openapi_v3_document(self, group_version: str) -> dict[str, Any]:
        group, _, version = group_version.rpartition("/")
        crds = [c for c in self._crds.values() if c.group == group and version in c.versions]
        if not crds:
            raise KeyError(group_version)
        from sandbox import builtin_schemas  # local: only the OpenAPI path needs the meta schemas

        schemas: dict[str, Any] = dict(builtin_schemas.META_SCHEMAS)
        paths: dict[str, Any] = {}
        for crd in crds:
            gvk = {"group": crd.group, "version": version, "kind": crd.kind}
            prefix = _openapi_name(crd.group, version)
            schema = copy.deepcopy(self._raw[(crd.plural, version)])
            schema["properties"] = {**_OPENAPI_COMMON_PROPERTIES, **schema.get("properties", {})}
            schema["x-kubernetes-group-version-kind"] = [gvk]
            schemas[f"{prefix}.{crd.kind}"] = schema
            schemas[f"{prefix}.{crd.list_kind}"] = _list_schema(
                f"{prefix}.{crd.kind}", {**gvk, "kind": crd.list_kind}
            )
            paths.update(_openapi_paths(crd, version, f"{prefix}.{crd.kind}", f"{prefix}.{crd.list_kind}"))
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
            "paths": paths,
            "components": {"schemas": schemas},
        }


def _has_rules(schema: Any) -> bool:
    if isinstance(schema, dict):
        return bool(schema.get("x-kubernetes-validations")) or any(_has_rules(v) for v in schema.values())
    if isinstance(schema, list):
        return any(_has_rules(v) for v in schema)
    return False


def _openapi_name(group: str, version: str) -> str:
    # A real server names CRD schemas by reversed group: io.istio.networking.v1.VirtualService.
    return ".".join(reversed(group.split("."))) + "." + version


_META = "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1."
_OPENAPI_COMMON_PROPERTIES = {
    "apiVersion": {
        "type": "string",
        "description": "APIVersion defines the versioned schema of this object.",
    },
    "kind": {"type": "string", "description": "Kind is a string value representing the REST resource."},
    "metadata": {"allOf": [{"$ref": _META + "ObjectMeta"}], "description": "Standard object's metadata."},
}


def _list_schema(item_ref: str, gvk: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{item_ref}"}},
            "metadata": {"allOf": [{"$ref": _META + "ListMeta"}]},
        },
        "x-kubernetes-group-version-kind": [gvk],
    }


_WRITE_PARAMS = ("dryRun", "fieldManager", "fieldValidation")
_LIST_PARAMS = ("labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "watch")
_BODY_TYPES = ("application/json", "application/yaml")
# No apply-patch+yaml: the sandbox has no server-side apply.
_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json")


def _openapi_operation(
    crd: CrdInfo,
    version: str,
    item_ref: dict[str, str],
    action: str,
    op_id: str,
    response: dict[str, Any],
    params: tuple[str, ...] = (),
    body: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One operation of a CRD path: its query `params` and, for writes, the `body` media types."""
    operation: dict[str, Any] = {
        "operationId": op_id,
        "tags": [f"{crd.group.replace('.', '')}_{version}"],
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": response}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": crd.group, "version": version, "kind": crd.kind},
    }
    if params:
        operation["parameters"] = [
            {"name": p, "in": "query", "schema": {"type": "string", "uniqueItems": True}} for p in params
        ]
    if body:
        schema = {"$ref": _META + "Patch"} if action == "patch" else item_ref
        operation["requestBody"] = {"content": {t: {"schema": schema} for t in body}, "required": True}
    return operation


def _path_parameter(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _openapi_paths(crd: CrdInfo, version: str, item: str, items: str) -> dict[str, Any]:
    """The paths a real server publishes for a CRD version: list, create, read, replace, patch, delete."""
    ref = {"$ref": f"#/components/schemas/{item}"}
    list_ref = {"$ref": f"#/components/schemas/{items}"}
    op = functools.partial(_openapi_operation, crd, version, ref)
    base = f"/apis/{crd.group}/{version}"
    kind = crd.kind
    return {
        f"{base}/{crd.plural}": {
            "get": op("list", f"list{kind}ForAllNamespaces", list_ref, _LIST_PARAMS),
        },
        f"{base}/namespaces/{{namespace}}/{crd.plural}": {
            "get": op("list", f"listNamespaced{kind}", list_ref, _LIST_PARAMS),
            "post": op("post", f"createNamespaced{kind}", ref, _WRITE_PARAMS, _BODY_TYPES),
            "parameters": [_path_parameter("namespace")],
        },
        f"{base}/namespaces/{{namespace}}/{crd.plural}/{{name}}": {
            "get": op("get", f"readNamespaced{kind}", ref, ("resourceVersion",)),
            "put": op("put", f"replaceNamespaced{kind}", ref, _WRITE_PARAMS, _BODY_TYPES),
            "patch": op("patch", f"patchNamespaced{kind}", ref, (*_WRITE_PARAMS, "force"), _PATCH_TYPES),
            "delete": op("delete", f"deleteNamespaced{kind}", {"$ref": _META + "Status"}, ("dryRun",)),
            "parameters": [_path_parameter("name"), _path_parameter("namespace")],
        },
    }


# --------------------------------------------------------------------------- loading


def _info_from_crd(crd: dict[str, Any]) -> CrdInfo:
    spec = crd["spec"]
    names = spec["names"]
    served = [v for v in spec["versions"] if v.get("served", True)]
    storage = next((v["name"] for v in served if v.get("storage")), served[0]["name"])
    return CrdInfo(
        group=spec["group"],
        plural=names["plural"],
        singular=names.get("singular", names["kind"].lower()),
        kind=names["kind"],
        list_kind=names.get("listKind", names["kind"] + "List"),
        short_names=tuple(names.get("shortNames", ())),
        categories=tuple(names.get("categories", ())),
        versions=tuple(v["name"] for v in served),
        storage_version=storage,
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        printer_columns={v["name"]: list(v.get("additionalPrinterColumns", ())) for v in served},
    )


def load_schemas(crd_dir: str | None) -> CrdSchemas:
    """Schemas from Istio's CRD files in `crd_dir`, or the built-in compact schema if None.
    Loaded once; validation never re-reads files."""
    if crd_dir is None:
        from sandbox import builtin_schemas

        return CrdSchemas(builtin_schemas.crd_infos(), builtin_schemas.schemas(), "builtin")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crds: list[CrdInfo] = []
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for filename in CRD_FILES:
        path = os.path.join(crd_dir, filename)
        with open(path, encoding="utf-8") as handle:
            for doc in yaml.load_all(handle, Loader=loader):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                info = _info_from_crd(doc)
                crds.append(info)
                for version in doc["spec"]["versions"]:
                    if version.get("served", True):
                        schemas[(info.plural, version["name"])] = version["schema"]["openAPIV3Schema"]
    return CrdSchemas(crds, schemas, crd_dir)
