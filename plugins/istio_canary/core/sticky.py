"""Sticky canary sessions: the cookie that keeps a client on the canary once the weighted
split sent it there (like Flagger's `analysis.sessionAffinity`).

While a step sends a share of the owned route to the canary (0 < weight < 100), the release
writes two things (core/routing.py applies them to the VirtualService):
- on the owned route's canary destination, `headers.response.add: {set-cookie: ...}`, so the
  response to a client the split sent to the canary sets the sticky cookie;
- the sticky route (`<canary_route_name>-sticky`), placed right before the owned route, that
  sends a request carrying that cookie to the canary (ANDed into the owned route's matches,
  so it only takes requests the owned route would have served).
At 100%, promotion and rollback both go; the clients keep a cookie no route reads any more.

The cookie's value is new for every release (a hash of the lock holder, i.e. the DAG run,
and the canary subset) and the same on every write of one release, so re-running a step
writes the same bytes, and a cookie left by an earlier release never matches a later one.
Pure functions of dicts, no Airflow.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from istio_canary.core.lock import lock_of
from istio_canary.core.request import ReleaseRequest

SET_COOKIE = "set-cookie"
# RE2's metacharacters that a cookie name may hold (RE2 takes a backslash before punctuation literally).
_REGEX_META = re.compile(r"([\\.+*?()|\[\]{}^$])")


def cookie_value(vs: dict[str, Any], request: ReleaseRequest) -> str:
    """This release's cookie value: `<canary subset>-<12 hex>`, from the run holding the lock
    (no lock, as in a dry run: from the release alone)."""
    lock = lock_of(vs)
    seed = "|".join((lock.holder if lock else "", request.namespace, request.service, request.canary_subset))
    return f"{request.canary_subset}-{hashlib.sha256(seed.encode()).hexdigest()[:12]}"


def cookie(vs: dict[str, Any], request: ReleaseRequest) -> str:
    """`name=value` as the client sends it back."""
    return f"{request.sticky_cookie_name}={cookie_value(vs, request)}"


def set_cookie_header(vs: dict[str, Any], request: ReleaseRequest) -> str:
    """The Set-Cookie value on the canary destination. `Path=/`: the client sends it on every
    path of the host, not only below the one that set it."""
    return f"{cookie(vs, request)}; Max-Age={request.sticky_max_age_seconds}; Path=/"


def cookie_regex(name_value: str) -> str:
    """RE2 for a Cookie header holding `name_value` as a whole cookie (Envoy matches the whole
    header): `a=b` matches `x=1; a=b; y=2`, not `xa=b` or `a=bc`."""
    return r"^(.*;\s*)?" + _REGEX_META.sub(r"\\\1", name_value) + r"(;.*)?$"


def _response_add(entry: dict[str, Any]) -> dict[str, Any] | None:
    headers = entry.get("headers")
    response = headers.get("response") if isinstance(headers, dict) else None
    add = response.get("add") if isinstance(response, dict) else None
    return add if isinstance(add, dict) else None


def adds_set_cookie(entry: dict[str, Any]) -> bool:
    """The destination entry already adds a Set-Cookie (Istio's `add` map holds one per name)."""
    return any(str(key).lower() == SET_COOKIE for key in _response_add(entry) or {})


def mark_canary_destinations(owned: dict[str, Any], set_cookie: str, request: ReleaseRequest) -> str | None:
    """Add `set_cookie` to the owned route's canary destinations (in place: the caller's copy);
    the problem, when there is none or one already adds a Set-Cookie, else None."""
    entries = owned.get("route") if isinstance(owned.get("route"), list) else []
    canary = [e for e in entries if isinstance(e, dict) and isinstance(e.get("destination"), dict)
              and request.refers_to_host(e["destination"].get("host"))
              and e["destination"].get("subset") == request.canary_subset]
    if not canary:
        return f"the owned route sends nothing to subset {request.canary_subset!r}: no response sets the sticky cookie"
    if any(adds_set_cookie(e) for e in canary):
        return ("a destination of the owned route already adds a set-cookie response header, and the canary "
                f"destination, which copies it, can add only one (not also the sticky cookie "
                f"{request.sticky_cookie_name!r})")
    for entry in canary:
        headers = entry.setdefault("headers", {})
        headers.setdefault("response", {}).setdefault("add", {})[SET_COOKIE] = set_cookie
    return None


def strip_set_cookie(entry: dict[str, Any], request: ReleaseRequest) -> None:
    """Remove the sticky Set-Cookie from a destination entry (in place), and the maps only it filled."""
    add = _response_add(entry)
    if not add or not str(add.get(SET_COOKIE, "")).startswith(f"{request.sticky_cookie_name}="):
        return
    del add[SET_COOKIE]
    headers = entry["headers"]
    if not add:
        del headers["response"]["add"]
        if not headers["response"]:
            del headers["response"]
            if not headers:
                del entry["headers"]


def matches_on_cookie(route: dict[str, Any]) -> bool:
    """The route's matches already test the Cookie header (the sticky condition cannot be ANDed in:
    one StringMatch per header)."""
    return any(
        isinstance(m, dict) and isinstance(m.get("headers"), dict) and "cookie" in m["headers"]
        for m in route.get("match") or []
    )


def refusals(vs: dict[str, Any], owned_index: int, request: ReleaseRequest) -> list[tuple[str, str, str]]:
    """(field, problem, fix) for each reason this VirtualService cannot take the release's sticky
    sessions; checked by preflight before any write. None when the release does not use them."""
    if not request.sticky_sessions:
        return []
    http = [r if isinstance(r, dict) else {} for r in (vs.get("spec") or {}).get("http") or []]
    found = [(f"spec.http[{i}].name",
              f"an HTTP route is already named {request.sticky_route_name!r}, the name of the sticky route the "
              "release inserts and later removes (it would delete this route)",
              "set canary_route_name (the sticky route is named after it) to a name no route uses, or rename "
              "this route") for i, r in enumerate(http) if r.get("name") == request.sticky_route_name]
    owned = http[owned_index]
    if matches_on_cookie(owned):
        found.append((f"spec.http[{owned_index}].match",
                      "the owned route already matches on the Cookie header, and a match can test a header once, so "
                      "the sticky cookie cannot be added to its conditions",
                      "turn sticky_sessions off, or own a route that does not match on cookies (route_name)"))
    for j, entry in enumerate(owned.get("route") or []):
        if isinstance(entry, dict) and adds_set_cookie(entry):
            found.append((f"spec.http[{owned_index}].route[{j}].headers.response.add",
                          "the destination adds a set-cookie response header; the canary destination copies it "
                          "and Istio's add map holds one set-cookie, so the sticky cookie cannot be added",
                          "turn sticky_sessions off, or set the cookie at the route level (http[].headers)"))
    return found
