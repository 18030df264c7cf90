"""What a release checks before its first write: each configuration is handled, or refused.

A user's objects are their data. Every check here looks at what the cluster has now and
either lets the release go on (it knows how to move traffic without touching anything it
does not own) or returns a `Refusal` naming the object, the field and the fix. The preflight
operator gathers the objects (the release's VirtualService and DestinationRule, the other
VirtualServices and DestinationRules of the namespace, DestinationRules of the host in other
namespaces, the Service, the pods) and raises `ReleaseRefusedError` with every refusal before
it takes the lock, so a refused release writes nothing.

Choices (README "What a release touches, what it refuses"):
- A destination of the host without a subset is refused, not pinned: the Service balances
  it over every Ready pod, so the canary's pods already take a share the release can neither
  measure as "0%" nor give back on rollback while they run.
- Another VirtualService routing to the service (an ingress-gateway one, say) is refused
  unless the release moves it too (`virtual_services`): moving only the release's
  VirtualService would leave that traffic on the old version after "promotion". Two mesh
  VirtualServices for one host are refused either way: they conflict in Istio (its
  analyzer's IST0109), so neither's routing is sure to be in force.
- The live traffic of the owned route must be on the stable subset and not yet on the
  canary's, so params naming the wrong stable version (or a stale run) cannot send 90% of
  the traffic to an old version.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from istio_canary.core import sticky
from istio_canary.core.destination_rule import SubsetConflictError, ensure_subsets
from istio_canary.core.hosts import covers_fqdn, is_unexpanded_spelling
from istio_canary.core.mirror import MirrorConfig, mirror_problems
from istio_canary.core.objects import qualified_name, spec_of
from istio_canary.core.request import ReleaseRequest
from istio_canary.core.routing import (
    RoutingError,
    destination_of,
    find_owned_route,
    route_entries,
    unpinned_problem_and_fix,
    weight_of,
)

ROUTE_SECTIONS = ("http", "tcp", "tls")


@dataclass(frozen=True)
class Refusal:
    """One reason the release cannot go on: where (object, field), what, and what to change."""

    object: str  # "VirtualService bookinfo/reviews"
    field: str  # "spec.http[0].name"
    problem: str
    fix: str

    def describe(self) -> str:
        return f"{self.object} {self.field}: {self.problem}. Fix: {self.fix}"


class ReleaseRefusedError(RoutingError):
    """The release cannot be done safely with the cluster as it is; nothing was written."""

    def __init__(self, refusals: Sequence[Refusal]) -> None:
        self.refusals = list(refusals)
        lines = "\n".join(f"- {r.describe()}" for r in self.refusals)
        super().__init__(f"release refused before any write ({len(self.refusals)} problem(s)):\n{lines}")


def object_name(kind: str, obj: dict[str, Any]) -> str:
    """`VirtualService bookinfo/reviews`: how a refusal names an object."""
    return f"{kind} {qualified_name(obj)}"


def _routes(vs: dict[str, Any], section: str) -> list[Any]:
    routes = spec_of(vs).get(section)
    return routes if isinstance(routes, list) else []


def host_destinations(vs: dict[str, Any], request: ReleaseRequest) -> list[tuple[str, dict[str, Any]]]:
    """(field path, destination) of every route entry in `vs` that sends to the release's host."""
    found = []
    for section in ROUTE_SECTIONS:
        for i, route in enumerate(_routes(vs, section)):
            for j, entry in enumerate(route_entries(route)):
                dest = destination_of(entry)
                if request.refers_to_host(dest.get("host")):
                    found.append((f"spec.{section}[{i}].route[{j}].destination", dest))
    return found


def _subset_versions(dr: dict[str, Any] | None, request: ReleaseRequest) -> dict[str, str]:
    """{subset name: version} from the DestinationRule's subsets (by the release's label key)."""
    versions = {}
    for subset in (spec_of(dr).get("subsets") or []) if dr else []:
        if isinstance(subset, dict) and isinstance(subset.get("labels"), dict):
            version = subset["labels"].get(request.version_label)
            if isinstance(subset.get("name"), str) and isinstance(version, str):
                versions[subset["name"]] = version
    return versions


# --------------------------------------------------------------------------- the release's VirtualService


def virtual_service_refusals(
    vs: dict[str, Any], dr: dict[str, Any] | None, request: ReleaseRequest, mirror: MirrorConfig | None = None
) -> list[Refusal]:
    """The release's VirtualService as it is before the lock: owned route found, traffic on the
    stable subset, no destination of the host without a subset, the match-route name free, and
    the owned route fit for the release's mirror phase (`core.mirror`)."""
    name = object_name("VirtualService", vs)
    refusals: list[Refusal] = []
    for i, route in enumerate(_routes(vs, "http")):
        if isinstance(route, dict) and route.get("name") == request.canary_route_name:
            refusals.append(Refusal(
                name, f"spec.http[{i}].name",
                f"an HTTP route is already named {request.canary_route_name!r}, the name the release gives "
                "the canary match route it inserts and later removes (it would delete this route)",
                "set canary_route_name to a name no route of this VirtualService uses, or rename this route",
            ))
    for path, dest in host_destinations(vs, request):
        if not dest.get("subset"):
            problem, fix = unpinned_problem_and_fix(request)
            refusals.append(Refusal(name, path, problem, fix))
    try:
        owned = find_owned_route(vs, request)
    except RoutingError as exc:
        fix = host_spelling_fix(request) or "set route_name to the route the release owns"
        refusals.append(Refusal(name, "spec.http", str(exc), fix))
        return refusals
    refusals.extend(Refusal(name, *found) for found in sticky.refusals(vs, owned, request))
    refusals.extend(_live_traffic_refusals(vs, owned, dr, request))
    refusals.extend(Refusal(name, f"spec.http[{owned}].{field}", problem, fix) for field, problem, fix
                    in mirror_problems(_routes(vs, "http")[owned], request, mirror or MirrorConfig()))
    return refusals


def host_spelling_fix(request: ReleaseRequest) -> str | None:
    """The fix when `host` looks like a spelling of the service that Istio does not expand."""
    if is_unexpanded_spelling(request.host, request.service, request.fqdn):
        return (f"set host to {request.service!r} or to its FQDN {request.fqdn!r}: Istio expands only dot-free "
                f"short names, so {request.host!r} is another host")
    return None


def _live_traffic_refusals(
    vs: dict[str, Any], owned: int, dr: dict[str, Any] | None, request: ReleaseRequest
) -> list[Refusal]:
    name = object_name("VirtualService", vs)
    field = f"spec.http[{owned}].route"
    entries = [e for e in route_entries(_routes(vs, "http")[owned]) if isinstance(e, dict)]
    lone = len(entries) == 1
    stable_entries = [e for e in entries if request.refers_to_host(destination_of(e).get("host"))
                      and destination_of(e).get("subset") == request.stable_subset]
    if len(stable_entries) > 1:
        return [Refusal(name, field, f"{len(stable_entries)} destinations use subset {request.stable_subset!r}",
                        "merge them into one destination before the release")]
    def weight(entry: dict[str, Any]) -> int:
        return 100 if lone else weight_of(entry)  # a lone destination takes all traffic

    total = sum(weight(e) for e in entries)
    shares: dict[str, int] = {}
    for entry in entries:
        dest = destination_of(entry)
        if request.refers_to_host(dest.get("host")) and dest.get("subset"):
            shares[dest["subset"]] = shares.get(dest["subset"], 0) + weight(entry)
    versions = _subset_versions(dr, request)

    def percent(weight: int) -> str:
        return f"{round(100 * weight / total)}%" if total else "0%"

    def where(subsets: Iterable[str]) -> str:
        return ", ".join(f"subset {s!r} ({request.version_label}={versions.get(s, '?')}) {percent(shares[s])}"
                         for s in subsets)

    refusals = []
    if shares.get(request.canary_subset, 0) > 0:
        refusals.append(Refusal(
            name, field,
            f"the canary subset {request.canary_subset!r} already gets {percent(shares[request.canary_subset])} "
            "of the owned route's traffic (an unfinished release, or a hand edit)",
            "finish or undo that first (route 100% to the stable subset), then release",
        ))
    if shares.get(request.stable_subset, 0) <= 0:
        serving = [s for s, w in shares.items() if w > 0]
        now = where(serving) if serving else "no subset of the host"
        refusals.append(Refusal(
            name, field,
            f"live traffic of the owned route goes to {now}, not to the stable version "
            f"{request.stable_version!r} (subset {request.stable_subset!r}); releasing would move the "
            "traffic from a version that does not serve it",
            "set stable_version (and stable_subset) to the version serving the traffic now",
        ))
    return refusals


def destination_rule_refusals(dr: dict[str, Any], request: ReleaseRequest) -> list[Refusal]:
    """The subsets the release needs can be added (a same-named subset is the same version)."""
    try:
        ensure_subsets(dr, request)
    except SubsetConflictError as exc:
        field = str(exc).split(":")[0].split(" ")[-1]
        return [Refusal(object_name("DestinationRule", dr), field, str(exc).split(": ", 1)[-1],
                        "fix that subset's labels, or set stable_subset/canary_subset to another name")]
    except RoutingError as exc:
        return [Refusal(object_name("DestinationRule", dr), "spec.host", str(exc),
                        host_spelling_fix(request) or "set destination_rule to the rule of the release's host")]
    defined = {sub.get("name") for sub in spec_of(dr).get("subsets") or [] if isinstance(sub, dict)}
    if request.stable_subset not in defined:
        return [Refusal(
            object_name("DestinationRule", dr), "spec.subsets",
            f"defines no subset {request.stable_subset!r}, which the owned route sends its traffic to: Envoy "
            "answers those requests 503 today, and a rollback could not give back working routing",
            f"add subset {request.stable_subset!r} (labels {request.version_label}: {request.stable_version}) "
            "to the DestinationRule, then release",
        )]
    return []


# --------------------------------------------------------------------------- other objects of the host


def _applies_to_mesh(vs: dict[str, Any]) -> bool:
    gateways = spec_of(vs).get("gateways")
    return not gateways or "mesh" in gateways


def _covers_service(host: Any, namespace: str, request: ReleaseRequest) -> bool:
    return isinstance(host, str) and covers_fqdn(host, namespace, request.fqdn, request.mesh_domain)


def other_virtual_service_refusals(
    release_vs: dict[str, Any], others: Iterable[dict[str, Any]], request: ReleaseRequest
) -> list[Refusal]:
    """Other VirtualServices of the namespace that route to the service or claim its host."""
    refusals = []
    release_name = (release_vs.get("metadata") or {}).get("name")
    others = [vs for vs in others if (vs.get("metadata") or {}).get("name") != release_name]
    roots = [vs for vs in others if _delegates_to(vs, release_name, request.namespace)]
    if not spec_of(release_vs).get("hosts") and not roots:
        refusals.append(Refusal(
            object_name("VirtualService", release_vs), "spec.hosts",
            "it has no hosts (a delegate) and no VirtualService of the namespace delegates to it, so its routes "
            "are not in force: moving them would move no traffic",
            "set virtual_service to the VirtualService that routes the service's traffic",
        ))
    for vs in others:
        meta = vs.get("metadata") or {}
        name = object_name("VirtualService", vs)
        routed = host_destinations(vs, request)
        if routed and meta.get("name") not in request.virtual_services:
            path, dest = routed[0]
            subset = f" subset {dest['subset']!r}" if dest.get("subset") else ""
            gateways = spec_of(vs).get("gateways")
            via = f" (gateways {gateways})" if gateways else ""
            refusals.append(Refusal(
                name, path,
                f"it also routes to {dest.get('host')!r}{subset}{via}: a release that moves only "
                f"{object_name('VirtualService', release_vs)} would leave this traffic on the old version "
                "after promotion",
                f"move it with the release: add {meta.get('name')!r} to virtual_services (its catch-all route "
                f"of the host, or the one named route_name, moves with {request.namespace}/{release_name})",
            ))
            continue
        if vs in roots:
            continue  # it hands the host's traffic to the release's VirtualService
        if _applies_to_mesh(vs) and _applies_to_mesh(release_vs):
            for i, host in enumerate(spec_of(vs).get("hosts") or []):
                if _covers_service(host, str(meta.get("namespace") or request.namespace), request):
                    refusals.append(Refusal(
                        name, f"spec.hosts[{i}]",
                        f"a second mesh VirtualService for host {host!r}: Istio merges or drops one of two "
                        "(istioctl analyze: IST0109), so routing the release writes may not be the routing "
                        "in force",
                        f"merge its routes into {request.namespace}/{release_name}, or delete it",
                    ))
                    break
    return refusals


def _delegates_to(vs: dict[str, Any], name: str, namespace: str) -> bool:
    own = (vs.get("metadata") or {}).get("namespace") or namespace
    for route in _routes(vs, "http"):
        delegate = route.get("delegate") if isinstance(route, dict) else None
        if isinstance(delegate, dict) and delegate.get("name") == name \
                and (delegate.get("namespace") or own) == namespace:
            return True
    return False


def _export_namespaces(obj: dict[str, Any], own: str) -> set[str] | None:
    """Namespaces an object is visible to; None for all ("*" or no exportTo)."""
    export = spec_of(obj).get("exportTo")
    if not export or "*" in export:
        return None
    return {own if e == "." else e for e in export if e != "~"}


def other_destination_rule_refusals(
    release_vs: dict[str, Any], release_dr: dict[str, Any], rules: Iterable[dict[str, Any]],
    request: ReleaseRequest,
) -> list[Refusal]:
    """DestinationRules that would hide the canary subset from some clients.

    `rules` are the host's DestinationRules anywhere the pipeline may list (the release's own
    included). Istio gives a client the rule from its own namespace first, then the service's.
    """
    refusals = []
    dr_name = object_name("DestinationRule", release_dr)
    vs_export = _export_namespaces(release_vs, request.namespace)
    dr_export = _export_namespaces(release_dr, request.namespace)
    if dr_export is not None and (vs_export is None or not vs_export <= dr_export):
        seen_by = "all namespaces" if vs_export is None else ", ".join(sorted(vs_export - dr_export))
        refusals.append(Refusal(
            dr_name, "spec.exportTo",
            f"exported to {sorted(dr_export)} only, while VirtualService {request.namespace}/"
            f"{request.virtual_service} is seen by {seen_by}: those clients route to subset "
            f"{request.canary_subset!r} without the rule that defines it (503)",
            "export the DestinationRule to every namespace the VirtualService is exported to "
            "(exportTo: [\"*\"])",
        ))
    release_key = ((release_dr.get("metadata") or {}).get("namespace"), (release_dr.get("metadata") or {}).get("name"))
    for rule in rules:
        meta = rule.get("metadata") or {}
        namespace = str(meta.get("namespace") or "")
        if (namespace, meta.get("name")) == release_key:
            continue
        if not _covers_service(spec_of(rule).get("host"), namespace, request):
            continue
        if spec_of(rule).get("workloadSelector"):
            continue  # applies to the selected sidecars' own traffic policy, not to routing
        name = object_name("DestinationRule", rule)
        if namespace == request.namespace:
            refusals.append(Refusal(
                name, "spec.host",
                f"a second DestinationRule for host {request.fqdn!r} beside {dr_name}: Istio uses one of "
                "them, so the subsets the release adds may not be the ones in force",
                f"merge it into {dr_name}, or delete it",
            ))
            continue
        subsets = {s.get("name"): s.get("labels") for s in spec_of(rule).get("subsets") or [] if isinstance(s, dict)}
        if subsets.get(request.canary_subset) != request.canary_labels:
            refusals.append(Refusal(
                name, "spec.subsets",
                f"clients in namespace {namespace} use this rule for {request.fqdn!r} (Istio takes the "
                f"client's namespace first) and it has no subset {request.canary_subset!r} with labels "
                f"{request.canary_labels}: their canary share would get 503",
                f"add subset {request.canary_subset!r} (labels {request.canary_labels}) to it, or delete it",
            ))
    return refusals


# --------------------------------------------------------------------------- Service and pods


def service_selector(service: dict[str, Any]) -> dict[str, str]:
    selector = spec_of(service).get("selector")
    return dict(selector) if isinstance(selector, dict) else {}


def service_refusals(service: dict[str, Any], request: ReleaseRequest) -> list[Refusal]:
    selector = service_selector(service)
    name = object_name("Service", service)
    if not selector:
        return [Refusal(name, "spec.selector", "the Service selects no pods (endpoints kept by hand), so "
                        "subsets cannot tell its versions apart", "give the Service a pod selector")]
    if request.version_label in selector:
        return [Refusal(name, f"spec.selector.{request.version_label}",
                        f"the Service selects only {request.version_label}={selector[request.version_label]}, "
                        "so the other version has no endpoints",
                        f"remove {request.version_label} from the Service's selector")]
    return []


def pod_selector(service: dict[str, Any], version_label: str, version: str) -> dict[str, str]:
    """The pods of one version that are the Service's endpoints."""
    return {**service_selector(service), version_label: version}


def unselected_pods_refusal(
    service: dict[str, Any], version: str, labelled: list[dict[str, Any]], request: ReleaseRequest
) -> Refusal:
    """Pods carry the version label but not the Service's selector: no endpoints, 503 for their share."""
    selector = service_selector(service)
    names = ", ".join(sorted(str((p.get("metadata") or {}).get("name")) for p in labelled)[:5])
    found = f"pods with {request.version_label}={version} ({names}) lack it" if labelled else (
        f"no pod has {request.version_label}={version}")
    return Refusal(
        object_name("Service", service), "spec.selector",
        f"selects no pods of version {version!r} (selector {selector}; {found}): that version would get no "
        "endpoints and its share of traffic 503",
        f"label the {version} pods with the Service's selector {selector}",
    )
