"""Release bookkeeping kept on the VirtualService itself, as annotations.

- the lock: one release per service at a time; holder = "<dag_id>/<run_id>";
- the snapshot: the VirtualService and DestinationRule specs as they were when the lock was
  taken, so a rollback can restore them even after XCom was cleared by a task re-run;
- the outcome: which release last finished and how, so a task re-run after its release has
  finished can see that and change nothing (README: "Safety rules the code keeps").

All functions are pure edits of the VirtualService dict; the hook makes them atomic by
writing with the resourceVersion it read (a concurrent acquirer gets 409, re-reads, and
then sees the holder).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

LOCK_ANNOTATION = "istio-canary.io/release-lock"
SNAPSHOT_ANNOTATION = "istio-canary.io/release-snapshot"
OUTCOME_ANNOTATION = "istio-canary.io/last-release"
OWN_ANNOTATIONS = (LOCK_ANNOTATION, SNAPSHOT_ANNOTATION, OUTCOME_ANNOTATION)


def _now(now: datetime | None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _annotations(obj: dict[str, Any]) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def _read_json(obj: dict[str, Any], key: str) -> dict[str, Any] | None:
    raw = _annotations(obj).get(key)
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return {"unreadable": raw}
    return data if isinstance(data, dict) else {"unreadable": raw}


def _set_annotations(obj: dict[str, Any], values: dict[str, str | None]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    annotations = dict(_annotations(out))
    for key, value in values.items():
        if value is None:
            annotations.pop(key, None)
        else:
            annotations[key] = value
    meta = out.setdefault("metadata", {})
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    return out


def without_own_annotations(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as a person configured it: our bookkeeping removed (for snapshots, diffs)."""
    return _set_annotations(obj, dict.fromkeys(OWN_ANNOTATIONS))


@dataclass(frozen=True)
class LockInfo:
    holder: str
    since: str

    def describe(self) -> str:
        return f"{self.holder!r} (since {self.since})"


@dataclass(frozen=True)
class LastRelease:
    """How the last release of the service ended, as recorded on its VirtualService."""

    holder: str
    outcome: str  # "promoted" | "rolled_back"
    at: str


class LockHeldError(RuntimeError):
    """Another release holds the service. Names the holder so a person can act."""

    def __init__(self, service: str, lock: LockInfo) -> None:
        self.lock = lock
        super().__init__(
            f"service {service!r} is locked by release {lock.describe()}; wait for it to finish, "
            "or, if that run is no longer running, re-trigger with break_stale_lock=true"
        )


class NotLockHolderError(RuntimeError):
    """This run does not hold the lock (its release finished, or never started): change nothing."""


def lock_of(vs: dict[str, Any]) -> LockInfo | None:
    data = _read_json(vs, LOCK_ANNOTATION)
    if data is None:
        return None
    if "holder" not in data:
        # Unreadable lock: treat as held by an unknown holder rather than as free.
        return LockInfo(holder=str(data.get("unreadable", data)), since="?")
    return LockInfo(holder=str(data["holder"]), since=str(data.get("since", "?")))


def outcome_of(vs: dict[str, Any]) -> LastRelease | None:
    data = _read_json(vs, OUTCOME_ANNOTATION)
    if not data or "holder" not in data:
        return None
    return LastRelease(holder=str(data["holder"]), outcome=str(data.get("outcome")), at=str(data.get("at")))


def snapshot_of(vs: dict[str, Any]) -> dict[str, Any] | None:
    """{"virtualService": {...}, "destinationRule": {...} | None} recorded when the lock was taken."""
    data = _read_json(vs, SNAPSHOT_ANNOTATION)
    if not data or "virtualService" not in data:
        return None
    return data


def is_held_by(vs: dict[str, Any], holder: str) -> bool:
    current = lock_of(vs)
    return current is not None and current.holder == holder


def require_holder(vs: dict[str, Any], holder: str) -> None:
    """Raise NotLockHolderError unless `holder` holds the lock; the message says why not."""
    if is_held_by(vs, holder):
        return
    finished = outcome_of(vs)
    if finished is not None and finished.holder == holder:
        raise NotLockHolderError(f"release {holder!r} already finished: {finished.outcome} at {finished.at}")
    current = lock_of(vs)
    if current is not None:
        raise NotLockHolderError(f"the service is locked by another release, {current.describe()}")
    raise NotLockHolderError(f"release {holder!r} does not hold the lock (preflight has not taken it)")


def with_lock(
    vs: dict[str, Any],
    holder: str,
    snapshot: dict[str, Any],
    *,
    break_stale: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """`vs` with the lock held by `holder` and `snapshot` recorded beside it.

    Raises LockHeldError if another release holds it (unless `break_stale`, for a holder
    a person has checked is no longer running). Taking a lock this holder already has
    changes nothing: the first snapshot stays. Breaking a stale lock keeps the stale
    release's snapshot too: it is the routing from before that release touched anything.
    """
    current = lock_of(vs)
    if current is not None and current.holder == holder:
        return copy.deepcopy(vs)
    if current is not None and not break_stale:
        raise LockHeldError(vs["metadata"]["name"], current)
    kept = snapshot_of(vs) if current is not None else None
    return _set_annotations(
        vs,
        {
            LOCK_ANNOTATION: json.dumps({"holder": holder, "since": _now(now)}, sort_keys=True),
            SNAPSHOT_ANNOTATION: json.dumps(kept or snapshot, sort_keys=True, separators=(",", ":")),
        },
    )


def finished(vs: dict[str, Any], holder: str, outcome: str, now: datetime | None = None) -> dict[str, Any]:
    """`vs` with the lock and snapshot released and the outcome recorded. Only the holder may."""
    require_holder(vs, holder)
    return _set_annotations(
        vs,
        {
            LOCK_ANNOTATION: None,
            SNAPSHOT_ANNOTATION: None,
            OUTCOME_ANNOTATION: json.dumps(
                {"holder": holder, "outcome": outcome, "at": _now(now)}, sort_keys=True
            ),
        },
    )
