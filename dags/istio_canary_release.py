"""istio_canary_release: one run = one canary release of a service on an Istio mesh.

Trigger it with service / namespace / stable_version / canary_version (UI form, REST
`POST /api/v2/dags/istio_canary_release/dagRuns` with `conf`, or
`airflow dags trigger istio_canary_release -c '{...}'`). Steps 10 -> 50 -> 100.
"""

from istio_canary.dag_factory import build_release_dag

dag = build_release_dag("istio_canary_release")  # steps: DEFAULT_STEPS
