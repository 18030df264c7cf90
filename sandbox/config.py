"""The sandbox's world: which services exist, their versions, and how each version behaves.

A world is read from YAML (default: `default_world.yaml` beside this file), checked field by
field (errors name the field path and the value, e.g. `services[0].versions.v2.error_rate=1.5`),
and then seeded into the Store as the objects a real cluster would hold: a Service, one Pod
per replica and version, one Deployment per version (its status counting those pods) and an
autoscaling/v2 HorizontalPodAutoscaler where a version sets `hpa_max_replicas`, a
DestinationRule and a VirtualService routing everything to the stable version.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sandbox.errors import SandboxInputError, require_dns1123_label
from sandbox.hosts import service_fqdn
from sandbox.store import Store

DEFAULT_WORLD_FILE = Path(__file__).with_name("default_world.yaml")

# Fields a service or version may leave out, and the values they then take.
SERVICE_DEFAULTS: dict[str, Any] = {
    "namespace": "bookinfo",
    "port": 9080,
    "rps": 50.0,
    "header_fraction": 0.1,
    "cookie_fraction": 0.1,
    # Returning users: 0, every request is a new anonymous client (no cookies kept); N, the
    # requests come from a pool of N clients, each keeping the cookies responses set.
    "clients": 0,
}
VERSION_DEFAULTS: dict[str, Any] = {
    "error_rate": 0.0,
    "latency_ms_p50": 20.0,
    "latency_ms_p99": 80.0,
    "replicas": 1,
    "sidecar": True,
    "ready": True,
    # None: no HorizontalPodAutoscaler; a number: an autoscaling/v2 HPA on the version's
    # Deployment with this maxReplicas (minReplicas: its replicas, at least 1).
    "hpa_max_replicas": None,
}
DEFAULT_VERSIONS = ("v1", "v2")
_WORLD_FIELDS = {"tick_ms", "services"}
_SERVICE_FIELDS = {*SERVICE_DEFAULTS, "name", "stable", "versions"}
_VERSION_FIELDS = set(VERSION_DEFAULTS)
# Fields `set` may change while the sandbox runs, per service and per version.
SERVICE_BEHAVIOUR_FIELDS = ("rps", "header_fraction", "cookie_fraction", "clients")
MAX_CLIENTS = 100_000
VERSION_BEHAVIOUR_FIELDS = ("error_rate", "latency_ms_p50", "latency_ms_p99")


@dataclass
class VersionConfig:
    name: str
    error_rate: float
    latency_ms_p50: float
    latency_ms_p99: float
    replicas: int = 1
    sidecar: bool = True
    ready: bool = True
    hpa_max_replicas: int | None = None

    def behaviour(self) -> dict[str, float]:
        return {f: getattr(self, f) for f in VERSION_BEHAVIOUR_FIELDS}


@dataclass
class ServiceConfig:
    name: str
    namespace: str
    port: int
    rps: float
    header_fraction: float
    cookie_fraction: float
    stable: str
    versions: dict[str, VersionConfig]
    clients: int = 0

    @property
    def fqdn(self) -> str:
        return service_fqdn(self.name, self.namespace)

    def behaviour(self) -> dict[str, Any]:
        out: dict[str, Any] = {f: getattr(self, f) for f in SERVICE_BEHAVIOUR_FIELDS}
        out["versions"] = {name: v.behaviour() for name, v in self.versions.items()}
        return out


@dataclass
class WorldConfig:
    services: list[ServiceConfig]
    tick_ms: int = 100
    source: str = field(default="default_world.yaml")

    def find_service(self, name: str | None, namespace: str | None) -> ServiceConfig:
        """The service `set` means: by name and namespace, either may be left out if unambiguous."""
        found = [
            s
            for s in self.services
            if (name is None or s.name == name) and (namespace is None or s.namespace == namespace)
        ]
        if len(found) == 1:
            return found[0]
        known = ", ".join(f"{s.namespace}/{s.name}" for s in self.services)
        if not found:
            fld, value = ("service", name) if name is not None else ("namespace", namespace)
            raise SandboxInputError(fld, value, f"no such service in the sandbox (known: {known})")
        raise SandboxInputError("service", name, f"ambiguous, give the namespace too (known: {known})")


# --- reading and checking -------------------------------------------------------------------


def load_config(path: str | Path | None = None) -> WorldConfig:
    """Read and check a world file; `None` means the default world."""
    file = Path(path) if path is not None else DEFAULT_WORLD_FILE
    try:
        text = file.read_text()
    except OSError as exc:
        raise SandboxInputError("config", str(file), f"cannot read: {exc.strerror or exc}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SandboxInputError("config", str(file), f"not valid YAML: {exc}") from exc
    world = parse_config(raw)
    world.source = str(file)
    return world


def parse_config(raw: Any) -> WorldConfig:
    """Check a world given as plain data (as loaded from YAML) and build its typed form."""
    if raw is None:
        raw = {}
    _require_mapping("config", raw)
    _reject_unknown("", raw, _WORLD_FIELDS)
    tick_ms = _require_int("tick_ms", raw.get("tick_ms", 100), 20, 1000)
    services_raw = raw.get("services")
    if not isinstance(services_raw, list) or not services_raw:
        raise SandboxInputError("services", services_raw, "must be a non-empty list of services")
    services = [_parse_service(f"services[{i}]", s) for i, s in enumerate(services_raw)]
    seen: dict[tuple[str, str], int] = {}
    for i, svc in enumerate(services):
        key = (svc.namespace, svc.name)
        if key in seen:
            raise SandboxInputError(
                f"services[{i}].name",
                svc.name,
                f"duplicate of services[{seen[key]}] in namespace {svc.namespace!r}",
            )
        seen[key] = i
    return WorldConfig(services=services, tick_ms=tick_ms)


def _parse_service(path: str, raw: Any) -> ServiceConfig:
    _require_mapping(path, raw)
    _reject_unknown(path, raw, _SERVICE_FIELDS)
    merged = {**SERVICE_DEFAULTS, **raw}
    name = require_dns1123_label(f"{path}.name", raw.get("name"))
    namespace = require_dns1123_label(f"{path}.namespace", merged["namespace"])
    port = _require_int(f"{path}.port", merged["port"], 1, 65535)
    rps = _require_number(f"{path}.rps", merged["rps"], 0.0, None)
    header_fraction = _require_number(f"{path}.header_fraction", merged["header_fraction"], 0.0, 1.0)
    cookie_fraction = _require_number(f"{path}.cookie_fraction", merged["cookie_fraction"], 0.0, 1.0)
    versions_raw = raw.get("versions", {v: {} for v in DEFAULT_VERSIONS})
    if not isinstance(versions_raw, dict) or not versions_raw:
        raise SandboxInputError(
            f"{path}.versions", versions_raw, "must be a non-empty mapping of version name to settings"
        )
    versions = {
        str(v): _parse_version(f"{path}.versions.{v}", v, settings) for v, settings in versions_raw.items()
    }
    stable = raw.get("stable", next(iter(versions)))
    if stable not in versions:
        raise SandboxInputError(f"{path}.stable", stable, f"must be one of the versions {sorted(versions)}")
    clients = _require_int(f"{path}.clients", merged["clients"], 0, MAX_CLIENTS)
    return ServiceConfig(name, namespace, port, rps, header_fraction, cookie_fraction, stable, versions, clients)


def _parse_version(path: str, name: Any, raw: Any) -> VersionConfig:
    # Version names become pod labels and Istio subset names: DNS-1123 labels.
    require_dns1123_label(path, name)
    if raw is None:
        raw = {}
    _require_mapping(path, raw)
    _reject_unknown(path, raw, _VERSION_FIELDS)
    merged = {**VERSION_DEFAULTS, **raw}
    behaviour = check_version_behaviour(path, merged)
    return VersionConfig(
        name=name,
        replicas=_require_int(f"{path}.replicas", merged["replicas"], 0, 1000),
        sidecar=_require_bool(f"{path}.sidecar", merged["sidecar"]),
        ready=_require_bool(f"{path}.ready", merged["ready"]),
        hpa_max_replicas=None if merged["hpa_max_replicas"] is None
        else _require_int(f"{path}.hpa_max_replicas", merged["hpa_max_replicas"], 1, 1000),
        **behaviour,
    )


def check_version_behaviour(path: str, values: dict[str, Any]) -> dict[str, float]:
    """error_rate in [0, 1], p50 > 0, p99 >= p50. `path` prefixes the field names in errors."""
    prefix = f"{path}." if path else ""
    error_rate = _require_number(f"{prefix}error_rate", values["error_rate"], 0.0, 1.0)
    p50 = _require_number(f"{prefix}latency_ms_p50", values["latency_ms_p50"], 0.0, None)
    if p50 <= 0:
        raise SandboxInputError(f"{prefix}latency_ms_p50", values["latency_ms_p50"], "must be greater than 0")
    p99 = _require_number(f"{prefix}latency_ms_p99", values["latency_ms_p99"], 0.0, None)
    if p99 < p50:
        raise SandboxInputError(
            f"{prefix}latency_ms_p99", values["latency_ms_p99"], f"must be at least latency_ms_p50 ({p50:g})"
        )
    return {"error_rate": error_rate, "latency_ms_p50": p50, "latency_ms_p99": p99}


def check_service_behaviour(path: str, values: dict[str, Any]) -> dict[str, float]:
    prefix = f"{path}." if path else ""
    return {
        "rps": _require_number(f"{prefix}rps", values["rps"], 0.0, None),
        "header_fraction": _require_number(f"{prefix}header_fraction", values["header_fraction"], 0.0, 1.0),
        "cookie_fraction": _require_number(f"{prefix}cookie_fraction", values["cookie_fraction"], 0.0, 1.0),
        "clients": _require_int(f"{prefix}clients", values["clients"], 0, MAX_CLIENTS),
    }


def _require_mapping(path: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise SandboxInputError(path, value, "must be a mapping")


def _reject_unknown(path: str, raw: dict[str, Any], allowed: set[str]) -> None:
    for key in raw:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise SandboxInputError(where, raw[key], f"unknown field (allowed: {', '.join(sorted(allowed))})")


def _require_number(path: str, value: Any, low: float | None, high: float | None) -> float:
    # bool is an int subclass: `rps: true` is a typo, not 1.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SandboxInputError(path, value, "must be a number")
    if low is not None and value < low:
        raise SandboxInputError(
            path, value, f"must be at least {low:g}" if high is None else f"must be in [{low:g}, {high:g}]"
        )
    if high is not None and value > high:
        raise SandboxInputError(path, value, f"must be in [{low:g}, {high:g}]")
    return float(value)


def _require_int(path: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SandboxInputError(path, value, "must be an integer")
    if not low <= value <= high:
        raise SandboxInputError(path, value, f"must be in [{low}, {high}]")
    return value


def _require_bool(path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SandboxInputError(path, value, "must be true or false")
    return value


# --- seeding the store ----------------------------------------------------------------------


def _short_hash(*parts: str, length: int = 10) -> str:
    # Deterministic, so a re-seeded world has the same pod names; digits+letters like ReplicaSets.
    digest = hashlib.sha1("/".join(parts).encode()).hexdigest()
    return digest[:length]


def service_objects(svc: ServiceConfig) -> list[tuple[str, dict[str, Any]]]:
    """The (resource plural, object) pairs one service is seeded with."""
    ns, name = svc.namespace, svc.name
    objs: list[tuple[str, dict[str, Any]]] = [
        (
            "services",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": ns, "labels": {"app": name, "service": name}},
                "spec": {
                    "selector": {"app": name},
                    "ports": [{"name": "http", "port": svc.port, "targetPort": svc.port, "protocol": "TCP"}],
                    "type": "ClusterIP",
                    "clusterIP": _cluster_ip(ns, name),
                },
            },
        )
    ]
    for version in svc.versions.values():
        for replica in range(version.replicas):
            objs.append(("pods", _pod(svc, version, replica)))
        objs.append(("deployments", _deployment(svc, version)))
        if version.hpa_max_replicas is not None:
            objs.append(("horizontalpodautoscalers", _hpa(svc, version)))
    objs.append(
        (
            "destinationrules",
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": {"name": name, "namespace": ns},
                "spec": {
                    "host": name,
                    "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}},
                    "subsets": [{"name": svc.stable, "labels": {"version": svc.stable}}],
                },
            },
        )
    )
    objs.append(
        (
            "virtualservices",
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": {"name": name, "namespace": ns},
                "spec": {
                    "hosts": [name],
                    "http": [{"route": [{"destination": {"host": name, "subset": svc.stable}}]}],
                },
            },
        )
    )
    return objs


def _cluster_ip(ns: str, name: str) -> str:
    h = int(_short_hash(ns, name, length=4), 16)
    return f"10.96.{h >> 8}.{(h & 0xFF) or 1}"


def _pod(svc: ServiceConfig, version: VersionConfig, replica: int) -> dict[str, Any]:
    ns, app, v = svc.namespace, svc.name, version.name
    pod_name = f"{app}-{v}-{_short_hash(ns, app, v, str(replica))}"
    ready = "True" if version.ready else "False"
    containers = [
        {
            "name": app,
            "image": f"docker.io/istio/examples-bookinfo-{app}-{v}:1.20.1",
            "ports": [{"containerPort": svc.port, "protocol": "TCP"}],
        }
    ]
    if version.sidecar:
        containers.append({"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.0"})
    labels = {
        "app": app,
        "version": v,
        "service.istio.io/canonical-name": app,
        "service.istio.io/canonical-revision": v,
    }
    if version.sidecar:
        labels["security.istio.io/tlsMode"] = "istio"
    started = "2025-01-01T00:00:00Z"
    pod_ip = f"10.244.{int(_short_hash(pod_name, length=2), 16)}.{replica + 2}"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod_name, "namespace": ns, "labels": labels},
        "spec": {"containers": containers, "nodeName": "sandbox-node"},
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": ready},
                {"type": "ContainersReady", "status": ready},
                {"type": "PodScheduled", "status": "True"},
            ],
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c["image"],
                    # The official client refuses a ContainerStatus without imageID.
                    "imageID": f"{c['image'].rsplit(':', 1)[0]}@sha256:{hashlib.sha256(c['image'].encode()).hexdigest()}",
                    "containerID": f"containerd://{hashlib.sha256((pod_name + c['name']).encode()).hexdigest()}",
                    "ready": version.ready,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": started}},
                }
                for c in containers
            ],
            "hostIP": "10.0.0.1",
            "hostIPs": [{"ip": "10.0.0.1"}],
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "startTime": started,
        },
    }


def _deployment(svc: ServiceConfig, version: VersionConfig) -> dict[str, Any]:
    """The version's Deployment: its pod template carries the seeded pods' labels (a
    Deployment of the pods), its status their count and readiness. No controller acts on it."""
    ns, app, v = svc.namespace, svc.name, version.name
    pod = _pod(svc, version, 0)
    template_labels = {k: val for k, val in pod["metadata"]["labels"].items() if k != "security.istio.io/tlsMode"}
    containers = [c for c in pod["spec"]["containers"] if c["name"] != "istio-proxy"]
    ready = version.replicas if version.ready else 0
    status: dict[str, Any] = {"observedGeneration": 1, "replicas": version.replicas,
                              "updatedReplicas": version.replicas}
    if ready:  # as the server writes it: zero counts are left out
        status.update(readyReplicas=ready, availableReplicas=ready)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{app}-{v}", "namespace": ns, "labels": {"app": app, "version": v}},
        "spec": {
            "replicas": version.replicas,
            "selector": {"matchLabels": {"app": app, "version": v}},
            "template": {"metadata": {"labels": template_labels}, "spec": {"containers": containers}},
        },
        "status": status,
    }


def _hpa(svc: ServiceConfig, version: VersionConfig) -> dict[str, Any]:
    maximum = version.hpa_max_replicas or 1
    name = f"{svc.name}-{version.name}"
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": svc.namespace},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": max(1, min(version.replicas, maximum)),
            "maxReplicas": maximum,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}],
        },
        "status": {"currentReplicas": version.replicas, "desiredReplicas": version.replicas},
    }


def namespace_object(name: str) -> dict[str, Any]:
    """A world namespace, labelled for sidecar injection as a meshed namespace is."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, "istio-injection": "enabled"}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def seed_world(store: Store, world: WorldConfig) -> int:
    """Put every seeded object into the store; returns how many were written."""
    written = 0
    for ns in sorted({s.namespace for s in world.services}):
        store.put("namespaces", namespace_object(ns))
        written += 1
    for svc in world.services:
        for resource, obj in service_objects(svc):
            store.put(resource, obj)
            written += 1
    return written


SEEDED_RESOURCES = ("services", "pods", "deployments", "horizontalpodautoscalers", "destinationrules",
                    "virtualservices")


def reseed_world(store: Store, world: WorldConfig) -> int:
    """Back to the seeded state in the world's namespaces: objects added since are deleted."""
    namespaces = {s.namespace for s in world.services}
    with store.lock:
        for resource in SEEDED_RESOURCES:
            for obj in store.list(resource):
                ns = obj["metadata"].get("namespace", "")
                if ns in namespaces:
                    store.delete(resource, ns, obj["metadata"]["name"])
        return seed_world(store, world)
