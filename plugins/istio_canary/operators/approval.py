"""The promotion approval: Airflow's ApprovalOperator, with a rejection that is final."""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.exceptions import HITLRejectException
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk.exceptions import AirflowFailException


class PromotionApprovalOperator(ApprovalOperator):
    """Ask a person before the last step; "Reject" (or no answer by the timeout, which picks the
    default "Reject") fails the task for good, so the release rolls back.

    Why not plain `ApprovalOperator(fail_on_reject=True)`: its rejection is an ordinary
    AirflowException, so it could only be made final with `retries=0`. But Airflow 3.3 can fail a
    deferred task whose trigger fires before the scheduler saw it defer ("state mismatch",
    apache/airflow#67287): an approval answered within seconds then rolled an approved release
    back. Here a rejection never retries, and `retries` can cover that race (the question is
    asked again).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(fail_on_reject=True, **kwargs)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        try:
            return super().execute_complete(context=context, event=event)
        except HITLRejectException as exc:
            who = event.get("responded_by_user") or {}
            by = (who.get("name") or who.get("id")) if isinstance(who, dict) else who
            when = event.get("responded_at")
            answer = f"rejected by {by} at {when}" if by else "rejected (no answer before the timeout)"
            raise AirflowFailException(f"promotion {answer}: the release rolls back") from exc
