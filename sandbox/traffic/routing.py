"""Envoy's routing, pure: where does a request go?

`routing_distribution(request, mesh)` answers as a probability distribution over outcomes
(a version's pod, or a local reply such as 404 NR / 503 UH), from the VirtualService,
DestinationRule, Service and Pods in a `MeshSnapshot`, fault injection included.
`route_request` samples one outcome.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sandbox.hosts import ServiceTarget, host_covers, request_target, resolve_host, service_fqdn
from sandbox.store import Store
from sandbox.traffic.matching import applies_to_mesh, select_http_route
from sandbox.traffic.request import Request

# Pod labels Istio reads for destination_canonical_revision, first present wins ("latest" if none).
CANONICAL_REVISION_LABELS = ("service.istio.io/canonical-revision", "app.kubernetes.io/version", "version")


@dataclass(frozen=True)
class RouteOutcome:
    """Where a request ends. `status` None: a pod of `version` serves it (its behaviour decides
    the code); otherwise Envoy replies locally with that status and `flags` (NR, UH, NC, FI).
    `version` is the pod's `version` label (Istio's destination_version), `revision` its
    canonical revision (destination_canonical_revision)."""

    version: str | None
    workload: str | None = None
    sidecar: bool = True
    status: int | None = None
    flags: str = "-"
    delay_ms: float = 0.0
    revision: str | None = None

    @property
    def reaches_pod(self) -> bool:
        return self.status is None


def _local_reply(status: int, flags: str) -> RouteOutcome:
    return RouteOutcome(version=None, workload=None, sidecar=False, status=status, flags=flags)


NO_ROUTE = _local_reply(404, "NR")
MISSING_SUBSET = _local_reply(503, "NR")
ZERO_WEIGHTS = _local_reply(503, "NR")
NO_CLUSTER = _local_reply(503, "NC")
NO_HEALTHY_UPSTREAM = _local_reply(503, "UH")

Distribution = list[tuple[float, RouteOutcome]]


class MeshSnapshot:
    """The objects routing depends on, indexed once. Build one per store revision."""

    def __init__(
        self,
        virtual_services: Iterable[dict[str, Any]] = (),
        destination_rules: Iterable[dict[str, Any]] = (),
        services: Iterable[dict[str, Any]] = (),
        pods: Iterable[dict[str, Any]] = (),
    ) -> None:
        self.virtual_services = sorted(virtual_services, key=_creation_order)
        self.destination_rules = sorted(destination_rules, key=_creation_order)
        self.services = {(s["metadata"]["name"], _ns(s)): s for s in services}
        # Ready pods (Envoy's endpoints), indexed by (namespace, label, value) for selectors.
        self._endpoints_by_label: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        for pod in pods:
            if _pod_ready(pod):
                for key, value in (pod["metadata"].get("labels") or {}).items():
                    self._endpoints_by_label.setdefault((_ns(pod), key, str(value)), []).append(pod)
        self.destination_cache: dict[tuple[str, str | None, str], Distribution] = {}
        # Indexes by the (name, namespace) a host names, so lookups stay cheap at 100 services.
        self.vs_by_target: dict[ServiceTarget, list[dict[str, Any]]] = {}
        self.wildcard_virtual_services: list[dict[str, Any]] = []
        for vs in self.virtual_services:
            spec = vs.get("spec") or {}
            if not applies_to_mesh(spec.get("gateways")):
                continue
            for host in spec.get("hosts") or []:
                if isinstance(host, str) and host.startswith("*"):
                    self.wildcard_virtual_services.append(vs)
                elif (target := resolve_host(host, _ns(vs))) is not None:
                    bucket = self.vs_by_target.setdefault(target, [])
                    if not bucket or bucket[-1] is not vs:
                        bucket.append(vs)
        self.dr_by_target: dict[ServiceTarget, list[dict[str, Any]]] = {}
        for dr in self.destination_rules:
            target = resolve_host((dr.get("spec") or {}).get("host"), _ns(dr))
            if target is not None:
                self.dr_by_target.setdefault(target, []).append(dr)

    def endpoints(self, namespace: str, selector: Mapping[str, str]) -> list[dict[str, Any]]:
        """Ready pods in `namespace` carrying every label of `selector` (non-empty)."""
        candidates = [self._endpoints_by_label.get((namespace, k, str(v)), []) for k, v in selector.items()]
        smallest = min(candidates, key=len)
        return [
            p
            for p in smallest
            if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
        ]

    @classmethod
    def from_store(cls, store: Store) -> MeshSnapshot:
        return cls(
            store.list("virtualservices"),
            store.list("destinationrules"),
            store.list("services"),
            store.list("pods"),
        )


def _ns(obj: dict[str, Any]) -> str:
    return obj["metadata"].get("namespace") or "default"


def _creation_order(obj: dict[str, Any]) -> tuple[str, str, str]:
    # Oldest first, as Istio orders rules naming one host; namespace and name break ties.
    return obj["metadata"].get("creationTimestamp", ""), _ns(obj), obj["metadata"]["name"]


def select_virtual_service(request: Request, mesh: MeshSnapshot) -> dict[str, Any] | None:
    """The VirtualService the calling sidecar applies to this host: same-namespace first."""
    target = request_target(request.host, request.namespace)
    if target is None:
        return None
    candidates = list(mesh.vs_by_target.get(target, []))
    candidates += [
        vs
        for vs in mesh.wildcard_virtual_services
        if vs not in candidates
        and any(host_covers(h, _ns(vs), target) for h in vs["spec"].get("hosts") or [])
    ]
    # Same-namespace rules first; otherwise oldest first (stable sort keeps creation order).
    candidates.sort(key=lambda vs: (_ns(vs) != target[1], vs["metadata"].get("creationTimestamp", "")))
    return candidates[0] if candidates else None


def _pod_ready(pod: dict[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def canonical_revision(labels: Mapping[str, Any]) -> str:
    """The pod's destination_canonical_revision, with Istio's label precedence."""
    return next((str(labels[key]) for key in CANONICAL_REVISION_LABELS if key in labels), "latest")


def _pod_outcome(pod: dict[str, Any]) -> RouteOutcome:
    labels = pod["metadata"].get("labels") or {}
    # destination_version is only ever the `version` label; Istio says "unknown" without it.
    version = labels.get("version", "unknown")
    app = labels.get("app")
    workload = f"{app}-{version}" if app and "version" in labels else pod["metadata"]["name"]
    sidecar = any(c.get("name") == "istio-proxy" for c in (pod.get("spec") or {}).get("containers") or [])
    return RouteOutcome(
        version=version, workload=workload, sidecar=sidecar, revision=canonical_revision(labels)
    )


def _find_subset(mesh: MeshSnapshot, target: ServiceTarget, subset: str) -> dict[str, Any] | None:
    """The named subset of the DestinationRule for `target` (one in the host's own namespace
    wins; otherwise the oldest), or None."""
    rules = list(mesh.dr_by_target.get(target, []))
    rules.sort(key=lambda dr: _ns(dr) != target[1])
    if not rules:
        return None
    for s in (rules[0].get("spec") or {}).get("subsets") or []:
        if isinstance(s, dict) and s.get("name") == subset:
            return s
    return None


def destination_distribution(destination: Any, vs_namespace: str, mesh: MeshSnapshot) -> Distribution:
    """Where traffic sent to one `destination` lands (memoized per snapshot)."""
    if not isinstance(destination, dict):
        return [(1.0, NO_CLUSTER)]
    key = (str(destination.get("host")), destination.get("subset"), vs_namespace)
    cached = mesh.destination_cache.get(key)
    if cached is None:
        cached = mesh.destination_cache[key] = _destination_distribution(destination, vs_namespace, mesh)
    return cached


def _destination_distribution(
    destination: dict[str, Any], vs_namespace: str, mesh: MeshSnapshot
) -> Distribution:
    """Where traffic sent to one `destination` lands: the Ready pods of the host, narrowed
    by the subset's labels, each with an equal share (Envoy's round robin)."""
    target = resolve_host(destination.get("host"), vs_namespace)
    service = mesh.services.get(target) if target else None
    if target is None or service is None:
        return [(1.0, NO_CLUSTER)]
    selector = dict((service.get("spec") or {}).get("selector") or {})
    if not selector:
        return [(1.0, NO_HEALTHY_UPSTREAM)]
    subset_name = destination.get("subset")
    if subset_name:
        subset = _find_subset(mesh, target, subset_name)
        if subset is None:
            return [(1.0, MISSING_SUBSET)]
        selector.update(subset.get("labels") or {})
    endpoints = mesh.endpoints(target[1], selector)
    if not endpoints:
        return [(1.0, NO_HEALTHY_UPSTREAM)]
    share = 1.0 / len(endpoints)
    return _merge((share, _pod_outcome(p)) for p in endpoints)


def _merge(parts: Iterable[tuple[float, RouteOutcome]]) -> Distribution:
    merged: dict[RouteOutcome, float] = {}
    for p, outcome in parts:
        if p > 0:
            merged[outcome] = merged.get(outcome, 0.0) + p
    return sorted(((p, o) for o, p in merged.items()), key=lambda po: (-po[0], str(po[1])))


def _with_fault(route: dict[str, Any], dist: Distribution) -> Distribution:
    """Istio fault injection on the route: aborts reply at the caller, delays add latency."""
    fault = route.get("fault") or {}
    delay = fault.get("delay") or {}
    if delay:
        share = _percentage(delay)
        delay_ms = _duration_ms(delay.get("fixedDelay"))
        dist = _merge(
            [(p * share, _replace(o, delay_ms=o.delay_ms + delay_ms)) for p, o in dist]
            + [(p * (1 - share), o) for p, o in dist]
        )
    abort = fault.get("abort") or {}
    if abort.get("httpStatus"):
        share = _percentage(abort)
        dist = _merge(
            [(share, _local_reply(int(abort["httpStatus"]), "FI"))] + [(p * (1 - share), o) for p, o in dist]
        )
    return dist


def _replace(outcome: RouteOutcome, **changes: Any) -> RouteOutcome:
    return RouteOutcome(**{**outcome.__dict__, **changes})


def _percentage(spec: dict[str, Any]) -> float:
    pct = spec.get("percentage")
    value = pct.get("value", 100.0) if isinstance(pct, dict) else 100.0
    return min(max(float(value), 0.0), 100.0) / 100.0


def _duration_ms(value: Any) -> float:
    text = str(value or "0s")
    for unit, factor in (("ms", 1.0), ("s", 1000.0), ("m", 60000.0), ("h", 3600000.0)):
        if text.endswith(unit):
            try:
                return float(text[: -len(unit)]) * factor
            except ValueError:
                return 0.0
    return 0.0


def routing_distribution(request: Request, mesh: MeshSnapshot) -> Distribution:
    """Probability of each outcome for `request`, sorted most likely first; sums to 1."""
    vs = select_virtual_service(request, mesh)
    if vs is None:
        # No VirtualService: Envoy's default route, all pods of the Kubernetes Service.
        target = request_target(request.host, request.namespace)
        host = service_fqdn(*target) if target else request.host
        return destination_distribution({"host": host}, request.namespace, mesh)
    route = select_http_route(request, vs)
    if route is None:
        return [(1.0, NO_ROUTE)]
    destinations = route.get("route")
    if not destinations:
        if route.get("directResponse"):
            return [(1.0, _local_reply(int(route["directResponse"].get("status", 200)), "-"))]
        if route.get("redirect"):
            return [(1.0, _local_reply(int(route["redirect"].get("redirectCode", 301)), "-"))]
        return [(1.0, NO_ROUTE)]
    weights = _weights(destinations)
    total = sum(weights)
    if total <= 0:
        return [(1.0, ZERO_WEIGHTS)]
    parts: list[tuple[float, RouteOutcome]] = []
    for weight, dest in zip(weights, destinations, strict=True):
        if weight <= 0:
            continue
        for p, outcome in destination_distribution(dest.get("destination"), _ns(vs), mesh):
            parts.append((weight / total * p, outcome))
    return _with_fault(route, _merge(parts))


def _weights(destinations: list[Any]) -> list[float]:
    if len(destinations) == 1:
        return [1.0]  # a single destination takes everything, whatever its weight
    return [max(float(d.get("weight") or 0), 0.0) if isinstance(d, dict) else 0.0 for d in destinations]


@dataclass(frozen=True)
class RouteTrace:
    """Which HTTP route served a request (its name, or `http[i]` when unnamed; None: no
    VirtualService or no route) and the Set-Cookie values Envoy adds to the response there
    (`headers.response` add/set of the route and of the chosen destination)."""

    route: str | None
    set_cookies: tuple[str, ...] = ()


TracedDistribution = list[tuple[float, RouteOutcome, RouteTrace]]


def _set_cookies(*holders: Any) -> tuple[str, ...]:
    found: list[str] = []
    for holder in holders:
        response = ((holder.get("headers") or {}) if isinstance(holder, dict) else {}).get("response") or {}
        for op in ("set", "add"):
            for key, value in (response.get(op) or {}).items():
                if str(key).lower() == "set-cookie":
                    found.append(str(value))
    return tuple(found)


def traced_distribution(request: Request, mesh: MeshSnapshot) -> TracedDistribution:
    """`routing_distribution`, each outcome also saying which route served it and the cookies
    its response sets (only responses from a pod: a local reply carries none here). Summed
    over traces it is `routing_distribution`, outcome for outcome."""
    vs = select_virtual_service(request, mesh)
    route = select_http_route(request, vs) if vs is not None else None
    if vs is None or route is None or not route.get("route"):
        name = None if route is None else _route_name(vs, route)
        return [(p, o, RouteTrace(name)) for p, o in routing_distribution(request, mesh)]
    name = _route_name(vs, route)
    destinations = route["route"]
    weights = _weights(destinations)
    total = sum(weights)
    if total <= 0:
        return [(1.0, ZERO_WEIGHTS, RouteTrace(name))]
    merged: dict[tuple[RouteOutcome, RouteTrace], float] = {}
    for weight, dest in zip(weights, destinations, strict=True):
        if weight <= 0:
            continue
        cookies = _set_cookies(route, dest)
        reached = destination_distribution(dest.get("destination"), _ns(vs), mesh)
        for p, outcome in _with_fault(route, reached):
            key = (outcome, RouteTrace(name, cookies if outcome.reaches_pod else ()))
            merged[key] = merged.get(key, 0.0) + weight / total * p
    return sorted(((p, o, t) for (o, t), p in merged.items() if p > 0), key=lambda x: (-x[0], str(x[1]), str(x[2])))


def _route_name(vs: dict[str, Any], route: dict[str, Any]) -> str:
    if route.get("name"):
        return str(route["name"])
    index = next(i for i, r in enumerate((vs.get("spec") or {}).get("http") or []) if r is route)
    return f"http[{index}]"


def route_request(request: Request, mesh: MeshSnapshot, rng: random.Random) -> RouteOutcome:
    """Sample one outcome for one request."""
    dist = routing_distribution(request, mesh)
    return sample_outcome(*cumulative_distribution(dist), rng.random())


def cumulative_distribution(dist: Distribution) -> tuple[list[float], list[RouteOutcome]]:
    cum: list[float] = []
    running = 0.0
    for p, _ in dist:
        running += p
        cum.append(running)
    return cum, [o for _, o in dist]


def sample_outcome(cum: list[float], outcomes: list[RouteOutcome], u: float) -> RouteOutcome:
    if len(outcomes) == 1:
        return outcomes[0]
    return outcomes[min(bisect.bisect_right(cum, u * cum[-1]), len(outcomes) - 1)]
