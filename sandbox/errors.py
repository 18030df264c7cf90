"""The sandbox's own error for bad input (a world file, a CLI flag, a behaviour change).

The sandbox stands in for the cluster the pipeline is tested against, so it keeps its own checks
rather than importing the pipeline's validation code it is meant to check."""

from __future__ import annotations

import re
from typing import Any

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


class SandboxInputError(ValueError):
    """Bad sandbox input, refused before anything starts or changes. Names the field and value."""

    def __init__(self, field: str, value: Any, problem: str) -> None:
        self.field = field
        self.value = value
        self.problem = problem
        super().__init__(f"{field}={value!r}: {problem}")


def require_dns1123_label(field: str, value: Any) -> str:
    """A Kubernetes name: a namespace, a service or a version."""
    if not isinstance(value, str) or not value:
        raise SandboxInputError(field, value, "must be a non-empty string")
    if len(value) > 63 or not _DNS1123_LABEL.fullmatch(value):
        raise SandboxInputError(
            field,
            value,
            "must be a DNS-1123 label: at most 63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit",
        )
    return value
