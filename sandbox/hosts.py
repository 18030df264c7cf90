"""Host names in the simulated mesh: how a rule's or a request's host names a Service.

The sandbox stands in for the cluster, so it keeps its own reading of Istio's host rules
rather than importing the release code's (which it is there to check).
"""

from __future__ import annotations

from typing import Any

# The simulated cluster's DNS domain: Istio expands a short host `reviews` in namespace
# `bookinfo` to `reviews.bookinfo.svc.<MESH_DOMAIN>`.
MESH_DOMAIN = "cluster.local"

# A Service, as (name, namespace).
ServiceTarget = tuple[str, str]


def service_fqdn(name: str, namespace: str) -> str:
    """The fully qualified host of Service `name` in `namespace`."""
    return f"{name}.{namespace}.svc.{MESH_DOMAIN}"


def fqdn(host: str, namespace: str) -> str:
    """The host a rule names, as Istio reads it: only a dot-free short name is expanded,
    relative to the rule's namespace; `reviews.bookinfo` and `*` are taken as written."""
    if "." in host or host == "*":
        return host
    return service_fqdn(host, namespace)


def service_of_fqdn(host: str) -> ServiceTarget | None:
    """(name, namespace) of a fully qualified Service host; None for any other host."""
    suffix = f".svc.{MESH_DOMAIN}"
    parts = host.removesuffix(suffix).split(".") if host.endswith(suffix) else []
    return (parts[0], parts[1]) if len(parts) == 2 else None


def resolve_host(host: Any, namespace: str) -> ServiceTarget | None:
    """(service name, namespace) a rule's host names (VirtualService hosts, destination and
    DestinationRule hosts); None if it is no Service of the mesh.

    As Istio reads it: only a dot-free short name is expanded, relative to the rule's
    namespace (`reviews` -> `reviews.<namespace>.svc.cluster.local`); a name with a dot is
    taken as written, so `reviews.bookinfo` names no Service.
    """
    if not isinstance(host, str) or not host or "*" in host:
        return None
    return service_of_fqdn(fqdn(host, namespace))


def request_target(host: Any, namespace: str) -> ServiceTarget | None:
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
    return service_of_fqdn(host)


def host_covers(rule_host: Any, rule_namespace: str, target: ServiceTarget) -> bool:
    """Whether a VirtualService host (exact, or a `*` / `*.suffix` wildcard) covers `target`."""
    if isinstance(rule_host, str) and rule_host.startswith("*"):
        return rule_host == "*" or service_fqdn(*target).endswith(rule_host[1:])
    return resolve_host(rule_host, rule_namespace) == target
