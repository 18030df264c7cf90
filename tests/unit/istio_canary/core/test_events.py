"""The release's Kubernetes Events: what each says, whom it names, and the API server's limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from istio_canary.core.events import (
    MESSAGE_LIMIT,
    NAME_LIMIT,
    NORMAL,
    PROMOTED,
    ROLLBACK_FAILED,
    ROLLED_BACK,
    STEP_APPLIED,
    WARNING,
    EventOrigin,
    ReleaseEvent,
    Versions,
    event_body,
    event_name,
    involved_object,
    promoted_event,
    rollback_failed_event,
    rolled_back_event,
    step_event,
)

VERSIONS = Versions("bookinfo", "reviews", "v1", "v2")
ORIGIN = EventOrigin("istio_canary_release", "manual__2026-12-03T10:00:00+00:00", "step_10.set_route", "worker-1")
AT = datetime(2026, 12, 3, 10, 0, 5, 123456, tzinfo=UTC)
VS = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "reviews", "namespace": "bookinfo", "uid": "0b5c-uid", "resourceVersion": "42"},
}


def body_of(event: ReleaseEvent, vs: dict | None = None, origin: EventOrigin = ORIGIN, at: datetime = AT) -> dict:
    return event_body(event, involved_object(VS if vs is None else vs, "bookinfo", "reviews"), origin, at)


def test_a_step_event_names_the_object_the_weights_and_the_run() -> None:
    body = body_of(step_event(VERSIONS, 10, 90))
    assert body["apiVersion"] == "v1" and body["kind"] == "Event"
    assert body["involvedObject"] == {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                                      "namespace": "bookinfo", "name": "reviews", "uid": "0b5c-uid",
                                      "resourceVersion": "42"}
    assert body["metadata"]["namespace"] == "bookinfo"
    assert (body["reason"], body["type"], body["action"]) == (STEP_APPLIED, NORMAL, "SetRoute")
    assert body["message"] == (
        "Step 10%: reviews canary v2 10%, stable v1 90% (VirtualService bookinfo/reviews); "
        "run manual__2026-12-03T10:00:00+00:00 of DAG istio_canary_release, task step_10.set_route"
    )
    assert body["metadata"]["annotations"]["istio-canary.io/run-id"] == ORIGIN.run_id
    assert body["metadata"]["labels"]["istio-canary.io/dag-id"] == "istio_canary_release"


def test_timestamps_source_and_count_fill_both_the_legacy_and_the_new_fields() -> None:
    body = body_of(promoted_event(VERSIONS))
    assert body["firstTimestamp"] == body["lastTimestamp"] == "2026-12-03T10:00:05Z"
    assert body["eventTime"] == "2026-12-03T10:00:05.123456Z"
    assert body["count"] == 1
    assert body["source"] == {"component": "istio-canary"}
    assert (body["reportingComponent"], body["reportingInstance"]) == ("istio-canary", "worker-1")


def test_other_destinations_and_the_match_route_are_said() -> None:
    weighted = step_event(VERSIONS, 8, 72, other_weight=20)
    assert "canary v2 8%, stable v1 72%, other destinations 20%" in weighted.summary
    targeted = step_event(VERSIONS, 0, 100, match_route="header user-agent: canary")
    assert targeted.summary.startswith("Step targeted: reviews canary v2 0%, stable v1 100%")
    assert "requests matching header user-agent: canary go to v2" in targeted.summary


@pytest.mark.parametrize(
    ("event", "reason", "kind", "says"),
    [
        (promoted_event(VERSIONS), PROMOTED, NORMAL, "Promoted reviews v2"),
        (rolled_back_event(VERSIONS, 10, "step_10: fail"), ROLLED_BACK, WARNING,
         "Rolled back reviews v2 from canary weight 10%: routing restored from the snapshot, traffic on v1: step_10: fail"),
        (rolled_back_event(VERSIONS, None, ""), ROLLED_BACK, WARNING,
         "Rolled back reviews v2: routing restored from the snapshot, traffic on v1"),
        (rollback_failed_event(VERSIONS, "canary weight 50%", "HTTP 503"), ROLLBACK_FAILED, WARNING,
         "Rollback of reviews v2 FAILED: canary weight 50%"),
    ],
)
def test_promotion_and_rollback_events(event: ReleaseEvent, reason: str, kind: str, says: str) -> None:
    body = body_of(event)
    assert (body["reason"], body["type"]) == (reason, kind)
    assert body["message"].startswith(says), body["message"]


def test_an_unknown_object_is_named_without_uid() -> None:
    """When the VirtualService could not be read (the API failing during a rollback)."""
    ref = involved_object({}, "bookinfo", "reviews")
    assert ref == {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                   "namespace": "bookinfo", "name": "reviews"}


def test_names_are_the_object_then_hex_sorting_in_time_order_and_repeatable() -> None:
    first = event_name(involved_object(VS, "bookinfo", "reviews"), step_event(VERSIONS, 10, 90), ORIGIN, AT)
    later = event_name(involved_object(VS, "bookinfo", "reviews"), step_event(VERSIONS, 50, 50), ORIGIN,
                       AT + timedelta(microseconds=1))
    prefix, _, suffix = first.partition(".")
    assert prefix == "reviews" and len(suffix) == 24 and int(suffix, 16) >= 0
    assert first < later
    assert first == event_name(involved_object(VS, "bookinfo", "reviews"), step_event(VERSIONS, 10, 90), ORIGIN, AT)
    # Same instant, another event: still another name.
    assert first != event_name(involved_object(VS, "bookinfo", "reviews"), promoted_event(VERSIONS), ORIGIN, AT)


def test_a_long_object_name_is_cut_to_fit_a_name() -> None:
    long_vs = {"metadata": {"name": "r" * 253, "namespace": "bookinfo"}}
    name = body_of(promoted_event(VERSIONS), long_vs)["metadata"]["name"]
    assert len(name) <= NAME_LIMIT and name.startswith("rrr")


def test_a_long_message_keeps_the_run_and_fits_the_limit() -> None:
    body = body_of(rollback_failed_event(VERSIONS, "weight unknown", "x" * 5000))
    assert len(body["message"]) == MESSAGE_LIMIT
    assert body["message"].endswith(f"run {ORIGIN.run_id} of DAG istio_canary_release, task step_10.set_route")
    assert "..." in body["message"]


def test_a_run_id_that_is_no_label_value_is_an_annotation_only() -> None:
    origin = EventOrigin("d" * 70, "manual__x", "t", "")
    body = body_of(promoted_event(VERSIONS), origin=origin)
    assert "istio-canary.io/dag-id" not in body["metadata"]["labels"]
    assert body["metadata"]["annotations"]["istio-canary.io/dag-id"] == "d" * 70
    assert body["reportingInstance"] == "istio-canary"  # no worker name: still required by the server


def test_a_naive_time_or_another_type_is_refused() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        body_of(promoted_event(VERSIONS), at=datetime(2026, 12, 3, 10, 0))
    with pytest.raises(ValueError, match="must be Normal or Warning"):
        body_of(ReleaseEvent("CanaryPromoted", "Promote", "Info", "x"))
