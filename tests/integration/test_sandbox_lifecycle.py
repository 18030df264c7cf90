"""`python -m sandbox up/down/status`: starts everything, stops exactly that, leaves nothing
behind, refuses a bad config before starting anything."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from sandbox.client import PROJECT_ROOT, parse_env_file, sandbox_cli
from sandbox.procs import group_members, process_alive

pytestmark = pytest.mark.integration


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def processes_mentioning(text: str) -> list[int]:
    return [
        int(p)
        for p in os.listdir("/proc")
        if p.isdigit() and text in cmdline(int(p)) and process_alive(int(p))
    ]


def wait_until(predicate: Any, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_up_down_starts_and_stops_exactly_the_sandbox(tmp_path: Path) -> None:
    state_dir = tmp_path / "sbx"
    try:
        up = sandbox_cli("up", "--state-dir", str(state_dir))
        assert up.returncode == 0, up.stdout + up.stderr
        assert "sandbox up in" in up.stdout

        state = json.loads((state_dir / "state.json").read_text())
        pgid, supervisor, prom = state["pgid"], state["pids"]["supervisor"], state["pids"]["prometheus"]
        assert supervisor == pgid  # its own process group, led by the supervisor
        assert process_alive(supervisor) and process_alive(prom)
        assert os.getpgid(prom) == pgid
        assert "prometheus" in cmdline(prom) and f"--storage.tsdb.path={state_dir}" in cmdline(prom)
        assert set(state["ports"]) == {"api", "generator", "prometheus"}
        assert os.getpgid(0) != pgid

        env = parse_env_file(state_dir / "env")
        assert env["KUBECONFIG"] == str(state_dir / "kubeconfig")
        assert env["PROMETHEUS_URL"] == f"http://127.0.0.1:{state['ports']['prometheus']}"
        assert json.loads(env["AIRFLOW_CONN_KUBERNETES_DEFAULT"]) == {
            "conn_type": "kubernetes",
            "extra": {"kube_config_path": str(state_dir / "kubeconfig"), "namespace": "bookinfo"},
        }
        assert json.loads(env["AIRFLOW_CONN_PROMETHEUS_DEFAULT"]) == {
            "conn_type": "http",
            "host": "127.0.0.1",
            "port": state["ports"]["prometheus"],
            "schema": "http",
        }
        core = client.CoreV1Api(config.new_client_from_config(config_file=env["KUBECONFIG"]))
        pods = core.list_namespaced_pod("bookinfo").items
        assert sorted(p.metadata.labels["version"] for p in pods) == ["v1", "v2"]

        again = sandbox_cli("up", "--state-dir", str(state_dir))
        assert again.returncode == 0 and "already up" in again.stdout
        assert json.loads((state_dir / "state.json").read_text())["pgid"] == pgid

        down = sandbox_cli("down", "--state-dir", str(state_dir))
        assert down.returncode == 0, down.stderr
        assert group_members(pgid) == []
        assert not process_alive(supervisor) and not process_alive(prom)
        assert not (state_dir / "state.json").exists()
        assert not (state_dir / "env").exists() and not (state_dir / "kubeconfig").exists()
        assert (state_dir / "supervisor.log").exists()  # kept for a post-mortem

        assert sandbox_cli("down", "--state-dir", str(state_dir)).returncode == 0
        status = sandbox_cli("status", "--state-dir", str(state_dir))
        assert status.returncode != 0 and "not running" in status.stdout
    finally:
        sandbox_cli("down", "--state-dir", str(state_dir))


def test_up_real_apiserver_runs_etcd_and_kube_apiserver_in_the_group_and_down_stops_them(tmp_path: Path) -> None:
    """`up --real-apiserver`: etcd and a real kube-apiserver join the sandbox's process group,
    the pipeline's kubeconfig is the istio-canary ServiceAccount's token, the generator routes
    by the real server's objects, and `down` stops every one of them."""
    state_dir = tmp_path / "real"
    try:
        up = sandbox_cli("up", "--real-apiserver", "--state-dir", str(state_dir))
        assert up.returncode == 0, up.stdout + up.stderr
        state = json.loads((state_dir / "state.json").read_text())
        assert state["kube_api"] == "kube-apiserver" and state["urls"]["api"].startswith("https://127.0.0.1:")
        control_plane = processes_mentioning(str(state_dir / "kubeenv"))
        names = sorted(Path(cmdline(pid).split()[0]).name for pid in control_plane)
        assert names == ["etcd", "kube-apiserver"], [cmdline(pid) for pid in control_plane]
        assert all(os.getpgid(pid) == state["pgid"] for pid in control_plane)

        env = parse_env_file(state_dir / "env")
        assert env["SANDBOX_KUBE_API"] == "kube-apiserver"
        assert json.loads(env["AIRFLOW_CONN_KUBERNETES_DEFAULT"])["extra"]["kube_config_path"] == env[
            "PIPELINE_KUBECONFIG"]
        pipeline = yaml.safe_load(Path(env["PIPELINE_KUBECONFIG"]).read_text())
        assert set(pipeline["users"][0]["user"]) == {"token"}
        admin = client.CoreV1Api(config.new_client_from_config(config_file=env["KUBECONFIG"]))
        version = client.VersionApi(admin.api_client).get_code()
        assert version.git_version.startswith("v1.") and version.minor != ""
        pods = admin.list_namespaced_pod("bookinfo").items
        assert sorted(p.metadata.labels["version"] for p in pods) == ["v1", "v2"]
        assert all({c.type: c.status for c in p.status.conditions}["Ready"] == "True" for p in pods)
        # The generator routes by what the real server holds: everything to v1 as seeded.
        routing = json.loads(sandbox_cli("status", "--state-dir", str(state_dir), "--json").stdout)
        assert routing["healthy"] is True

        down = sandbox_cli("down", "--state-dir", str(state_dir))
        assert down.returncode == 0, down.stderr
        assert group_members(state["pgid"]) == []
        assert processes_mentioning(str(state_dir / "kubeenv")) == []
        assert not (state_dir / "pipeline-kubeconfig").exists()
    finally:
        sandbox_cli("down", "--state-dir", str(state_dir))


@pytest.mark.parametrize(
    ("world_yaml", "field", "value"),
    [
        (
            "services:\n  - name: reviews\n    versions:\n      v1: {}\n      v2: {error_rate: 1.5}\n",
            "services[0].versions.v2.error_rate",
            "1.5",
        ),
        ("services:\n  - name: reviews\n    rsp: 100\n", "services[0].rsp", "100"),
        ("services:\n  - name: Reviews\n", "services[0].name", "Reviews"),
    ],
)
def test_bad_config_is_refused_before_anything_starts(
    tmp_path: Path, world_yaml: str, field: str, value: str
) -> None:
    config_file = tmp_path / "world.yaml"
    config_file.write_text(world_yaml)
    state_dir = tmp_path / "sbx"
    result = sandbox_cli("up", "--state-dir", str(state_dir), "--config", str(config_file))
    assert result.returncode == 2
    assert field in result.stderr and value in result.stderr, result.stderr
    assert not (state_dir / "state.json").exists()
    assert not (state_dir / "supervisor.log").exists()
    assert processes_mentioning(str(state_dir)) == []


def test_several_services_and_a_terminated_supervisor_takes_prometheus_along(sandbox_factory: Any) -> None:
    world = {
        "services": [
            {"name": "reviews", "namespace": "shop", "rps": 20},
            {
                "name": "ratings",
                "namespace": "ratings",
                "versions": {"v1": {}, "v2": {"sidecar": False}, "v3": {"ready": False}},
            },
        ]
    }
    sandbox = sandbox_factory(world)
    assert json.loads(sandbox.env["AIRFLOW_CONN_KUBERNETES_DEFAULT"])["extra"]["namespace"] == "shop"
    istio = client.CustomObjectsApi(config.new_client_from_config(config_file=str(sandbox.kubeconfig)))
    listed = istio.list_cluster_custom_object("networking.istio.io", "v1", "virtualservices")["items"]
    assert sorted((o["metadata"]["namespace"], o["metadata"]["name"]) for o in listed) == [
        ("ratings", "ratings"),
        ("shop", "reviews"),
    ]
    core = client.CoreV1Api(config.new_client_from_config(config_file=str(sandbox.kubeconfig)))
    ratings_pods = {p.metadata.labels["version"]: p for p in core.list_namespaced_pod("ratings").items}
    assert [c.name for c in ratings_pods["v2"].spec.containers] == ["ratings"]
    assert not ratings_pods["v3"].status.container_statuses[0].ready
    services = {s["name"]: s for s in sandbox.state()["services"]}
    assert services["reviews"]["rps"] == 20 and set(services["ratings"]["versions"]) == {"v1", "v2", "v3"}

    state = sandbox.process_state
    supervisor, prom = state["pids"]["supervisor"], state["pids"]["prometheus"]
    os.kill(supervisor, signal.SIGTERM)  # only the supervisor, not its group
    assert wait_until(lambda: not process_alive(prom)), "Prometheus outlived its supervisor"
    assert wait_until(lambda: not process_alive(supervisor))
    assert group_members(state["pgid"]) == []
    assert "received SIGTERM" in (sandbox.state_dir / "supervisor.log").read_text()
    assert sandbox.cli("status").returncode != 0


def test_prometheus_dies_with_a_killed_parent(tmp_path: Path) -> None:
    """Even SIGKILL on the supervisor (no handler runs) leaves no Prometheus behind."""
    script = (
        "import sys, time; from pathlib import Path; from sandbox import prometheus\n"
        "p = prometheus.start(Path(sys.argv[1]), prometheus.free_port(), '127.0.0.1:9')\n"
        "print(p.pid, flush=True); time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert parent.stdout is not None
        prom = int(parent.stdout.readline())
        assert process_alive(prom) and "prometheus" in cmdline(prom)
        parent.kill()
        parent.wait()
        assert wait_until(lambda: not process_alive(prom)), "Prometheus outlived a SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
