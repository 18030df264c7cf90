"""A local stand-in for a Kubernetes cluster with Istio and Prometheus.

`python -m sandbox up|down|status|set|fault` (see sandbox/cli/). The Kubernetes API stand-in speaks
enough of the real API that the official client and kubectl work unmodified; the traffic
generator routes simulated requests by the stored VirtualService, as Envoy would, and
exports Istio's standard metrics for a real Prometheus to scrape.
"""
