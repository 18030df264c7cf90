"""A release on a distributed Airflow: CeleryExecutor with PostgreSQL as the metadata DB and result
backend and Redis as the broker, as in docker-compose.yaml, but with the machine's local services:

- PostgreSQL on 127.0.0.1:5432 (role `istio_canary`, made by `make setup`): a fresh database per session,
  dropped at the end;
- Redis on 127.0.0.1:6379: DB index `REDIS_DB` and a queue named for this session, so
  nothing else using Redis sees our tasks and we never take theirs.

Both are required: when one is not reachable the test fails and says how to start it.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg2
import pytest
import redis
from kubernetes import client, config

from tests.e2e.conftest import sandbox_connections
from tests.e2e.test_live_airflow import RELEASE
from tools.live_airflow import (
    POSTGRES_ADMIN_URL,
    LiveAirflow,
    free_port,
    postgres_database,
    start_live_airflow,
)

pytestmark = [pytest.mark.e2e, pytest.mark.live, pytest.mark.celery]

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# A DB index of its own: other Redis users on this machine keep the default 0.
REDIS_DB = 5
# Two cores: four worker processes are plenty for one release at a time.
WORKER_CONCURRENCY = 4
WORKER = "celery-worker"  # the log name start_live_airflow gives `airflow celery worker`
# Operators Airflow 3 marks done in the scheduler without running them anywhere.
NOT_EXECUTED_OPERATORS = {"EmptyOperator"}


def _redis_client() -> redis.Redis:
    """A client for our DB index; fails the test if Redis does not answer PING."""
    broker = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_connect_timeout=5)
    try:
        broker.ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"Redis is not reachable at {REDIS_HOST}:{REDIS_PORT}: {exc}\nThe Celery test needs it as the "
            "Celery broker. Start it: `bash tools/local_services.sh` (part of `make setup`).",
            pytrace=False,
        )
    return broker


@dataclass
class CeleryAirflow:
    live: LiveAirflow
    queue: str
    database_url: str  # SQLAlchemy URL of this session's metadata DB (also the result backend)

    def worker_log(self) -> str:
        return self.live.log_path(WORKER).read_text(errors="replace")

    def celery_results(self) -> dict[str, int]:
        """{status: count} of the Celery result backend's table (celery_taskmeta)."""
        with contextlib.closing(psycopg2.connect(self.database_url.replace("+psycopg2", ""))) as conn, \
                conn.cursor() as cursor:
            cursor.execute("SELECT status, count(*) FROM celery_taskmeta GROUP BY status")
            return dict(cursor.fetchall())


@pytest.fixture(scope="session")
def celery_database() -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database for this session; dropped at teardown."""
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_database(POSTGRES_ADMIN_URL, "istio_canary_celery"))
        except RuntimeError as exc:
            pytest.fail(f"{exc}\nThe Celery test needs it as Airflow's metadata DB (`make setup` starts "
                        "it on 127.0.0.1).", pytrace=False)
        yield url


@pytest.fixture(scope="session")
def celery_airflow(celery_database: str, sandbox: Any,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryAirflow]:
    """api-server, scheduler, dag-processor, triggerer and `airflow celery worker` on
    CeleryExecutor, wired to the session sandbox; the session's Redis keys go at teardown."""
    broker = _redis_client()
    queue = f"istio-canary-{uuid.uuid4().hex[:12]}"
    extra_env = {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": celery_database,
        "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{celery_database}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
        # Tasks go to (and the worker listens on) this session's queue only.
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
        # The worker's and triggerer's log servers on free ports: others may run Airflow here too.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
    }
    try:
        with start_live_airflow(tmp_path_factory.mktemp("celery-airflow"), connections=sandbox_connections(sandbox),
                                executor="CeleryExecutor", extra_env=extra_env,
                                extra_processes=(("celery", "worker"),)) as live:
            yield CeleryAirflow(live=live, queue=queue, database_url=celery_database)
    finally:
        keys = list(broker.scan_iter(match=f"*{queue}*"))
        if keys:
            broker.delete(*keys)
        broker.close()


def _executed_in_celery(worker_log: str, run_id: str) -> set[str]:
    """Task ids the worker ran for `run_id`, from its `Executing workload in Celery: ...` lines."""
    executed = set()
    for line in worker_log.splitlines():
        if "Executing workload in Celery" in line and f"run_id='{run_id}'" in line:
            match = re.search(r"task_id='([^']+)'", line)
            if match:
                executed.add(match.group(1))
    return executed


def test_release_on_celery_with_postgres_and_redis_is_promoted(celery_airflow: CeleryAirflow, sandbox: Any) -> None:
    live = celery_airflow.live
    sandbox.reset()
    sandbox.set_behaviour(rps=200)
    run_id = live.trigger(RELEASE)
    assert live.wait_for_run(run_id) == "success"
    api = client.CustomObjectsApi(config.new_client_from_config(config_file=str(sandbox.kubeconfig)))
    vs = api.get_namespaced_custom_object("networking.istio.io", "v1", "bookinfo", "virtualservices", "reviews")
    assert vs["spec"]["http"][-1]["route"] == [{"destination": {"host": "reviews", "subset": "v2"}}]
    # The task logs reach the UI from the worker's runs, the triggerer's checks included.
    assert "+      weight: 10" in live.task_log(run_id, "step_10.set_route")
    assert "bake finished after" in live.task_log(run_id, "step_10.watch")

    # Every task that ran went through Celery: sent to this session's queue, picked up by
    # our worker (its log names each one) and recorded in the result backend.
    tis = live.task_instances(run_id)
    ran = {task_id for task_id, ti in tis.items()
           if ti["state"] == "success" and ti["operator"] not in NOT_EXECUTED_OPERATORS}
    assert {"preflight", "step_10.set_route", "step_10.watch", "step_100.set_route", "promote"} <= ran
    assert {task_id: tis[task_id]["queue"] for task_id in ran} == dict.fromkeys(ran, celery_airflow.queue)
    assert _executed_in_celery(celery_airflow.worker_log(), run_id) >= ran
    results = celery_airflow.celery_results()
    assert results.get("SUCCESS", 0) >= len(ran), results
    assert "FAILURE" not in results, results
    sandbox.reset()
