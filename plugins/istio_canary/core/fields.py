"""The release's trigger form, one row per parameter: its default, the JSON Schema the form and the
REST API check, its title, help text and form section.

This table is the one place these defaults are written: the DAG's `Param`s are built from it
(`dag_factory.release_params`), `ReleaseRequest`'s field defaults read it, and the analysis
rows read `AnalysisConfig`'s. Row order is the form's order. Names are a public contract (REST
conf keys, CLI -c JSON keys, calendar entries). No Airflow here: `core` stays plain Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

from istio_canary.core.analysis_config import AnalysisConfig
from istio_canary.core.capacity import CAPACITY_DEFAULTS
from istio_canary.core.hosts import DEFAULT_MESH_DOMAIN
from istio_canary.core.window_gate import GATE_MODES

Strategy = Literal["weighted", "header", "cookie"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
# Strategies that start with a targeted phase: only matching requests reach the canary.
MATCH_STRATEGIES: tuple[str, ...] = ("header", "cookie")
ISTIO_API_VERSIONS: tuple[str, ...] = ("v1", "v1beta1")
# `canary=true` as a whole cookie (Envoy matches the whole Cookie header): `.*canary=true.*`
# would also take `notcanary=true` and `canary=true2`.
DEFAULT_COOKIE_REGEX = r"^(.*;\s*)?canary=true(;.*)?$"
# The form refuses what ReleaseRequest refuses (a REST trigger then answers 400).
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# RFC 6265 cookie-name: an RFC 7230 token (core/request.py checks the same).
COOKIE_NAME_PATTERN = r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$"
DOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

RELEASE = "Release"
STRATEGY = "Targeted canary (header / cookie strategies)"
ANALYSIS = "Analysis"
SAFETY = "Safety and connections"
MIRROR = "Traffic mirroring (before the first step)"
STICKY = "Sticky canary sessions"


@dataclass(frozen=True)
class ReleaseField:
    """One parameter of the trigger form."""

    key: str
    default: Any
    title: str
    section: str
    description: str | None = None
    # JSON Schema keywords (type, pattern, enum, minimum, ...), checked by the form and the REST API.
    schema: dict[str, Any] = field(default_factory=dict)


def _row(
    key: str, default: Any, title: str, section: str, description: str | None = None, **schema: Any
) -> ReleaseField:
    return ReleaseField(key, default, title, section, description, schema)


def _analysis_default(key: str) -> Any:
    """`AnalysisConfig`'s default; a whole float as an int, so the form shows 500, not 500.0."""
    value = next(f.default for f in fields(AnalysisConfig) if f.name == key)
    return int(value) if isinstance(value, float) and value.is_integer() else value


RELEASE_FIELDS: tuple[ReleaseField, ...] = (
    _row(
        "service", None, "Service", RELEASE,
        "Kubernetes Service (and, by default, VirtualService and DestinationRule) name, e.g. reviews.",
        type="string", pattern=NAME_PATTERN, maxLength=63,
    ),
    _row(
        "namespace", None, "Namespace", RELEASE, "Namespace of the service and its Istio objects.",
        type="string", pattern=NAME_PATTERN, maxLength=63,
    ),
    _row(
        "stable_version", None, "Stable version", RELEASE,
        "Value of the pods' `version` label serving traffic now, e.g. v1.",
        type="string", minLength=1, maxLength=63,
    ),
    _row(
        "canary_version", None, "Canary version", RELEASE,
        "Value of the new pods' `version` label, e.g. v2. Must differ from the stable version.",
        type="string", minLength=1, maxLength=63,
    ),
    _row(
        "strategy", "weighted", "Strategy", RELEASE,
        "weighted: shift a share of all traffic. header / cookie: first send only matching requests "
        "to the canary (a targeted phase judged like a step), then shift.",
        type="string", enum=list(STRATEGIES),
    ),
    _row(
        "dry_run", False, "Dry run", RELEASE,
        "Compute and log every object and diff for every step; write nothing, no waits.",
        type="boolean",
    ),
    _row(
        "header_name", "user-agent", "Header name", STRATEGY,
        "Header that marks canary requests (header strategy).",
        type="string", minLength=1,
    ),
    _row(
        "header_value", "canary", "Header value", STRATEGY, "Exact header value that routes to the canary.",
        type="string", minLength=1,
    ),
    _row(
        "cookie_regex", DEFAULT_COOKIE_REGEX, "Cookie regex", STRATEGY,
        "RE2 regex the whole Cookie header must match (cookie strategy). The default takes the "
        "cookie canary=true, not notcanary=true or canary=true2.",
        type="string", minLength=1, maxLength=1024,
    ),
    _row(
        "sticky_sessions", False, "Sticky canary sessions", STICKY,
        "A client the weighted split sends to the canary gets a cookie (Set-Cookie on the canary "
        "destination) and a match route on it keeps the client on the canary for the rest of the "
        "release, so it does not flip between versions. Removed at 100%, promotion and rollback.",
        type="boolean",
    ),
    _row(
        "sticky_cookie_name", None, "Sticky cookie name", STICKY,
        "Name of the sticky cookie; default istio-canary-<service>. Its value is new for every release, "
        "so a cookie from an earlier release never matches.",
        type=["string", "null"], pattern=COOKIE_NAME_PATTERN, maxLength=256,
    ),
    _row(
        "sticky_max_age_seconds", 86400, "Sticky cookie Max-Age (s)", STICKY,
        "How long a client keeps the sticky cookie (its Max-Age).",
        type="integer", minimum=1, maximum=400 * 24 * 3600,
    ),
    _row(
        "mirror_percent", 0, "Mirror percent", MIRROR,
        "Before the first step, copy this percent of the owned route's requests to the canary (Istio "
        "mirror; clients get only stable's responses) and judge the canary on the copies like a step. "
        "0: no mirror phase.",
        type="number", minimum=0, maximum=100,
    ),
    _row(
        "mirror_duplicate_writes_ok", False, "Mirror: duplicate writes are OK", MIRROR,
        "A mirrored request runs twice (stable and canary), so a mirrored POST writes twice. Without this, "
        "mirroring is refused unless the owned route matches only GET, HEAD or OPTIONS.",
        type="boolean",
    ),
    _row(
        "bake_seconds", 300, "Bake time per step (s)", ANALYSIS,
        "How long each step is watched before its verdict.",
        type="integer", minimum=1,
    ),
    _row(
        "check_interval_seconds", _analysis_default("check_interval_seconds"), "Check interval (s)", ANALYSIS,
        "How often Prometheus is checked during the bake (early stop).",
        type="integer", minimum=1,
    ),
    _row(
        "min_requests", _analysis_default("min_requests"), "Minimum canary requests", ANALYSIS,
        "Fewer canary requests than this is inconclusive, never a pass.",
        type="integer", minimum=1,
    ),
    _row(
        "max_error_rate", _analysis_default("max_error_rate"), "Max error rate", ANALYSIS,
        "Highest canary 5xx ratio accepted (0.01 = 1%).",
        type="number", exclusiveMinimum=0, exclusiveMaximum=1,
    ),
    _row(
        "max_p99_ms", _analysis_default("max_p99_ms"), "Max p99 latency (ms)", ANALYSIS,
        "Highest canary p99 request duration accepted.",
        type="number", exclusiveMinimum=0,
    ),
    _row(
        # Unset on the form (AnalysisConfig's 0 means the same: 3 x bake time).
        "max_bake_seconds", None, "Max bake time (s)", ANALYSIS,
        "Low traffic extends the bake up to this (default: 3 x bake time).",
        type=["integer", "null"], minimum=1,
    ),
    _row(
        "plan_bake", _analysis_default("plan_bake"), "Plan the bake from traffic", ANALYSIS,
        "Before each step, bake long enough (up to the max bake time) to catch a canary failing twice "
        "as often as stable; refuse a release whose traffic cannot give that even at the max. Off: "
        "bake the bake time.",
        type="boolean",
    ),
    _row(
        "release_window", None, "Release window policy", SAFETY,
        "A policy from include/release_windows.yaml (e.g. office-hours); empty: the service's policy "
        "if it has one; 'none': no window.",
        type=["string", "null"],
    ),
    _row(
        "window_mode", "wait", "Outside a window", SAFETY,
        "wait: defer until the window opens (no worker slot); refuse: fail saying when it opens; "
        "ignore: release now. Mid-release, a closed window holds the current weight.",
        type="string", enum=list(GATE_MODES),
    ),
    _row(
        "require_approval", False, "Require approval", SAFETY,
        "A person approves before the last step (Required actions); reject or timeout rolls back.",
        type="boolean",
    ),
    _row(
        "break_stale_lock", False, "Break a stale release lock", SAFETY,
        "Take the service's release lock even if another run holds it. Only when that run is known "
        "to be dead.",
        type="boolean",
    ),
    _row(
        "capacity_check", CAPACITY_DEFAULTS["capacity_check"], "Check the canary's capacity", SAFETY,
        "Before each weight increase, compare the canary Deployment's Ready replicas (and its HPA's "
        "maxReplicas) with the next step's share of the traffic at the stable's load per replica; "
        "wait while they are coming, refuse (roll back) when they cannot be enough.",
        type="boolean",
    ),
    _row(
        "capacity_timeout_minutes", CAPACITY_DEFAULTS["capacity_timeout_minutes"], "Capacity wait (min)", SAFETY,
        "How long a step waits for the canary's replicas to get Ready before it is refused.",
        type="integer", minimum=0, maximum=1440,
    ),
    _row(
        "capacity_headroom", CAPACITY_DEFAULTS["capacity_headroom"], "Capacity headroom", SAFETY,
        "Spare capacity the canary needs over the stable's load per replica (1.2: 20% more replicas).",
        type="number", minimum=1, maximum=10,
    ),
    _row(
        "kubernetes_conn_id", "kubernetes_default", "Kubernetes connection", SAFETY,
        type="string", minLength=1,
    ),
    _row(
        "prometheus_conn_id", "prometheus_default", "Prometheus connection", SAFETY,
        type="string", minLength=1,
    ),
    _row(
        "istio_api_version", ISTIO_API_VERSIONS[0], "Istio API version", SAFETY,
        type="string", enum=list(ISTIO_API_VERSIONS),
    ),
    _row(
        "mesh_domain", DEFAULT_MESH_DOMAIN, "Mesh domain", SAFETY,
        "The cluster's DNS domain (cluster.local unless the cluster was set up with another). Istio "
        "expands a short host such as reviews to reviews.<namespace>.svc.<mesh domain>; names with "
        "a dot stay as written.",
        type="string", pattern=DOMAIN_PATTERN, maxLength=253,
    ),
    _row(
        "virtual_services", [], "Move with it", SAFETY,
        "Other VirtualServices of the namespace routing to the service (e.g. an ingress-gateway one), "
        "moved in the same steps; each keeps everything but its owned route.",
        type="array", items={"type": "string"},
    ),
    _row(
        "route_name", None, "Owned route name", SAFETY,
        "The HTTP route the release edits; default: the host's catch-all route.",
        type=["string", "null"],
    ),
)

FORM_DEFAULTS: dict[str, Any] = {row.key: row.default for row in RELEASE_FIELDS}
