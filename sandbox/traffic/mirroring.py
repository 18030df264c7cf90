"""Envoy's request mirroring (Istio `mirror` / `mirrors`), pure: which requests are copied, and where to.

A route with `mirror` sends each request to its `route` as usual and, for `mirrorPercentage`
of them (every one when absent, as in Istio; the deprecated integer `mirrorPercent` is read
too), a copy to the mirror destination. Envoy's shadow is fire-and-forget: the client gets the
primary's response only, whatever the copy does. What the sandbox models:

- the copy is served by a pod of the mirror destination, with that pod's behaviour (errors,
  latency), and only that pod's sidecar reports it (`reporter="destination"`): the calling
  proxy emits no metric for shadows (istio/istio#23496);
- a copy Envoy cannot send (no such cluster or subset, no Ready endpoint) is dropped
  silently, and a pod without a sidecar serves it unreported: neither leaves a trace;
- a request the route's fault filter aborts never reaches the router, so it is not copied;
- requests answered without an upstream (no route, redirect, direct response) are not copied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sandbox.traffic.matching import select_http_route
from sandbox.traffic.request import Request
from sandbox.traffic.routing import (
    Distribution,
    MeshSnapshot,
    RouteOutcome,
    cumulative_distribution,
    destination_distribution,
    sample_outcome,
    select_virtual_service,
)


def _percent(value: Any, default: float = 100.0) -> float:
    if isinstance(value, Mapping):
        value = value.get("value", default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return min(max(float(value), 0.0), 100.0)


def route_mirrors(route: Mapping[str, Any]) -> Iterator[tuple[Any, float]]:
    """(destination, percent of requests copied) for each mirror of an HTTP route."""
    mirror = route.get("mirror")
    if isinstance(mirror, Mapping):
        if route.get("mirrorPercentage") is not None:
            yield mirror, _percent(route["mirrorPercentage"])
        else:
            yield mirror, _percent(route.get("mirrorPercent"))
    for entry in route.get("mirrors") or []:
        if isinstance(entry, Mapping):
            yield entry.get("destination"), _percent(entry.get("percentage"))


def _aborted_share(route: Mapping[str, Any]) -> float:
    abort = (route.get("fault") or {}).get("abort") or {}
    return _percent(abort.get("percentage")) / 100.0 if abort.get("httpStatus") else 0.0


def mirror_targets(request: Request, mesh: MeshSnapshot) -> list[tuple[float, Distribution]]:
    """For each mirror of the route `request` takes: (share of such requests copied, where a
    copy lands). The landing distribution keeps only reported outcomes (a pod with a sidecar);
    it sums to less than 1, or the target is left out, when copies are dropped."""
    vs = select_virtual_service(request, mesh)
    route = select_http_route(request, vs) if vs is not None else None
    if route is None or not route.get("route"):
        return []
    namespace = vs["metadata"].get("namespace") or "default"
    passed = 1.0 - _aborted_share(route)
    targets = []
    for destination, percent in route_mirrors(route):
        landing = [(p, o) for p, o in destination_distribution(destination, namespace, mesh)
                   if o.reaches_pod and o.sidecar]
        share = percent / 100.0 * passed
        if share > 0 and landing:
            targets.append((share, landing))
    return targets


@dataclass(frozen=True)
class ShadowTable:
    """One header class's mirrors, compiled for the generator's hot loop."""

    targets: tuple[tuple[float, list[float], list[RouteOutcome]], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.targets)

    def draw(self, rand: Callable[[], float]) -> list[RouteOutcome]:
        """Where the copies of one request land (none, usually)."""
        landed = []
        for share, cum, outcomes in self.targets:
            if rand() < share:
                u = rand()
                if u < cum[-1]:  # beyond: a copy Envoy could not send
                    landed.append(sample_outcome(cum, outcomes, u / cum[-1]))
        return landed


def shadow_table(request: Request, mesh: MeshSnapshot) -> ShadowTable:
    return ShadowTable(tuple((share, *cumulative_distribution(landing))
                             for share, landing in mirror_targets(request, mesh)))
