"""Returning users: a pool of clients that keep the cookies responses set.

With a service's `clients` at 0 every simulated request is a new anonymous client, which is
all a weighted or header/cookie release needs. Sticky sessions need users who come back: a
response's `Set-Cookie` (an Istio `headers.response` add/set on the route or destination that
served it) goes into that client's jar, and the client's later requests carry it in their
`Cookie` header, where match routes see it. Each client keeps its header class (a canary
user-agent, the `canary=true` cookie) for life, drawn once with the service's fractions.

Per client the pool counts responses by version and how often the next response came from
another version (`left`), and per route and version what was served: enough to tell that a
client the canary served once stays on it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from sandbox.traffic.request import header_class_headers
from sandbox.traffic.routing import RouteOutcome, RouteTrace

Jar = tuple[tuple[str, str], ...]
# (cumulative probabilities, (outcome, trace) per entry) for one header class and jar.
TracedTable = tuple[list[float], list[tuple[RouteOutcome, RouteTrace]]]


def parse_set_cookie(header: str) -> tuple[str, str, float | None] | None:
    """(name, value, max_age seconds or None for a session cookie) of a Set-Cookie value; None
    if it names no cookie. Attributes other than Max-Age (Path, HttpOnly, ...) change nothing here."""
    first, *attributes = [part.strip() for part in header.split(";")]
    name, sep, value = first.partition("=")
    if not sep or not name.strip():
        return None
    max_age: float | None = None
    for attribute in attributes:
        key, _, raw = attribute.partition("=")
        if key.strip().lower() == "max-age":
            try:
                max_age = float(int(raw.strip()))
            except ValueError:
                continue  # RFC 6265: an unparsable Max-Age is ignored
    return name.strip(), value.strip(), max_age


@dataclass
class Client:
    """One returning user: its header class, its cookie jar and what it was served."""

    user_agent_canary: bool
    cookie_canary: bool
    jar: dict[str, tuple[str, float | None]] = field(default_factory=dict)  # name -> (value, expires at)
    requests: int = 0
    by_version: dict[str, int] = field(default_factory=dict)
    left: dict[str, int] = field(default_factory=dict)
    last_version: str | None = None

    @property
    def header_class(self) -> int:
        return 2 * self.user_agent_canary + self.cookie_canary

    def jar_at(self, now: float) -> Jar:
        """The cookies it sends now (expired ones dropped), sorted: the routing cache's key."""
        expired = [name for name, (_, expires) in self.jar.items() if expires is not None and expires <= now]
        for name in expired:
            del self.jar[name]
        return tuple(sorted((name, value) for name, (value, _) in self.jar.items()))

    def served(self, outcome: RouteOutcome, trace: RouteTrace, now: float) -> None:
        """Count the response and keep the cookies it sets."""
        self.requests += 1
        version = outcome.version if outcome.reaches_pod else None
        if version is not None:
            self.by_version[version] = self.by_version.get(version, 0) + 1
            if self.last_version is not None and self.last_version != version:
                self.left[self.last_version] = self.left.get(self.last_version, 0) + 1
            self.last_version = version
        for header in trace.set_cookies:
            parsed = parse_set_cookie(header)
            if parsed is None:
                continue
            name, value, max_age = parsed
            if max_age is not None and max_age <= 0:
                self.jar.pop(name, None)
            else:
                self.jar[name] = (value, None if max_age is None else now + max_age)

    def report(self, index: int) -> dict[str, Any]:
        return {"client": index, "user_agent_canary": self.user_agent_canary, "cookie_canary": self.cookie_canary,
                "requests": self.requests, "by_version": dict(self.by_version), "left": dict(self.left),
                "cookies": {name: value for name, (value, _) in self.jar.items()}}


def request_headers(client: Client, jar: Jar) -> dict[str, str]:
    """The headers of the client's request: its header class's, its jar appended to the cookie."""
    headers = header_class_headers(client.user_agent_canary, client.cookie_canary)
    if jar:
        headers["cookie"] = "; ".join([headers["cookie"], *(f"{name}={value}" for name, value in jar)])
    return headers


class ClientPool:
    """A service's returning users, with routing tables per (header class, jar) for one routing
    revision (a jar only holds cookies routes set, so there are few distinct ones)."""

    def __init__(self, size: int, header_fraction: float, cookie_fraction: float, rng: random.Random) -> None:
        self.settings = (size, header_fraction, cookie_fraction)
        self.clients = [Client(rng.random() < header_fraction, rng.random() < cookie_fraction) for _ in range(size)]
        self.by_route: dict[tuple[str, str], int] = {}
        self.tables: dict[tuple[int, Jar], TracedTable] = {}
        self.tables_for = -1  # the store change the tables were built for

    def pick(self, u: float) -> Client:
        return self.clients[min(int(u * len(self.clients)), len(self.clients) - 1)]

    def count(self, outcome: RouteOutcome, trace: RouteTrace) -> None:
        key = (trace.route or "-", outcome.version if outcome.reaches_pod else "unknown")
        self.by_route[key] = self.by_route.get(key, 0) + 1

    def report(self) -> dict[str, Any]:
        by_route: dict[str, dict[str, int]] = {}
        for (route, version), n in sorted(self.by_route.items()):
            by_route.setdefault(route, {})[version] = n
        return {"clients": len(self.clients), "by_route": by_route,
                "per_client": [c.report(i) for i, c in enumerate(self.clients)]}
