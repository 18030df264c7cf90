"""Simulated mesh traffic: requests routed as Envoy would, exported as Istio's metrics.

Two layers:
- Routing (pure): `routing_distribution(request, mesh)` answers "where does this request go?"
  as a probability distribution over outcomes (a version's pod, or a local reply such as
  404 NR / 503 UH), from the VirtualService, DestinationRule, Service and Pods in a
  `MeshSnapshot`. `route_request` samples one outcome.
- Generation: `TrafficGenerator` emits `rps * dt` requests per service every tick. Requests
  differ only in two headers (canary user-agent, canary cookie), so the distribution is
  computed once per header class and per store revision; per request there are only a few
  random draws and a counter update. This keeps the generator cheap at 50-100 services.

`make_generator_server` serves `/metrics` (Prometheus text format) and the control API
(`GET /control/state`, `POST /control/behaviour`, `POST /control/reset`, and `/control/faults`
when the supervisor wires its fault control in: `python -m sandbox fault ...`).
"""

from __future__ import annotations

import bisect
import copy
import json
import logging
import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import re2

from sandbox.config import (
    MESH_DOMAIN,
    SERVICE_BEHAVIOUR_FIELDS,
    VERSION_BEHAVIOUR_FIELDS,
    ServiceConfig,
    WorldConfig,
    check_service_behaviour,
    check_version_behaviour,
    reseed_world,
)
from sandbox.errors import SandboxInputError
from sandbox.store import Store

log = logging.getLogger(__name__)

# Istio's default buckets for istio_request_duration_milliseconds.
ISTIO_BUCKETS_MS: tuple[float, ...] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
    1800000, 3600000,
)  # fmt: skip
Z_99 = 2.326  # the standard normal's 99th percentile: p99 = p50 * exp(Z_99 * sigma)

BROWSER_USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
CANARY_USER_AGENT = "canary"
PLAIN_COOKIE = "session=abc123"
CANARY_COOKIE = "session=abc123; canary=true; theme=dark"
SOURCE_LABELS = {"app": "productpage", "version": "v1"}
# Pod labels Istio reads for destination_canonical_revision, first present wins ("latest" if none).
CANONICAL_REVISION_LABELS = ("service.istio.io/canonical-revision", "app.kubernetes.io/version", "version")
SOURCE_WORKLOAD = "productpage-v1"
REQUEST_PATH = "/reviews/0"
# A local reply (no route, no healthy upstream) costs Envoy well under a millisecond.
LOCAL_REPLY_MS = 0.3


# --- routing (pure) -------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Outcome:
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


def _local_reply(status: int, flags: str) -> Outcome:
    return Outcome(version=None, workload=None, sidecar=False, status=status, flags=flags)


NO_ROUTE = _local_reply(404, "NR")
MISSING_SUBSET = _local_reply(503, "NR")
ZERO_WEIGHTS = _local_reply(503, "NR")
NO_CLUSTER = _local_reply(503, "NC")
NO_HEALTHY_UPSTREAM = _local_reply(503, "UH")

Distribution = list[tuple[float, Outcome]]


class MeshSnapshot:
    """The objects routing depends on, indexed once. Build one per store revision."""

    def __init__(
        self,
        virtual_services: Iterable[dict[str, Any]] = (),
        destination_rules: Iterable[dict[str, Any]] = (),
        services: Iterable[dict[str, Any]] = (),
        pods: Iterable[dict[str, Any]] = (),
    ) -> None:
        self.virtual_services = sorted(
            virtual_services,
            key=lambda o: (o["metadata"].get("creationTimestamp", ""), _ns(o), o["metadata"]["name"]),
        )
        self.destination_rules = sorted(
            destination_rules,
            key=lambda o: (o["metadata"].get("creationTimestamp", ""), _ns(o), o["metadata"]["name"]),
        )
        self.services = {(s["metadata"]["name"], _ns(s)): s for s in services}
        # Ready pods (Envoy's endpoints), indexed by (namespace, label, value) for selectors.
        self._endpoints_by_label: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        for pod in pods:
            if _pod_ready(pod):
                for key, value in (pod["metadata"].get("labels") or {}).items():
                    self._endpoints_by_label.setdefault((_ns(pod), key, str(value)), []).append(pod)
        self.destination_cache: dict[tuple[str, str | None, str], Distribution] = {}
        # Indexes by the (name, namespace) a host names, so lookups stay cheap at 100 services.
        self.vs_by_target: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.wildcard_virtual_services: list[dict[str, Any]] = []
        for vs in self.virtual_services:
            spec = vs.get("spec") or {}
            if not _applies_to_mesh(spec.get("gateways")):
                continue
            for host in spec.get("hosts") or []:
                if isinstance(host, str) and host.startswith("*"):
                    self.wildcard_virtual_services.append(vs)
                elif (target := resolve_host(host, _ns(vs))) is not None:
                    bucket = self.vs_by_target.setdefault(target, [])
                    if not bucket or bucket[-1] is not vs:
                        bucket.append(vs)
        self.dr_by_target: dict[tuple[str, str], list[dict[str, Any]]] = {}
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


def _service_fqdn(target: tuple[str, str]) -> str:
    return f"{target[0]}.{target[1]}.svc.{MESH_DOMAIN}"


def _service_of_fqdn(fqdn: str) -> tuple[str, str] | None:
    suffix = f".svc.{MESH_DOMAIN}"
    parts = fqdn.removesuffix(suffix).split(".") if fqdn.endswith(suffix) else []
    return (parts[0], parts[1]) if len(parts) == 2 else None


def resolve_host(host: Any, namespace: str) -> tuple[str, str] | None:
    """(service name, namespace) a rule's host names (VirtualService hosts, destination and
    DestinationRule hosts); None if it is no Service of the mesh.

    As Istio reads it: only a dot-free short name is expanded, relative to the rule's
    namespace (`reviews` -> `reviews.<namespace>.svc.cluster.local`); a name with a dot is
    taken as written, so `reviews.bookinfo` names no Service.
    """
    if not isinstance(host, str) or not host or "*" in host:
        return None
    return _service_of_fqdn(host if "." in host else _service_fqdn((host, namespace)))


def request_target(host: Any, namespace: str) -> tuple[str, str] | None:
    """(service name, namespace) a request's Host names, from a caller in `namespace`.

    Unlike rule hosts: Envoy's virtual host for a Service also answers to the DNS search-path
    forms `name.ns` and `name.ns.svc` (and a bare `name` resolves in the caller's namespace).
    """
    if not isinstance(host, str) or not host or "*" in host:
        return None
    parts = host.split(".")
    if len(parts) == 1:
        return parts[0], namespace
    if len(parts) == 2 or (len(parts) == 3 and parts[2] == "svc"):
        return parts[0], parts[1]
    return _service_of_fqdn(host)


def _host_covers(vs_host: Any, vs_namespace: str, target: tuple[str, str]) -> bool:
    if isinstance(vs_host, str) and vs_host.startswith("*"):
        return vs_host == "*" or _service_fqdn(target).endswith(vs_host[1:])
    return resolve_host(vs_host, vs_namespace) == target


def _applies_to_mesh(gateways: Any) -> bool:
    # No gateways means "mesh"; listing gateways without "mesh" makes a rule ingress-only.
    return not gateways or "mesh" in gateways


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
        and any(_host_covers(h, _ns(vs), target) for h in vs["spec"].get("hosts") or [])
    ]
    # Same-namespace rules first; otherwise oldest first (stable sort keeps creation order).
    candidates.sort(key=lambda vs: (_ns(vs) != target[1], vs["metadata"].get("creationTimestamp", "")))
    return candidates[0] if candidates else None


def _compile_regex(pattern: str) -> Any:
    return _REGEX_CACHE.get(pattern) or _REGEX_CACHE.setdefault(pattern, _try_compile(pattern))


def _try_compile(pattern: str) -> Any:
    try:
        return re2.compile(pattern)
    except Exception:  # re2.error: a pattern Envoy would reject; it matches nothing
        return False


_REGEX_CACHE: dict[str, Any] = {}


def string_matches(spec: Any, value: str | None, ignore_case: bool = False) -> bool:
    """Istio StringMatch: exact | prefix | regex (RE2, whole value). An empty match means present."""
    if value is None:
        return False
    if not isinstance(spec, dict) or not spec:
        return True
    if ignore_case:
        value = value.lower()
    if "exact" in spec:
        expected = str(spec["exact"])
        return value == (expected.lower() if ignore_case else expected)
    if "prefix" in spec:
        prefix = str(spec["prefix"])
        return value.startswith(prefix.lower() if ignore_case else prefix)
    if "regex" in spec:
        compiled = _compile_regex(str(spec["regex"]))
        return bool(compiled) and compiled.fullmatch(value) is not None
    return True


def match_block_matches(block: Any, request: Request) -> bool:
    """One HTTPMatchRequest: every condition in it must hold."""
    if not isinstance(block, dict):
        return False
    if not _applies_to_mesh(block.get("gateways")):
        return False
    headers = request.headers
    split = urlsplit(request.path)
    ignore_case = bool(block.get("ignoreUriCase"))
    if "uri" in block and not string_matches(block["uri"], split.path, ignore_case):
        return False
    if "scheme" in block and not string_matches(block["scheme"], request.scheme):
        return False
    if "method" in block and not string_matches(block["method"], request.method):
        return False
    if "authority" in block and not string_matches(block["authority"], f"{request.host}:{request.port}"):
        return False
    if "port" in block and block["port"] != request.port:
        return False
    for name, spec in (block.get("headers") or {}).items():
        if not string_matches(spec, headers.get(str(name).lower())):
            return False
    for name, spec in (block.get("withoutHeaders") or {}).items():
        if string_matches(spec, headers.get(str(name).lower())):
            return False
    if block.get("queryParams"):
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        for name, spec in block["queryParams"].items():
            if not string_matches(spec, params.get(name)):
                return False
    for key, value in (block.get("sourceLabels") or {}).items():
        if request.source_labels.get(key) != value:
            return False
    source_ns = request.source_namespace or request.namespace
    return not ("sourceNamespace" in block and block["sourceNamespace"] != source_ns)


def route_matches(route: dict[str, Any], request: Request) -> bool:
    """A route without `match` (or with an empty list) matches everything; else any block."""
    blocks = route.get("match")
    if not blocks:
        return True
    return any(match_block_matches(b, request) for b in blocks)


def select_http_route(request: Request, vs: dict[str, Any]) -> dict[str, Any] | None:
    """First HTTP route whose match holds, as Envoy evaluates them: in order."""
    for route in (vs.get("spec") or {}).get("http") or []:
        if isinstance(route, dict) and route_matches(route, request):
            return route
    return None


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


def _pod_outcome(pod: dict[str, Any]) -> Outcome:
    labels = pod["metadata"].get("labels") or {}
    # destination_version is only ever the `version` label; Istio says "unknown" without it.
    version = labels.get("version", "unknown")
    app = labels.get("app")
    workload = f"{app}-{version}" if app and "version" in labels else pod["metadata"]["name"]
    sidecar = any(c.get("name") == "istio-proxy" for c in (pod.get("spec") or {}).get("containers") or [])
    return Outcome(version=version, workload=workload, sidecar=sidecar, revision=canonical_revision(labels))


def _find_subset(mesh: MeshSnapshot, target: tuple[str, str], subset: str) -> dict[str, Any] | None:
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


def _merge(parts: Iterable[tuple[float, Outcome]]) -> Distribution:
    merged: dict[Outcome, float] = {}
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


def _replace(outcome: Outcome, **changes: Any) -> Outcome:
    return Outcome(**{**outcome.__dict__, **changes})


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
        host = _service_fqdn(target) if target else request.host
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
    if len(destinations) == 1:
        weights = [1.0]  # a single destination takes everything, whatever its weight
    else:
        weights = [
            max(float(d.get("weight") or 0), 0.0) if isinstance(d, dict) else 0.0 for d in destinations
        ]
    total = sum(weights)
    if total <= 0:
        return [(1.0, ZERO_WEIGHTS)]
    parts: list[tuple[float, Outcome]] = []
    for weight, dest in zip(weights, destinations, strict=True):
        if weight <= 0:
            continue
        for p, outcome in destination_distribution(dest.get("destination"), _ns(vs), mesh):
            parts.append((weight / total * p, outcome))
    return _with_fault(route, _merge(parts))


def route_request(request: Request, mesh: MeshSnapshot, rng: random.Random) -> Outcome:
    """Sample one outcome for one request."""
    dist = routing_distribution(request, mesh)
    return _sample(*_cumulative(dist), rng.random())


def _cumulative(dist: Distribution) -> tuple[list[float], list[Outcome]]:
    cum: list[float] = []
    running = 0.0
    for p, _ in dist:
        running += p
        cum.append(running)
    return cum, [o for _, o in dist]


def _sample(cum: list[float], outcomes: list[Outcome], u: float) -> Outcome:
    if len(outcomes) == 1:
        return outcomes[0]
    return outcomes[min(bisect.bisect_right(cum, u * cum[-1]), len(outcomes) - 1)]


# --- generation -----------------------------------------------------------------------------


def header_class_headers(user_agent_canary: bool, cookie_canary: bool) -> dict[str, str]:
    return {
        "user-agent": CANARY_USER_AGENT if user_agent_canary else BROWSER_USER_AGENT,
        "cookie": CANARY_COOKIE if cookie_canary else PLAIN_COOKIE,
        "accept": "application/json",
    }


# Header classes, indexed 2*ua + cookie.
HEADER_CLASSES = [(ua, ck) for ua in (False, True) for ck in (False, True)]


@dataclass
class _VersionModel:
    """A version's behaviour in the form the hot loop needs."""

    error_rate: float
    mu: float
    sigma: float

    @classmethod
    def of(cls, error_rate: float, p50: float, p99: float) -> _VersionModel:
        return cls(error_rate, math.log(p50), math.log(p99 / p50) / Z_99)


_UNKNOWN_VERSION_MODEL = _VersionModel.of(0.0, 20.0, 80.0)


@dataclass
class _Series:
    labels: str
    buckets: list[int]
    total_ms: float = 0.0
    count: int = 0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _le(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


_LE_LABELS = [f',le="{_le(b)}"' for b in ISTIO_BUCKETS_MS] + [',le="+Inf"']


class TrafficGenerator:
    """Emits simulated requests for every service of the world, tick by tick."""

    def __init__(
        self,
        store: Store,
        world: WorldConfig,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.world = world
        self._rng = rng or random.Random()
        self._clock = clock
        self._lock = threading.Lock()
        self._services: list[ServiceConfig] = copy.deepcopy(world.services)
        self._models: list[dict[str, _VersionModel]] = [self._models_for(s) for s in self._services]
        self._carry = [0.0] * len(self._services)
        self._tables: list[list[tuple[list[float], list[Outcome]]]] = []
        self._compiled_revision = -1
        self._compiled_changes = -1
        self._istio: dict[tuple[int, Outcome, int], _Series] = {}
        self._sandbox: dict[tuple[int, str, int, int], int] = {}
        self._last_tick: float | None = None
        self.started_at = datetime.now(UTC)
        self._started_mono = time.monotonic()
        self._cpu_seconds = 0.0  # generator's own CPU: tick work + metric rendering
        self._cpu_samples: deque[tuple[float, float, float]] = deque(maxlen=200)
        self.ticks = 0
        self._traffic_zero = False  # fault: every service's traffic stops, its configured rps kept

    # faults --------------------------------------------------------------------------------

    @property
    def traffic_zero(self) -> bool:
        return self._traffic_zero

    def set_traffic_zero(self, zero: bool) -> None:
        """Stop (True) or resume (False) all traffic without changing any service's rps."""
        with self._lock:
            self._traffic_zero = zero
            self._carry = [0.0] * len(self._services)  # no burst of "owed" requests on resume

    # behaviour -----------------------------------------------------------------------------

    @staticmethod
    def _models_for(svc: ServiceConfig) -> dict[str, _VersionModel]:
        return {
            name: _VersionModel.of(v.error_rate, v.latency_ms_p50, v.latency_ms_p99)
            for name, v in svc.versions.items()
        }

    def update_behaviour(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Change a service's rps/fractions and/or one version's error rate and latency.
        All checks pass before anything changes; raises SandboxInputError naming the field."""
        allowed = {"service", "namespace", "version", *SERVICE_BEHAVIOUR_FIELDS, *VERSION_BEHAVIOUR_FIELDS}
        if not isinstance(payload, Mapping):
            raise SandboxInputError("body", payload, "must be a JSON object")
        for key, value in payload.items():
            if key not in allowed:
                raise SandboxInputError(key, value, f"unknown field (allowed: {', '.join(sorted(allowed))})")
        with self._lock:
            index = self._service_index(payload.get("service"), payload.get("namespace"))
            svc = self._services[index]
            version_name = payload.get("version")
            version_updates = {k: payload[k] for k in VERSION_BEHAVIOUR_FIELDS if payload.get(k) is not None}
            service_updates = {k: payload[k] for k in SERVICE_BEHAVIOUR_FIELDS if payload.get(k) is not None}
            if version_updates and version_name is None:
                raise SandboxInputError("version", None, f"required to change {', '.join(version_updates)}")
            if version_name is not None and version_name not in svc.versions:
                raise SandboxInputError(
                    "version",
                    version_name,
                    f"no such version of {svc.name} (known: {', '.join(svc.versions)})",
                )
            new_version: dict[str, float] | None = None
            if version_name is not None and version_updates:
                current = svc.versions[version_name].behaviour()
                try:
                    new_version = check_version_behaviour("", {**current, **version_updates})
                except SandboxInputError as exc:
                    if exc.field == "latency_ms_p99" and "latency_ms_p99" not in version_updates:
                        # Only p50 was given: the value the caller chose is the one to name.
                        p50 = version_updates["latency_ms_p50"]
                        raise SandboxInputError(
                            "latency_ms_p50",
                            p50,
                            f"must be at most latency_ms_p99 ({current['latency_ms_p99']:g})",
                        ) from exc
                    raise
            new_service = check_service_behaviour("", {**svc.behaviour(), **service_updates})
            # Everything checked: apply.
            for key, value in new_service.items():
                setattr(svc, key, value)
            if new_version is not None and version_name is not None:
                for key, value in new_version.items():
                    setattr(svc.versions[version_name], key, value)
                self._models[index] = self._models_for(svc)
            return {"service": svc.name, "namespace": svc.namespace, **svc.behaviour()}

    def reset_behaviour(self) -> None:
        with self._lock:
            self._services = copy.deepcopy(self.world.services)
            self._models = [self._models_for(s) for s in self._services]

    def _service_index(self, name: Any, namespace: Any) -> int:
        svc = self.world.find_service(name, namespace)
        return self.world.services.index(svc)

    # routing tables ------------------------------------------------------------------------

    def _refresh_routing(self) -> None:
        changes, revision = self.store.changes, self.store.revision
        if changes == self._compiled_changes:
            return
        mesh = MeshSnapshot.from_store(self.store)
        tables = []
        for svc in self._services:
            per_class = []
            for ua, ck in HEADER_CLASSES:
                request = Request(svc.name, svc.namespace, header_class_headers(ua, ck), port=svc.port)
                per_class.append(_cumulative(routing_distribution(request, mesh)))
            tables.append(per_class)
        self._tables = tables
        self._compiled_revision = revision
        self._compiled_changes = changes

    def routing_table(self, service_index: int = 0) -> dict[str, list[tuple[float, Outcome]]]:
        """Current distribution per header class, for status output and tests."""
        with self._lock:
            self._refresh_routing()
            out = {}
            for (ua, ck), (cum, outcomes) in zip(HEADER_CLASSES, self._tables[service_index], strict=True):
                probs = [c - (cum[i - 1] if i else 0.0) for i, c in enumerate(cum)]
                out[f"ua_canary={ua},cookie_canary={ck}"] = list(zip(probs, outcomes, strict=True))
            return out

    # the hot loop --------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> int:
        """Emit the requests due since the last tick; returns how many."""
        cpu_start = time.thread_time()
        now = self._clock() if now is None else now
        with self._lock:
            if self._last_tick is None:
                self._last_tick = now
                self._refresh_routing()
                return 0
            # Bounded catch-up: a stalled process does not emit minutes of traffic at once.
            dt = min(max(now - self._last_tick, 0.0), 2.0)
            self._last_tick = now
            self._refresh_routing()
            emitted = 0
            for index, svc in enumerate(self._services):
                if self._traffic_zero:
                    continue
                due = svc.rps * dt + self._carry[index]
                n = int(due + 1e-9)  # float dust: 50 rps * 0.1 s must be 5 requests, not 4
                self._carry[index] = due - n
                if n:
                    self._emit(index, svc, n)
                    emitted += n
            self.ticks += 1
        self._account_cpu(time.thread_time() - cpu_start)
        return emitted

    def _emit(self, index: int, svc: ServiceConfig, n: int) -> None:
        rand = self._rng.random
        gauss = self._rng.gauss
        tables = self._tables[index]
        models = self._models[index]
        hf, cf = svc.header_fraction, svc.cookie_fraction
        istio, sandbox = self._istio, self._sandbox
        for _ in range(n):
            ua = rand() < hf
            ck = rand() < cf
            cls = 2 * ua + ck
            cum, outcomes = tables[cls]
            outcome = outcomes[0] if len(outcomes) == 1 else _sample(cum, outcomes, rand())
            if outcome.status is None:
                model = models.get(outcome.version or "", _UNKNOWN_VERSION_MODEL)
                if model.error_rate and rand() < model.error_rate:
                    code = 500 if rand() < 0.5 else 503
                else:
                    code = 200
                latency = math.exp(model.mu + model.sigma * gauss())
            else:
                code = outcome.status
                latency = LOCAL_REPLY_MS
            latency += outcome.delay_ms
            skey = (index, outcome.version or "unknown", cls, code)
            sandbox[skey] = sandbox.get(skey, 0) + 1
            ikey = (index, outcome, code)
            series = istio.get(ikey)
            if series is None:
                series = istio[ikey] = self._new_series(svc, outcome, code)
            series.buckets[bisect.bisect_left(ISTIO_BUCKETS_MS, latency)] += 1
            series.total_ms += latency
            series.count += 1

    def _new_series(self, svc: ServiceConfig, outcome: Outcome, code: int) -> _Series:
        # Istio's destination proxy reports requests it served; requests answered by the
        # caller's proxy (no route, no endpoint, fault abort) or served by a pod without a
        # sidecar are only known to the source proxy, which cannot name the workload.
        at_destination = outcome.reaches_pod and outcome.sidecar
        version = outcome.version if at_destination else "unknown"
        revision = outcome.revision if at_destination else "unknown"
        workload = outcome.workload if at_destination else "unknown"
        workload_ns = svc.namespace if at_destination else "unknown"
        labels = {
            "reporter": "destination" if at_destination else "source",
            "source_workload": SOURCE_WORKLOAD,
            "destination_service": svc.fqdn,
            "destination_service_name": svc.name,
            "destination_service_namespace": svc.namespace,
            "destination_workload": workload or "unknown",
            "destination_workload_namespace": workload_ns,
            "destination_app": svc.name if at_destination else "unknown",
            "destination_version": version or "unknown",
            "destination_canonical_revision": revision or "unknown",
            "request_protocol": "http",
            "response_code": str(code),
            "response_flags": outcome.flags,
        }
        text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
        return _Series(labels=text, buckets=[0] * (len(ISTIO_BUCKETS_MS) + 1))

    def run_forever(self, stop: threading.Event) -> None:
        """Tick every `tick_ms` until `stop` is set; keeps the schedule, skips missed ticks."""
        interval = self.world.tick_ms / 1000.0
        next_at = time.monotonic()
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # a bad object in the store must not stop all traffic
                log.exception("traffic tick failed")
            next_at += interval
            delay = next_at - time.monotonic()
            if delay < 0:
                next_at = time.monotonic()
                delay = 0
            stop.wait(delay)

    # CPU accounting ------------------------------------------------------------------------

    def _account_cpu(self, seconds: float) -> None:
        with self._lock:
            self._cpu_seconds += seconds
            now = time.monotonic()
            process = sum(os.times()[:2])
            if not self._cpu_samples or now - self._cpu_samples[-1][0] >= 0.5:
                self._cpu_samples.append((now, self._cpu_seconds, process))

    def cpu_report(self) -> dict[str, float]:
        """Generator CPU as % of one core: recent (last ~10 s) and since start; plus the whole
        supervisor process (API server and HTTP threads included)."""
        with self._lock:
            now = time.monotonic()
            process_now = sum(os.times()[:2])
            recent = [s for s in self._cpu_samples if now - s[0] <= 10.0]
            window_start = recent[0] if recent else (self._started_mono, 0.0, 0.0)
            span = max(now - window_start[0], 1e-6)
            uptime = max(now - self._started_mono, 1e-6)
            return {
                "generator_percent_recent": round(100 * (self._cpu_seconds - window_start[1]) / span, 2),
                "generator_percent_average": round(100 * self._cpu_seconds / uptime, 2),
                "generator_cpu_seconds": round(self._cpu_seconds, 3),
                "process_percent_recent": round(100 * (process_now - window_start[2]) / span, 2)
                if recent
                else round(100 * process_now / uptime, 2),
            }

    # exposition ----------------------------------------------------------------------------

    def render_metrics(self) -> str:
        """Prometheus text exposition (format 0.0.4) of everything emitted so far."""
        cpu_start = time.thread_time()
        lines: list[str] = [
            "# HELP istio_requests_total Requests by source/destination workload and response.",
            "# TYPE istio_requests_total counter",
        ]
        with self._lock:
            istio = [(s.labels, list(s.buckets), s.total_ms, s.count) for s in self._istio.values()]
            sandbox = list(self._sandbox.items())
            services = [(s.name, s.namespace) for s in self._services]
        for labels, _, _, count in istio:
            lines.append(f"istio_requests_total{{{labels}}} {count}")
        lines.append("# HELP istio_request_duration_milliseconds Request duration in milliseconds.")
        lines.append("# TYPE istio_request_duration_milliseconds histogram")
        for labels, buckets, total_ms, count in istio:
            running = 0
            for le, n in zip(_LE_LABELS, buckets, strict=True):
                running += n
                lines.append(f"istio_request_duration_milliseconds_bucket{{{labels}{le}}} {running}")
            lines.append(f"istio_request_duration_milliseconds_sum{{{labels}}} {total_ms!r}")
            lines.append(f"istio_request_duration_milliseconds_count{{{labels}}} {count}")
        lines.append(
            "# HELP sandbox_requests_total Simulated requests by header class and outcome (sandbox only)."
        )
        lines.append("# TYPE sandbox_requests_total counter")
        for (index, version, cls, code), n in sorted(sandbox):
            name, ns = services[index]
            ua, ck = HEADER_CLASSES[cls]
            lines.append(
                f'sandbox_requests_total{{service="{name}",namespace="{ns}",version="{_escape(version)}",'
                f'user_agent_canary="{str(ua).lower()}",cookie_canary="{str(ck).lower()}",'
                f'response_code="{code}"}} {n}'
            )
        lines.append("")
        self._account_cpu(time.thread_time() - cpu_start)
        return "\n".join(lines)

    def counts(self) -> list[dict[str, Any]]:
        """Exact request counts since start, one row per (service, version, header class, code)."""
        with self._lock:
            rows = sorted(self._sandbox.items())
            services = [(s.name, s.namespace) for s in self._services]
        out = []
        for (index, version, cls, code), n in rows:
            ua, ck = HEADER_CLASSES[cls]
            out.append(
                {
                    "service": services[index][0],
                    "namespace": services[index][1],
                    "version": version,
                    "user_agent_canary": ua,
                    "cookie_canary": ck,
                    "response_code": code,
                    "count": n,
                }
            )
        return out

    def state(self) -> dict[str, Any]:
        counts = self.counts()
        with self._lock:
            services = []
            for svc in self._services:
                by_version: dict[str, dict[str, int]] = {}
                for row in counts:
                    if row["service"] == svc.name and row["namespace"] == svc.namespace:
                        totals = by_version.setdefault(row["version"], {"requests": 0, "errors": 0})
                        totals["requests"] += row["count"]
                        totals["errors"] += row["count"] if row["response_code"] >= 500 else 0
                services.append(
                    {
                        "name": svc.name,
                        "namespace": svc.namespace,
                        **svc.behaviour(),
                        "totals": {
                            "requests": sum(t["requests"] for t in by_version.values()),
                            "by_version": by_version,
                        },
                    }
                )
            revision = self._compiled_revision
            ticks = self.ticks
            traffic_zero = self._traffic_zero
        return {
            "started_at": self.started_at.isoformat(),
            "uptime_s": round(time.monotonic() - self._started_mono, 3),
            "tick_ms": self.world.tick_ms,
            "ticks": ticks,
            "routing_revision": revision,
            "traffic_zero": traffic_zero,
            "cpu": self.cpu_report(),
            "services": services,
            "counts": counts,
        }


# --- HTTP: /metrics and the control API -----------------------------------------------------


# (method, JSON body) -> (HTTP status, JSON answer): the supervisor's fault control.
FaultHandler = Callable[[str, Any], tuple[int, Any]]


class GeneratorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], generator: TrafficGenerator) -> None:
        super().__init__(address, _GeneratorHandler)
        self.generator = generator
        # Set by the supervisor, which owns what faults act on (Prometheus, the store, the API).
        self.fault_control: FaultHandler | None = None
        # What /control/reset re-seeds: the store, or (on a real kube-apiserver) that server.
        self.reseed: Callable[[], int] = lambda: reseed_world(generator.store, generator.world)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class _GeneratorHandler(BaseHTTPRequestHandler):
    server: GeneratorServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # scrapes every second: keep logs quiet
        log.debug("generator http: " + format, *args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        gen = self.server.generator
        if path == "/metrics":
            self._send(200, gen.render_metrics().encode(), "text/plain; version=0.0.4; charset=utf-8")
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain")
        elif path == "/control/state":
            self._json(200, gen.state())
        elif path == "/control/faults":
            self._faults("GET", None)
        else:
            self._json(404, {"error": f"no such path {path}"})

    def _faults(self, method: str, payload: Any) -> None:
        control = self.server.fault_control
        if control is None:
            self._json(404, {"error": "no fault control in this server (run it under the supervisor)"})
            return
        status, answer = control(method, payload)
        self._json(status, answer)

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        gen = self.server.generator
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            payload = json.loads(raw) if raw else {}
        except json.JSONDecodeError as exc:
            self._json(400, {"error": f"body is not JSON: {exc}", "field": "body", "value": None})
            return
        if path == "/control/behaviour":
            try:
                result = gen.update_behaviour(payload)
            except SandboxInputError as exc:
                self._json(
                    400, {"error": str(exc), "field": exc.field, "value": exc.value, "problem": exc.problem}
                )
                return
            log.info("behaviour changed: %s", json.dumps(payload, sort_keys=True))
            self._json(200, result)
        elif path == "/control/reset":
            written = self.server.reseed()
            gen.reset_behaviour()
            log.info("world reset: %d objects re-seeded, behaviour back to config", written)
            self._json(200, {"reseeded": written})
        elif path == "/control/faults":
            self._faults("POST", payload)
        else:
            self._json(404, {"error": f"no such path {path}"})


def make_generator_server(
    generator: TrafficGenerator, host: str = "127.0.0.1", port: int = 0
) -> GeneratorServer:
    """The generator's HTTP server (call `serve_forever()` in a thread)."""
    return GeneratorServer((host, port), generator)
