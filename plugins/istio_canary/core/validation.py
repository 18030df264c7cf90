"""Input checks shared by every request type: one error type that names field and value."""

from __future__ import annotations

import re
from typing import Any

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class ValidationError(ValueError):
    """Bad input, found before anything touches the cluster. Names the field and the value."""

    def __init__(self, field: str, value: Any, problem: str) -> None:
        self.field = field
        self.value = value
        self.problem = problem
        super().__init__(f"{field}={value!r}: {problem}")


def require_dns1123_label(field: str, value: Any) -> str:
    """A Kubernetes name such as a namespace, a service or an Istio subset (`v1`, `canary`)."""
    if not isinstance(value, str) or not value:
        raise ValidationError(field, value, "must be a non-empty string")
    if len(value) > 63 or not _DNS1123_LABEL.fullmatch(value):
        raise ValidationError(
            field,
            value,
            "must be a DNS-1123 label: at most 63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit",
        )
    return value


def require_dns1123_subdomain(field: str, value: Any) -> str:
    """A host name such as `reviews` or `reviews.bookinfo.svc.cluster.local`."""
    if not isinstance(value, str) or not value:
        raise ValidationError(field, value, "must be a non-empty string")
    if len(value) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(value):
        raise ValidationError(
            field,
            value,
            "must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', "
            "each part starting and ending with a letter or digit",
        )
    return value
