"""The simulated request: what the calling sidecar sees, and the header classes generated.

Generated requests differ only in two headers (canary user-agent, canary cookie), so each
belongs to one of four header classes and routing is computed once per class.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

BROWSER_USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
CANARY_USER_AGENT = "canary"
PLAIN_COOKIE = "session=abc123"
CANARY_COOKIE = "session=abc123; canary=true; theme=dark"
SOURCE_LABELS = {"app": "productpage", "version": "v1"}
REQUEST_PATH = "/reviews/0"


@dataclass(frozen=True)
class Request:
    """One request as the calling sidecar sees it. Header names are lower-case."""

    host: str
    namespace: str
    headers: Mapping[str, str]
    path: str = REQUEST_PATH
    method: str = "GET"
    scheme: str = "http"
    port: int = 9080
    source_labels: Mapping[str, str] = field(default_factory=lambda: dict(SOURCE_LABELS))
    source_namespace: str | None = None  # None: the request's namespace


def header_class_headers(user_agent_canary: bool, cookie_canary: bool) -> dict[str, str]:
    """The headers a generated request of this header class carries."""
    return {
        "user-agent": CANARY_USER_AGENT if user_agent_canary else BROWSER_USER_AGENT,
        "cookie": CANARY_COOKIE if cookie_canary else PLAIN_COOKIE,
        "accept": "application/json",
    }


# Header classes, indexed 2*ua + cookie.
HEADER_CLASSES = [(ua, ck) for ua in (False, True) for ck in (False, True)]
