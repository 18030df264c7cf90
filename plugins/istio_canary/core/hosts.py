"""Host names as Istio resolves them: the one place for the rules every other module uses.

- A dot-free short name is relative to the object's namespace: `reviews` in a rule of
  namespace `bookinfo` is `reviews.bookinfo.svc.<mesh_domain>` (Istio's
  `ResolveShortnameToFQDN`).
- A name with a dot is taken as written, so `reviews.bookinfo` and `reviews.bookinfo.svc`
  are other hosts than the service `reviews.bookinfo.svc.cluster.local`.
- `*` and IP addresses stay as written; a wildcard (`*.bookinfo.svc.cluster.local`) covers
  every host ending in what follows the `*` (Istio's `host.Name.Matches`).
"""

from __future__ import annotations

import ipaddress

DEFAULT_MESH_DOMAIN = "cluster.local"


def is_ip(host: str) -> bool:
    """True for an IPv4 or IPv6 address."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def service_fqdn(service: str, namespace: str, mesh_domain: str = DEFAULT_MESH_DOMAIN) -> str:
    """The fully qualified name of a Kubernetes Service."""
    return f"{service}.{namespace}.svc.{mesh_domain}"


def canonical_host(host: str, namespace: str | None, mesh_domain: str = DEFAULT_MESH_DOMAIN) -> str:
    """The host as Istio resolves it: only a dot-free short name gains `.<ns>.svc.<domain>`."""
    if host == "*" or "." in host or is_ip(host) or namespace is None:
        return host
    return service_fqdn(host, namespace, mesh_domain)


def same_host(
    a: str, a_namespace: str | None, b: str, b_namespace: str | None, mesh_domain: str = DEFAULT_MESH_DOMAIN
) -> bool:
    """True when two hosts, each written in its object's namespace, resolve to the same name."""
    return canonical_host(a, a_namespace, mesh_domain) == canonical_host(b, b_namespace, mesh_domain)


def hosts_overlap(a: str, b: str) -> bool:
    """Istio's host.Name.Matches: equal, or one wildcard covers the other."""
    if a.startswith("*") and b.startswith("*"):
        shorter, longer = sorted((a[1:], b[1:]), key=len)
        return longer.endswith(shorter)
    if a.startswith("*"):
        return b.endswith(a[1:])
    if b.startswith("*"):
        return a.endswith(b[1:])
    return a == b


def covers_fqdn(host: str, namespace: str, fqdn: str, mesh_domain: str = DEFAULT_MESH_DOMAIN) -> bool:
    """True when `host`, written in `namespace`, names the service `fqdn` or is a wildcard over it."""
    return hosts_overlap(canonical_host(host, namespace, mesh_domain), fqdn)


def host_aliases(host: str, service: str, fqdn: str) -> frozenset[str]:
    """The names a route of the release's namespace may use for `host`.

    When the host is the service, its short name and its FQDN are the same destination; any
    other name (one with a dot is taken as written) is only itself.
    """
    service_names = {service, fqdn}
    if host in service_names:
        return frozenset(service_names)
    return frozenset({host})


def is_unexpanded_spelling(host: str, service: str, fqdn: str) -> bool:
    """True for a partial FQDN of the service (`reviews.bookinfo`): Istio does not expand it,
    so it names another host, though it reads like the service."""
    return host not in (service, fqdn) and host.startswith(f"{service}.") and fqdn.startswith(f"{host}.")
