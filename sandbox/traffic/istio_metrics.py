"""Istio's standard metrics for the simulated requests, in Prometheus' text format.

One `IstioSeries` per (service, outcome, response code) holds `istio_requests_total` and the
`istio_request_duration_milliseconds` histogram, labelled as Istio's proxies label them;
`sandbox_requests_total` adds exact counts per header class (sandbox only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sandbox.config import ServiceConfig
from sandbox.traffic.request import HEADER_CLASSES
from sandbox.traffic.routing import RouteOutcome

# Istio's default buckets for istio_request_duration_milliseconds.
ISTIO_BUCKETS_MS: tuple[float, ...] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
    1800000, 3600000,
)  # fmt: skip
SOURCE_WORKLOAD = "productpage-v1"

# (service index, destination version, header class, response code) -> sandbox_requests_total.
RequestCountKey = tuple[int, str, int, int]


@dataclass
class IstioSeries:
    """One label set's request count and latency histogram (`buckets` per ISTIO_BUCKETS_MS, +Inf last)."""

    labels: str
    buckets: list[int]
    total_ms: float = 0.0
    count: int = 0

    def copy(self) -> IstioSeries:
        return dataclasses.replace(self, buckets=list(self.buckets))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _le(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


_LE_LABELS = [f',le="{_le(b)}"' for b in ISTIO_BUCKETS_MS] + [',le="+Inf"']


def new_istio_series(svc: ServiceConfig, outcome: RouteOutcome, code: int) -> IstioSeries:
    """An empty series for requests to `svc` ending in `outcome` with `code`."""
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
    return IstioSeries(labels=text, buckets=[0] * (len(ISTIO_BUCKETS_MS) + 1))


def render_exposition(
    istio: Sequence[IstioSeries],
    request_counts: Iterable[tuple[RequestCountKey, int]],
    services: Sequence[tuple[str, str]],
) -> str:
    """Prometheus text exposition (format 0.0.4); `services` names each service index."""
    lines = _istio_lines(istio) + _request_count_lines(request_counts, services)
    lines.append("")
    return "\n".join(lines)


def _istio_lines(istio: Sequence[IstioSeries]) -> list[str]:
    lines: list[str] = [
        "# HELP istio_requests_total Requests by source/destination workload and response.",
        "# TYPE istio_requests_total counter",
    ]
    for series in istio:
        lines.append(f"istio_requests_total{{{series.labels}}} {series.count}")
    lines.append("# HELP istio_request_duration_milliseconds Request duration in milliseconds.")
    lines.append("# TYPE istio_request_duration_milliseconds histogram")
    for series in istio:
        labels = series.labels
        running = 0
        for le, n in zip(_LE_LABELS, series.buckets, strict=True):
            running += n
            lines.append(f"istio_request_duration_milliseconds_bucket{{{labels}{le}}} {running}")
        lines.append(f"istio_request_duration_milliseconds_sum{{{labels}}} {series.total_ms!r}")
        lines.append(f"istio_request_duration_milliseconds_count{{{labels}}} {series.count}")
    return lines


def _request_count_lines(
    request_counts: Iterable[tuple[RequestCountKey, int]], services: Sequence[tuple[str, str]]
) -> list[str]:
    lines = [
        "# HELP sandbox_requests_total Simulated requests by header class and outcome (sandbox only).",
        "# TYPE sandbox_requests_total counter",
    ]
    for (index, version, cls, code), n in sorted(request_counts):
        name, ns = services[index]
        ua, ck = HEADER_CLASSES[cls]
        lines.append(
            f'sandbox_requests_total{{service="{name}",namespace="{ns}",version="{_escape(version)}",'
            f'user_agent_canary="{str(ua).lower()}",cookie_canary="{str(ck).lower()}",'
            f'response_code="{code}"}} {n}'
        )
    return lines
