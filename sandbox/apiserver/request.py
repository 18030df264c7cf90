"""Which resource a request names: the URL path split into group, version, resource and name."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass
class ResourceRequest:
    group: str  # "" for core
    version: str
    plural: str
    namespace: str | None
    name: str | None
    subresource: str | None = None

    @property
    def is_crd(self) -> bool:
        return self.group != ""


_CRD_PATH = re.compile(
    r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)"
    r"(?:/namespaces/(?P<namespace>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$"
)
_CORE_PATH = re.compile(
    r"^/api/v1(?:/namespaces/(?P<namespace>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$"
)


def parse_resource_path(path: str) -> ResourceRequest | None:
    """The resource a URL path names, or None for a non-resource path (discovery, health...)."""
    # The regexes backtrack so that /api/v1/namespaces/{name} is the namespace {name}.
    found = _CRD_PATH.match(path)
    if found:
        return ResourceRequest(
            found["group"], found["version"], found["plural"], found["namespace"], found["name"], found["sub"]
        )
    found = _CORE_PATH.match(path)
    if found:
        return ResourceRequest("", "v1", found["plural"], found["namespace"], found["name"], found["sub"])
    return None
