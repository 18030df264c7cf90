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
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, ClassVar

from istio_canary.core.analysis_config import AnalysisConfig
from istio_canary.core.fields import FORM_DEFAULTS, ISTIO_API_VERSIONS, MATCH_STRATEGIES, STRATEGIES, Strategy
from istio_canary.core.hosts import host_aliases
from istio_canary.core.promql import metric_label_for
from istio_canary.core.validation import (
    ValidationError,
    require_conn_id,
    require_dns1123_label,
    require_dns1123_subdomain,
    require_header_name,
    require_label_value,
    require_re2_regex,
)

DEFAULT_STEPS: tuple[int, ...] = (10, 50, 100)
REQUIRED_KEYS: tuple[str, ...] = ("service", "namespace", "stable_version", "canary_version")
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


# RFC 6265bis: user agents cap a cookie's Max-Age at 400 days.
MAX_COOKIE_AGE_SECONDS = 400 * 24 * 3600


# RFC 6265 cookie-name: an RFC 7230 token (no separators, spaces or control characters).
_COOKIE_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]{1,256}")


def require_cookie_name(field: str, value: Any) -> str:
    """A cookie name browsers send back unchanged (RFC 6265: a token, at most 256 characters here)."""
    if not isinstance(value, str) or not _COOKIE_NAME.fullmatch(value):
        raise ValidationError(field, value, "must be a cookie name: 1-256 letters, digits or !#$%&'*+-.^_`|~ "
                                            "(no spaces, '=', ';', ',' or quotes)")
    return value


def _as_bool(field: str, value: Any) -> bool:
    """A JSON boolean, or the strings true/false (a templated or CLI value)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValidationError(field, value, "must be true or false")


def _as_int(field: str, value: Any, low: int, high: int) -> int:
    """A whole number in low..high; a string of digits (a templated value) is read as one."""
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(field, value, f"must be a whole number of seconds in {low}..{high}")
    return value


def _default_if_unset(params: Mapping[str, Any], key: str) -> Any:
    value = params.get(key)
    return FORM_DEFAULTS[key] if value is None or value == "" else value


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
    # The trigger form's defaults (core/fields.py) are the request's.
    strategy: Strategy = FORM_DEFAULTS["strategy"]
    header_name: str = FORM_DEFAULTS["header_name"]
    header_value: str = FORM_DEFAULTS["header_value"]
    cookie_regex: str = FORM_DEFAULTS["cookie_regex"]
    route_name: str | None = FORM_DEFAULTS["route_name"]
    istio_api_version: str = FORM_DEFAULTS["istio_api_version"]
    stable_subset: str = ""
    canary_subset: str = ""
    canary_route_name: str = ""
    virtual_service: str = ""
    destination_rule: str = ""
    mesh_domain: str = FORM_DEFAULTS["mesh_domain"]
    # Other VirtualServices of the namespace that route to the service (an ingress-gateway
    # one, say), moved together with `virtual_service`: same steps, each its own owned route.
    virtual_services: tuple[str, ...] = ()
    # Sticky canary sessions: a client the weighted split sent to the canary gets a cookie
    # that keeps it there for the rest of the release (core/routing.py, "sticky").
    sticky_sessions: bool = FORM_DEFAULTS["sticky_sessions"]
    sticky_cookie_name: str = ""
    sticky_max_age_seconds: int = FORM_DEFAULTS["sticky_max_age_seconds"]

    # Keys read by from_params, one per field (the rest of a DAG's params belong to other parts).
    PARAM_KEYS: ClassVar[tuple[str, ...]]

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
        self._check_sticky()

    def _check_sticky(self) -> None:
        """Sticky-session settings: a cookie name a browser keeps, a Max-Age it honours."""
        object.__setattr__(self, "sticky_sessions", _as_bool("sticky_sessions", self.sticky_sessions))
        if not self.sticky_cookie_name:
            object.__setattr__(self, "sticky_cookie_name", f"istio-canary-{self.service}")
        require_cookie_name("sticky_cookie_name", self.sticky_cookie_name)
        object.__setattr__(self, "sticky_max_age_seconds", _as_int(
            "sticky_max_age_seconds", self.sticky_max_age_seconds, 1, MAX_COOKIE_AGE_SECONDS))
        if self.sticky_sessions and not any(step < 100 for step in self.steps):
            raise ValidationError("sticky_sessions", True, f"needs a step below 100 (steps {list(self.steps)}): "
                                  "only a partial weighted step sends clients to the canary to stick to it")
        if self.sticky_sessions and self.sticky_route_name == self.route_name:
            raise ValidationError("canary_route_name", self.canary_route_name,
                                  f"gives the sticky route the name {self.sticky_route_name!r}, "
                                  "which another route of the release uses")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ReleaseRequest:
        """Build from a DAG run's params; coerces '10,50,100' and lists; ignores foreign keys."""
        for key in REQUIRED_KEYS:
            if params.get(key) in (None, ""):
                raise ValidationError(key, params.get(key), "is required")
        for key in CONNECTION_KEYS:
            # Checked, not kept: a bad id must fail here, not at the first cluster access.
            if params.get(key) is not None:
                require_conn_id(key, params[key])
        # Text fields fall back to the field's default when absent or empty.
        texts = {f.name: _str_with_default(params, f.name, f.default) for f in fields(cls)
                 if f.type in ("str", str) and f.default is not MISSING}
        return cls(
            **{key: params[key] for key in REQUIRED_KEYS},
            **texts,
            steps=params.get("steps"),  # type: ignore[arg-type]  # coerced in __post_init__
            strategy=_str_with_default(params, "strategy", FORM_DEFAULTS["strategy"]).strip().lower(),  # type: ignore[arg-type]  # checked in __post_init__
            route_name=_optional_str(params, "route_name"),
            virtual_services=params.get("virtual_services") or (),  # type: ignore[arg-type]  # parsed in __post_init__
            sticky_sessions=_default_if_unset(params, "sticky_sessions"),
            sticky_max_age_seconds=_default_if_unset(params, "sticky_max_age_seconds"),
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
        return host_aliases(self.host, self.service, self.fqdn)

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
        return self.strategy in MATCH_STRATEGIES

    @property
    def sticky_route_name(self) -> str:
        """The match route that keeps sticky clients on the canary: named after the canary
        match route, so the release's own routes are recognisable by their prefix."""
        return f"{self.canary_route_name}-sticky"


ReleaseRequest.PARAM_KEYS = tuple(f.name for f in fields(ReleaseRequest))


def known_release_keys() -> frozenset[str]:
    """Every key a release's params may carry: the form's, the request's and the analysis's
    (REST/CLI may set e.g. canary_subset or alpha, absent from the form)."""
    analysis = {f.name for f in fields(AnalysisConfig)}
    return frozenset(FORM_DEFAULTS) | frozenset(ReleaseRequest.PARAM_KEYS) | analysis
