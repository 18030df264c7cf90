"""Small helpers the test modules share: Istio objects of the seeded `reviews` service as the
sandbox stores them, and route destinations."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from kubernetes import client

from sandbox.client import ISTIO_GROUP, ISTIO_VERSION, SandboxInfo

NS = "bookinfo"

# Names that would break out of a PromQL label matcher, or are not Kubernetes names.
INJECTIONS = [
    'reviews"} or vector(1) #',
    'reviews",destination_version=~".*',
    "reviews}[5m]) or vector(1",
    "Reviews",
    "reviews\n",
    "",
    "a" * 64,
]
# Legal as a version (a Kubernetes label value, e.g. version=Reviews), not as a service or namespace.
LEGAL_VERSIONS = {"Reviews"}


def vs_of(cluster: SandboxInfo, name: str = "reviews", namespace: str = NS) -> dict[str, Any]:
    """The VirtualService as stored (read with the admin's kubeconfig)."""
    return cluster.istio_object("virtualservices", name, namespace)


def dr_of(cluster: SandboxInfo, name: str = "reviews", namespace: str = NS) -> dict[str, Any]:
    """The DestinationRule as stored (read with the admin's kubeconfig)."""
    return cluster.istio_object("destinationrules", name, namespace)


def dest(subset: str | None, weight: int | None = None, host: str = "reviews") -> dict[str, Any]:
    """One route destination: `host` (and `subset`), with `weight` when given."""
    d: dict[str, Any] = {"destination": {"host": host, **({"subset": subset} if subset else {})}}
    if weight is not None:
        d["weight"] = weight
    return d


def route_to(istio: client.CustomObjectsApi, http: list[dict[str, Any]]) -> str:
    """Add subset v2 to reviews' DestinationRule and replace its VirtualService's HTTP routes;
    returns the VirtualService's new resourceVersion."""
    args = (ISTIO_GROUP, ISTIO_VERSION, NS)
    rule = istio.get_namespaced_custom_object(*args, "destinationrules", "reviews")
    if all(s["name"] != "v2" for s in rule["spec"]["subsets"]):
        rule["spec"]["subsets"].append({"name": "v2", "labels": {"version": "v2"}})
        istio.replace_namespaced_custom_object(*args, "destinationrules", "reviews", rule)
    vs = istio.get_namespaced_custom_object(*args, "virtualservices", "reviews")
    vs["spec"]["http"] = http
    written = istio.replace_namespaced_custom_object(*args, "virtualservices", "reviews", vs)
    return written["metadata"]["resourceVersion"]


class VirtualServicePoller:
    """Reads the VirtualService every 0.2 s in a thread while a release runs (`with` block) and
    hands each read to `observe`; a read or an observation that fails is skipped, as the
    release may be between writes."""

    def __init__(self, mesh: SandboxInfo, request: Any) -> None:
        self.mesh, self.request = mesh, request
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def observe(self, vs: dict[str, Any]) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.observe(vs_of(self.mesh))
            time.sleep(0.2)

    def __enter__(self) -> Any:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
