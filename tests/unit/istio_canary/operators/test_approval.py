"""The promotion approval: a rejection is final (no retry), an approval continues."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from airflow.sdk.exceptions import AirflowFailException

from istio_canary.operators.approval import PromotionApprovalOperator


def _operator() -> PromotionApprovalOperator:
    return PromotionApprovalOperator(task_id="approve_promotion", subject="Go to 100%?", defaults=["Reject"],
                                     response_timeout=timedelta(hours=1), retries=1)


def _event(choice: str, user: dict[str, str] | None) -> dict[str, object]:
    return {"chosen_options": [choice], "params_input": {}, "responded_by_user": user,
            "responded_at": datetime(2026, 11, 27, 12, 0, tzinfo=UTC)}


def test_reject_fails_for_good_naming_who_rejected() -> None:
    with pytest.raises(AirflowFailException, match="promotion rejected by alice at 2026-11-27"):
        _operator().execute_complete({}, _event("Reject", {"id": "7", "name": "alice"}))


def test_timeout_default_reject_says_nobody_answered() -> None:
    with pytest.raises(AirflowFailException, match="no answer before the timeout"):
        _operator().execute_complete({}, _event("Reject", None))


def test_approve_continues() -> None:
    result = _operator().execute_complete({}, _event("Approve", {"id": "7", "name": "alice"}))
    assert result["chosen_options"] == ["Approve"]
