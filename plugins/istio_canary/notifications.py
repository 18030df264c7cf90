"""Release outcome notifications: a generic webhook (HTTP POST of the release report as JSON).

Configured by an Airflow connection (default `istio_canary_webhook`, HTTP type: host, port,
schema, and `extra.endpoint` for the path; a bearer token in the password). With no such
connection nothing is sent. A notifier failing never changes the release's outcome: it is
logged as a warning.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from airflow.sdk import BaseNotifier

DEFAULT_WEBHOOK_CONN_ID = "istio_canary_webhook"


class WebhookNotifier(BaseNotifier):
    """POST the release report (XCom `release_report` of task `report`) to a webhook.

    Usable as a DAG/task callback too: `on_failure_callback=WebhookNotifier()`.
    """

    template_fields = ("conn_id",)

    def __init__(self, conn_id: str = DEFAULT_WEBHOOK_CONN_ID, *, timeout_seconds: float = 10.0) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.timeout_seconds = timeout_seconds

    def _target(self) -> tuple[str, dict[str, str]] | None:
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            conn = BaseHook.get_connection(self.conn_id)
        except AirflowNotFoundException:
            return None
        host = conn.host or ""
        if "://" not in host:
            host = f"{conn.schema or 'https'}://{host}"
        if conn.port:
            host = f"{host}:{conn.port}"
        endpoint = str(conn.extra_dejson.get("endpoint", "")).lstrip("/")
        headers = {"Content-Type": "application/json"}
        if conn.password:
            headers["Authorization"] = f"Bearer {conn.password}"
        return (f"{host}/{endpoint}" if endpoint else host), headers

    def send(self, report: Mapping[str, Any]) -> bool:
        """POST `report`; True when the webhook answered 2xx, False when not configured/failed."""
        import requests

        target = self._target()
        if target is None:
            self.log.info("no notification sent: connection %r is not configured", self.conn_id)
            return False
        url, headers = target
        try:
            response = requests.post(url, data=json.dumps(report, default=str), headers=headers,
                                     timeout=self.timeout_seconds)
            response.raise_for_status()
        except requests.RequestException as exc:
            self.log.warning("release notification to %s failed: %s", url, exc)
            return False
        self.log.info("release notification sent to %s: HTTP %s", url, response.status_code)
        return True

    def notify(self, context: Mapping[str, Any]) -> None:
        report = context["ti"].xcom_pull(task_ids="report", key="release_report")
        if report:
            self.send(report)


def notify_outcome(report: Mapping[str, Any], context: Mapping[str, Any]) -> None:
    """Called by the report task: send the outcome to every configured notifier."""
    WebhookNotifier().send(report)
