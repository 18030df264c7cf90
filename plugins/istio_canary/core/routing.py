"""Routing edits a release makes to a VirtualService and its DestinationRule.

Every function is pure: it returns a NEW dict (deep copy) and never mutates its input, so
the hook can diff before/after and retry a read-modify-write on 409 with the same intent.

What a release owns (README: "Safety rules the code keeps"), and nothing else:
- the *owned route*: the HTTP route named `request.route_name`, or else the single catch-all
  HTTP route (no match) whose destinations all point at the host;
- the *canary match route* (`request.canary_route_name`), which it inserts immediately before
  the owned route for the header/cookie strategies, so routes other people placed earlier
  (e.g. Bookinfo's `end-user: jason` route) keep their priority;
- the *sticky route* (`request.sticky_route_name`) and the Set-Cookie on the owned route's
  canary destination, while a partial step runs with `sticky_sessions` (core/sticky.py);
- the stable/canary subsets it adds to the DestinationRule.

Decisions (kept consistent across functions):
- Weights are absolute: (100 - w, w) of the release's share, which is what the stable and
  canary subsets carry together. A zero-weight release entry is dropped, so on a route of only
  the release's entries 0 gives a single stable destination and 100 a single canary
  destination, both without a `weight` (Istio sends all traffic to a lone destination
  whatever its weight). Every other destination of the owned route (`v3 20`, another host,
  a weight-0 entry) keeps its place and weight.
- The canary match route is removed only if the release created it: a route of that name in
  the snapshot taken with the lock is the user's (preflight refuses such a release first).
- New destinations reuse the host spelling, the `port` and any per-destination extras
  (e.g. `headers`) of the owned route's current stable destination (or, when there is none,
  its first destination of the host), and every destination written carries them: they
  describe the service, not a version, and carrying them on all entries is what keeps
  weights absolute (0 -> 100 -> 0 ends where 0 started).
- The canary match route copies from the owned route what shapes the request and response
  the service sees: `rewrite`, `timeout`, `retries`, `headers`, `corsPolicy`, so the canary
  path behaves like the stable one. It does not copy `fault` (an experiment on stable
  traffic that would skew the canary's metrics) or `mirror*` (a side effect that would
  double). If the owned route has matches (a named route), the canary route ANDs the
  header/cookie condition into each of them, so it only catches requests the owned route
  would have served.
- The mirror phase (`core.mirror`) is part of the plan: `RoutingPlan.mirror_percent` > 0
  writes the release's mirror on the owned route, every other plan and promotion remove it.
- Rollback restores the owned route exactly as snapshotted and removes the canary match
  route; everything else stays as it is *now* (others' edits during the release survive).
  `restore_subsets` (in `core.destination_rule`, with the other DestinationRule edits)
  removes the subsets the release added, unless still referenced.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

from istio_canary.core import sticky
from istio_canary.core.lock import snapshot_of
from istio_canary.core.mirror import mirrored_route
from istio_canary.core.objects import qualified_name, spec_of
from istio_canary.core.request import ReleaseRequest
from istio_canary.core.validation import ValidationError

# Owned-route fields the canary match route copies (see module docstring for why).
COPIED_TO_MATCH_ROUTE: tuple[str, ...] = ("rewrite", "timeout", "retries", "headers", "corsPolicy")
# Match-request keys that do not narrow a match: an entry with only these matches everything.
_NON_NARROWING_MATCH_KEYS = frozenset({"name", "ignoreUriCase"})


class RoutingError(ValueError):
    """The VirtualService/DestinationRule cannot be edited safely; says what was found."""


# --------------------------------------------------------------------------- helpers


def _http_routes(vs: dict[str, Any]) -> list[dict[str, Any]]:
    routes = spec_of(vs).get("http")
    return routes if isinstance(routes, list) else []


def route_entries(route: dict[str, Any]) -> list[dict[str, Any]]:
    """The route's destination entries (`route`), the malformed ones left out."""
    entries = route.get("route")
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def destination_of(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry's `destination`, {} when absent or malformed."""
    dest = entry.get("destination")
    return dest if isinstance(dest, dict) else {}


def is_catch_all(route: dict[str, Any]) -> bool:
    """True when the route matches every request: no match, or a match entry that narrows nothing."""
    matches = route.get("match")
    if not matches:
        return True
    return any(not isinstance(m, dict) or not (set(m) - _NON_NARROWING_MATCH_KEYS) for m in matches)


def _routes_only_to_host(route: dict[str, Any], request: ReleaseRequest) -> bool:
    entries = route_entries(route)
    return bool(entries) and all(request.refers_to_host(destination_of(e).get("host")) for e in entries)


def _describe(index: int, route: dict[str, Any]) -> str:
    name = route.get("name")
    label = f"http[{index}]" + (f" {name!r}" if name else "")
    kind = "catch-all" if is_catch_all(route) else "match"
    hosts = sorted({str(destination_of(e).get("host")) for e in route_entries(route)})
    target = ", ".join(hosts) if hosts else "no route destinations"
    return f"{label} ({kind} -> {target})"


def _describe_all(vs: dict[str, Any]) -> str:
    routes = _http_routes(vs)
    if not routes:
        return "no http routes"
    return "; ".join(_describe(i, r) for i, r in enumerate(routes))


def _require_weight(canary_weight: Any) -> int:
    if isinstance(canary_weight, bool) or not isinstance(canary_weight, int) or not 0 <= canary_weight <= 100:
        raise ValidationError("canary_weight", canary_weight, "must be an integer in 0..100")
    return canary_weight


# --------------------------------------------------------------------------- finding the owned route


def find_owned_route(vs: dict[str, Any], request: ReleaseRequest) -> int:
    """Index into spec.http of the route this release owns; RoutingError if none or ambiguous."""
    routes = _http_routes(vs)
    if request.route_name:
        named = [
            i for i, r in enumerate(routes) if isinstance(r, dict) and r.get("name") == request.route_name
        ]
        if not named:
            raise RoutingError(
                f"VirtualService {qualified_name(vs)} has no HTTP route named {request.route_name!r}; "
                f"found: {_describe_all(vs)}"
            )
        if len(named) > 1:
            raise RoutingError(
                f"VirtualService {qualified_name(vs)} has {len(named)} HTTP routes named {request.route_name!r} "
                f"(indices {named}); route names must be unique to own one"
            )
        index = named[0]
        if not _routes_only_to_host(routes[index], request):
            raise RoutingError(
                f"route {_describe(index, routes[index])} in VirtualService {qualified_name(vs)} does not send "
                f"all its traffic to host {request.host!r}; a release can only own a route of its host"
            )
        return index
    candidates = [
        i
        for i, r in enumerate(routes)
        if isinstance(r, dict)
        and r.get("name") != request.canary_route_name
        and is_catch_all(r)
        and _routes_only_to_host(r, request)
    ]
    if not candidates:
        raise RoutingError(
            f"VirtualService {qualified_name(vs)} has no catch-all HTTP route (no match) sending traffic to host "
            f"{request.host!r}; found: {_describe_all(vs)}. Name the route to own with route_name"
        )
    if len(candidates) > 1:
        found = ", ".join(_describe(i, routes[i]) for i in candidates)
        raise RoutingError(
            f"VirtualService {qualified_name(vs)} has {len(candidates)} catch-all HTTP routes for host "
            f"{request.host!r}: {found}. Name the route to own with route_name"
        )
    return candidates[0]


def request_for(vs: dict[str, Any], request: ReleaseRequest) -> ReleaseRequest:
    """The request as it applies to one of the release's VirtualServices.

    `route_name` names the owned route of the release's own VirtualService; in a VirtualService
    moved with it (`virtual_services`) it is used where a route has that name, and otherwise the
    owned route is that VirtualService's catch-all route of the host.
    """
    name = (vs.get("metadata") or {}).get("name")
    if name == request.virtual_service or not request.route_name or _has_route_named(vs, request.route_name):
        return request
    return dataclasses.replace(request, route_name=None)


def _owned(out: dict[str, Any], request: ReleaseRequest) -> tuple[int, dict[str, Any]]:
    index = find_owned_route(out, request)
    return index, out["spec"]["http"][index]


def _stable_template(route: dict[str, Any], request: ReleaseRequest) -> dict[str, Any] | None:
    """The entry whose host spelling, port and extras the stable destination inherits."""
    entries = [e for e in route_entries(route) if request.refers_to_host(destination_of(e).get("host"))]
    for wanted in (request.stable_subset, None):
        for entry in entries:
            if destination_of(entry).get("subset") == wanted:
                return entry
    return entries[0] if entries else None


def _entry_for(
    subset: str, weight: int | None, template: dict[str, Any] | None, request: ReleaseRequest
) -> dict[str, Any]:
    template_dest = destination_of(template) if template else {}
    destination: dict[str, Any] = {"host": template_dest.get("host") or request.host, "subset": subset}
    if "port" in template_dest:
        destination["port"] = copy.deepcopy(template_dest["port"])
    entry: dict[str, Any] = {"destination": destination}
    if weight is not None:
        entry["weight"] = weight
    for key, value in (template or {}).items():
        if key not in ("destination", "weight"):
            entry[key] = copy.deepcopy(value)
    return entry


# --------------------------------------------------------------------------- VirtualService edits


def _is_release_entry(entry: dict[str, Any], request: ReleaseRequest) -> bool:
    """A destination of the host at the stable or canary subset: the entries the release moves."""
    dest = destination_of(entry)
    return request.refers_to_host(dest.get("host")) and dest.get("subset") in (
        request.stable_subset, request.canary_subset)


def weight_of(entry: dict[str, Any]) -> int:
    """An entry's explicit weight; 0 when it has none (Istio's reading with several entries)."""
    weight = entry.get("weight")
    return weight if isinstance(weight, int) and not isinstance(weight, bool) else 0


def _split(share: int, canary_weight: int) -> tuple[int, int]:
    """(stable, canary) parts of `share`, the canary getting `canary_weight`% of it (at least 1
    when asked for any), so the step's percentage holds within the release's share."""
    canary = round(share * canary_weight / 100)
    if canary_weight > 0 and canary == 0:
        canary = 1
    if canary_weight < 100 and canary == share and share > 1:
        canary = share - 1
    return share - canary, canary


def unpinned_problem_and_fix(request: ReleaseRequest) -> tuple[str, str]:
    """Why a destination of the host without a subset cannot be released, and the fix."""
    return (
        f"sends to host {request.host!r} without a subset: the Service balances it over all Ready pods, "
        f"so the canary's pods ({request.version_label}={request.canary_version}) already get traffic "
        "there, outside the release's control",
        f"pin it to the stable subset first (add `subset: {request.stable_subset}`, with that subset in the "
        f"DestinationRule: labels {request.version_label}: {request.stable_version}), then release",
    )


def unpinned_route_message(vs: dict[str, Any], route_index: int, entry_index: int, request: ReleaseRequest,
                           section: str = "http") -> str:
    problem, fix = unpinned_problem_and_fix(request)
    return f"VirtualService {qualified_name(vs)} spec.{section}[{route_index}].route[{entry_index}].destination " \
           f"{problem}. Fix: {fix}"


def set_weights(vs: dict[str, Any], request: ReleaseRequest, canary_weight: int) -> dict[str, Any]:
    """Owned route sends (100 - w)% of the release's share to the stable subset, w% to the canary.

    The release's share is what the stable and canary subsets carry together; every other
    destination of the route (another subset, another host, weight-0 entries) keeps its place
    and weight verbatim, so `v1 80 / v3 20` at 10% becomes `v1 72 / v2 8 / v3 20`. A route of
    only the release's entries is written as (100 - w, w), a lone entry without `weight`.
    """
    weight = _require_weight(canary_weight)
    out = copy.deepcopy(vs)
    index, route = _owned(out, request)
    template = _stable_template(route, request)
    entries = route.get("route") if isinstance(route.get("route"), list) else []
    for j, entry in enumerate(entries):
        if isinstance(entry, dict) and request.refers_to_host(destination_of(entry).get("host")) \
                and not destination_of(entry).get("subset"):
            raise RoutingError(unpinned_route_message(vs, index, j, request))
    others = [e for e in entries if not (isinstance(e, dict) and _is_release_entry(e, request))]
    if not others:
        if weight == 0:
            route["route"] = [_entry_for(request.stable_subset, None, template, request)]
        elif weight == 100:
            route["route"] = [_entry_for(request.canary_subset, None, template, request)]
        else:
            route["route"] = [
                _entry_for(request.stable_subset, 100 - weight, template, request),
                _entry_for(request.canary_subset, weight, template, request),
            ]
        return out
    share = sum(weight_of(e) for e in entries if isinstance(e, dict) and _is_release_entry(e, request))
    if share <= 0:
        raise RoutingError(
            f"VirtualService {qualified_name(vs)}: the owned route sends no weight to subset "
            f"{request.stable_subset!r} of {request.host!r} ({_describe_all(vs)}); nothing to shift"
        )
    stable, canary = _split(share, weight)
    moved = [
        _entry_for(subset, part, template, request)
        for subset, part in ((request.stable_subset, stable), (request.canary_subset, canary))
        if part > 0
    ]
    rewritten: list[Any] = []
    for entry in entries:
        if isinstance(entry, dict) and _is_release_entry(entry, request):
            rewritten.extend(moved)
            moved = []  # the release's entries go where its first one was
        else:
            rewritten.append(entry)
    rewritten.extend(moved)
    route["route"] = rewritten
    return out


def _canary_condition(request: ReleaseRequest) -> dict[str, dict[str, str]]:
    if request.strategy == "header":
        return {request.header_name: {"exact": request.header_value}}
    if request.strategy == "cookie":
        return {"cookie": {"regex": request.cookie_regex}}
    raise RoutingError(f"strategy {request.strategy!r} does not use a canary match route")


def _canary_matches(owned: dict[str, Any], request: ReleaseRequest) -> list[dict[str, Any]]:
    return _matches_with(owned, _canary_condition(request))


def _matches_with(owned: dict[str, Any], condition: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    """The owned route's matches (or one match-all) with the header `condition` ANDed into each."""
    owned_matches = owned.get("match") or [{}]
    matches: list[dict[str, Any]] = []
    for owned_match in owned_matches:
        match = copy.deepcopy(owned_match) if isinstance(owned_match, dict) else {}
        headers = dict(match.get("headers") or {})
        for key, value in condition.items():
            if key in headers and headers[key] != value:
                raise RoutingError(
                    f"owned route {owned.get('name')!r} already matches header {key!r} "
                    f"with {headers[key]!r}; "
                    f"cannot add the canary condition {value!r} on the same header"
                )
            headers[key] = value
        match["headers"] = headers
        matches.append(match)
    return matches


def set_match_route(vs: dict[str, Any], request: ReleaseRequest) -> dict[str, Any]:
    """Put the canary match route immediately before the owned route (replacing any old copy)."""
    out = remove_match_route(vs, request)
    index, owned = _owned(out, request)
    out["spec"]["http"].insert(index, _route_to_canary(owned, request, request.canary_route_name,
                                                       _canary_matches(owned, request)))
    return out


def _route_to_canary(owned: dict[str, Any], request: ReleaseRequest, name: str,
                     matches: list[dict[str, Any]]) -> dict[str, Any]:
    """A match route sending to the canary, shaped like the owned route (COPIED_TO_MATCH_ROUTE)."""
    canary_entry = _entry_for(request.canary_subset, None, _stable_template(owned, request), request)
    route: dict[str, Any] = {"name": name, "match": matches, "route": [canary_entry]}
    for key in COPIED_TO_MATCH_ROUTE:
        if key in owned:
            route[key] = copy.deepcopy(owned[key])
    return route


def set_sticky(vs: dict[str, Any], request: ReleaseRequest) -> dict[str, Any]:
    """Sticky sessions on: the owned route's canary destination sets this release's cookie, and
    the sticky route, right before the owned route, sends requests carrying it to the canary."""
    out = remove_sticky(vs, request)
    index, owned = _owned(out, request)
    problem = sticky.mark_canary_destinations(owned, sticky.set_cookie_header(vs, request), request)
    if problem:
        raise RoutingError(f"VirtualService {qualified_name(vs)} spec.http[{index}]: {problem}")
    condition = {"cookie": {"regex": sticky.cookie_regex(sticky.cookie(vs, request))}}
    out["spec"]["http"].insert(index, _route_to_canary(owned, request, request.sticky_route_name,
                                                       _matches_with(owned, condition)))
    return out


def remove_sticky(vs: dict[str, Any], request: ReleaseRequest) -> dict[str, Any]:
    """Sticky sessions off: the sticky route and the sticky Set-Cookie gone; a copy of `vs`
    unchanged when the release does not use them (a route of that name is then someone else's)."""
    if not request.sticky_sessions:
        return copy.deepcopy(vs)
    out = _without_route(vs, request.sticky_route_name)
    try:
        _, owned = _owned(out, request)
    except RoutingError:
        return out  # no owned route: nothing of ours on it (the caller's own lookup says why)
    for entry in route_entries(owned):
        sticky.strip_set_cookie(entry, request)
    return out


def remove_match_route(vs: dict[str, Any], request: ReleaseRequest) -> dict[str, Any]:
    """Drop the canary match route; a copy of `vs` unchanged if it is not there.

    Only a route the release created is removed: when the snapshot recorded with the lock
    already had a route of that name, it is the user's (preflight refuses such a release, so
    this guards against a name taken after the lock), and removing it would lose their config.
    """
    snapshot = snapshot_of(vs)
    if snapshot and _has_route_named(snapshot.get("virtualService") or {}, request.canary_route_name):
        raise RoutingError(
            f"VirtualService {qualified_name(vs)}: an HTTP route named {request.canary_route_name!r} existed "
            "before this release took its lock, so it is not the release's canary match route and is "
            "not removed; set canary_route_name to a name no route uses"
        )
    return _without_route(vs, request.canary_route_name)


def _without_route(vs: dict[str, Any], name: str) -> dict[str, Any]:
    """A copy of `vs` without the HTTP route named `name`, one the release created: a route of
    that name in the snapshot recorded with the lock is the user's (refused, not removed)."""
    snapshot = snapshot_of(vs)
    if snapshot and _has_route_named(snapshot.get("virtualService") or {}, name):
        raise RoutingError(
            f"VirtualService {qualified_name(vs)}: an HTTP route named {name!r} existed "
            "before this release took its lock, so it is not a route of the release and is "
            "not removed; set canary_route_name to a name no route uses"
        )
    out = copy.deepcopy(vs)
    spec = out.get("spec")
    if isinstance(spec, dict) and isinstance(spec.get("http"), list):
        spec["http"] = [r for r in spec["http"] if not (isinstance(r, dict) and r.get("name") == name)]
    return out


def _has_route_named(vs: dict[str, Any], name: str) -> bool:
    return any(isinstance(r, dict) and r.get("name") == name for r in _http_routes(vs))


def promote(vs: dict[str, Any], request: ReleaseRequest) -> dict[str, Any]:
    """Owned route 100% canary; canary match route, sticky sessions and the release's mirror removed."""
    out = remove_sticky(remove_match_route(vs, request), request)
    return set_mirror(set_weights(out, request, 100), request, 0)


def set_mirror(vs: dict[str, Any], request: ReleaseRequest, percent: float) -> dict[str, Any]:
    """The owned route mirroring `percent`% of its requests to the canary subset (0: the
    release's mirror removed), host and port as its stable destination has them."""
    out = copy.deepcopy(vs)
    index, route = _owned(out, request)
    template = destination_of(_stable_template(route, request) or {})
    out["spec"]["http"][index] = mirrored_route(route, request, percent, template)
    return out


def restore_owned(
    current_vs: dict[str, Any], snapshot_vs: dict[str, Any], request: ReleaseRequest
) -> dict[str, Any]:
    """Owned route exactly as in the snapshot, match and sticky routes removed, every other part as it is now."""
    snapshot_index = find_owned_route(snapshot_vs, request)
    snapshot_route = copy.deepcopy(_http_routes(snapshot_vs)[snapshot_index])
    out = remove_sticky(remove_match_route(current_vs, request), request)
    try:
        index = find_owned_route(out, request)
    except RoutingError:
        # Someone may have reshaped the route since (e.g. added a subset we do not own);
        # a unique route with the snapshot route's name is still unambiguously ours.
        name = snapshot_route.get("name")
        same_name = [i for i, r in enumerate(_http_routes(out)) if name and r.get("name") == name]
        if len(same_name) != 1:
            raise
        index = same_name[0]
    out["spec"]["http"][index] = snapshot_route
    return out


def written_routes(vs: dict[str, Any], request: ReleaseRequest) -> set[int]:
    """Indices in spec.http of the routes the release writes: the owned route, its match and sticky routes.

    Our stricter checks (subsets defined, route order) apply to these; someone else's routes
    are held only to what Istio itself rejects.
    """
    indices = {find_owned_route(vs, request)}
    ours = {request.canary_route_name, *([request.sticky_route_name] if request.sticky_sessions else [])}
    indices |= {i for i, r in enumerate(_http_routes(vs)) if isinstance(r, dict) and r.get("name") in ours}
    return indices


# --------------------------------------------------------------------------- state and plans


@dataclass(frozen=True)
class RoutingPlan:
    """The absolute routing one step wants: canary share of the owned route, match route on/off,
    sticky sessions on/off (only with a partial canary share: nothing to stick to otherwise)."""

    canary_weight: int
    match_route: bool = False
    # Percent of the owned route's requests copied to the canary (the mirror phase), 0: none.
    mirror_percent: float = 0.0
    sticky: bool = False

    def __post_init__(self) -> None:
        _require_weight(self.canary_weight)
        if self.sticky and self.canary_weight in (0, 100):
            raise ValidationError("canary_weight", self.canary_weight, "sticky sessions need a weight in 1..99")

    def describe(self) -> str:
        match = ", canary match route on" if self.match_route else ""
        mirror = f", mirror {self.mirror_percent:g}% to canary" if self.mirror_percent else ""
        sticky_on = ", sticky sessions on" if self.sticky else ""
        return f"set route: {self.canary_weight}% canary{match}{mirror}{sticky_on}"


@dataclass(frozen=True)
class RoutingState:
    """What the owned route does now (percentages of the owned route's traffic)."""

    owned_index: int
    owned_route_name: str | None
    canary_weight: int
    stable_weight: int
    match_route_present: bool
    sticky_route_present: bool = False

    @property
    def other_weight(self) -> int:
        """Share going to neither subset (e.g. the host without a subset, before the first step)."""
        return 100 - self.canary_weight - self.stable_weight

    def describe(self) -> str:
        route = f"http[{self.owned_index}]" + (f" {self.owned_route_name!r}" if self.owned_route_name else "")
        other = f", other {self.other_weight}%" if self.other_weight else ""
        match = "present" if self.match_route_present else "absent"
        sticky_on = "; sticky route present" if self.sticky_route_present else ""
        return (
            f"{route}: stable {self.stable_weight}%, canary {self.canary_weight}%{other}; match route {match}"
            f"{sticky_on}"
        )


def _shares(route: dict[str, Any]) -> list[tuple[dict[str, Any], float]]:
    entries = route_entries(route)
    if len(entries) == 1:
        return [(entries[0], 1.0)]
    weights = [e.get("weight") if isinstance(e.get("weight"), int) else 0 for e in entries]
    total = sum(weights)
    if total <= 0:
        # Invalid in Istio (all-zero weights); report an even split rather than divide by zero.
        return [(e, 1.0 / len(entries)) for e in entries] if entries else []
    return [(e, w / total) for e, w in zip(entries, weights, strict=True)]


def routing_state(vs: dict[str, Any], request: ReleaseRequest) -> RoutingState:
    index = find_owned_route(vs, request)
    route = _http_routes(vs)[index]
    canary = stable = 0.0
    for entry, share in _shares(route):
        dest = destination_of(entry)
        if not request.refers_to_host(dest.get("host")):
            continue
        if dest.get("subset") == request.canary_subset:
            canary += share
        elif dest.get("subset") == request.stable_subset:
            stable += share
    return RoutingState(
        owned_index=index,
        owned_route_name=route.get("name"),
        canary_weight=round(canary * 100),
        stable_weight=round(stable * 100),
        match_route_present=_has_route_named(vs, request.canary_route_name),
        sticky_route_present=request.sticky_sessions and _has_route_named(vs, request.sticky_route_name),
    )


def apply_plan(vs: dict[str, Any], request: ReleaseRequest, plan: RoutingPlan) -> dict[str, Any]:
    """The VirtualService with exactly the plan's routing; applying it twice equals once."""
    if plan.match_route and not request.uses_match_route:
        raise RoutingError(f"strategy {request.strategy!r} does not use a canary match route")
    if plan.sticky and not request.sticky_sessions:
        raise RoutingError("sticky sessions are off for this release (sticky_sessions)")
    out = set_weights(remove_sticky(remove_match_route(vs, request), request), request, plan.canary_weight)
    out = set_mirror(out, request, plan.mirror_percent)
    if plan.sticky:
        out = set_sticky(out, request)
    if plan.match_route:
        out = set_match_route(out, request)
    return out


def plan_for_step(request: ReleaseRequest, canary_weight: int) -> RoutingPlan:
    """The routing for one step of `request.steps`.

    weighted: the owned route's split only. header/cookie: the match route sends every
    matching request to the canary, and the step's weight applies to the rest (as Argo
    Rollouts combines setHeaderRoute with setWeight); at 100 the match route is redundant
    and dropped, which is what promotion writes anyway. Sticky sessions (`sticky_sessions`) hold
    at every partial step; at 100 everyone is on the canary and they go, as at promotion.
    """
    weight = _require_weight(canary_weight)
    return RoutingPlan(canary_weight=weight, match_route=request.uses_match_route and weight < 100,
                       sticky=request.sticky_sessions and 0 < weight < 100)
