"""The PromQL the canary analysis sends (pure: no network).

Built-in queries use Istio's standard metrics as reported by the destination sidecar
(`reporter="destination"`): request count, 5xx count and p99 latency per version, canary and
stable in the SAME query so both cover the same window.

Which metric label carries the version follows the release's pod label (`metric_label_for`):
Istio fills `destination_version` only from the pod label `version`, and
`destination_canonical_revision` from `service.istio.io/canonical-revision`, else
`app.kubernetes.io/version`, else `version`. Every query takes that metric label (`label=`,
default `destination_version`), so a release keyed on another pod label still finds its versions.

Counting choice. The judge's statistics work on request and error *counts*. Prometheus'
`increase()` extrapolates to the window edges, so its counts are not integers and may
disagree between the request and the error query. The watch therefore reads the raw
counters (`counter_snapshot_query`) once at its start and again at every check and
differences them (`core.samples.CounterSnapshot.since`): exact counts, one query per check,
counter resets handled per series the way Prometheus does. The windowed `increase` queries
(`request_count_query`, `error_count_query`) remain for one-off looks such as the pre-release
history baseline; their results are rounded to whole requests.

Only validated names reach PromQL: services and namespaces are DNS-1123 labels, versions
Kubernetes label values, windows whole seconds (no injection).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from istio_canary.core.validation import ValidationError, require_dns1123_label, require_label_value

REQUESTS_METRIC = "istio_requests_total"
DURATION_BUCKET_METRIC = "istio_request_duration_milliseconds_bucket"
ERROR_CODE_REGEX = "5.."

# The Istio metric labels that name a workload's version.
DESTINATION_VERSION = "destination_version"
DESTINATION_CANONICAL_REVISION = "destination_canonical_revision"
METRIC_VERSION_LABELS: tuple[str, ...] = (DESTINATION_VERSION, DESTINATION_CANONICAL_REVISION)
# Pod labels, highest precedence first, that Istio reads for destination_canonical_revision.
CANONICAL_REVISION_POD_LABELS: tuple[str, ...] = (
    "service.istio.io/canonical-revision",
    "app.kubernetes.io/version",
    "version",
)
# The pod label a release may select versions by -> the metric label Istio reports it in.
# Any other pod label never reaches Istio's metrics: canary and stable would look alike.
VERSION_LABEL_METRICS: dict[str, str] = {
    "version": DESTINATION_VERSION,
    "app.kubernetes.io/version": DESTINATION_CANONICAL_REVISION,
    "service.istio.io/canonical-revision": DESTINATION_CANONICAL_REVISION,
}


def metric_label_for(version_label: str) -> str:
    """The Istio metric label that reports the pod label `version_label` (one of
    `VERSION_LABEL_METRICS`), e.g. `version` -> `destination_version`."""
    try:
        return VERSION_LABEL_METRICS[version_label]
    except (KeyError, TypeError):
        raise ValidationError(
            "version_label",
            version_label,
            "Istio's metrics cannot tell versions apart by this label (destination_version comes only "
            "from the pod label 'version', destination_canonical_revision from "
            "'service.istio.io/canonical-revision', else 'app.kubernetes.io/version', else 'version'); "
            f"use one of: {', '.join(VERSION_LABEL_METRICS)}",
        ) from None


def _metric_label(label: Any) -> str:
    """One of `METRIC_VERSION_LABELS`: the only label names that reach PromQL."""
    if label not in METRIC_VERSION_LABELS:
        raise ValidationError("metric_label", label, f"must be one of {', '.join(METRIC_VERSION_LABELS)}")
    return str(label)


def promql_name(field_name: str, value: Any) -> str:
    """A DNS-1123 label: safe inside a PromQL string (no quotes, braces or newlines)."""
    return require_dns1123_label(field_name, value)


def promql_version(value: Any) -> str:
    """A Kubernetes label value (`v1`, `1.2.0`, `v1.2_rc`): the pods' version label, which is
    what Istio reports in the version metric label. Letters, digits, '-', '_' and '.' only: no
    quote, backslash, brace or newline can reach PromQL."""
    return require_label_value("version", value)


def _version_regex(versions: Sequence[str]) -> str:
    r"""The alternation for a `=~"..."` matcher, e.g. `v1|1\\.2\\.0`. '.' is the only regex
    metacharacter a label value can hold: `\.` for RE2, its backslash doubled in the PromQL string."""
    return "|".join(v.replace(".", "\\\\.") for v in versions)


def window_literal(field_name: str, seconds: Any) -> str:
    """A PromQL range such as `30s`, from a whole number of seconds (nothing else gets in)."""
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds <= 0:
        raise ValidationError(field_name, seconds, "must be a positive whole number of seconds")
    return f"{seconds}s"


# --------------------------------------------------------------------------- custom templates

TEMPLATE_PLACEHOLDERS = frozenset({"service", "namespace", "version", "window"})
# A placeholder is a bare identifier in braces. Any other brace pair is PromQL's own
# (label matchers), so templates read as ordinary PromQL: `errors{app="{service}"}`.
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def template_placeholders(field_name: str, template: Any) -> frozenset[str]:
    """The placeholders a custom-metric template uses; refuses unknown ones and unbalanced braces."""
    if not isinstance(template, str) or not template.strip():
        raise ValidationError(field_name, template, "must be a non-empty PromQL template")
    used = set()
    for match in _PLACEHOLDER.finditer(template):
        name = match.group(1)
        if name not in TEMPLATE_PLACEHOLDERS:
            raise ValidationError(
                field_name,
                template,
                f"unknown placeholder {{{name}}}; allowed: "
                + ", ".join(f"{{{p}}}" for p in sorted(TEMPLATE_PLACEHOLDERS)),
            )
        used.add(name)
    depth = 0
    for char in _PLACEHOLDER.sub("", template):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth < 0:
                raise ValidationError(field_name, template, "unbalanced braces: '}' without '{'")
    if depth:
        raise ValidationError(field_name, template, "unbalanced braces: '{' never closed")
    return frozenset(used)


def render_template(template: str, *, service: str, namespace: str, version: str, window_seconds: int) -> str:
    """A checked template (`template_placeholders`) with validated values put in."""
    values = {
        "service": promql_name("service", service),
        "namespace": promql_name("namespace", namespace),
        "version": promql_version(version),
        "window": window_literal("window_seconds", window_seconds),
    }
    # One pass: a substituted value is never scanned again for placeholders.
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


# --------------------------------------------------------------------------- built-in queries


def _selector(service: str, namespace: str, versions: Sequence[str], *extra: str, label: str) -> str:
    promql_name("service", service)
    promql_name("namespace", namespace)
    if isinstance(versions, str) or not versions:
        raise ValidationError("versions", versions, "must be a non-empty list of versions")
    for version in versions:
        promql_version(version)
    matchers = [
        'reporter="destination"',
        f'destination_service_name="{service}"',
        f'destination_workload_namespace="{namespace}"',
        # Escaped: matches exactly these versions (Prometheus anchors regexes).
        f'{_metric_label(label)}=~"{_version_regex(versions)}"',
        *extra,
    ]
    return "{" + ",".join(matchers) + "}"


_ERRORS_ONLY = f'response_code=~"{ERROR_CODE_REGEX}"'


def _increase_by_version(
    metric: str,
    service: str,
    namespace: str,
    versions: Sequence[str],
    window_seconds: int,
    *extra: str,
    label: str,
    by: str = "",
) -> str:
    """`sum by (<by>label) (increase(metric{selector}[window]))`: the shape every windowed query shares."""
    selector = _selector(service, namespace, versions, *extra, label=label)
    window = window_literal("window_seconds", window_seconds)
    return f"sum by ({by}{label}) (increase({metric}{selector}[{window}]))"


def request_count_query(
    service: str,
    namespace: str,
    versions: Sequence[str],
    window_seconds: int,
    *,
    label: str = DESTINATION_VERSION,
) -> str:
    """Requests per version over the window (`increase`: extrapolated, round the result)."""
    return _increase_by_version(REQUESTS_METRIC, service, namespace, versions, window_seconds, label=label)


def error_count_query(
    service: str,
    namespace: str,
    versions: Sequence[str],
    window_seconds: int,
    *,
    label: str = DESTINATION_VERSION,
) -> str:
    """5xx responses per version over the window."""
    return _increase_by_version(
        REQUESTS_METRIC, service, namespace, versions, window_seconds, _ERRORS_ONLY, label=label
    )


def p99_query(
    service: str,
    namespace: str,
    versions: Sequence[str],
    window_seconds: int,
    *,
    label: str = DESTINATION_VERSION,
) -> str:
    """p99 request duration (ms) per version over the window; NaN for a version without requests."""
    buckets = _increase_by_version(
        DURATION_BUCKET_METRIC, service, namespace, versions, window_seconds, label=label, by="le, "
    )
    return f"histogram_quantile(0.99, {buckets})"


def error_ratio_graph_query(
    service: str, namespace: str, versions: Sequence[str], *, label: str = DESTINATION_VERSION
) -> str:
    """5xx ratio per version over 1-minute rates: what a person graphs to see the canary."""
    errors = _selector(service, namespace, versions, _ERRORS_ONLY, label=label)
    total = _selector(service, namespace, versions, label=label)
    requests = f"sum by ({label}) (rate({REQUESTS_METRIC}{total}[1m]))"
    # `or ... * 0`: a version without errors has no 5xx series; graph it at 0, not as a gap.
    return f"(sum by ({label}) (rate({REQUESTS_METRIC}{errors}[1m])) or {requests} * 0) / {requests}"


def scrape_time_query(
    service: str, namespace: str, versions: Sequence[str], *, label: str = DESTINATION_VERSION
) -> str:
    """When Prometheus last scraped these counters (epoch seconds). `timestamp()` must wrap
    the raw selector: applied to an aggregation it returns the evaluation time instead."""
    selector = _selector(service, namespace, versions, label=label)
    return f"max(timestamp({REQUESTS_METRIC}{selector}))"


def counter_snapshot_query(
    service: str, namespace: str, versions: Sequence[str], *, label: str = DESTINATION_VERSION
) -> str:
    """The raw request counters per version and response code, for exact differencing."""
    selector = _selector(service, namespace, versions, label=label)
    return f"sum by ({label}, response_code) ({REQUESTS_METRIC}{selector})"
