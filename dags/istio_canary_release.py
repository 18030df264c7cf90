"""istio_canary_release: one run = one canary release of a service on an Istio mesh.

Trigger it with service / namespace / stable_version / canary_version (UI form, REST
`POST /api/v2/dags/istio_canary_release/dagRuns` with `conf`, or
`airflow dags trigger istio_canary_release -c '{...}'`). Steps 10 -> 50 -> 100.

Phase notifications (started, step passed, awaiting approval, promoted, rolled back, rollback
failed) are POSTed as JSON to the HTTP connection `istio_canary_phases` when it exists; for
Slack, SMTP or any other Airflow notifier, declare a DAG with build_release_dag(notifiers=...).
"""

from istio_canary.dag_factory import build_release_dag
from istio_canary.notifications import DEFAULT_PHASE_CONN_ID, WebhookNotifier

dag = build_release_dag("istio_canary_release", notifiers=[WebhookNotifier(DEFAULT_PHASE_CONN_ID)])  # steps: DEFAULT_STEPS
