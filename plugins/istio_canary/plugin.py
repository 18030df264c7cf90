"""The Airflow plugin: registered through the package's `airflow.plugins` entry point."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from istio_canary.operators.analysis import PrometheusGraphLink
from istio_canary.timetables import ReleaseWindowTimetable


class IstioCanaryPlugin(AirflowPlugin):
    name = "istio_canary"
    # Custom timetables must be registered for the scheduler to deserialize DAGs using them.
    timetables = [ReleaseWindowTimetable]
    # Extra links must be registered for the UI to deserialize them.
    operator_extra_links = [PrometheusGraphLink()]
