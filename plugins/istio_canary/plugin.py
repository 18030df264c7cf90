"""The Airflow plugin: registered through the package's `airflow.plugins` entry point."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from istio_canary.operators.analysis import PrometheusGraphLink
from istio_canary.timetables import ReleaseWindowTimetable
from istio_canary.ui import app as release_page_app
from istio_canary.ui.links import RELEASE_PAGE_PREFIX, ReleasePageLink


class IstioCanaryPlugin(AirflowPlugin):
    name = "istio_canary"
    # Custom timetables must be registered for the scheduler to deserialize DAGs using them.
    timetables = [ReleaseWindowTimetable]
    # Extra links must be registered for the UI to deserialize them.
    operator_extra_links = [PrometheusGraphLink(), ReleasePageLink()]
    # The release page (api-server only; the app is built on its first request).
    fastapi_apps = [{"app": release_page_app, "url_prefix": RELEASE_PAGE_PREFIX, "name": "Istio canary releases"}]
    external_views = [
        # In the navigation: every release per service.
        {"name": "Canary releases", "href": f"{RELEASE_PAGE_PREFIX}/", "destination": "nav",
         "category": "browse", "url_route": "canary-releases"},
        # A tab on each DAG run: that release's page (on runs of other DAGs it says it is not a release).
        {"name": "Release", "href": f"{RELEASE_PAGE_PREFIX}/releases/{{DAG_ID}}/{{RUN_ID}}", "destination": "dag_run",
         "url_route": "canary-release"},
    ]
