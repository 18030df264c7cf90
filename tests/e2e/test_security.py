"""Security of a real release: least-privilege RBAC, no secrets in logs, a loopback-only sandbox.

`secret_releases` runs two releases with `airflow dags test` against the sandbox, with connections
that carry secrets: the Kubernetes connection holds an inline kubeconfig with a bearer token, and
the Prometheus connection has basic-auth credentials in its URL (the promoted release: Airflow
never masks a host) or a bearer token in `extra.token` (the rolled-back one). `airflow dags test`
masks nothing it prints, so a secret in its output means our code logged it. The tests then read
what those runs left behind: the API server's audit log (every call the pipeline made) and every
log line. One more release on the live Airflow checks the task log files a worker and the
triggerer write, with the secrets in connections created through the REST API.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
import yaml

from istio_canary.core.lock import outcome_of
from tests.conftest import BOTH_APIS
from tests.e2e.conftest import AIRFLOW, DAG_ID, RunResult, airflow_env
from tests.helpers import vs_of
from tools.live_airflow import LiveAirflow

pytestmark = pytest.mark.e2e

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RBAC_FILE = PROJECT_ROOT / "include" / "manifests" / "rbac.yaml"
NS = "bookinfo"
RELEASE = {"service": "reviews", "namespace": NS, "stable_version": "v1", "canary_version": "v2",
           "bake_seconds": 5, "check_interval_seconds": 1, "min_requests": 20,
           # Seconds-long bakes on a small sandbox: the traffic plan would stretch or refuse them.
           "plan_bake": False}
ISTIO = "networking.istio.io"
# Reads the Role grants beyond what a release uses; rbac.yaml says why (a person acting as the
# ServiceAccount sees what the pipeline sees).
DOCUMENTED_READS = {("", "pods", "get"), ("", "services", "list"), ("apps", "deployments", "get"),
                    ("autoscaling", "horizontalpodautoscalers", "get")}


@dataclass
class SecretReleases:
    promoted: RunResult
    rolled_back: RunResult
    calls: list[dict[str, Any]]  # the API server's audit records made during the two runs
    secrets: dict[str, str]  # what each secret is -> its value
    log_files: list[Path]


def kubernetes_connection(kubeconfig: Path, token: str) -> dict[str, Any]:
    """The sandbox's kubeconfig inline in a connection, with `token` as the user's bearer token."""
    kube = yaml.safe_load(kubeconfig.read_text())
    for user in kube["users"]:
        user["user"] = {"token": token}
    return {"conn_type": "kubernetes", "extra": json.dumps({"kube_config": kube, "namespace": NS})}


def prometheus_connection(sandbox: Any, **auth: Any) -> dict[str, Any]:
    """The sandbox's Prometheus connection (host, port, schema) with `auth` fields added."""
    return {**json.loads(sandbox.env["AIRFLOW_CONN_PROMETHEUS_DEFAULT"]), **auth}


def audit_between(sandbox: Any, start: float, end: float) -> list[dict[str, Any]]:
    records = requests.get(f"{sandbox.api_url}/sandbox/audit", timeout=10).json()
    return [r for r in records if start <= r["time"] <= end]


@pytest.fixture(scope="module")
def secret_releases(sandbox: Any, airflow_home: Path) -> Any:
    kube_token = f"kube-{secrets.token_hex(20)}"
    prom_password = f"prompw-{secrets.token_hex(16)}"
    prom_token = f"promtok-{secrets.token_hex(20)}"
    login = "canary-reader"
    found = {
        "kubernetes bearer token": kube_token,
        "Prometheus password": prom_password,
        "Prometheus basic auth header": base64.b64encode(f"{login}:{prom_password}".encode()).decode(),
        "Prometheus bearer token": prom_token,
    }
    kube = json.dumps(kubernetes_connection(sandbox.kubeconfig, kube_token))

    def release(conf: dict[str, Any], prometheus: dict[str, Any]) -> RunResult:
        env = airflow_env(airflow_home, {"AIRFLOW_CONN_KUBERNETES_DEFAULT": kube,
                                         "AIRFLOW_CONN_PROMETHEUS_DEFAULT": json.dumps(prometheus)})
        done = subprocess.run([AIRFLOW, "dags", "test", DAG_ID, "-c", json.dumps(conf)], env=env,
                              capture_output=True, text=True, timeout=420)
        return RunResult(done.returncode, done.stdout + done.stderr)

    started = time.time()
    try:
        sandbox.reset()
        sandbox.set_behaviour(rps=200)
        begin = time.time()
        in_url = prometheus_connection(sandbox, host=f"http://{login}:{prom_password}@127.0.0.1")
        promoted = release(RELEASE, in_url)
        calls = audit_between(sandbox, begin, time.time())
        assert promoted.state == "success", promoted.output[-4000:]
        assert outcome_of(vs_of(sandbox)).outcome == "promoted"

        sandbox.reset()
        sandbox.set_behaviour(rps=200)
        sandbox.set_behaviour("v1", error_rate=0.005)
        sandbox.set_behaviour("v2", error_rate=0.05)
        before = vs_of(sandbox)
        begin = time.time()
        rolled_back = release({**RELEASE, "bake_seconds": 60},
                              prometheus_connection(sandbox, extra={"token": prom_token}))
        calls += audit_between(sandbox, begin, time.time())
        after = vs_of(sandbox)
        assert rolled_back.state == "failed", rolled_back.output[-4000:]
        assert after["spec"] == before["spec"] and outcome_of(after).outcome == "rolled_back"
    finally:
        sandbox.reset()
    logs = airflow_home / "logs"
    log_files = [p for p in logs.rglob("*") if p.is_file() and p.stat().st_mtime >= started] if logs.exists() else []
    return SecretReleases(promoted, rolled_back, calls, found, log_files)


# --------------------------------------------------------------------------- RBAC


def rbac_objects() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(RBAC_FILE.read_text()) if doc}


def granted(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) the Role allows; wildcards and resourceNames are refused outright."""
    allowed = set()
    for rule in role["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule, rule
        for values in (rule["apiGroups"], rule["resources"], rule["verbs"]):
            assert "*" not in values, f"wildcard in {rule}"
        allowed |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    return allowed


def test_rbac_manifest_binds_a_namespaced_role_to_the_service_account() -> None:
    objects = rbac_objects()
    assert set(objects) == {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
    # Cluster-wide, the pipeline may only list DestinationRules (a client namespace's rule for the host).
    assert granted(objects["ClusterRole"]) == {(ISTIO, "destinationrules", "list")}
    assert objects["ClusterRoleBinding"]["roleRef"]["name"] == objects["ClusterRole"]["metadata"]["name"]
    assert objects["ClusterRoleBinding"]["subjects"] == objects["RoleBinding"]["subjects"]
    account, role, binding = objects["ServiceAccount"], objects["Role"], objects["RoleBinding"]
    namespace = role["metadata"]["namespace"]
    assert account["metadata"]["namespace"] == binding["metadata"]["namespace"] == namespace
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": namespace}]


def test_every_api_call_of_a_release_is_allowed_by_the_role_and_nothing_more(
    secret_releases: SecretReleases,
) -> None:
    role = rbac_objects()["Role"]
    allowed = granted(role)
    calls = secret_releases.calls
    # The pipeline read and wrote both objects, and read the workloads: the audit caught it all.
    used = {(c["group"], c["resource"], c["verb"]) for c in calls}
    assert {(ISTIO, "virtualservices", "update"), (ISTIO, "destinationrules", "update"),
            ("", "pods", "list"), ("", "services", "get"), (ISTIO, "virtualservices", "list"),
            ("apps", "deployments", "list"), ("autoscaling", "horizontalpodautoscalers", "list"),
            (ISTIO, "destinationrules", "list")} <= used, used
    cluster_wide = granted(rbac_objects()["ClusterRole"])
    refused = [f"{c['verb']} {c['group'] or 'core'}/{c['resource']} in {c['namespace']!r}" for c in calls
               if not ((c["group"], c["resource"], c["verb"]) in allowed
                       and c["namespace"] == role["metadata"]["namespace"])
               and not ((c["group"], c["resource"], c["verb"]) in cluster_wide and not c["namespace"])]
    assert refused == [], f"calls the Role would refuse (403): {refused}"
    # Least privilege: what the Role grants beyond what the releases used is only documented reads.
    extra = allowed - used
    assert extra <= DOCUMENTED_READS, f"granted but never used: {sorted(extra - DOCUMENTED_READS)}"
    assert all(verb in ("get", "list") for _, _, verb in DOCUMENTED_READS)
    comment = RBAC_FILE.read_text().split("apiVersion:", 1)[0]
    for _, resource, verb in extra:
        assert re.search(rf"\b{verb} on [a-z ,]*\b{resource}\b", comment), f"{verb} {resource} is not documented"


# --------------------------------------------------------------------------- secrets


def test_connection_secrets_never_appear_in_task_logs(secret_releases: SecretReleases) -> None:
    outputs = {"promoted release output": secret_releases.promoted.output,
               "rolled-back release output": secret_releases.rolled_back.output}
    outputs |= {str(p): p.read_text(errors="replace") for p in secret_releases.log_files}
    # The logs are there, including the lines next to the credentials: PromQL, URLs, writes.
    for run in (secret_releases.promoted.output, secret_releases.rolled_back.output):
        assert "PromQL" in run and "Prometheus graph: http://127.0.0.1" in run and "wrote VirtualService" in run
    leaks = [f"{what} in {where}" for where, text in outputs.items()
             for what, value in secret_releases.secrets.items() if value in text]
    assert leaks == []


def task_logs(live: LiveAirflow, run_id: str) -> dict[str, str]:
    """{task_id: its log} for every try of every task that ran (tries joined in order)."""
    logs = {}
    for task_id in live.task_instances(run_id):
        tries = live.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/tries").json()
        numbers = sorted(t["try_number"] for t in tries["task_instances"] if t["try_number"])
        if numbers:
            logs[task_id] = "\n".join(live.task_log(run_id, task_id, n) for n in numbers)
    return logs


@pytest.mark.live
def test_connection_secrets_never_appear_in_live_task_logs(live_airflow: LiveAirflow, sandbox: Any) -> None:
    kube_token, password, login = f"kube-{secrets.token_hex(20)}", f"prompw-{secrets.token_hex(16)}", "canary-reader"
    hidden = {"kubernetes bearer token": kube_token, "Prometheus password": password,
              "Prometheus basic auth header": base64.b64encode(f"{login}:{password}".encode()).decode()}
    suffix = secrets.token_hex(4)
    connections = {
        f"k8s_secret_{suffix}": kubernetes_connection(sandbox.kubeconfig, kube_token),
        f"prom_secret_{suffix}": prometheus_connection(sandbox, login=login, password=password),
    }
    for conn_id, fields in connections.items():
        created = live_airflow.api("POST", "/connections", json={"connection_id": conn_id, **fields})
        assert created.status_code in (200, 201), created.text
    try:
        sandbox.reset()
        sandbox.set_behaviour(rps=200)
        k8s_id, prom_id = connections
        run_id = live_airflow.trigger({**RELEASE, "kubernetes_conn_id": k8s_id, "prometheus_conn_id": prom_id})
        assert live_airflow.wait_for_run(run_id) == "success"
        texts = task_logs(live_airflow, run_id)  # as the UI serves them
    finally:
        for conn_id in connections:
            live_airflow.api("DELETE", f"/connections/{conn_id}")
        sandbox.reset()
    # And every log file: task and trigger logs, scheduler, triggerer, api-server output.
    texts |= {str(p): p.read_text(errors="replace") for p in live_airflow.home.rglob("*.log") if p.is_file()}
    assert "PromQL" in texts["step_10.watch"] and "wrote VirtualService" in texts["step_10.set_route"]
    trigger_logs = [name for name in texts if f"run_id={run_id}/task_id=step_10.watch/" in name and ".trigger." in name]
    assert trigger_logs and "check 1:" in texts[trigger_logs[0]], sorted(texts)
    leaks = [f"{what} in {where}" for where, text in texts.items() for what, value in hidden.items() if value in text]
    assert leaks == []


# --------------------------------------------------------------------------- sandbox exposure


def sandbox_processes(sandbox: Any) -> list[psutil.Process]:
    """Every process of the sandbox: its process group, the recorded pids and their children."""
    state = sandbox.process_state
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == state["pgid"]:
                found[proc.pid] = proc
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    for pid in state["pids"].values():
        proc = psutil.Process(pid)
        found[pid] = proc
        found |= {child.pid: child for child in proc.children(recursive=True)}
    return list(found.values())


@BOTH_APIS
def test_sandbox_listens_on_loopback_only(cluster: Any) -> None:
    """Every socket of the sandbox's group (with --real-apiserver: etcd and kube-apiserver too)."""
    sandbox = cluster
    listening = []
    for proc in sandbox_processes(sandbox):
        for conn in proc.net_connections(kind="inet"):
            # TCP in LISTEN; UDP sockets not connected to a peer receive from anyone.
            if conn.status == psutil.CONN_LISTEN or (conn.type == socket.SOCK_DGRAM and not conn.raddr):
                listening.append((proc.name(), conn.laddr.ip, conn.laddr.port))
    ports = {port for *_, port in listening}
    assert set(sandbox.process_state["ports"].values()) <= ports, (listening, sandbox.process_state["ports"])

    def loopback(ip: str) -> bool:
        address = ipaddress.ip_address(ip)
        return address.is_loopback or (address.version == 6 and bool(address.ipv4_mapped)
                                       and address.ipv4_mapped.is_loopback)

    exposed = [entry for entry in listening if not loopback(entry[1])]
    assert exposed == [], f"sandbox sockets reachable from other hosts: {exposed}"
