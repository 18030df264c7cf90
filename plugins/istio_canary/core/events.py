"""Kubernetes Events that tell a release's story on its VirtualService.

Each step, promotion and rollback is recorded as a core/v1 Event whose involvedObject is the
VirtualService, so `kubectl describe virtualservice <name>` lists them (kubectl finds events by
involvedObject name, namespace, kind and uid) and `kubectl get events` shows them beside the
cluster's own. Pure: the operators build the body here and the hook sends it.

The body fills both the legacy fields kubectl prints (source, first/lastTimestamp, count) and
the newer ones (eventTime, reportingComponent/Instance, action): with eventTime set the API
server requires reportingComponent, reportingInstance, action and reason, and caps the message
at 1024 characters.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

REPORTING_COMPONENT = "istio-canary"
NORMAL, WARNING = "Normal", "Warning"
ISTIO_API_VERSION = "networking.istio.io/v1"

# Reasons, CamelCase as Kubernetes' own (kubectl's REASON column).
STEP_APPLIED = "CanaryStepApplied"
PROMOTED = "CanaryPromoted"
ROLLED_BACK = "CanaryRolledBack"
ROLLBACK_FAILED = "CanaryRollbackFailed"

# The API server's limits on an Event with eventTime set (core/v1 validation).
MESSAGE_LIMIT = 1024
FIELD_LIMIT = 128  # reason, action, reportingInstance
NAME_LIMIT = 253  # metadata.name: a DNS subdomain
_SUFFIX_HEX = 24  # 16 hex digits of nanoseconds, then 8 of a digest


@dataclass(frozen=True)
class ReleaseEvent:
    """What happened, before it is addressed to an object: reason, action, type, and what to say."""

    reason: str
    action: str
    type: str
    summary: str


@dataclass(frozen=True)
class EventOrigin:
    """Who reports it: the DAG run and task, and the worker's instance name."""

    dag_id: str
    run_id: str
    task_id: str
    instance: str


@dataclass(frozen=True)
class Versions:
    """The service and versions a release moves between, for the messages."""

    namespace: str
    service: str
    stable: str
    canary: str


def step_event(versions: Versions, canary_weight: int, stable_weight: int, other_weight: int = 0,
               match_route: str | None = None) -> ReleaseEvent:
    """A routing step written: the owned route's shares, and the canary match route if on."""
    other = f", other destinations {other_weight}%" if other_weight else ""
    match = f"; requests matching {match_route} go to {versions.canary}" if match_route else ""
    label = f"{canary_weight}%" if not match_route or canary_weight else "targeted"
    return ReleaseEvent(
        STEP_APPLIED, "SetRoute", NORMAL,
        f"Step {label}: {versions.service} canary {versions.canary} {canary_weight}%, "
        f"stable {versions.stable} {stable_weight}%{other}{match}",
    )


def promoted_event(versions: Versions) -> ReleaseEvent:
    return ReleaseEvent(
        PROMOTED, "Promote", NORMAL,
        f"Promoted {versions.service} {versions.canary}: all traffic of the owned route to "
        f"{versions.canary} (was {versions.stable}), canary match route removed, release lock released",
    )


def rolled_back_event(versions: Versions, from_weight: int | None, why: str) -> ReleaseEvent:
    was = f" from canary weight {from_weight}%" if from_weight is not None else ""
    because = f": {why}" if why else ""
    return ReleaseEvent(
        ROLLED_BACK, "Rollback", WARNING,
        f"Rolled back {versions.service} {versions.canary}{was}: routing restored from the "
        f"snapshot, traffic on {versions.stable}{because}",
    )


def rollback_failed_event(versions: Versions, where: str, error: str) -> ReleaseEvent:
    return ReleaseEvent(
        ROLLBACK_FAILED, "Rollback", WARNING,
        f"Rollback of {versions.service} {versions.canary} FAILED: {where}. Fix routing by hand or "
        f"clear the rollback task. Error: {error}",
    )


def involved_object(vs: Mapping[str, Any], namespace: str, name: str) -> dict[str, Any]:
    """The VirtualService reference: uid and resourceVersion when the object is known (kubectl
    describe matches on the uid, so an event without one only shows in `kubectl get events`)."""
    meta = vs.get("metadata") or {}
    ref = {
        "apiVersion": vs.get("apiVersion") or ISTIO_API_VERSION,
        "kind": "VirtualService",
        "namespace": meta.get("namespace") or namespace,
        "name": meta.get("name") or name,
    }
    for key in ("uid", "resourceVersion"):
        if meta.get(key):
            ref[key] = str(meta[key])
    return ref


def event_name(involved: Mapping[str, Any], event: ReleaseEvent, origin: EventOrigin, at: datetime) -> str:
    """`<object>.<hex>`: nanoseconds first, so names sort in time order as client-go's do (a
    list comes back sorted by name), then a digest of what the event records, so two reporters
    in the same nanosecond still differ. The same inputs give the same name."""
    nanos = int(at.timestamp()) * 1_000_000_000 + at.microsecond * 1000
    digest = hashlib.sha256("\n".join((
        origin.dag_id, origin.run_id, origin.task_id, event.reason, event.summary,
        str(involved.get("uid", "")), str(involved.get("resourceVersion", "")),
    )).encode()).hexdigest()
    suffix = f"{nanos:016x}"[-16:] + digest[:_SUFFIX_HEX - 16]
    prefix = str(involved["name"])[: NAME_LIMIT - len(suffix) - 1].rstrip(".-")
    return f"{prefix}.{suffix}"


def event_message(event: ReleaseEvent, involved: Mapping[str, Any], origin: EventOrigin) -> str:
    """The summary, the object, and the run: the run part is never cut, the summary is when the
    whole would pass the API server's limit."""
    where = f" (VirtualService {involved['namespace']}/{involved['name']})"
    tail = f"; run {origin.run_id} of DAG {origin.dag_id}, task {origin.task_id}"
    room = MESSAGE_LIMIT - len(where) - len(tail)
    summary = event.summary if len(event.summary) <= room else event.summary[: max(room - 3, 0)] + "..."
    return (summary + where + tail)[:MESSAGE_LIMIT]


def _micro(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _seconds(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_body(event: ReleaseEvent, involved: Mapping[str, Any], origin: EventOrigin, at: datetime) -> dict[str, Any]:
    """The core/v1 Event to create in the VirtualService's namespace (`at`: timezone-aware)."""
    if at.tzinfo is None:
        raise ValueError(f"event time {at!r} has no time zone")
    if event.type not in (NORMAL, WARNING):
        raise ValueError(f"event type {event.type!r}: must be {NORMAL} or {WARNING}")
    involved = dict(involved)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": event_name(involved, event, origin, at),
            "namespace": involved["namespace"],
            # The DAG as a label (`kubectl get events -l istio-canary.io/dag-id=...`); the run id
            # as an annotation, since run ids (`manual__2026-...+00:00`) are no label values.
            "labels": {"app.kubernetes.io/managed-by": REPORTING_COMPONENT}
            | ({"istio-canary.io/dag-id": origin.dag_id} if _label_value(origin.dag_id) else {}),
            "annotations": {"istio-canary.io/run-id": origin.run_id, "istio-canary.io/dag-id": origin.dag_id},
        },
        "involvedObject": involved,
        "reason": event.reason[:FIELD_LIMIT],
        "message": event_message(event, involved, origin),
        "type": event.type,
        "action": event.action[:FIELD_LIMIT],
        "source": {"component": REPORTING_COMPONENT},
        "reportingComponent": REPORTING_COMPONENT,
        "reportingInstance": (origin.instance or REPORTING_COMPONENT)[:FIELD_LIMIT],
        "firstTimestamp": _seconds(at),
        "lastTimestamp": _seconds(at),
        "eventTime": _micro(at),
        "count": 1,
    }


def _label_value(value: str) -> bool:
    """A valid Kubernetes label value: at most 63 characters, alphanumerics and -_. inside."""
    return len(value) <= 63 and re.fullmatch(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?", value) is not None
