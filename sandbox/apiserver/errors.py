"""Errors answered as Kubernetes `Status` objects, worded as kube-apiserver words them."""

from __future__ import annotations

from typing import Any

from sandbox.apiserver.request import ResourceRequest
from sandbox.schema import INVALID, FieldError


class ApiError(Exception):
    """An error answered as a Kubernetes `Status` object."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


class PageNotFound(ApiError):
    """What kube-apiserver answers for a path no API serves (an unknown group, version or
    resource): Go's plain-text `404 page not found`, not a Status."""

    BODY = b"404 page not found\n"

    def __init__(self) -> None:
        super().__init__(404, "NotFound", "404 page not found")


def qualified(group: str, plural: str) -> str:
    """A resource as kube-apiserver names it in messages: `virtualservices.networking.istio.io`."""
    return f"{plural}.{group}" if group else plural


def not_found(group: str, plural: str, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{qualified(group, plural)} "{name}" not found',
        {"name": name, "group": group, "kind": plural},
    )


def resource_not_found() -> ApiError:
    """404 for a subresource or core resource the sandbox does not serve."""
    return ApiError(404, "NotFound", "the server could not find the requested resource")


def method_not_allowed(message: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", message)


def conflict(group: str, plural: str, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified(group, plural)} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        {"name": name, "group": group, "kind": plural},
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def internal_error(exc: Exception) -> ApiError:
    """500 for a bug in the sandbox: the client still gets a Status rather than a hung request."""
    return ApiError(500, "InternalError", f"internal error: {exc!r}")


def cannot_decode(kind: str, version: str, reason: str) -> ApiError:
    """A body the real server's decoder refuses (before any lookup or validation)."""
    return bad_request(f'{kind} in version "{version}" cannot be handled as a {kind}: {reason}')


def forbidden(user: str, verb: str, req: ResourceRequest) -> ApiError:
    """RBAC's refusal, worded as kube-apiserver words it."""
    resource = req.plural + (f"/{req.subresource}" if req.subresource else "")
    what = qualified(req.group, req.plural) + (f' "{req.name}"' if req.name else "")
    scope = f'in the namespace "{req.namespace}"' if req.namespace else "at the cluster scope"
    details = {k: v for k, v in {"name": req.name, "group": req.group, "kind": req.plural}.items() if v}
    return ApiError(
        403,
        "Forbidden",
        f'{what} is forbidden: User "{user}" cannot {verb} resource "{resource}" in API group '
        f'"{req.group}" {scope}',
        details,
    )


def invalid(kind: str, group: str, name: str, errors: list[FieldError]) -> ApiError:
    """422 Invalid. `kind` is the Kind for validation errors, the resource plural for the
    registry's own checks (as kube-apiserver names them: `virtualservices.networking.istio.io`)."""
    rendered = [str(e) for e in errors]
    summary = rendered[0] if len(rendered) == 1 else "[" + ", ".join(rendered) + "]"
    qualified_kind = f"{kind}.{group}" if group else kind
    return ApiError(
        422,
        "Invalid",
        f'{qualified_kind} "{name}" is invalid: {summary}',
        {
            "name": name,
            "group": group,
            "kind": kind,
            "causes": [{"reason": e.type, "message": e.message, "field": e.field} for e in errors],
        },
    )


# The registry's answer to an update without metadata.resourceVersion (custom resources allow
# no unconditional update).
RESOURCE_VERSION_REQUIRED = FieldError(
    "metadata.resourceVersion", INVALID, "Invalid value: 0: must be specified for an update"
)


def uid_conflict(
    group: str, plural: str, namespace: str, name: str, uid: str, stored_uid: str | None
) -> ApiError:
    """409 for an update whose metadata.uid is another object's (deleted and created again)."""
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified(group, plural)} "{name}": StorageError: invalid object, '
        f"Code: 4, Key: /registry/{group}/{plural}/{namespace}/{name}, ResourceVersion: 0, AdditionalErrorMsg: "
        f"Precondition failed: UID in precondition: {uid}, UID in object meta: {stored_uid}",
        {"name": name, "group": group, "kind": plural},
    )
