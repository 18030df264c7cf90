"""The release report's outcome line, the abort's cases in particular."""

from __future__ import annotations

from typing import Any

import pytest

from istio_canary.core.report import build_report, render_report

VALIDATED = {"service": "reviews", "namespace": "bookinfo", "stable_version": "v1", "canary_version": "v2"}
ROUTED = {"step_10": {"canary_weight": 10}}
ABORT = {"by": "alice", "at": 1.0, "tasks": ["step_10.watch"]}


def report(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"phases": ["step_10"], "routes": ROUTED, "analyses": {}, "promoted": None,
                            "rolled_back": None, "validated": VALIDATED} | overrides
    return build_report(**args)


@pytest.mark.parametrize(("overrides", "outcome", "reason"), [
    ({"aborted": ABORT, "rolled_back": {"changed": True}}, "rolled_back",
     "aborted by alice during step_10.watch; routing put back"),
    ({"aborted": {**ABORT, "tasks": ["bake_plan"]}, "rolled_back": {"changed": False}}, "failed",
     "aborted by alice during bake_plan, before routing was changed"),
    ({"aborted": ABORT, "rolled_back": {"changed": True}, "rollback_failed": {"canary_weight": 10, "error": "x"}},
     "rollback_failed", "ROLLBACK FAILED"),
    ({"rolled_back": {"changed": True}}, "rolled_back", "a release task failed"),
    ({"promoted": {"changed": True}}, "promoted", "all traffic to v2"),
])
def test_outcome_and_reason(overrides: dict[str, Any], outcome: str, reason: str) -> None:
    built = report(**overrides)
    assert built["outcome"] == outcome and built["reason"].startswith(reason)
    assert built["aborted_by"] == (overrides.get("aborted") or {}).get("by")


def test_the_rendered_report_says_who_aborted() -> None:
    text = render_report(report(aborted=ABORT, rolled_back={"changed": True}))
    assert text.splitlines()[0] == ("release bookinfo/reviews v1 -> v2: ROLLED_BACK: aborted by alice during "
                                    "step_10.watch; routing put back")
