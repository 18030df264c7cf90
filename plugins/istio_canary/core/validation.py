"""Input checks shared by every request type: one error type that names field and value."""

from __future__ import annotations

import re
from collections.abc import Callable
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


# What each check says when it refuses a value.
_NOT_LABEL = (
    "must be a DNS-1123 label: at most 63 lowercase letters, digits or '-', "
    "starting and ending with a letter or digit"
)
_NOT_DOMAIN = (
    "must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', "
    "each part starting and ending with a letter or digit"
)
_NOT_LABEL_VALUE = (
    "must be a Kubernetes label value: at most 63 letters, digits, '-', '_' or '.', "
    "starting and ending with a letter or digit"
)
_NOT_HEADER = (
    "must be a lower-case HTTP header name (letters, digits and !#$%&'*+-.^_`|~), "
    "e.g. 'user-agent' or 'x-canary'"
)
_NOT_CONN_ID = (
    "must be an Airflow connection id: at most 250 letters, digits or _#!().:/\\-, no spaces and no '..'"
)


class ValidationError(ValueError):
    """Bad input, found before anything touches the cluster. Names the field and the value."""

    def __init__(self, field: str, value: Any, problem: str) -> None:
        self.field = field
        self.value = value
        self.problem = problem
        super().__init__(f"{field}={value!r}: {problem}")


def require_text(field: str, value: Any) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        raise ValidationError(field, value, "must be a non-empty string")
    return value


def _require(field: str, value: Any, valid: Callable[[str], bool], problem: str) -> str:
    """A non-empty string for which `valid` holds; else ValidationError with `problem`."""
    require_text(field, value)
    if not valid(value):
        raise ValidationError(field, value, problem)
    return value


def require_dns1123_label(field: str, value: Any) -> str:
    """A Kubernetes name such as a namespace, a service or an Istio subset (`v1`, `canary`)."""
    return _require(field, value, lambda v: len(v) <= 63 and bool(_DNS1123_LABEL.fullmatch(v)), _NOT_LABEL)


def require_dns1123_subdomain(field: str, value: Any) -> str:
    """A host name such as `reviews` or `reviews.bookinfo.svc.cluster.local`."""
    return _require(
        field, value, lambda v: len(v) <= 253 and bool(_DNS1123_SUBDOMAIN.fullmatch(v)), _NOT_DOMAIN
    )


def require_label_value(field: str, value: Any) -> str:
    """A Kubernetes label value that is not empty: the `version` label of a pod."""
    return _require(field, value, lambda v: len(v) <= 63 and bool(_LABEL_NAME.fullmatch(v)), _NOT_LABEL_VALUE)


def require_header_name(field: str, value: Any) -> str:
    """A lower-case HTTP header name (an RFC 7230 token)."""
    return _require(field, value, lambda v: bool(_HEADER_TOKEN.fullmatch(v)), _NOT_HEADER)


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
    return _require(field, value, lambda v: bool(_CONN_ID.fullmatch(v)) and ".." not in v, _NOT_CONN_ID)
