"""The Airflow plugin: registered through the package's `airflow.plugins` entry point."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


class IstioCanaryPlugin(AirflowPlugin):
    name = "istio_canary"
