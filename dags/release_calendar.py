"""Planned releases from include/releases.yaml: one scheduled DAG per entry.

Each DAG is the release pipeline (same tasks as istio_canary_release) with the entry's
parameters as defaults, scheduled once at the first opening of its release window at or
after its earliest date. A broken entry becomes this file's import error, naming the entry
and field; the other entries' DAGs still load.
"""

from airflow.sdk import DAG

from istio_canary.core.calendar import load_calendar
from istio_canary.core.request import DEFAULT_STEPS
from istio_canary.dag_factory import build_release_dag, release_params
from istio_canary.timetables import ReleaseWindowTimetable

planned, errors = load_calendar(defaults={key: param.value for key, param in release_params().items()})

for entry in planned:
    globals()[entry.dag_id] = build_release_dag(
        entry.dag_id,
        steps=entry.params.get("steps") or DEFAULT_STEPS,
        schedule=ReleaseWindowTimetable(entry.policy_name, once=True),
        params=entry.params,
        start_date=entry.earliest,
        description=entry.description,
        tags=("istio", "canary", "release", "calendar"),
    )

if errors:
    # Airflow records a DAG that fails validation as this file's import error while the
    # other DAGs of the file still load; raising here would drop them all.
    with DAG(
        dag_id="release_calendar_errors",
        schedule=ReleaseWindowTimetable.invalid("\n".join(str(error) for error in errors)),
    ):
        from airflow.providers.standard.operators.empty import EmptyOperator

        EmptyOperator(task_id="broken_calendar_entry")
