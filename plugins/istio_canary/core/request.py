"""The typed, checked description of one release: what to move, from where to where, and how.

`ReleaseRequest.from_params` turns the DAG run's params (strings from the UI/CLI or JSON
values from the REST API) into a frozen dataclass, or fails with a `ValidationError` that
names the field and the value, before anything touches the cluster. It reads only its own
keys (and checks the connection ids): the same params mapping also carries analysis and
window settings.

Subset names: Istio subset names must be DNS-1123 labels, while versions are Kubernetes
label *values* (`v1`, `1.2.3`, `v1.2_rc`). A subset defaults to its version only when the
version already is a valid subset name; otherwise the request is refused with a message
suggesting an explicit `stable_subset`/`canary_subset`. We do not derive names silently
(e.g. dots to dashes) because the name lands in someone's DestinationRule, two versions can
map to one derived name, and an operator reading the DR should find the name they chose.

Version label: the pod label that tells stable from canary pods (in the DestinationRule's
subsets) must also tell them apart in Istio's metrics, or every analysis is inconclusive.
Istio reports `destination_version` only from the label `version`, and
`destination_canonical_revision` from `service.istio.io/canonical-revision`, else
`app.kubernetes.io/version`, else `version`; so only these three labels are accepted, and
`metric_version_label` names the metric label the queries must use.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal

from istio_canary.core.istio_rules import DEFAULT_MESH_DOMAIN
from istio_canary.core.metrics import metric_label_for
from istio_canary.core.validation import (
    ValidationError,
    require_conn_id,
    require_dns1123_label,
    require_dns1123_subdomain,
    require_header_name,
    require_label_value,
    require_re2_regex,
)

Strategy = Literal["weighted", "header", "cookie"]
STRATEGIES: tuple[str, ...] = ("weighted", "header", "cookie")
ISTIO_API_VERSIONS: tuple[str, ...] = ("v1", "v1beta1")
DEFAULT_STEPS: tuple[int, ...] = (10, 50, 100)
# `canary=true` as a whole cookie (Envoy matches the whole Cookie header): `.*canary=true.*`
# would also take `notcanary=true` and `canary=true2`.
DEFAULT_COOKIE_REGEX = r"^(.*;\s*)?canary=true(;.*)?$"
# Connection params checked with the request (the operators read them from the params).
CONNECTION_KEYS: tuple[str, ...] = ("kubernetes_conn_id", "prometheus_conn_id")


def _suggest_subset(version: str) -> str:
    cleaned = re.sub(r"[^a-z0-9-]+", "-", version.lower()).strip("-")[:63].strip("-")
    return cleaned or "canary"


def _subset_for(field: str, version_field: str, version: str, explicit: Any) -> str:
    if explicit not in (None, ""):
        return require_dns1123_label(field, explicit)
    try:
        return require_dns1123_label(field, version)
    except ValidationError:
        raise ValidationError(
            version_field,
            version,
            "cannot be used as an Istio subset name (subsets must be DNS-1123 labels); "
            f"set {field} explicitly, e.g. {field}={_suggest_subset(version)!r}",
        ) from None


def _parse_steps(value: Any) -> tuple[int, ...]:
    field = "steps"
    if value is None or value == "":
        return DEFAULT_STEPS
    if isinstance(value, str):
        text = value.strip().removeprefix("[").removesuffix("]")
        items: list[Any] = [part.strip() for part in re.split(r"[,\s]+", text) if part.strip()]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValidationError(field, value, "must be a list of integers or a string like '10,50,100'")
    if not items:
        raise ValidationError(field, value, "must name at least one step")
    steps: list[int] = []
    for item in items:
        # bool is an int in Python; `True` as a step is a mistake, not 1%.
        if isinstance(item, bool):
            raise ValidationError(field, value, f"step {item!r} is not an integer percentage")
        if isinstance(item, int):
            steps.append(item)
        elif isinstance(item, str) and re.fullmatch(r"[+-]?\d+", item.strip()):
            steps.append(int(item))
        else:
            raise ValidationError(field, value, f"step {item!r} is not an integer percentage")
    for step in steps:
        if not 1 <= step <= 100:
            raise ValidationError(field, value, f"step {step} is outside 1..100")
    for before, after in itertools.pairwise(steps):
        if after <= before:
            raise ValidationError(field, value, f"steps must strictly increase ({before} then {after})")
    if steps[-1] != 100:
        raise ValidationError(field, value, "the last step must be 100 (the canary takes all traffic)")
    return tuple(steps)


def _parse_names(field: str, value: Any) -> tuple[str, ...]:
    """Object names as a list, or one string separated by commas/spaces; unique DNS-1123 subdomains."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        items: list[Any] = [part for part in re.split(r"[,\s]+", value.strip()) if part]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValidationError(field, value, "must be a list of names or a string like 'a,b'")
    names = tuple(require_dns1123_subdomain(field, item) for item in items)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValidationError(field, list(value) if not isinstance(value, str) else value,
                              f"names {', '.join(duplicates)} more than once")
    return names


def _optional_str(params: Mapping[str, Any], key: str) -> str | None:
    value = params.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValidationError(key, value, "must be a string")
    return value


def _str_with_default(params: Mapping[str, Any], key: str, default: str) -> str:
    value = _optional_str(params, key)
    return default if value is None else value


@dataclass(frozen=True)
class ReleaseRequest:
    """One release of `service` in `namespace` from `stable_version` to `canary_version`."""

    service: str
    namespace: str
    stable_version: str
    canary_version: str
    host: str = ""
    version_label: str = "version"
    steps: tuple[int, ...] = DEFAULT_STEPS
    strategy: Strategy = "weighted"
    header_name: str = "user-agent"
    header_value: str = "canary"
    cookie_regex: str = DEFAULT_COOKIE_REGEX
    route_name: str | None = None
    istio_api_version: str = "v1"
    stable_subset: str = ""
    canary_subset: str = ""
    canary_route_name: str = ""
    virtual_service: str = ""
    destination_rule: str = ""
    mesh_domain: str = DEFAULT_MESH_DOMAIN
    # Other VirtualServices of the namespace that route to the service (an ingress-gateway
    # one, say), moved together with `virtual_service`: same steps, each its own owned route.
    virtual_services: tuple[str, ...] = ()

    # Keys read by from_params (the rest of a DAG's params belong to other parts).
    PARAM_KEYS: ClassVar[tuple[str, ...]] = (
        "service",
        "namespace",
        "host",
        "stable_version",
        "canary_version",
        "version_label",
        "steps",
        "strategy",
        "header_name",
        "header_value",
        "cookie_regex",
        "route_name",
        "istio_api_version",
        "stable_subset",
        "canary_subset",
        "canary_route_name",
        "virtual_service",
        "destination_rule",
        "mesh_domain",
        "virtual_services",
    )

    def __post_init__(self) -> None:
        # Direct construction gets the same checks and defaults as from_params.
        require_dns1123_label("service", self.service)
        require_dns1123_label("namespace", self.namespace)
        if not self.host:
            object.__setattr__(self, "host", self.service)
        require_dns1123_subdomain("host", self.host)
        require_dns1123_subdomain("mesh_domain", self.mesh_domain)
        # The Istio objects default to the service's name, as in Bookinfo and most meshes.
        for name_field in ("virtual_service", "destination_rule"):
            if not getattr(self, name_field):
                object.__setattr__(self, name_field, self.service)
            require_dns1123_subdomain(name_field, getattr(self, name_field))
        metric_label_for(self.version_label)  # refuses a label Istio's metrics do not report
        object.__setattr__(self, "virtual_services", _parse_names("virtual_services", self.virtual_services))
        if self.virtual_service in self.virtual_services:
            raise ValidationError("virtual_services", list(self.virtual_services),
                                  f"lists {self.virtual_service!r}, the release's own VirtualService (virtual_service)")
        require_label_value("stable_version", self.stable_version)
        require_label_value("canary_version", self.canary_version)
        if self.stable_version == self.canary_version:
            raise ValidationError("canary_version", self.canary_version, "must differ from stable_version")
        object.__setattr__(self, "steps", _parse_steps(self.steps))
        if self.strategy not in STRATEGIES:
            raise ValidationError("strategy", self.strategy, f"must be one of {', '.join(STRATEGIES)}")
        require_header_name("header_name", self.header_name)
        if not isinstance(self.header_value, str) or not self.header_value:
            raise ValidationError("header_value", self.header_value, "must be a non-empty string")
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in self.header_value):
            raise ValidationError("header_value", self.header_value, "must not contain control characters")
        require_re2_regex("cookie_regex", self.cookie_regex)
        if self.istio_api_version not in ISTIO_API_VERSIONS:
            raise ValidationError(
                "istio_api_version",
                self.istio_api_version,
                f"must be one of {', '.join(ISTIO_API_VERSIONS)}",
            )
        stable_subset = _subset_for(
            "stable_subset", "stable_version", self.stable_version, self.stable_subset
        )
        canary_subset = _subset_for(
            "canary_subset", "canary_version", self.canary_version, self.canary_subset
        )
        if stable_subset == canary_subset:
            raise ValidationError("canary_subset", canary_subset, "must differ from stable_subset")
        object.__setattr__(self, "stable_subset", stable_subset)
        object.__setattr__(self, "canary_subset", canary_subset)
        if self.route_name is not None and (not isinstance(self.route_name, str) or not self.route_name):
            raise ValidationError("route_name", self.route_name, "must be a non-empty string or unset")
        if not self.canary_route_name:
            object.__setattr__(self, "canary_route_name", f"{self.service}-canary")
        if not isinstance(self.canary_route_name, str):
            raise ValidationError("canary_route_name", self.canary_route_name, "must be a string")
        if self.canary_route_name == self.route_name:
            raise ValidationError(
                "canary_route_name",
                self.canary_route_name,
                "must differ from route_name (the release inserts it next to the owned route)",
            )

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ReleaseRequest:
        """Build from a DAG run's params; coerces '10,50,100' and lists; ignores foreign keys."""
        for key in ("service", "namespace", "stable_version", "canary_version"):
            if params.get(key) in (None, ""):
                raise ValidationError(key, params.get(key), "is required")
        for key in CONNECTION_KEYS:
            # Checked, not kept: a bad id must fail here, not at the first cluster access.
            if params.get(key) is not None:
                require_conn_id(key, params[key])
        strategy = _str_with_default(params, "strategy", "weighted").strip().lower()
        return cls(
            service=params["service"],
            namespace=params["namespace"],
            stable_version=params["stable_version"],
            canary_version=params["canary_version"],
            host=_str_with_default(params, "host", ""),
            version_label=_str_with_default(params, "version_label", "version"),
            steps=params.get("steps"),  # type: ignore[arg-type]  # coerced in __post_init__
            strategy=strategy,  # type: ignore[arg-type]  # checked in __post_init__
            header_name=_str_with_default(params, "header_name", "user-agent"),
            header_value=_str_with_default(params, "header_value", "canary"),
            cookie_regex=_str_with_default(params, "cookie_regex", DEFAULT_COOKIE_REGEX),
            route_name=_optional_str(params, "route_name"),
            istio_api_version=_str_with_default(params, "istio_api_version", "v1"),
            stable_subset=_str_with_default(params, "stable_subset", ""),
            canary_subset=_str_with_default(params, "canary_subset", ""),
            canary_route_name=_str_with_default(params, "canary_route_name", ""),
            virtual_service=_str_with_default(params, "virtual_service", ""),
            destination_rule=_str_with_default(params, "destination_rule", ""),
            mesh_domain=_str_with_default(params, "mesh_domain", DEFAULT_MESH_DOMAIN),
            virtual_services=params.get("virtual_services") or (),  # type: ignore[arg-type]  # parsed in __post_init__
        )

    def to_params(self) -> dict[str, Any]:
        """JSON-friendly dict (for XCom); `from_params(r.to_params()) == r`."""
        data = asdict(self)
        data["steps"] = list(self.steps)
        data["virtual_services"] = list(self.virtual_services)
        return data

    @property
    def fqdn(self) -> str:
        return f"{self.service}.{self.namespace}.svc.{self.mesh_domain}"

    @property
    def metric_version_label(self) -> str:
        """The Istio metric label that carries `version_label`'s value: `destination_version`
        for `version`, `destination_canonical_revision` for the other two."""
        return metric_label_for(self.version_label)

    @property
    def host_aliases(self) -> frozenset[str]:
        """Names a route may use for this release's host.

        Istio expands only a dot-free short name, relative to the rule's namespace
        (`reviews` -> `reviews.<namespace>.svc.<mesh_domain>`); any name with a dot is taken
        as written, so `reviews.ns` and `reviews.ns.svc` name other hosts. When the host is
        the service, its short name and its FQDN are therefore the same destination.
        """
        service_names = {self.service, self.fqdn}
        if self.host in service_names:
            return frozenset(service_names)
        return frozenset({self.host})

    def refers_to_host(self, host: Any) -> bool:
        return isinstance(host, str) and host in self.host_aliases

    @property
    def all_virtual_services(self) -> tuple[str, ...]:
        """The release's VirtualService first (it carries the lock), then the ones moved with it."""
        return (self.virtual_service, *self.virtual_services)

    @property
    def stable_labels(self) -> dict[str, str]:
        return {self.version_label: self.stable_version}

    @property
    def canary_labels(self) -> dict[str, str]:
        return {self.version_label: self.canary_version}

    @property
    def uses_match_route(self) -> bool:
        return self.strategy in ("header", "cookie")
