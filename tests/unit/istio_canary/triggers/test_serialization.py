"""Every trigger survives the trip through the triggerer's table, and carries no secret.

Airflow stores `serialize()`'s class path and kwargs, and the triggerer rebuilds the trigger
from them: the rebuilt trigger must serialize the same. The kwargs name the Prometheus
connection; its credentials are read by the trigger itself, so none is in them.
"""

from __future__ import annotations

import base64
import importlib
import inspect
import json
import pkgutil
from collections.abc import Callable
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred
from airflow.triggers.base import BaseTrigger

import istio_canary.triggers
from istio_canary.operators.analysis import CanaryWatchOperator

PASSWORD = "hunter2-secret"
TOKEN = "tok-very-secret"
RELEASE = {
    "service": "reviews",
    "namespace": "bookinfo",
    "stable_version": "v1",
    "canary_version": "v2",
    "bake_seconds": 30,
}


class _TI:
    def xcom_push(self, key: str, value: Any) -> None:
        pass

    def xcom_pull(self, task_ids: str) -> Any:
        return {"judge_state": None}


def _deferred_by(operator: Any) -> BaseTrigger:
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({"ti": _TI(), "dag_run": None, "run_id": "test"})
    return deferred.value.trigger


def _watch_trigger() -> BaseTrigger:
    return _deferred_by(CanaryWatchOperator(task_id="watch", release=RELEASE, judge_state_from="previous"))


# Each trigger class, as its operator defers to it.
DEFERRED_BY: dict[str, Callable[[], BaseTrigger]] = {
    "istio_canary.triggers.watch.CanaryWatchTrigger": _watch_trigger,
}


def _trigger_classes() -> set[str]:
    found = set()
    for module in pkgutil.iter_modules(istio_canary.triggers.__path__, "istio_canary.triggers."):
        for _, cls in inspect.getmembers(importlib.import_module(module.name), inspect.isclass):
            if issubclass(cls, BaseTrigger) and cls.__module__ == module.name:
                found.add(f"{cls.__module__}.{cls.__qualname__}")
    return found


def test_every_trigger_has_a_round_trip_case() -> None:
    assert _trigger_classes() == set(DEFERRED_BY)


@pytest.fixture
def connection_with_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_PROMETHEUS_DEFAULT",
        json.dumps(
            {
                "conn_type": "http",
                "host": "127.0.0.1",
                "port": 9,
                "schema": "http",
                "login": "admin",
                "password": PASSWORD,
                "extra": {"token": TOKEN},
            }
        ),
    )


@pytest.mark.parametrize("class_path", sorted(DEFERRED_BY))
def test_trigger_round_trips_through_serialize_without_secrets(
    class_path: str, connection_with_secrets: None
) -> None:
    trigger = DEFERRED_BY[class_path]()
    path, kwargs = trigger.serialize()
    assert path == class_path
    module_name, _, class_name = path.rpartition(".")
    rebuilt = getattr(importlib.import_module(module_name), class_name)(**kwargs)
    assert rebuilt.serialize() == (path, kwargs)
    stored = json.dumps(kwargs)  # the triggerer's table holds JSON
    basic = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    for secret in ("Authorization", "password", PASSWORD, TOKEN, basic, "Basic ", "Bearer "):
        assert secret not in stored, f"{secret!r} in the kwargs of {path}"


def test_the_watch_trigger_names_the_operators_connection(connection_with_secrets: None) -> None:
    _, kwargs = _watch_trigger().serialize()
    assert kwargs["prometheus_conn_id"] == "prometheus_default"
    assert set(kwargs) == {
        "prometheus_conn_id",
        "target",
        "analysis",
        "started_at",
        "judge_state",
        "history_at",
    }
