"""Istio's rules for the VirtualService and DestinationRule a release writes, checked before writing.

Errors carry the field path (`spec.http[1].route[0].destination.subset`). Two classes of rule:

(a) Istio's own: what the API server (Istio's CRD schema) or Istio's validating webhook
    (`ValidateVirtualService`, `ValidateDestinationRule`) rejects. These apply to every route
    of every section (http, tcp, tls), whoever wrote it: the whole object is sent back, so
    anything Istio rejects anywhere fails the write. Each check names the Istio function
    that backs it. What Istio accepts is not refused here: upper-case header names, an
    empty StringMatch (`{}`: "present" under headers), `uri: {prefix: ""}`, upper-case
    subset names, an empty `subset`, a subset without labels, weights not summing to 100,
    a VirtualService without hosts (a delegate) and a catch-all route before other routes.
(b) Ours, which Istio accepts but which would break the release's own traffic. These apply
    only to the http routes the release writes (`written_routes`: its owned route and its
    canary match route), so someone else's route never fails the release's write:
    - a subset a route (or its mirror) uses must exist in the host's DestinationRule, or
      Envoy answers 503 for it (Istio's analyzer reports IST0101 ReferencedResourceNotFound;
      its webhook accepts);
    - a route without `match` must be the last http route, and no route without `match` may
      come before a written route, or routes after it never match (Istio's webhook only
      warns: VirtualServiceUnreachableRule).
    `validate_destination_rule` has class (a) rules only.

Hosts resolve as Istio resolves them (`core.hosts`): only a dot-free name is short for
`<name>.<namespace>.svc.<mesh_domain>`; a name with a dot is taken as written, so
`reviews.bookinfo` is not the service `reviews.bookinfo.svc.cluster.local`. Subsets are only
judged for hosts one of the given DestinationRules names; for others nothing is claimed.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from istio_canary.core.hosts import DEFAULT_MESH_DOMAIN, hosts_overlap, is_ip, same_host
from istio_canary.core.objects import qualified_name
from istio_canary.core.validation import re2_problem

TLS_MODES = ("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL")
_INT32_MAX = 2**31 - 1
_MAX_REGEX_BYTES = 1024  # Istio measures the regex in bytes
_STRING_MATCH_KINDS = ("exact", "prefix", "regex")
# Istio's label and host-label syntax: unlike Kubernetes names, upper case is allowed.
_LABEL = "[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?"
_DNS1123_LABEL = re.compile(_LABEL)
_WILDCARD_LABEL = re.compile(r"(\*|(\*|\*-)?" + _LABEL + ")")
_QUALIFIED_NAME = "(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_KEY = re.compile("(" + _LABEL + r"(?:\." + _LABEL + ")*/)?(" + _QUALIFIED_NAME + ")")
_LABEL_VALUE = re.compile("(" + _QUALIFIED_NAME + ")?")
_NUMERIC = re.compile(r"[+-]?[0-9]+")
_HEADER_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~A-Za-z0-9]+")
_PSEUDO_HEADERS = frozenset({":method", ":scheme", ":authority", ":path", ":status"})
_JWT_CLAIM_HEADER = "@request.auth.claims"
# Traffic policy fields Istio counts when it refuses an empty policy.
_POLICY_FIELDS = (
    "outlierDetection",
    "connectionPool",
    "loadBalancer",
    "tls",
    "portLevelSettings",
    "tunnel",
    "proxyProtocol",
    "retryBudget",
)
_PORT_POLICY_FIELDS = ("outlierDetection", "connectionPool", "loadBalancer", "tls")


class IstioValidationError(ValueError):
    """An object Istio would reject (or route to nowhere). Lists every problem with its path."""

    def __init__(self, kind: str, name: str, problems: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.problems = problems
        super().__init__(f"{kind} {name} is not valid Istio config: " + "; ".join(problems))


def _present(value: Any) -> bool:
    """Set, as Istio sees a field: null is dropped and an empty list is no list."""
    return value is not None and value != []


def _is_label(value: str) -> bool:
    return len(value) <= 63 and bool(_DNS1123_LABEL.fullmatch(value))


def _domain_problem(domain: str) -> str | None:
    """Why Istio's ValidateWildcardDomain refuses `domain` (a wildcard only in the first label)."""
    if len(domain) > 255:
        return f"domain name {domain!r} too long (max 255)"
    if not domain:
        return "empty domain name not allowed"
    first, dot, rest = domain.partition(".")
    if len(first) > 63 or not _WILDCARD_LABEL.fullmatch(first):
        return f"domain name {domain!r} invalid (label {first!r} invalid)"
    if not dot:
        return None
    parts = rest.split(".")
    if _NUMERIC.fullmatch(parts[-1]):
        return f"domain name {domain!r} invalid (top level domain {parts[-1]!r} cannot be all-numeric)"
    for i, label in enumerate(parts):
        if i == len(parts) - 1 and label == "":
            return None  # a trailing dot: `istio.io.`
        if not _is_label(label):
            return f"domain name {domain!r} invalid (label {label!r} invalid)"
    return None


def _is_jwt_claim(name: str) -> bool:
    """Istio's jwt.ToRoutingClaim: `@request.auth.claims.a.b` or `@request.auth.claims[a][b]`."""
    if not name.lower().startswith(_JWT_CLAIM_HEADER):
        return False
    rest = name[len(_JWT_CLAIM_HEADER) :]
    return (rest.startswith(".") and len(rest) > 1) or (
        rest.startswith("[") and rest.endswith("]") and len(rest) > 2
    )


def _header_name_problem(name: str) -> str | None:
    """Istio's ValidateHTTPHeaderNameOrJwtClaimRoute: an RFC 7230 token in any case, one of the
    five HTTP/2 pseudo-headers, or a JWT claim."""
    if not name:
        return "header name cannot be empty"
    if _is_jwt_claim(name) or name in _PSEUDO_HEADERS or _HEADER_TOKEN.fullmatch(name):
        return None
    return f"header name {name} is not a valid header name"


def _regex_problem(value: str) -> str | None:
    """Istio's validateStringRegexp: at most 1024 bytes, RE2 syntax (Envoy's engine)."""
    size = len(value.encode())
    if size > _MAX_REGEX_BYTES:
        return f"is {size} bytes, Istio allows at most {_MAX_REGEX_BYTES}"
    return re2_problem(value)


def _check_string_match(path: str, match: Any, where: str, problems: list[str]) -> None:
    """A StringMatch under `where` (uri, headers, withoutHeaders, scheme, method, authority,
    queryParams): Istio's validateStringMatch / validateStringMatchRegexp, and the CRD's oneOf."""
    if not isinstance(match, Mapping):
        problems.append(f"{path}: must be a StringMatch object (exact, prefix or regex), got {match!r}")
        return
    kinds = [k for k in _STRING_MATCH_KINDS if match.get(k) is not None]
    if len(kinds) > 1:
        problems.append(f"{path}: exactly one of exact/prefix/regex allowed, found {', '.join(kinds)}")
        return
    if not kinds:
        return  # Istio reads an empty StringMatch as "present" (headers) or "any value"
    kind = kinds[0]
    value = match[kind]
    if not isinstance(value, str):
        problems.append(f"{path}.{kind}: must be a string, got {value!r}")
        return
    if kind == "prefix" and not value and where != "uri":
        # Envoy refuses an empty prefix everywhere but in the path matcher.
        problems.append(f"{path}.prefix: prefix string match should not be empty")
    if kind != "regex" or (where == "withoutHeaders" and value == "*"):
        return  # `*` under withoutHeaders means "header absent", not a regex
    if not value:
        problems.append(f"{path}.regex: regex string match should not be empty")
        return
    problem = _regex_problem(value)
    if problem:
        problems.append(f"{path}.regex: regex {value[:80]!r} {problem}")


class _SubsetIndex:
    """Subsets per DestinationRule host, for the cross-object check."""

    def __init__(
        self, destination_rules: Sequence[Mapping[str, Any]], default_namespace: str | None, mesh_domain: str
    ) -> None:
        self._mesh_domain = mesh_domain
        self._rules: list[tuple[str, str | None, set[str], str]] = []
        for dr in destination_rules:
            spec = dr.get("spec") or {}
            host = spec.get("host")
            if not isinstance(host, str):
                continue
            namespace = (dr.get("metadata") or {}).get("namespace") or default_namespace
            names = {s.get("name") for s in spec.get("subsets") or [] if isinstance(s, Mapping)}
            self._rules.append((host, namespace, names, qualified_name(dr)))

    def check(self, path: str, host: str, subset: str, vs_namespace: str | None, problems: list[str]) -> None:
        covering = [r for r in self._rules if same_host(host, vs_namespace, r[0], r[1], self._mesh_domain)]
        if covering and not any(subset in names for _, _, names, _ in covering):
            rules = ", ".join(
                f"{dr} (subsets: {sorted(n for n in names if n) or 'none'})" for _, _, names, dr in covering
            )
            problems.append(
                f"{path}: subset {subset!r} of host {host!r} is not defined in DestinationRule {rules}"
            )


class _VirtualServiceCheck:
    """One validation run: collects problems; `subsets` is None where class (b) does not apply."""

    def __init__(self, vs: Mapping[str, Any], subsets: _SubsetIndex) -> None:
        self.namespace: str | None = (vs.get("metadata") or {}).get("namespace")
        self.subsets = subsets
        self.problems: list[str] = []

    def destination(self, path: str, dest: Any, *, ours: bool) -> None:
        """Istio's validateDestination; with `ours`, also the subset must exist (class b)."""
        if not isinstance(dest, Mapping):
            self.problems.append(f"{path}: Required value (a destination with host, subset, port)")
            return
        host = dest.get("host")
        if not isinstance(host, str) or not host:
            self.problems.append(f"{path}.host: Required value")
            return
        if host == "*":
            self.problems.append(f"{path}.host: invalid destination host *")
        else:
            problem = _domain_problem(host)
            if problem:
                self.problems.append(f"{path}.host: {problem}")
        port = dest.get("port")
        if port is not None:
            number = port.get("number") if isinstance(port, Mapping) else None
            number = 0 if number is None else number  # a port without number is port 0 to Istio
            if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 65535:
                self.problems.append(
                    f"{path}.port.number: port number {number!r} must be in the range 1..65535"
                )
        subset = dest.get("subset")
        if subset is None or subset == "":
            return  # no subset: all endpoints of the host
        if not isinstance(subset, str) or not _is_label(subset):
            self.problems.append(
                f"{path}.subset: subset name is invalid: {subset!r} (a DNS-1123 label: at most 63 "
                "letters, digits or '-', starting and ending with a letter or digit)"
            )
            return
        if ours:
            self.subsets.check(f"{path}.subset", host, subset, self.namespace, self.problems)

    def route_destinations(self, path: str, entries: Any, *, ours: bool) -> None:
        """Istio's validateHTTPRouteDestinations / validateRouteDestinations."""
        if not isinstance(entries, list):
            self.problems.append(f"{path}: must be a list of route destinations")
            return
        weights: list[int] = []
        for j, entry in enumerate(entries):
            entry_path = f"{path}[{j}]"
            if not isinstance(entry, Mapping):
                self.problems.append(f"{entry_path}: must be an object")
                continue
            if entry.get("destination") is None and ("host" in entry or "subset" in entry):
                self.problems.append(
                    f"{entry_path}.destination: Required value (host/subset are nested one level too high: "
                    "write `destination: {host: ..., subset: ...}`)"
                )
                continue
            self.destination(f"{entry_path}.destination", entry.get("destination"), ours=ours)
            weight = entry.get("weight")
            if weight is None:
                weight = 0
            if isinstance(weight, bool) or not isinstance(weight, int):
                self.problems.append(f"{entry_path}.weight: must be an integer, got {weight!r}")
                continue
            if weight < 0 or weight > _INT32_MAX:
                self.problems.append(f"{entry_path}.weight: must be a non-negative int32, got {weight}")
                continue
            weights.append(weight)
        if len(entries) > 1 and len(weights) == len(entries) and sum(weights) == 0:
            self.problems.append(f"{path}: weights of several destinations must not all be zero")

    def http_conflicts(self, path: str, route: Mapping[str, Any], *, in_delegate: bool) -> None:
        """Istio's validateHTTPRouteConflict: what a route forwards to, one way only."""
        has = {
            key: _present(route.get(key))
            for key in (
                "route",
                "redirect",
                "directResponse",
                "delegate",
                "fault",
                "rewrite",
                "mirror",
                "mirrors",
            )
        }
        if has["delegate"] and not in_delegate:
            for key in ("redirect", "route"):
                if has[key]:
                    self.problems.append(f"{path}.{key}: a route with delegate must not specify {key}")
            return
        if in_delegate and has["delegate"]:
            self.problems.append(f"{path}.delegate: a route of a delegate VirtualService cannot delegate")
        if has["redirect"]:
            for key in ("route", "fault", "rewrite", "directResponse"):
                if has[key]:
                    self.problems.append(f"{path}: cannot contain both redirect and {key}")
        elif has["directResponse"]:
            for key in ("route", "fault", "rewrite"):
                if has[key]:
                    self.problems.append(f"{path}: cannot contain both directResponse and {key}")
        elif not has["route"]:
            self.problems.append(f"{path}: one of route, redirect, directResponse or delegate is required")
        if has["mirror"] and has["mirrors"]:
            self.problems.append(f"{path}: cannot contain both mirror and mirrors")

    def http_match(self, path: str, match: Any, *, on_gateway: bool) -> None:
        """Istio's validateHTTPRouteMatchRequest, and JWT claims only on gateways."""
        if not isinstance(match, Mapping):
            if match is not None:
                self.problems.append(f"{path}: must be an HTTPMatchRequest object")
            return
        for field in ("uri", "scheme", "method", "authority"):
            if match.get(field) is not None:
                _check_string_match(f"{path}.{field}", match[field], field, self.problems)
        for field in ("headers", "withoutHeaders", "queryParams"):
            entries = match.get(field)
            if entries is None:
                continue
            if not isinstance(entries, Mapping):
                self.problems.append(f"{path}.{field}: must be a map of name to StringMatch")
                continue
            for raw_key, value in entries.items():
                key = raw_key if isinstance(raw_key, str) else str(raw_key)  # JSON keys are strings
                key_path = f"{path}.{field}.{key}"
                if field != "queryParams":
                    problem = _header_name_problem(key)
                    if problem:
                        self.problems.append(f"{key_path}: {problem}")
                    elif _is_jwt_claim(key) and not on_gateway:
                        self.problems.append(
                            f"{key_path}: JWT claim based routing is only supported for gateway"
                        )
                if value is None:
                    if field == "headers":  # Istio refuses it here; elsewhere it means "present"
                        self.problems.append(f"{key_path}: cannot be null")
                    continue
                _check_string_match(key_path, value, field, self.problems)

    def hosts(self, spec: Mapping[str, Any], *, on_gateway: bool) -> None:
        """Istio's ValidateVirtualService host checks. No hosts is a delegate VirtualService."""
        hosts = spec.get("hosts")
        if hosts is None:
            hosts = []
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            self.problems.append("spec.hosts: must be a list of host names")
            return
        valid = True
        for k, host in enumerate(hosts):
            problem = _domain_problem(host)
            if host.startswith("outbound_") and on_gateway:
                problem = None  # an AUTO_PASSTHROUGH SNI name, which Istio parses on its own terms
            if problem and not is_ip(host):
                self.problems.append(f"spec.hosts[{k}]: {problem}")
                valid = False
            elif host == "*" and not on_gateway:
                self.problems.append(
                    f"spec.hosts[{k}]: wildcard host * is not allowed for virtual services bound to the mesh gateway"
                )
                valid = False
        if valid:
            for k, a in enumerate(hosts):
                for b in hosts[k + 1 :]:
                    if hosts_overlap(a, b):
                        self.problems.append(
                            f"spec.hosts[{k}]: duplicate hosts in virtual service: {a} & {b}"
                        )

    def http_route(self, path: str, route: Any, *, ours: bool, on_gateway: bool, in_delegate: bool) -> None:
        """One http route: its matches, conflicting fields, destinations and mirrors."""
        if not isinstance(route, Mapping):
            self.problems.append(f"{path}: must be an object")
            return
        matches = route.get("match")
        if matches is not None and not isinstance(matches, list):
            self.problems.append(f"{path}.match: must be a list")
            matches = []
        for k, match in enumerate(matches or []):
            self.http_match(f"{path}.match[{k}]", match, on_gateway=on_gateway)
        self.http_conflicts(path, route, in_delegate=in_delegate)
        if _present(route.get("route")):
            self.route_destinations(f"{path}.route", route["route"], ours=ours)
        if route.get("mirror") is not None:
            self.destination(f"{path}.mirror", route["mirror"], ours=ours)
        mirrors = route.get("mirrors")
        for k, mirror in enumerate(mirrors if isinstance(mirrors, list) else []):
            if not isinstance(mirror, Mapping) or mirror.get("destination") is None:
                self.problems.append(f"{path}.mirrors[{k}].destination: Required value")
                continue
            self.destination(f"{path}.mirrors[{k}].destination", mirror["destination"], ours=ours)

    def tcp_or_tls_route(self, path: str, kind: str, route: Any, *, ours: bool) -> None:
        """One tcp or tls route: a tls route needs SNI matches; both need destinations."""
        if not isinstance(route, Mapping):
            self.problems.append(f"{path}: must be an object")
            return
        if kind == "tls":
            _check_tls_matches(path, route.get("match"), self.problems)
        if not _present(route.get("route")):
            self.problems.append(f"{path}.route: Required value ({kind.upper()} route is required)")
            return
        self.route_destinations(f"{path}.route", route["route"], ours=ours)

    def http_order(self, http: list[Any], written: Collection[int]) -> None:
        """Class (b): a written route must not hide routes after it nor be hidden by one."""
        catch_alls = [i for i, r in enumerate(http) if isinstance(r, Mapping) and not r.get("match")]
        for i in sorted(set(written)):
            if not 0 <= i < len(http):
                continue
            if i in catch_alls and i < len(http) - 1:
                self.problems.append(
                    f"spec.http[{i}]: only the last http route may have no match (this one hides routes after it)"
                )
            hiding = [j for j in catch_alls if j < i and j not in written]
            if hiding:
                self.problems.append(
                    f"spec.http[{i}]: never matches: spec.http[{hiding[0]}] before it has no match "
                    "and takes every request"
                )


def validate_virtual_service(
    vs: Mapping[str, Any],
    destination_rules: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = None,
    *,
    written_routes: Collection[int] | None = None,
    mesh_domain: str = DEFAULT_MESH_DOMAIN,
) -> None:
    """Raise IstioValidationError listing every problem (with its field path); None when valid.

    Istio's rules (class a) apply to every route. Ours (class b: subsets exist in the host's
    DestinationRule, route order) apply to the http routes at the indices in `written_routes`,
    the routes the release writes; None applies them to every route, tcp and tls included.
    """
    rules: list[Mapping[str, Any]] = (
        [destination_rules] if isinstance(destination_rules, Mapping) else list(destination_rules or [])
    )
    check = _VirtualServiceCheck(
        vs, _SubsetIndex(rules, (vs.get("metadata") or {}).get("namespace"), mesh_domain)
    )
    problems = check.problems
    spec = vs.get("spec")
    if not isinstance(spec, Mapping):
        raise IstioValidationError("VirtualService", qualified_name(vs), ["spec: Required value"])
    everything = written_routes is None
    gateways = spec.get("gateways")
    on_gateway = isinstance(gateways, list) and bool(gateways) and "mesh" not in gateways
    check.hosts(spec, on_gateway=on_gateway)
    # ValidateVirtualService: no hosts makes a delegate, which only carries http routes.
    is_delegate = not spec.get("hosts")
    if is_delegate:
        for field in ("gateways", "tls", "tcp"):
            if _present(spec.get(field)):
                problems.append(f"spec.{field}: a delegate VirtualService (no hosts) must have no {field}")

    sections = {kind: spec.get(kind) for kind in ("http", "tcp", "tls")}
    if not any(_present(v) for v in sections.values()):
        problems.append("spec: http, tcp or tls must be provided in virtual service")
    for kind, section in sections.items():
        if section is not None and not isinstance(section, list):
            problems.append(f"spec.{kind}: must be a list")
            sections[kind] = None

    http: list[Any] = sections["http"] or []
    written = set(range(len(http))) if everything else set(written_routes or ())
    for i, route in enumerate(http):
        check.http_route(
            f"spec.http[{i}]", route, ours=i in written, on_gateway=on_gateway, in_delegate=is_delegate
        )
    check.http_order(http, written)
    for kind in ("tcp", "tls"):
        for i, route in enumerate(sections[kind] or []):
            # The release writes no tcp/tls route: our rules reach them only when checking everything.
            check.tcp_or_tls_route(f"spec.{kind}[{i}]", kind, route, ours=everything)

    if problems:
        raise IstioValidationError("VirtualService", qualified_name(vs), problems)


def _check_tls_matches(path: str, matches: Any, problems: list[str]) -> None:
    """Istio's validateTLSRoute / validateTLSMatch: a TLS route is chosen by SNI, so it needs one."""
    if not isinstance(matches, list) or not matches:
        problems.append(f"{path}.match: Required value (TLS route must have at least one match condition)")
        return
    for k, match in enumerate(matches):
        sni = match.get("sniHosts") if isinstance(match, Mapping) else None
        if not isinstance(sni, list) or not sni:
            problems.append(
                f"{path}.match[{k}].sniHosts: Required value (TLS match must have at least one SNI host)"
            )


# --------------------------------------------------------------------------- DestinationRule


def _check_traffic_policy(path: str, policy: Any, problems: list[str]) -> None:
    """Istio's validateTrafficPolicy / validatePortTrafficPolicies, and the CRD's TLS mode enum."""
    if policy is None:
        return
    if not isinstance(policy, Mapping):
        problems.append(f"{path}: must be an object")
        return
    if not any(_present(policy.get(f)) for f in _POLICY_FIELDS):
        problems.append(f"{path}: traffic policy must have at least one field")
        return
    _check_tls_mode(path, policy, problems)
    port_policies = policy.get("portLevelSettings")
    for k, port_policy in enumerate(port_policies if isinstance(port_policies, list) else []):
        port_path = f"{path}.portLevelSettings[{k}]"
        if not isinstance(port_policy, Mapping):
            problems.append(f"{port_path}: traffic policy may not be null")
            continue
        if port_policy.get("port") is None:
            problems.append(f"{port_path}.port: Required value (portTrafficPolicy must have valid port)")
        if not any(_present(port_policy.get(f)) for f in _PORT_POLICY_FIELDS):
            problems.append(f"{port_path}: port traffic policy must have at least one field")
        _check_tls_mode(port_path, port_policy, problems)


def _check_tls_mode(path: str, policy: Mapping[str, Any], problems: list[str]) -> None:
    tls = policy.get("tls")
    if isinstance(tls, Mapping) and tls.get("mode") is not None and tls["mode"] not in TLS_MODES:
        problems.append(f"{path}.tls.mode: {tls['mode']!r} is not one of {', '.join(TLS_MODES)}")


def _check_labels(path: str, labels: Any, problems: list[str]) -> None:
    """Istio's labels.Instance.Validate: Kubernetes label syntax. No labels selects every endpoint."""
    if labels is None:
        return
    if not isinstance(labels, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        problems.append(f"{path}: keys and values must be strings")
        return
    for key, value in labels.items():
        match = _LABEL_KEY.fullmatch(key)
        if not match or len(match.group(2)) > 63 or (match.group(1) and len(match.group(1)) - 1 > 253):
            problems.append(f"{path}: invalid label key {key!r}")
        if not _LABEL_VALUE.fullmatch(value):
            problems.append(f"{path}.{key}: invalid label value {value!r}")


def validate_destination_rule(dr: Mapping[str, Any]) -> None:
    """Raise IstioValidationError for what Istio rejects in a DestinationRule (class a only).

    Istio's ValidateDestinationRule: the host (ValidateWildcardDomain), the traffic policies,
    subsets not null and uniquely named, each name, labels and policy (validateSubset).
    """
    problems: list[str] = []
    spec = dr.get("spec")
    if not isinstance(spec, Mapping):
        raise IstioValidationError("DestinationRule", qualified_name(dr), ["spec: Required value"])
    host = spec.get("host")
    if not isinstance(host, str) or not host:
        problems.append("spec.host: Required value")
    else:
        problem = _domain_problem(host)
        if problem:
            problems.append(f"spec.host: {problem}")
    _check_traffic_policy("spec.trafficPolicy", spec.get("trafficPolicy"), problems)
    seen: dict[str, int] = {}
    subsets = spec.get("subsets")
    if subsets is None:
        subsets = []
    if not isinstance(subsets, list):
        problems.append("spec.subsets: must be a list")
        subsets = []
    for i, subset in enumerate(subsets):
        path = f"spec.subsets[{i}]"
        if not isinstance(subset, Mapping):
            problems.append(f"{path}: subset may not be null")
            continue
        name = subset.get("name")
        if not isinstance(name, str) or not name:
            problems.append(f"{path}.name: Required value (subset name cannot be empty)")
        else:
            if name in seen:
                problems.append(f"{path}.name: duplicate subset {name!r} (also spec.subsets[{seen[name]}])")
            seen.setdefault(name, i)
            if not _is_label(name):
                problems.append(
                    f"{path}.name: subset name is invalid: {name!r} (a DNS-1123 label: at most 63 "
                    "letters, digits or '-', starting and ending with a letter or digit)"
                )
        _check_labels(f"{path}.labels", subset.get("labels"), problems)
        _check_traffic_policy(f"{path}.trafficPolicy", subset.get("trafficPolicy"), problems)
    if problems:
        raise IstioValidationError("DestinationRule", qualified_name(dr), problems)
