"""The sandbox's Kubernetes API stand-in, driven by the official Python client and the real kubectl.

The server runs in-process on a free port over a seeded Store. It validates against Istio's real
CRD schemas when they are available (SANDBOX_CRDS, or ../shared/istio beside the checkout), else
against the built-in schema; the built-in schema is also tested on its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from sandbox.apiserver import ApiServer, make_api_server
from sandbox.kubeconfig import kubeconfig_yaml
from sandbox.schema import load_schemas
from sandbox.store import Store

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
KUBECTL = REPO / ".venv" / "bin" / "kubectl"
GROUP, NS = "networking.istio.io", "bookinfo"


def _crd_dir() -> str | None:
    candidates = [os.environ.get("SANDBOX_CRDS"), str(REPO.parent / "shared" / "istio")]
    for candidate in candidates:
        if candidate and (Path(candidate) / "virtualservices.crd.yaml").exists():
            return candidate
    return None


CRD_DIR = _crd_dir()
SCHEMA_SOURCES = [pytest.param(None, id="builtin")] + (
    [pytest.param(CRD_DIR, id="istio-crds")] if CRD_DIR else []
)

# The seed article's route entry, mis-indented: host/subset sit beside `destination`, not in it.
MISINDENTED_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews-misindented
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
      host: reviews
      subset: v1
"""


def virtual_service(
    name: str, host: str = "reviews", weights: dict[str, int] | None = None
) -> dict[str, Any]:
    weights = weights or {"v1": 100}
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": NS, "labels": {"team": "reviews"}},
        "spec": {
            "hosts": [host],
            "http": [
                {
                    "name": "primary",
                    "route": [
                        {"destination": {"host": host, "subset": subset}, "weight": weight}
                        for subset, weight in weights.items()
                    ],
                }
            ],
        },
    }


def destination_rule(name: str, host: str = "reviews", subsets: tuple[str, ...] = ("v1",)) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "DestinationRule",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "host": host,
            "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}},
            "subsets": [{"name": s, "labels": {"version": s}} for s in subsets],
        },
    }


def pod(version: str) -> dict[str, Any]:
    # The Python client insists on image/imageID in container statuses, as a kubelet reports them.
    images = {
        "reviews": f"docker.io/istio/examples-bookinfo-reviews-{version}:1.20",
        "istio-proxy": "docker.io/istio/proxyv2:1.27.0",
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"reviews-{version}-7f9c6d8b5-x2x4q",
            "namespace": NS,
            "labels": {"app": "reviews", "version": version},
        },
        "spec": {"containers": [{"name": name, "image": image} for name, image in images.items()]},
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {"name": name, "image": image, "imageID": image, "ready": True, "restartCount": 0}
                for name, image in images.items()
            ],
        },
    }


def seeded_store() -> Store:
    store = Store()
    store.put("destinationrules", destination_rule("reviews"))
    store.put("virtualservices", virtual_service("reviews"))
    for version in ("v1", "v2"):
        store.put("pods", pod(version))
    store.put(
        "services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "reviews", "namespace": NS, "labels": {"app": "reviews"}},
            "spec": {
                "clusterIP": "10.96.0.12",
                "ports": [{"port": 9080, "protocol": "TCP"}],
                "selector": {"app": "reviews"},
            },
        },
    )
    return store


def _start(crd_dir: str | None) -> ApiServer:
    server = make_api_server(seeded_store(), crd_dir=crd_dir)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _stop(server: ApiServer) -> None:
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[ApiServer]:
    server = _start(CRD_DIR)
    yield server
    _stop(server)


@pytest.fixture(scope="module")
def kubeconfig(server: ApiServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_text(kubeconfig_yaml(server.url, namespace=NS))
    return path


@pytest.fixture(scope="module")
def api_client(kubeconfig: Path) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kubeconfig))


@pytest.fixture(scope="module")
def custom(api_client: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


@pytest.fixture(scope="module")
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


def _status(exc: ApiException) -> dict[str, Any]:
    return json.loads(exc.body)


def _causes(exc: ApiException) -> dict[str, str]:
    return {c["field"]: c["reason"] for c in _status(exc)["details"]["causes"]}


def _http(
    server: ApiServer, method: str, path: str, body: Any = None, content_type: str = "application/json"
) -> tuple[int, list[str], Any]:
    """(status code, Warning headers, decoded body) of one plain HTTP request."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        server.url + path, data=data, method=method, headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get_all("Warning") or [], json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get_all("Warning") or [], json.loads(exc.read())


# --------------------------------------------------------------------------- official Python client


def test_discovery_names_the_istio_group_and_a_server_version(api_client: client.ApiClient) -> None:
    assert client.VersionApi(api_client).get_code().git_version.startswith("v1.")
    groups = {g.name: g for g in client.ApisApi(api_client).get_api_versions().groups}
    istio = groups[GROUP]
    assert istio.preferred_version.version == "v1"
    assert {v.version for v in istio.versions} == {"v1", "v1beta1", "v1alpha3"}


def test_seeded_objects_are_served_in_the_requested_version(custom: client.CustomObjectsApi) -> None:
    vs = custom.get_namespaced_custom_object(GROUP, "v1beta1", NS, "virtualservices", "reviews")
    assert vs["apiVersion"] == f"{GROUP}/v1beta1"
    assert vs["spec"]["http"][0]["route"][0]["destination"] == {"host": "reviews", "subset": "v1"}
    dr = custom.get_namespaced_custom_object(GROUP, "v1", NS, "destinationrules", "reviews")
    assert dr["spec"]["trafficPolicy"]["tls"]["mode"] == "ISTIO_MUTUAL"
    listed = custom.list_namespaced_custom_object(GROUP, "v1", NS, "virtualservices")
    assert listed["kind"] == "VirtualServiceList" and listed["metadata"]["resourceVersion"]
    assert "reviews" in {i["metadata"]["name"] for i in listed["items"]}
    by_label = custom.list_namespaced_custom_object(
        GROUP, "v1", NS, "virtualservices", label_selector="team=reviews"
    )
    assert "reviews" in {i["metadata"]["name"] for i in by_label["items"]}
    assert (
        custom.list_namespaced_custom_object(GROUP, "v1", NS, "virtualservices", label_selector="team=x")[
            "items"
        ]
        == []
    )
    everywhere = custom.list_cluster_custom_object(GROUP, "v1", "destinationrules")
    assert ("bookinfo", "reviews") in {
        (i["metadata"]["namespace"], i["metadata"]["name"]) for i in everywhere["items"]
    }


def test_virtual_service_create_replace_and_patch(custom: client.CustomObjectsApi) -> None:
    args = (GROUP, "v1", NS, "virtualservices")
    created = custom.create_namespaced_custom_object(*args, virtual_service("vs-crud"))
    assert created["metadata"]["uid"] and created["metadata"]["generation"] == 1
    with pytest.raises(ApiException) as exists:
        custom.create_namespaced_custom_object(*args, virtual_service("vs-crud"))
    assert exists.value.status == 409 and _status(exists.value)["reason"] == "AlreadyExists"

    current = custom.get_namespaced_custom_object(*args, "vs-crud")
    current["spec"]["http"][0]["timeout"] = "5s"
    replaced = custom.replace_namespaced_custom_object(*args, "vs-crud", current)
    assert replaced["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"]
    assert replaced["metadata"]["generation"] == 2

    # A replace built on the old read loses: the caller must re-read (README, "Safety rules the code keeps").
    current["spec"]["http"][0]["timeout"] = "9s"
    with pytest.raises(ApiException) as stale:
        custom.replace_namespaced_custom_object(*args, "vs-crud", current)
    assert stale.value.status == 409 and _status(stale.value)["reason"] == "Conflict"
    assert "the object has been modified" in _status(stale.value)["message"]

    merged = custom.patch_namespaced_custom_object(
        *args, "vs-crud", {"metadata": {"annotations": {"a": "b"}}, "spec": {"exportTo": ["."]}}
    )
    assert merged["metadata"]["annotations"] == {"a": "b"} and merged["spec"]["exportTo"] == ["."]
    assert merged["spec"]["http"][0]["timeout"] == "5s"

    patched = custom.patch_namespaced_custom_object(
        *args,
        "vs-crud",
        [
            {"op": "test", "path": "/spec/http/0/route/0/weight", "value": 100},
            {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 90},
            {
                "op": "add",
                "path": "/spec/http/0/route/-",
                "value": {"destination": {"host": "reviews", "subset": "v1"}, "weight": 10},
            },
        ],
        _content_type="application/json-patch+json",
    )
    assert [r["weight"] for r in patched["spec"]["http"][0]["route"]] == [90, 10]

    with pytest.raises(ApiException) as failed_test:
        custom.patch_namespaced_custom_object(
            *args,
            "vs-crud",
            [{"op": "test", "path": "/spec/http/0/route/0/weight", "value": 100}],
            _content_type="application/json-patch+json",
        )
    assert failed_test.value.status == 422

    with pytest.raises(ApiException) as stale_patch:
        custom.patch_namespaced_custom_object(
            *args, "vs-crud", {"metadata": {"resourceVersion": current["metadata"]["resourceVersion"]}}
        )
    assert stale_patch.value.status == 409

    custom.delete_namespaced_custom_object(*args, "vs-crud")
    with pytest.raises(ApiException) as gone:
        custom.get_namespaced_custom_object(*args, "vs-crud")
    assert gone.value.status == 404


def test_destination_rule_create_patch_and_enum_check(custom: client.CustomObjectsApi) -> None:
    args = (GROUP, "v1", NS, "destinationrules")
    custom.create_namespaced_custom_object(*args, destination_rule("dr-crud", host="ratings"))
    patched = custom.patch_namespaced_custom_object(
        *args,
        "dr-crud",
        [{"op": "add", "path": "/spec/subsets/-", "value": {"name": "v2", "labels": {"version": "v2"}}}],
        _content_type="application/json-patch+json",
    )
    assert [s["name"] for s in patched["spec"]["subsets"]] == ["v1", "v2"]
    assert patched["spec"]["trafficPolicy"] == {"tls": {"mode": "ISTIO_MUTUAL"}}

    with pytest.raises(ApiException) as bad_mode:
        custom.patch_namespaced_custom_object(
            *args, "dr-crud", {"spec": {"trafficPolicy": {"tls": {"mode": "STRICT"}}}}
        )
    assert bad_mode.value.status == 422
    assert _causes(bad_mode.value) == {
        "spec.trafficPolicy.tls.mode": "FieldValueNotSupported",
        "<nil>": "FieldValueInvalid",  # as a real server says: the CRD's CEL rules were not run
    }

    with pytest.raises(ApiException) as duplicate:
        custom.patch_namespaced_custom_object(
            *args,
            "dr-crud",
            [{"op": "add", "path": "/spec/subsets/-", "value": {"name": "v2"}}],
            _content_type="application/json-patch+json",
        )
    assert duplicate.value.status == 422 and "spec.subsets[2].name" in _causes(duplicate.value)

    with pytest.raises(ApiException) as smp:  # CRDs take no strategic merge patch, as on a real server
        custom.patch_namespaced_custom_object(
            *args, "dr-crud", {"spec": {"host": "x"}}, _content_type="application/strategic-merge-patch+json"
        )
    assert smp.value.status == 415


def test_field_validation_ignore_and_warn_prune_unknown_fields(
    server: ApiServer, custom: client.CustomObjectsApi
) -> None:
    args = (GROUP, "v1", NS, "virtualservices")
    sloppy = virtual_service("pruned")
    sloppy["spec"]["http"][0]["retrys"] = {"attempts": 3}  # typo: not in the schema
    with pytest.raises(ApiException) as strict:
        custom.create_namespaced_custom_object(*args, sloppy, field_validation="Strict")
    assert strict.value.status == 400 and _status(strict.value)["reason"] == "BadRequest"
    assert 'strict decoding error: unknown field "spec.http[0].retrys"' in _status(strict.value)["message"]
    created = custom.create_namespaced_custom_object(*args, sloppy, field_validation="Ignore")
    assert "retrys" not in created["spec"]["http"][0]
    # No fieldValidation is Warn, as on a real server: pruned, with a Warning header.
    sloppy["metadata"]["name"] = "pruned-warn"
    code, warnings, created = _http(server, "POST", f"/apis/{GROUP}/v1/namespaces/{NS}/virtualservices", sloppy)
    assert code == 201 and "retrys" not in created["spec"]["http"][0]
    assert warnings == ['299 - "unknown field \\"spec.http[0].retrys\\""']


def test_missing_objects_answer_404(custom: client.CustomObjectsApi) -> None:
    args = (GROUP, "v1", NS, "virtualservices")
    calls = [
        lambda: custom.get_namespaced_custom_object(*args, "nope"),
        lambda: custom.replace_namespaced_custom_object(*args, "nope", virtual_service("nope")),
        lambda: custom.patch_namespaced_custom_object(*args, "nope", {"spec": {}}),
        lambda: custom.delete_namespaced_custom_object(*args, "nope"),
    ]
    for call in calls:
        with pytest.raises(ApiException) as missing:
            call()
        assert missing.value.status == 404
        assert _status(missing.value)["message"] == 'virtualservices.networking.istio.io "nope" not found'


def test_misindented_route_is_rejected_naming_the_field(custom: client.CustomObjectsApi) -> None:
    with pytest.raises(ApiException) as rejected:
        custom.create_namespaced_custom_object(
            GROUP, "v1", NS, "virtualservices", yaml.safe_load(MISINDENTED_VS)
        )
    assert rejected.value.status == 422
    status = _status(rejected.value)
    assert status["reason"] == "Invalid"
    assert status["message"].startswith(
        'VirtualService.networking.istio.io "reviews-misindented" is invalid: '
    )
    assert _causes(rejected.value) == {
        "spec.http[0].route[0].destination": "FieldValueRequired",
        "<nil>": "FieldValueInvalid",  # as a real server says: the CRD's CEL rules were not run
    }
    # host and subset are unknown fields: pruned, with a warning each (kubectl prints them).
    assert 'unknown field \\"spec.http[0].route[0].host\\"' in rejected.value.headers["Warning"]
    with pytest.raises(ApiException) as not_stored:
        custom.get_namespaced_custom_object(GROUP, "v1", NS, "virtualservices", "reviews-misindented")
    assert not_stored.value.status == 404


def test_istio_webhook_weight_rules(custom: client.CustomObjectsApi) -> None:
    args = (GROUP, "v1", NS, "virtualservices")
    with pytest.raises(ApiException) as negative:
        custom.create_namespaced_custom_object(
            *args, virtual_service("w-neg", weights={"v1": 110, "v2": -10})
        )
    assert "spec.http[0].route[1].weight" in _causes(negative.value)
    with pytest.raises(ApiException) as all_zero:
        custom.create_namespaced_custom_object(*args, virtual_service("w-zero", weights={"v1": 0, "v2": 0}))
    assert "spec.http[0].route" in _causes(all_zero.value)
    # Istio requires no total of 100, and a single destination takes all traffic whatever its weight.
    custom.create_namespaced_custom_object(*args, virtual_service("w-single", weights={"v1": 0}))
    custom.create_namespaced_custom_object(*args, virtual_service("w-uneven", weights={"v1": 3, "v2": 1}))


def test_missing_subset_and_shadowed_route_are_warnings(server: ApiServer) -> None:
    vs = virtual_service("warned", weights={"v1": 50, "v3": 50})
    vs["spec"]["http"].insert(0, {"name": "catch-all", "route": [{"destination": {"host": "reviews"}}]})
    code, warnings, body = _http(server, "POST", f"/apis/{GROUP}/v1/namespaces/{NS}/virtualservices", vs)
    assert code == 201, body
    assert warnings == [
        '299 - "virtualService rule #0 catch-all not used (only the last rule can have no matches)"',
        # v3 is not a subset of DestinationRule "reviews"; v1 is, so it is not mentioned.
        '299 - "Referenced host+subset in destinationrule not found: \\"reviews+v3\\""',
    ]


def test_label_and_field_selectors_on_pods(core: client.CoreV1Api) -> None:
    def names(**selectors: str) -> list[str]:
        return [p.metadata.name for p in core.list_namespaced_pod(NS, **selectors).items]

    assert names(label_selector="app=reviews,version=v2") == ["reviews-v2-7f9c6d8b5-x2x4q"]
    assert len(names(label_selector="app=reviews")) == 2
    assert names(label_selector="version in (v1, v3)") == ["reviews-v1-7f9c6d8b5-x2x4q"]
    assert names(label_selector="app,version notin (v1)") == ["reviews-v2-7f9c6d8b5-x2x4q"]
    assert names(label_selector="!version") == []
    assert names(field_selector="metadata.name=reviews-v1-7f9c6d8b5-x2x4q") == ["reviews-v1-7f9c6d8b5-x2x4q"]
    pod_v1 = core.read_namespaced_pod("reviews-v1-7f9c6d8b5-x2x4q", NS)
    assert [c.name for c in pod_v1.spec.containers] == ["reviews", "istio-proxy"]
    assert core.read_namespaced_service("reviews", NS).spec.ports[0].port == 9080
    assert {"bookinfo", "default"} <= {n.metadata.name for n in core.list_namespace().items}
    with pytest.raises(ApiException) as read_only:
        core.delete_namespaced_pod("reviews-v1-7f9c6d8b5-x2x4q", NS)
    assert read_only.value.status == 405


def test_watch_reports_current_objects_then_changes(custom: client.CustomObjectsApi) -> None:
    args = (GROUP, "v1", NS, "virtualservices")
    custom.create_namespaced_custom_object(*args, virtual_service("watched"))
    watcher = watch.Watch()
    seen = []
    for event in watcher.stream(
        custom.list_namespaced_custom_object,
        *args,
        field_selector="metadata.name=watched",
        timeout_seconds=30,
    ):
        seen.append((event["type"], event["object"]["spec"]["http"][0].get("timeout")))
        if event["type"] == "ADDED":
            custom.patch_namespaced_custom_object(
                *args,
                "watched",
                {
                    "spec": {
                        "http": [
                            {"route": [{"destination": {"host": "reviews", "subset": "v1"}}], "timeout": "3s"}
                        ]
                    }
                },
            )
        else:
            watcher.stop()
    assert seen == [("ADDED", None), ("MODIFIED", "3s")]


def test_audit_records_resource_requests(server: ApiServer, custom: client.CustomObjectsApi) -> None:
    custom.create_namespaced_custom_object(GROUP, "v1", NS, "destinationrules", destination_rule("audited"))
    custom.get_namespaced_custom_object(GROUP, "v1", NS, "destinationrules", "audited")
    code, _, records = _http(server, "GET", "/sandbox/audit")
    assert code == 200
    mine = [r for r in records if r["name"] == "audited"]
    assert [(r["verb"], r["code"]) for r in mine] == [("create", 201), ("get", 200)]
    assert (
        mine[0]["group"] == GROUP and mine[0]["resource"] == "destinationrules" and mine[0]["namespace"] == NS
    )
    assert mine[0]["user_agent"].startswith("OpenAPI-Generator")
    assert all(r["resource"] not in ("", None) for r in records)  # discovery is not audited


def test_faults_fail_the_next_writes_then_clear(server: ApiServer, custom: client.CustomObjectsApi) -> None:
    args = (GROUP, "v1", NS, "virtualservices")
    server.faults.arm("error500", 1)
    with pytest.raises(ApiException) as broken:
        custom.create_namespaced_custom_object(*args, virtual_service("faulty"))
    assert broken.value.status == 500
    custom.create_namespaced_custom_object(*args, virtual_service("faulty"))  # the fault was used up

    code, _, state = _http(server, "POST", "/sandbox/faults", {"kind": "conflict", "count": 2})
    assert code == 200 and state["count"] == 2
    for _ in range(2):
        with pytest.raises(ApiException) as conflicted:
            custom.patch_namespaced_custom_object(*args, "faulty", {"spec": {"exportTo": ["*"]}})
        assert conflicted.value.status == 409
    assert custom.patch_namespaced_custom_object(*args, "faulty", {"spec": {"exportTo": ["*"]}})["spec"][
        "exportTo"
    ]

    server.faults.arm("timeout", 1, timeout_seconds=0.05)
    with pytest.raises(ApiException) as slow:
        custom.delete_namespaced_custom_object(*args, "faulty")
    assert slow.value.status == 504
    server.faults.arm("error500", 5)
    assert _http(server, "DELETE", "/sandbox/faults")[2]["kind"] is None
    custom.delete_namespaced_custom_object(*args, "faulty")


# --------------------------------------------------------------------------- real kubectl


@pytest.fixture(scope="module")
def kubectl(kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory):
    if not KUBECTL.exists():
        pytest.skip("kubectl is not installed in .venv")
    cache = tmp_path_factory.mktemp("kubectl-cache")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(cache)}

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(KUBECTL), "--cache-dir", str(cache), *args],
            input=stdin,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


def test_kubectl_get_prints_the_virtual_service(kubectl) -> None:
    result = kubectl("get", "vs", "reviews", "-n", NS, "-o", "yaml")
    assert result.returncode == 0, result.stderr
    vs = yaml.safe_load(result.stdout)
    assert vs["apiVersion"] == f"{GROUP}/v1"
    assert vs["spec"]["http"][0]["route"][0]["destination"]["subset"] == "v1"
    table = kubectl("get", "virtualservices", "-n", NS)
    assert table.returncode == 0, table.stderr
    assert table.stdout.split("\n")[0].split() == ["NAME", "GATEWAYS", "HOSTS", "AGE"]


def test_kubectl_apply_twice_then_patch(kubectl, custom: client.CustomObjectsApi) -> None:
    manifest = yaml.safe_dump(virtual_service("applied", weights={"v1": 90, "v2": 10}))
    first = kubectl("apply", "-f", "-", stdin=manifest)
    assert first.returncode == 0, first.stderr
    assert "virtualservice.networking.istio.io/applied created" in first.stdout
    assert 'Referenced host+subset in destinationrule not found: "reviews+v2"' in first.stderr
    second = kubectl("apply", "-f", "-", stdin=manifest)
    assert second.returncode == 0, second.stderr
    assert "virtualservice.networking.istio.io/applied unchanged" in second.stdout

    patch = {"spec": {"http": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]}}
    patched = kubectl("patch", "vs", "applied", "-n", NS, "--type", "merge", "-p", json.dumps(patch))
    assert patched.returncode == 0, patched.stderr
    stored = custom.get_namespaced_custom_object(GROUP, "v1", NS, "virtualservices", "applied")
    assert stored["spec"]["http"] == patch["spec"]["http"]

    strategic = kubectl("patch", "vs", "applied", "-n", NS, "-p", json.dumps(patch))
    assert strategic.returncode != 0 and "strategic-merge-patch" in strategic.stderr


def test_kubectl_get_pods_by_label(kubectl) -> None:
    result = kubectl("get", "pods", "-l", "app=reviews,version=v2", "-n", NS)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().split("\n")
    assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert [line.split()[:3] for line in lines[1:]] == [["reviews-v2-7f9c6d8b5-x2x4q", "2/2", "Running"]]


def test_kubectl_apply_refuses_invalid_manifest_naming_the_field(kubectl) -> None:
    # kubectl asks for strict field validation: the unknown fields are named, before any schema check.
    result = kubectl("apply", "-n", NS, "-f", "-", stdin=MISINDENTED_VS)
    assert result.returncode != 0
    assert 'strict decoding error: unknown field "spec.http[0].route[0].host"' in result.stderr
    lenient = kubectl("apply", "--validate=false", "-n", NS, "-f", "-", stdin=MISINDENTED_VS)
    assert lenient.returncode != 0
    assert "spec.http[0].route[0].destination: Required value" in lenient.stderr


# --------------------------------------------------------------------------- the schemas themselves


@pytest.mark.parametrize("crd_dir", SCHEMA_SOURCES)
def test_validator_rules(crd_dir: str | None) -> None:
    schemas = load_schemas(crd_dir)

    def errors(obj: dict[str, Any], plural: str = "virtualservices") -> dict[str, str]:
        return {e.field: e.type for e in schemas.validate(plural, "v1", obj)}

    assert errors(virtual_service("ok", weights={"v1": 90, "v2": 10})) == {}
    assert errors(destination_rule("ok", subsets=("v1", "v2")), "destinationrules") == {}
    assert errors(yaml.safe_load(MISINDENTED_VS)) == {
        "spec.http[0].route[0].destination": "FieldValueRequired",
        "spec.http[0].route[0].host": "FieldValueUnknown",
        "spec.http[0].route[0].subset": "FieldValueUnknown",
    }

    vs = virtual_service("checks")
    vs["spec"]["hostz"] = ["typo"]
    route = vs["spec"]["http"][0]
    route["match"] = [{"headers": {"x-canary": {"exact": "true", "regex": ".*"}}}]
    route["route"][0]["weight"] = 2**31
    route["timeout"] = "0.5ms"
    found = schemas.validate("virtualservices", "v1", vs)
    assert {e.field: e.type for e in found} == {
        "spec.hostz": "FieldValueUnknown",
        "spec.http[0].match[0].headers[x-canary]": "FieldValueInvalid",
        "spec.http[0].route[0].weight": "FieldValueInvalid",
        "spec.http[0].timeout": "FieldValueInvalid",
    }
    messages = {e.field: e.message for e in found}
    assert "exact, prefix, regex" in messages["spec.http[0].match[0].headers[x-canary]"]
    assert "int32" in messages["spec.http[0].route[0].weight"]

    dr = destination_rule("types")
    dr["spec"]["subsets"][0]["labels"] = ["version=v1"]
    del dr["spec"]["host"]
    assert errors(dr, "destinationrules") == {
        "spec.host": "FieldValueRequired",
        "spec.subsets[0].labels": "FieldValueTypeInvalid",
    }


def test_builtin_schema_server_rejects_misindented_and_accepts_valid() -> None:
    server = _start(None)
    try:
        base = f"/apis/{GROUP}/v1/namespaces/{NS}"
        code, _, status = _http(server, "POST", f"{base}/virtualservices", yaml.safe_load(MISINDENTED_VS))
        assert code == 422
        assert "spec.http[0].route[0].destination: Required value" in status["message"]
        code, _, created = _http(
            server, "POST", f"{base}/destinationrules", destination_rule("ratings", "ratings")
        )
        assert code == 201, created
        code, _, created = _http(
            server, "POST", f"{base}/virtualservices", virtual_service("ratings", "ratings")
        )
        assert code == 201, created
        assert server.store.get("virtualservices", NS, "ratings")["spec"]["hosts"] == ["ratings"]
    finally:
        _stop(server)
