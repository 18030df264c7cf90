"""Simulated mesh traffic: requests routed as Envoy would, exported as Istio's metrics.

- `routing` (with `matching` and `request`): pure routing; `routing_distribution(request,
  mesh)` answers "where does this request go?" as a distribution over `RouteOutcome`s.
- `generator`: `TrafficGenerator` emits requests per service every tick.
- `mirroring`: Istio's `mirror`: which requests are copied where, reported only by the
  mirror's pods.
- `istio_metrics`: the Istio metric series and their Prometheus exposition.
- `server`: `/metrics` and the control API (`make_generator_server`).
"""

from sandbox.traffic.generator import TrafficGenerator
from sandbox.traffic.istio_metrics import ISTIO_BUCKETS_MS
from sandbox.traffic.request import Request, header_class_headers
from sandbox.traffic.routing import MeshSnapshot, RouteOutcome, route_request, routing_distribution
from sandbox.traffic.server import make_generator_server

__all__ = [
    "ISTIO_BUCKETS_MS",
    "MeshSnapshot",
    "Request",
    "RouteOutcome",
    "TrafficGenerator",
    "header_class_headers",
    "make_generator_server",
    "route_request",
    "routing_distribution",
]
