"""docker-compose.yaml as `docker-compose config` resolves it (Debian's docker-compose 1.29, which
`make system-packages` installs): what a user of the file relies on.

No Docker engine is needed: `config` validates and resolves the file without one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from istio_canary.hooks.prometheus import connection_config_from

PROJECT_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yaml"
AIRFLOW_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
}
MOUNTS = {"dags": "ro", "plugins": "ro", "include": "ro", "logs": "rw", "config": "rw"}


def compose_config(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """`docker-compose -f docker-compose.yaml [ARGS] config`, parsed. Only `env` (and PATH) is
    passed, and an empty --env-file replaces a `.env` beside the file, so a developer's settings
    (e.g. an exported `.sandbox/env`) cannot change what is checked."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not on PATH: `make system-packages` installs it "
                    "(Debian package docker-compose)", pytrace=False)
    with tempfile.NamedTemporaryFile("w", suffix=".env") as no_env_file:
        result = subprocess.run([binary, "--env-file", no_env_file.name, "-f", str(COMPOSE_FILE), *args, "config"],
                                cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
                                env={"PATH": "/usr/bin:/bin", **(env or {})})
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return compose_config()


def command_text(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else command


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in service.get("depends_on", {}).items()}


def env_connection(service: dict[str, Any], conn_id: str) -> Any:
    """The service's `AIRFLOW_CONN_<ID>` as a task reads it: JSON or a URI (the rule of Airflow's
    environment-variables secrets backend)."""
    from airflow.sdk import Connection

    value = service["environment"][f"AIRFLOW_CONN_{conn_id.upper()}"].strip()
    if value.startswith("{"):
        return Connection.from_json(value, conn_id=conn_id)
    return Connection.from_uri(value, conn_id=conn_id)


def prometheus_url(connection: Any) -> str:
    """The URL PrometheusHook queries for this connection."""
    return connection_config_from(host=connection.host, port=connection.port, schema=connection.schema,
                                  login=connection.login, password=connection.password,
                                  extra=connection.extra_dejson)["url"]


def published_ports(service: dict[str, Any]) -> set[tuple[str, int, int]]:
    """(host IP or "" for all, published, target) of each port; config prints either form."""
    ports = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.add((port.get("host_ip", ""), int(port["published"]), int(port["target"])))
        else:
            *host_ip, published, target = port.split("/")[0].split(":")
            ports.add(((host_ip or [""])[0], int(published), int(target)))
    return ports


def test_the_official_services_run_airflow_on_celery_with_postgres_and_redis(config: dict[str, Any]) -> None:
    services = config["services"]
    assert {"postgres", "redis", "airflow-init", "sandbox", *AIRFLOW_SERVICES} <= set(services)
    for name, command in AIRFLOW_SERVICES.items():
        env = services[name]["environment"]
        assert command_text(services[name]).endswith(command), name
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:airflow@postgres/")
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://airflow:airflow@postgres/")
        assert re.fullmatch(r"redis://[^@]*@?redis:6379/\d+", env["AIRFLOW__CELERY__BROKER_URL"]), name
        # Tasks on the worker reach the api-server's execution API by its service name.
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        # One airflow.cfg (one JWT secret) for all, in the mounted config/ folder.
        assert env["AIRFLOW_CONFIG"] == "/opt/airflow/config/airflow.cfg"
    assert "airflow db migrate" in command_text(services["airflow-init"])
    assert published_ports(services["airflow-apiserver"]) == {("", 8080, 8080)}


def test_airflow_services_mount_the_project_and_are_built_from_the_dockerfile(config: dict[str, Any]) -> None:
    for name in [*AIRFLOW_SERVICES, "airflow-init"]:
        service = config["services"][name]
        mounts = {}
        for volume in service["volumes"]:
            source, target, mode = volume.split(":")
            mounts[target] = (source, mode)
        assert mounts == {f"/opt/airflow/{folder}": (str(PROJECT_ROOT / folder), mode)
                          for folder, mode in MOUNTS.items()}, name
        assert service["build"] == {"context": str(PROJECT_ROOT), "target": "airflow"}, name
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+) AS (\S+)$", dockerfile, flags=re.MULTILINE)
    assert {"airflow", "sandbox"} <= {stage for _, stage in stages}
    # The image's Airflow is the one requirements.txt pins, and the image installs those pins.
    pinned = re.search(r"^apache-airflow==(\S+)$", (PROJECT_ROOT / "requirements.txt").read_text(), re.MULTILINE)
    assert pinned is not None
    assert stages[0][0] == f"apache/airflow:{pinned.group(1)}-python3.11"
    assert "pip install --no-cache-dir -r /opt/istio-canary/requirements.txt" in dockerfile
    # `docker build .` (the last stage) gives the Airflow image, not the sandbox.
    assert stages[-1][1] == "airflow"


def test_services_wait_for_healthy_dependencies_and_a_finished_init(config: dict[str, Any]) -> None:
    services = config["services"]
    for name in [*AIRFLOW_SERVICES, "postgres", "redis", "sandbox"]:
        assert services[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
    for name in AIRFLOW_SERVICES:
        conditions = depends_on(services[name])
        assert conditions["postgres"] == conditions["redis"] == "service_healthy", name
        assert conditions["airflow-init"] == "service_completed_successfully", name
    # The worker takes tasks only once their execution API answers.
    assert depends_on(services["airflow-worker"])["airflow-apiserver"] == "service_healthy"
    assert depends_on(services["airflow-init"]) == {"postgres": "service_healthy", "redis": "service_healthy"}


def test_real_cluster_connections_default_to_the_mounted_kubeconfig_and_can_be_overridden(
    config: dict[str, Any]
) -> None:
    for name in AIRFLOW_SERVICES:
        service = config["services"][name]
        kube = env_connection(service, "kubernetes_default")
        assert (kube.conn_type, kube.extra_dejson) == ("kubernetes", {"kube_config_path": "/opt/airflow/config/kubeconfig"})
        # A `kubectl port-forward` on the host, reached through the host-gateway alias.
        assert prometheus_url(env_connection(service, "prometheus_default")) == "http://host.docker.internal:9090"
        assert "host.docker.internal:host-gateway" in service["extra_hosts"]
    # Values set in the environment arrive verbatim, JSON braces included.
    in_cluster = '{"conn_type": "kubernetes", "extra": {"in_cluster": true, "namespace": "bookinfo"}}'
    prometheus = '{"conn_type": "http", "host": "https://prometheus.example/prom", "extra": {"token": "t0k3n"}}'
    overridden = compose_config(env={"AIRFLOW_CONN_KUBERNETES_DEFAULT": in_cluster,
                                     "AIRFLOW_CONN_PROMETHEUS_DEFAULT": prometheus})
    for name in AIRFLOW_SERVICES:
        env = overridden["services"][name]["environment"]
        assert (env["AIRFLOW_CONN_KUBERNETES_DEFAULT"], env["AIRFLOW_CONN_PROMETHEUS_DEFAULT"]) == (in_cluster, prometheus)


def test_sandbox_profile_runs_the_sandbox_where_airflow_reaches_it(config: dict[str, Any]) -> None:
    services = config["services"]
    sandbox = services["sandbox"]
    assert sandbox["profiles"] == ["sandbox"]
    assert sandbox["build"] == {"context": str(PROJECT_ROOT), "target": "sandbox"}
    # Started only with --profile sandbox: no service outside the profile needs it.
    assert not [name for name, service in services.items() if "sandbox" in service.get("depends_on", {})]
    script = command_text(sandbox)
    assert "python -m sandbox up" in script and "python -m sandbox down" in script
    # Fixed relays on the compose network to the sandbox's loopback-only servers...
    assert "TCP-LISTEN:6443" in script and "TCP-LISTEN:9090" in script
    # ... published on the host's loopback only.
    assert published_ports(sandbox) == {("127.0.0.1", 6443, 6443), ("127.0.0.1", 9090, 9090)}
    for name in AIRFLOW_SERVICES:
        kube_config = env_connection(services[name], "sandbox_kubernetes").extra_dejson["kube_config"]
        assert [c["cluster"]["server"] for c in kube_config["clusters"]] == ["http://sandbox:6443"]
        assert prometheus_url(env_connection(services[name], "sandbox_prometheus")) == "http://sandbox:9090"
