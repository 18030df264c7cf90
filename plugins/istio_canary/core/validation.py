"""Input checks shared by every request type: one error type that names field and value."""

from __future__ import annotations

import re
from typing import Any

import re2

# Every pattern is used with fullmatch: `$` would let a trailing newline through.
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# Kubernetes label value / label key name part: alphanumerics, '-', '_', '.'; alnum at both ends.
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
# RFC 7230 header field-name token, lower case only (Istio/Envoy match on lower-cased names).
_HEADER_TOKEN = re.compile(r"[a-z0-9!#$%&'*+\-.^_`|~]+")
MAX_REGEX_LENGTH = 1024  # Istio's cap on a StringMatch regex
# An Airflow connection id: Airflow's own characters (ASCII only), at most its 250. Ids are looked
# up in secrets backends by path, so a `..` segment is refused too.
_CONN_ID = re.compile(r"[A-Za-z0-9_#!().:/\\-]{1,250}")


class ValidationError(ValueError):
    """Bad input, found before anything touches the cluster. Names the field and the value."""

    def __init__(self, field: str, value: Any, problem: str) -> None:
        self.field = field
        self.value = value
        self.problem = problem
        super().__init__(f"{field}={value!r}: {problem}")


def require_text(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError(field, value, "must be a non-empty string")
    return value


def require_dns1123_label(field: str, value: Any) -> str:
    """A Kubernetes name such as a namespace, a service or an Istio subset (`v1`, `canary`)."""
    require_text(field, value)
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
    require_text(field, value)
    if len(value) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(value):
        raise ValidationError(
            field,
            value,
            "must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', "
            "each part starting and ending with a letter or digit",
        )
    return value


def is_label_value(value: str) -> bool:
    return len(value) <= 63 and bool(_LABEL_NAME.fullmatch(value))


def require_label_value(field: str, value: Any) -> str:
    """A Kubernetes label value that is not empty: the `version` label of a pod."""
    require_text(field, value)
    if not is_label_value(value):
        raise ValidationError(
            field,
            value,
            "must be a Kubernetes label value: at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit",
        )
    return value


def require_label_key(field: str, value: Any) -> str:
    """A Kubernetes label key: `version` or `app.kubernetes.io/version`."""
    require_text(field, value)
    prefix, slash, name = value.rpartition("/")
    if slash:
        try:
            require_dns1123_subdomain(field, prefix)
        except ValidationError:
            raise ValidationError(
                field, value, "label key prefix (before '/') must be a DNS-1123 subdomain"
            ) from None
    if not is_label_value(name):
        raise ValidationError(
            field,
            value,
            "must be a Kubernetes label key: [prefix/]name, name at most 63 letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit",
        )
    return value


def require_header_name(field: str, value: Any) -> str:
    require_text(field, value)
    if not _HEADER_TOKEN.fullmatch(value):
        raise ValidationError(
            field,
            value,
            "must be a lower-case HTTP header name (letters, digits and !#$%&'*+-.^_`|~), "
            "e.g. 'user-agent' or 'x-canary'",
        )
    return value


def re2_problem(value: str) -> str | None:
    """Why Envoy would refuse `value` as a regex (RE2 syntax, at most 1024 chars), or None."""
    if len(value) > MAX_REGEX_LENGTH:
        return f"is {len(value)} characters, Istio allows at most {MAX_REGEX_LENGTH}"
    try:
        re2.compile(value)
    except re2.error as exc:
        return f"is not valid RE2 ({exc})"
    return None


def require_re2_regex(field: str, value: Any) -> str:
    """A regex Envoy will accept: RE2 syntax (no look-arounds/backreferences), <= 1024 chars."""
    require_text(field, value)
    problem = re2_problem(value)
    if problem:
        raise ValidationError(field, value, problem)
    return value


def require_conn_id(field: str, value: Any) -> str:
    """An Airflow connection id such as `kubernetes_default` (no spaces, no path traversal)."""
    require_text(field, value)
    if not _CONN_ID.fullmatch(value) or ".." in value:
        raise ValidationError(
            field,
            value,
            "must be an Airflow connection id: at most 250 letters, digits or _#!().:/\\-, "
            "no spaces and no '..'",
        )
    return value
