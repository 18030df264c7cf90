"""The stand-in's apps/v1 Deployments and autoscaling/v2 HPAs, read with the official client,
kubectl and the release's IstioHook: seeded from the world, read-only, discoverable."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from sandbox.apiserver import ApiServer, make_api_server
from sandbox.config import parse_config, seed_world
from sandbox.kubeconfig import kubeconfig_yaml
from sandbox.store import Store

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
KUBECTL = REPO / ".venv" / "bin" / "kubectl"
NS = "bookinfo"
WORLD = {"services": [{"name": "reviews", "versions": {
    "v1": {"replicas": 3}, "v2": {"replicas": 1, "hpa_max_replicas": 4}, "v3": {"replicas": 2, "ready": False}}}]}


@pytest.fixture(scope="module")
def server() -> Iterator[ApiServer]:
    store = Store()
    seed_world(store, parse_config(WORLD))
    server = make_api_server(store)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def kubeconfig(server: ApiServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_text(kubeconfig_yaml(server.url, namespace=NS))
    return path


@pytest.fixture(scope="module")
def api_client(kubeconfig: Path) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kubeconfig))


def test_official_client_lists_deployments_and_hpas(api_client: client.ApiClient) -> None:
    deployments = client.AppsV1Api(api_client).list_namespaced_deployment(NS).items
    ready = {d.metadata.name: (d.status.ready_replicas or 0, d.spec.replicas) for d in deployments}
    assert ready == {"reviews-v1": (3, 3), "reviews-v2": (1, 1), "reviews-v3": (0, 2)}
    one = client.AppsV1Api(api_client).read_namespaced_deployment("reviews-v2", NS)
    assert one.spec.template.metadata.labels["version"] == "v2"
    hpas = client.AutoscalingV2Api(api_client).list_namespaced_horizontal_pod_autoscaler(NS).items
    assert [(h.metadata.name, h.spec.scale_target_ref.name, h.spec.max_replicas) for h in hpas] == [
        ("reviews-v2", "reviews-v2", 4)]
    selected = client.AppsV1Api(api_client).list_namespaced_deployment(NS, label_selector="version=v1").items
    assert [d.metadata.name for d in selected] == ["reviews-v1"]


def test_they_are_read_only_and_404_when_missing(api_client: client.ApiClient) -> None:
    apps = client.AppsV1Api(api_client)
    with pytest.raises(ApiException) as missing:
        apps.read_namespaced_deployment("nope", NS)
    assert missing.value.status == 404
    with pytest.raises(ApiException) as write:
        apps.patch_namespaced_deployment_scale("reviews-v2", NS, {"spec": {"replicas": 5}})
    assert write.value.status in (404, 405)
    with pytest.raises(ApiException) as delete:
        apps.delete_namespaced_deployment("reviews-v2", NS)
    assert delete.value.status == 405


def test_the_release_hook_reads_them(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from istio_canary.core.capacity import version_workload
    from istio_canary.hooks.istio import IstioHook

    monkeypatch.setenv("AIRFLOW_CONN_CAPACITY_TEST", json.dumps(
        {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig), "namespace": NS}}))
    hook = IstioHook("capacity_test")
    deployments, hpas = hook.list_deployments(NS), hook.list_horizontal_pod_autoscalers(NS)
    canary = version_workload("v2", {"app": "reviews", "version": "v2"}, deployments, hpas)
    assert (canary.deployments, canary.ready, canary.hpas, canary.ceiling) == (("reviews-v2",), 1, ("reviews-v2",), 4)


def test_kubectl_gets_deployments_and_hpas(kubeconfig: Path, tmp_path: Path) -> None:
    def kubectl(*args: str) -> str:
        result = subprocess.run([str(KUBECTL), "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path), *args],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    table = kubectl("get", "deploy", "-n", NS)
    assert "reviews-v3" in table and "0/2" in table and "3/3" in table
    assert "Deployment/reviews-v2" in kubectl("get", "hpa", "-n", NS)
    assert kubectl("get", "deployments.apps", "reviews-v1", "-n", NS, "-o", "jsonpath={.status.readyReplicas}") == "3"
    assert "horizontalpodautoscalers" in kubectl("api-resources", "--api-group", "autoscaling")
