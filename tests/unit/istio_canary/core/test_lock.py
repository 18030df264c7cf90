import json

import pytest

from istio_canary.core.lock import (
    LOCK_ANNOTATION,
    LockHeldError,
    NotLockHolderError,
    finished,
    is_held_by,
    lock_of,
    outcome_of,
    require_holder,
    snapshot_of,
    with_lock,
    without_own_annotations,
)

VS = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "reviews", "namespace": "bookinfo", "annotations": {"team": "books"}},
    "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]},
}
SNAP = {"virtualService": VS["spec"], "destinationRule": None}


def test_lock_is_taken_recorded_and_keeps_foreign_annotations():
    locked = with_lock(VS, "rel/run1", SNAP)
    assert is_held_by(locked, "rel/run1")
    assert locked["metadata"]["annotations"]["team"] == "books"
    assert snapshot_of(locked) == SNAP
    assert "annotations" in VS["metadata"] and LOCK_ANNOTATION not in VS["metadata"]["annotations"]


def test_second_holder_is_refused_with_the_holder_named():
    locked = with_lock(VS, "rel/run1", SNAP)
    with pytest.raises(LockHeldError, match="rel/run1"):
        with_lock(locked, "rel/run2", SNAP)


def test_retaking_own_lock_keeps_first_snapshot():
    locked = with_lock(VS, "rel/run1", SNAP)
    again = with_lock(locked, "rel/run1", {"virtualService": {"hosts": ["changed"]}})
    assert snapshot_of(again) == SNAP


def test_breaking_a_stale_lock_keeps_the_stale_release_snapshot():
    locked = with_lock(VS, "rel/stale", SNAP)
    broken = with_lock(locked, "rel/new", {"virtualService": {"hosts": ["half-released"]}}, break_stale=True)
    assert lock_of(broken).holder == "rel/new"
    assert snapshot_of(broken) == SNAP


def test_finish_releases_lock_and_records_outcome_then_reruns_change_nothing():
    done = finished(with_lock(VS, "rel/run1", SNAP), "rel/run1", "promoted")
    assert lock_of(done) is None and snapshot_of(done) is None
    assert outcome_of(done).outcome == "promoted"
    with pytest.raises(NotLockHolderError, match="already finished: promoted"):
        require_holder(done, "rel/run1")
    with pytest.raises(NotLockHolderError, match="does not hold"):
        finished(done, "rel/other", "rolled_back")


def test_unreadable_lock_counts_as_held():
    vs = json.loads(json.dumps(VS))
    vs["metadata"]["annotations"][LOCK_ANNOTATION] = "garbage"
    with pytest.raises(LockHeldError):
        with_lock(vs, "rel/run1", SNAP)


def test_without_own_annotations_leaves_other_annotations():
    done = finished(with_lock(VS, "rel/run1", SNAP), "rel/run1", "rolled_back")
    assert without_own_annotations(done)["metadata"]["annotations"] == {"team": "books"}
