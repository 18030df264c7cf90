"""A version's pods: Ready, carrying the Envoy sidecar, and labelled so Istio's metrics name
the version the release selects them by."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from istio_canary.core.promql import (
    CANONICAL_REVISION_POD_LABELS,
    DESTINATION_VERSION,
    metric_label_for,
)

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


def _reported_version(labels: dict[str, Any], metric_label: str) -> tuple[str, str | None]:
    """(value Istio reports in `metric_label`, the pod label it comes from or None).

    As Istio does: destination_version is the label `version` or "unknown";
    destination_canonical_revision the first of its labels present, else "latest".
    """
    if metric_label == DESTINATION_VERSION:
        return (str(labels["version"]), "version") if "version" in labels else ("unknown", None)
    for key in CANONICAL_REVISION_POD_LABELS:
        if key in labels:
            return str(labels[key]), key
    return "latest", None


def _outranks(label: str, other: str) -> bool:
    """Istio reads `label` before `other` for destination_canonical_revision."""
    order = CANONICAL_REVISION_POD_LABELS
    return order.index(label) < order.index(other)


def metric_label_problems(pods: list[dict[str, Any]], version: str, version_label: str) -> list[str]:
    """Pods whose metrics would not carry `version`: one sentence per pod, with the fix.

    The release selects pods by `version_label` but judges them by the Istio metric label
    that reports it (`metric_label_for`). When a pod carries a label Istio reads first (for
    destination_canonical_revision: service.istio.io/canonical-revision over
    app.kubernetes.io/version over version) with another value, its requests are counted
    under that value and the analysis finds no traffic for `version`.
    """
    metric_label = metric_label_for(version_label)
    problems: list[str] = []
    for pod in pods:
        metadata = pod.get("metadata") or {}
        namespace, name = metadata.get("namespace"), metadata.get("name", "?")
        where = f"pod {namespace}/{name}" if namespace else f"pod {name}"
        reported, source = _reported_version(metadata.get("labels") or {}, metric_label)
        if reported == version:
            continue
        if source is None:
            missing = (
                "no label version" if metric_label == DESTINATION_VERSION
                else "none of the labels " + ", ".join(CANONICAL_REVISION_POD_LABELS)
            )
            fix = f"set label {version_label} to {version!r}"
            problems.append(
                f"{where}: Istio reports {metric_label}={reported!r} ({missing}), not {version!r}: {fix}"
            )
            continue
        if source == version_label:
            fix = f"set it to {version!r}"
        elif _outranks(source, version_label):
            fix = f"remove that label or set it to {version!r}"
        else:
            fix = f"set label {version_label} to {version!r} (Istio reads it before {source})"
        problems.append(
            f"{where}: Istio reports {metric_label}={reported!r} from label {source}, not {version!r}: {fix}"
        )
    return problems
