"""Readiness of a version's pods: Ready, and carrying the Envoy sidecar."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SIDECAR_CONTAINER = "istio-proxy"


@dataclass(frozen=True)
class VersionPods:
    version: str
    total: int
    ready_with_sidecar: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.ready_with_sidecar > 0

    def describe(self) -> str:
        text = f"version {self.version}: {self.ready_with_sidecar}/{self.total} pods Ready with istio-proxy"
        return text + (f" ({'; '.join(self.problems)})" if self.problems else "")


def _has_sidecar(pod: dict[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    containers = list(spec.get("containers") or [])
    # Native sidecars (Istio >= 1.19 on k8s >= 1.28) run istio-proxy as an init container.
    containers += [c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
    return any(c.get("name") == SIDECAR_CONTAINER for c in containers)


def _is_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def summarize_version_pods(version: str, pods: list[dict[str, Any]]) -> VersionPods:
    problems: list[str] = []
    good = 0
    for pod in pods:
        name = pod.get("metadata", {}).get("name", "?")
        ready, sidecar = _is_ready(pod), _has_sidecar(pod)
        if ready and sidecar:
            good += 1
        elif not sidecar:
            problems.append(f"{name} has no {SIDECAR_CONTAINER} container (sidecar not injected)")
        else:
            problems.append(f"{name} is not Ready")
    if not pods:
        problems.append("no pods match")
    return VersionPods(version=version, total=len(pods), ready_with_sidecar=good, problems=problems)
