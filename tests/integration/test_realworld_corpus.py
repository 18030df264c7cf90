"""The real-world corpus (tests/fixtures/realworld/*.yaml) run against both Kubernetes API servers.

Every case is a configuration a user can have. A release must either handle it (every object
and every route it does not own stays byte-identical) or refuse it before its first write with
an error naming the object, the field and the fix. Three tests per corpus, each run once per
API server, ids = `<server>-<file stem>` (`sandbox-mesh-domain`, `kube-apiserver-mesh-domain`):

- `test_refused[server-case]`: `ReleaseRequest.from_params`, then preflight (and, if those let it
  through, the destination rule and step 10, to say how far it got) must raise with zero writes
  to the case's namespace, the error naming object, field and fix.
- `test_promotion[server-case]`: preflight, destination rule, every step, promote; checked after each.
- `test_rollback[server-case]`: preflight, destination rule, the first step, rollback; then the
  VirtualService and DestinationRule specs equal the originals exactly.

The two servers (one module-scoped instance of each; the bodies of the tests are shared):

- `sandbox`: the sandbox's API server (`sandbox.apiserver.make_api_server`, validating against
  Istio's CRD schemas as `make test` configures it) in-process over its own Store. It serves
  Pods and Services read-only and has no status subresource, and the session sandbox runs it
  in another process whose Store a test cannot reach; so each case's Services and Pods, status
  included, go into this Store as the sandbox's own world seeding does. The operators use an
  admin kubeconfig. Writes are read from the server's audit log (answered or refused).
- `kube-apiserver`: a real etcd + kube-apiserver with RBAC and Istio's CRDs
  (`sandbox.kubeenv.ControlPlane`). Every case namespace gets include/manifests/rbac.yaml
  (namespace replaced; the ClusterRoleBinding names every namespace's ServiceAccount), and the
  operators run on that namespace's `istio-canary` ServiceAccount token: the real authorizer
  judges every request. Services and Pods are created through the API, a Pod's status written
  through the status subresource as a kubelet would. Writes are seen as resourceVersion changes
  (and objects appearing or vanishing) among the case namespace's VirtualServices,
  DestinationRules, Services and Pods: every write that changed something, not a request the
  server refused (which changed nothing; the audit log of the sandbox lists those too).
  No namespace controller runs (a deleted Namespace stays Terminating), so a case's objects are
  deleted and its namespace, created once with its RBAC, is reused.

On both, VirtualServices and DestinationRules are created through the official Kubernetes
client (the API server validates them), every case has its own namespace, and the case's
objects (and anything a release created) are deleted when it ends. A case that cannot behave
the same on the real server goes in KUBE_APISERVER_DIFFERENCES with its reason: it is a strict
xfail there, so the list cannot go stale.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import re2
import requests
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from istio_canary.core.request import ReleaseRequest
from istio_canary.operators.preflight import IstioPreflightOperator
from istio_canary.operators.routing import (
    IstioDestinationRuleOperator,
    IstioPromoteOperator,
    IstioRollbackOperator,
    IstioTrafficShiftOperator,
)
from sandbox.apiserver import ApiServer, make_api_server
from sandbox.client import sandbox_env
from sandbox.kubeconfig import kubeconfig_yaml
from sandbox.kubeenv import ControlPlane, KubeEnvError
from sandbox.realcluster import PIPELINE_SERVICE_ACCOUNT, RBAC_MANIFEST, RBAC_NAMESPACE
from sandbox.store import Store
from tools.realworld_table import Case, load_cases

pytestmark = pytest.mark.integration

GROUP, VERSION = "networking.istio.io", "v1"
ISTIO_PLURALS = {"VirtualService": "virtualservices", "DestinationRule": "destinationrules"}
CORE_PLURALS = {"Pod": "pods", "Service": "services"}
WRITE_VERBS = ("create", "update", "patch", "delete")
# The release's own bookkeeping on its VirtualService (lock, snapshot, outcome): not the user's.
OWN_ANNOTATION_PREFIX = "istio-canary.io/"
PROXY_IMAGE = "docker.io/istio/proxyv2:1.27.0"
DEFAULT_STEPS = (10, 50, 100)
SANDBOX, KUBE_APISERVER = "sandbox", "kube-apiserver"
BACKENDS = (SANDBOX, KUBE_APISERVER)

CASES = load_cases()
# case name -> why it cannot behave on a real kube-apiserver as on the sandbox's. Each is a
# strict xfail on kube-apiserver (an XPASS fails the run: then the entry must go). Ideally empty.
KUBE_APISERVER_DIFFERENCES: dict[str, str] = {}


def on_both(cases: list[Case]) -> list[Any]:
    """(server, case) pairs, server first in the id; a listed difference is a strict xfail."""
    return [
        pytest.param(backend, case, id=f"{backend}-{case.name}", marks=[
            pytest.mark.xfail(strict=True, reason=KUBE_APISERVER_DIFFERENCES[case.name])
        ] if backend == KUBE_APISERVER and case.name in KUBE_APISERVER_DIFFERENCES else [])
        for backend in BACKENDS for case in cases
    ]


REFUSED = on_both([c for c in CASES if c.refused])
RELEASED = on_both([c for c in CASES if c.result == "released"])


# --------------------------------------------------------------------------- the API servers


@dataclass(frozen=True)
class Write:
    """One write to a case's namespace: from the audit log (with its HTTP code) or, on
    kube-apiserver, inferred from a resourceVersion that changed (code None)."""

    verb: str
    resource: str
    name: str | None
    code: int | None = None

    def __str__(self) -> str:
        return f"{self.verb} {self.resource}/{self.name}" + (f" ({self.code})" if self.code is not None else "")


class CorpusApi(ABC):
    """One API server under test: the harness's admin clients, and what the operators connect with."""

    name: str
    custom: client.CustomObjectsApi
    core: client.CoreV1Api

    @abstractmethod
    def connection(self, namespace: str) -> str:
        """The AIRFLOW_CONN_KUBERNETES_DEFAULT value for a release in `namespace`."""

    @abstractmethod
    def create_namespace(self, namespace: str) -> None: ...

    @abstractmethod
    def create_workload(self, obj: dict[str, Any]) -> None:
        """A Service, or a Pod (expanded by expand_pod: Running, Ready, with the sidecar)."""

    @abstractmethod
    def delete_workloads(self, namespace: str) -> None:
        """The namespace's Services and Pods, and the namespace where the server lets it go."""

    @abstractmethod
    def track_writes(self, namespace: str) -> Callable[[], list[Write]]:
        """From now: a function returning the writes to `namespace` since this call."""


class SandboxApi(CorpusApi):
    """The sandbox's API server, in-process over its own Store."""

    name = SANDBOX

    def __init__(self, server: ApiServer, store: Store, kubeconfig: Path) -> None:
        self.server, self.store, self.api_url = server, store, server.url
        api_client = config.new_client_from_config(config_file=str(kubeconfig))
        self.custom, self.core = client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)
        self._connection = json.dumps({"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}})

    def connection(self, namespace: str) -> str:
        return self._connection

    def create_namespace(self, namespace: str) -> None:
        self.store.put("namespaces", {
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {"kubernetes.io/metadata.name": namespace,
                                                       "istio-injection": "enabled"}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"},
        })

    def create_workload(self, obj: dict[str, Any]) -> None:
        # The API serves them read-only: seeded into the Store, status included.
        self.store.put(CORE_PLURALS[obj["kind"]], copy.deepcopy(obj))

    def delete_workloads(self, namespace: str) -> None:
        for plural in CORE_PLURALS.values():
            for item in self.store.list(plural, namespace):
                self.store.delete(plural, namespace, item["metadata"]["name"])
        self.store.delete("namespaces", "", namespace)

    def audit(self) -> list[dict[str, Any]]:
        response = requests.get(f"{self.api_url}/sandbox/audit", timeout=10)
        response.raise_for_status()
        return response.json()

    def writes_since(self, namespace: str, since: float) -> list[Write]:
        """create/update/patch/delete requests to `namespace` since `since`, answered or refused."""
        return [
            Write(r["verb"], r["resource"], r.get("name"), r.get("code")) for r in self.audit()
            if r.get("verb") in WRITE_VERBS and r.get("namespace") == namespace and r.get("time", 0) >= since
        ]

    def track_writes(self, namespace: str) -> Callable[[], list[Write]]:
        started = time.time()
        return lambda: self.writes_since(namespace, started)


class KubeApiserverApi(CorpusApi):
    """A real etcd + kube-apiserver: the admin's clients for the harness, the pipeline's
    ServiceAccount (rbac.yaml) per case namespace for the operators."""

    name = KUBE_APISERVER

    def __init__(self, plane: ControlPlane, state_dir: Path) -> None:
        self.plane, self.state_dir = plane, state_dir
        admin = state_dir / "admin.kubeconfig"
        admin.write_text(plane.admin_kubeconfig())
        api_client = config.new_client_from_config(config_file=str(admin))
        self.custom, self.core = client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)
        self.connections: dict[str, str] = {}

    def setup_namespaces(self, namespaces: list[str]) -> None:
        """Every case namespace with rbac.yaml and the pipeline's token, up front: a new
        RoleBinding takes a moment to reach the authorizer, paid once here, not per case."""
        for namespace in namespaces:
            self.plane.client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {
                "name": namespace, "labels": {"istio-injection": "enabled"}}})
        for obj in rbac_objects(namespaces):
            self.plane.client.create(obj)
        for namespace in namespaces:
            kubeconfig = self.state_dir / f"pipeline-{namespace}.kubeconfig"
            kubeconfig.write_text(self.plane.service_account_kubeconfig(namespace, PIPELINE_SERVICE_ACCOUNT))
            self.plane.wait_until_allowed(namespace, PIPELINE_SERVICE_ACCOUNT)
            self.connections[namespace] = json.dumps(
                {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}})

    def connection(self, namespace: str) -> str:
        return self.connections[namespace]

    def create_namespace(self, namespace: str) -> None:
        assert namespace in self.connections, f"harness: namespace {namespace} was not set up"

    def create_workload(self, obj: dict[str, Any]) -> None:
        body = copy.deepcopy(obj)
        status = body.pop("status", None) if body["kind"] == "Pod" else None
        try:
            stored = self.plane.client.create(body)
            if status is not None:  # the kubelet's part: a create drops status
                self.plane.client.replace({**stored, "status": status}, "/status")
        except KubeEnvError as exc:
            pytest.fail(f"harness: creating {obj['kind']} {obj['metadata'].get('namespace')}/"
                        f"{obj['metadata']['name']} failed: {exc}")

    def delete_workloads(self, namespace: str) -> None:
        # Pods are bound to no node, so they go at once; the namespace stays for the next test.
        for kind in CORE_PLURALS:
            for item in self.plane.client.list(kind, namespace).get("items", []):
                self.plane.client.delete(kind, namespace, item["metadata"]["name"])

    def resource_versions(self, namespace: str) -> dict[tuple[str, str], str]:
        kinds = {**ISTIO_PLURALS, **CORE_PLURALS}
        return {
            (plural, item["metadata"]["name"]): item["metadata"]["resourceVersion"]
            for kind, plural in kinds.items()
            for item in self.plane.client.list(kind, namespace).get("items", [])
        }

    def track_writes(self, namespace: str) -> Callable[[], list[Write]]:
        before = self.resource_versions(namespace)

        def since() -> list[Write]:
            after = self.resource_versions(namespace)
            writes = [Write("delete", p, n) for p, n in before.keys() - after.keys()]
            for key, version in after.items():
                if key not in before:
                    writes.append(Write("create", *key))
                elif before[key] != version:
                    writes.append(Write("update", *key))
            return sorted(writes, key=str)

        return since


def rbac_objects(namespaces: list[str]) -> list[dict[str, Any]]:
    """include/manifests/rbac.yaml for each namespace (its namespace replaced). The cluster-wide
    objects once, the ClusterRoleBinding naming every namespace's ServiceAccount: applied per
    namespace, each would replace the one before, and the cases reuse their namespaces."""
    namespaced: list[dict[str, Any]] = []
    cluster: dict[str, dict[str, Any]] = {}
    for namespace in namespaces:
        text = RBAC_MANIFEST.read_text().replace(f"namespace: {RBAC_NAMESPACE}", f"namespace: {namespace}")
        for doc in yaml.safe_load_all(text):
            if not doc:
                continue
            if doc["kind"] == "ClusterRoleBinding" and doc["kind"] in cluster:
                cluster[doc["kind"]]["subjects"] += doc["subjects"]
            elif doc["kind"].startswith("Cluster"):
                cluster.setdefault(doc["kind"], doc)
            else:
                namespaced.append(doc)
    return [*namespaced, *cluster.values()]


@pytest.fixture(scope="module")
def sandbox_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxApi]:
    store = Store()
    server = make_api_server(store, crd_dir=sandbox_env().get("SANDBOX_CRDS") or None)
    threading.Thread(target=server.serve_forever, name="corpus-apiserver", daemon=True).start()
    kubeconfig = tmp_path_factory.mktemp("realworld") / "kubeconfig"
    kubeconfig.write_text(kubeconfig_yaml(server.url))
    try:
        yield SandboxApi(server, store, kubeconfig)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def kube_apiserver_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApiserverApi]:
    crds = sandbox_env().get("SANDBOX_CRDS")
    if not crds:
        pytest.fail("Istio's CRD files not found: set SANDBOX_CRDS, or run `make setup` (it writes .cache/crds)")
    state_dir = tmp_path_factory.mktemp("realworld-kubeenv")
    try:
        plane = ControlPlane(state_dir)  # $KUBEENV_BIN, else .cache/bin (make setup links them there)
    except KubeEnvError as exc:
        pytest.fail(str(exc))
    try:
        plane.start(Path(crds))
        api = KubeApiserverApi(plane, state_dir)
        api.setup_namespaces(sorted({c.params["namespace"] for c in CASES}))
        yield api
    finally:
        plane.stop()


@pytest.fixture
def api(request: pytest.FixtureRequest) -> CorpusApi:
    """The server of the test's parameter (`sandbox` or `kube-apiserver`): its module fixture."""
    backend = getattr(request, "param", SANDBOX)
    return request.getfixturevalue("kube_apiserver_api" if backend == KUBE_APISERVER else "sandbox_api")


# --------------------------------------------------------------------------- objects


def expand_pod(obj: dict[str, Any]) -> dict[str, Any]:
    """A Pod written with metadata only, as a kubelet would report it: an application container,
    the istio-proxy sidecar, Running and Ready. A Pod's own spec or status is kept."""
    pod = copy.deepcopy(obj)
    meta = pod["metadata"]
    labels = meta.get("labels") or {}
    app = labels.get("app") or labels.get("app.kubernetes.io/name") or meta["name"].split("-")[0]
    images = {app: f"docker.io/istio/examples-bookinfo-{app}:1.20.2", "istio-proxy": PROXY_IMAGE}
    pod.setdefault("spec", {"containers": [{"name": n, "image": i} for n, i in images.items()]})
    containers = pod["spec"].get("containers") or []
    pod.setdefault("status", {
        "phase": "Running",
        "conditions": [
            {"type": "Initialized", "status": "True"},
            {"type": "Ready", "status": "True"},
            {"type": "ContainersReady", "status": "True"},
            {"type": "PodScheduled", "status": "True"},
        ],
        "containerStatuses": [
            {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": f"{c.get('image', '')}@sha256:{hashlib.sha256(str(c).encode()).hexdigest()}",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}},
            }
            for c in containers
        ],
    })
    return pod


def create_objects(api: CorpusApi, case: Case) -> None:
    """Services and Pods as the server allows (see CorpusApi.create_workload), Istio objects
    through the official client (validated by the API server); DestinationRules before
    VirtualServices."""
    namespace = case.params["namespace"]
    api.create_namespace(namespace)
    order = {"Service": 0, "Pod": 1, "DestinationRule": 2, "VirtualService": 3}
    for obj in sorted(case.objects, key=lambda o: order[o["kind"]]):
        kind = obj["kind"]
        if kind == "Pod":
            api.create_workload(expand_pod(obj))
        elif kind == "Service":
            api.create_workload(obj)
        else:
            try:
                api.custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, ISTIO_PLURALS[kind], copy.deepcopy(obj))
            except ApiException as exc:
                pytest.fail(f"harness: creating {kind} {namespace}/{obj['metadata']['name']} failed "
                            f"on {api.name}: {exc.body}")


def delete_objects(api: CorpusApi, namespace: str) -> None:
    """Everything in the case's namespace, including anything a release created."""
    for plural in ISTIO_PLURALS.values():
        listed = api.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        for item in listed.get("items", []):
            api.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, plural, item["metadata"]["name"])
    api.delete_workloads(namespace)


def read(api: CorpusApi, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        if kind in ISTIO_PLURALS:
            return api.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, ISTIO_PLURALS[kind], name)
        reader = api.core.read_namespaced_pod if kind == "Pod" else api.core.read_namespaced_service
        return json.loads(reader(name, namespace, _preload_content=False).data)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def istio_names(api: CorpusApi, namespace: str) -> dict[str, set[str]]:
    return {
        kind: {i["metadata"]["name"] for i in api.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, plural).get("items", [])}
        for kind, plural in ISTIO_PLURALS.items()
    }


def user_view(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a person configured: spec, labels, annotations (the release's bookkeeping left out)."""
    if obj is None:
        return None
    meta = obj.get("metadata") or {}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if not k.startswith(OWN_ANNOTATION_PREFIX)}
    return {"spec": obj.get("spec"), "labels": meta.get("labels") or {}, "annotations": annotations}


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


# --------------------------------------------------------------------------- what a release may change


def _entries(route: dict[str, Any]) -> list[dict[str, Any]]:
    return list(route.get("route") or [])


def _subset(entry: dict[str, Any]) -> Any:
    return (entry.get("destination") or {}).get("subset")


def shares_by_subset(entries: list[dict[str, Any]]) -> dict[Any, float]:
    """Percent of the route's traffic per subset: a lone destination takes all, else weight/total."""
    if len(entries) == 1:
        return {_subset(entries[0]): 100.0}
    weights = [int(e.get("weight") or 0) for e in entries]
    total = sum(weights)
    out: dict[Any, float] = {}
    for entry, weight in zip(entries, weights, strict=True):
        out[_subset(entry)] = out.get(_subset(entry), 0.0) + (100.0 * weight / total if total else 0.0)
    return out


@dataclass
class Release:
    """One case's release: its params with their defaults resolved, and what it started from."""

    api: CorpusApi
    case: Case
    run_id: str
    baseline: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # Writes to the namespace since the objects were created (set by create()).
    writes: Callable[[], list[Write]] = field(default=lambda: [])

    def __post_init__(self) -> None:
        p = self.case.params
        self.namespace: str = p["namespace"]
        self.service: str = p["service"]
        self.stable: str = p.get("stable_subset") or p["stable_version"]
        self.canary: str = p.get("canary_subset") or p["canary_version"]
        self.versions = {self.stable: p["stable_version"], self.canary: p["canary_version"]}
        self.version_label: str = p.get("version_label") or "version"
        self.strategy: str = p.get("strategy") or "weighted"
        self.route_name: str | None = p.get("route_name")
        self.canary_route_name: str = p.get("canary_route_name") or f"{self.service}-canary"
        self.vs_name: str = p.get("virtual_service") or self.service
        # The release's VirtualService first, then the ones it moves with it (virtual_services).
        self.vs_names: list[str] = [self.vs_name, *(p.get("virtual_services") or [])]
        self.dr_name: str = p.get("destination_rule") or self.service
        self.steps: tuple[int, ...] = tuple(int(s) for s in p.get("steps") or DEFAULT_STEPS)
        self.context = {"dag": SimpleNamespace(dag_id="istio_canary_release"), "run_id": self.run_id}

    # -- setup
    def create(self) -> None:
        create_objects(self.api, self.case)
        for obj in self.case.objects:
            name = obj["metadata"]["name"]
            stored = read(self.api, obj["kind"], self.namespace, name)
            assert stored is not None, f"harness: {obj['kind']} {self.namespace}/{name} was not created"
            self.baseline[(obj["kind"], name)] = stored
        self.writes = self.api.track_writes(self.namespace)

    def run(self, stage: str, operator_cls: type, **kwargs: Any) -> Any:
        op = operator_cls(task_id=stage.replace(" ", "_"), release=dict(self.case.params), **kwargs)
        try:
            return op.execute(self.context)
        except Exception as exc:
            pytest.fail(f"{self.case.name}: {stage} raised {type(exc).__name__}: {exc}")

    # -- the originals (of the release's VirtualService, or of `name`, one moved with it)
    def vs0_of(self, name: str | None = None) -> dict[str, Any]:
        return self.baseline[("VirtualService", name or self.vs_name)]

    @property
    def vs0(self) -> dict[str, Any]:
        return self.vs0_of()

    @property
    def dr0(self) -> dict[str, Any]:
        return self.baseline[("DestinationRule", self.dr_name)]

    def http0(self, name: str | None = None) -> list[dict[str, Any]]:
        return list(self.vs0_of(name)["spec"].get("http") or [])

    def owned_index(self, name: str | None = None) -> int:
        """The route the release owns in the original: by route_name (in a VirtualService moved
        with the release, where it has a route of that name), else the single catch-all."""
        http = self.http0(name)
        named = [i for i, r in enumerate(http) if self.route_name and r.get("name") == self.route_name]
        primary = (name or self.vs_name) == self.vs_name
        if named or (primary and self.route_name):
            found = named
        else:
            found = [i for i, r in enumerate(http) if not r.get("match") and "route" in r]
        assert len(found) == 1, f"harness: case {self.case.name} needs one owned route, found {found}"
        return found[0]

    def owned0(self, name: str | None = None) -> dict[str, Any]:
        return self.http0(name)[self.owned_index(name)]

    def stable_destination(self, name: str | None = None) -> dict[str, Any]:
        found = [e for e in _entries(self.owned0(name)) if _subset(e) == self.stable]
        assert len(found) == 1, f"harness: case {self.case.name}: the owned route needs one {self.stable} entry"
        return found[0]["destination"]

    # -- checks; each returns the problems it found
    def check_others(self) -> list[str]:
        """Every object but the release's VirtualService and DestinationRule as created; none added."""
        problems = []
        for (kind, name), before in self.baseline.items():
            if (kind == "VirtualService" and name in self.vs_names) or (kind, name) == (
                    "DestinationRule", self.dr_name):
                continue
            now = read(self.api, kind, self.namespace, name)
            if now is None:
                problems.append(f"{kind} {self.namespace}/{name} was deleted")
            elif user_view(now) != user_view(before):
                problems.append(f"{kind} {self.namespace}/{name} changed: {_json(user_view(before))} -> "
                                f"{_json(user_view(now))}")
        expected = {kind: {n for k, n in self.baseline if k == kind} for kind in ISTIO_PLURALS}
        found = istio_names(self.api, self.namespace)
        for kind in ISTIO_PLURALS:
            if found[kind] != expected[kind]:
                problems.append(f"{kind} objects in {self.namespace}: {sorted(found[kind])}, "
                                f"expected {sorted(expected[kind])}")
        return problems

    def check_vs_unchanged(self, vs: dict[str, Any]) -> list[str]:
        name = vs["metadata"]["name"]
        if user_view(vs) != user_view(self.vs0_of(name)):
            return [f"VirtualService {self.namespace}/{name} is not as created: "
                    f"{_json(user_view(self.vs0_of(name)))} -> {_json(user_view(vs))}"]
        return []

    def check_dr_unchanged(self, dr: dict[str, Any]) -> list[str]:
        if user_view(dr) != user_view(self.dr0):
            return [f"DestinationRule {self.namespace}/{self.dr_name} is not as created: "
                    f"{_json(user_view(self.dr0))} -> {_json(user_view(dr))}"]
        return []

    def check_dr_with_subsets(self, dr: dict[str, Any]) -> list[str]:
        """The original DestinationRule plus the stable and canary subsets, nothing else changed."""
        problems = []
        name = f"DestinationRule {self.namespace}/{self.dr_name}"
        before, now = self.dr0["spec"], dr["spec"]
        for key in sorted((set(before) | set(now)) - {"subsets"}):
            if before.get(key) != now.get(key):
                problems.append(f"{name} spec.{key} changed: {_json(before.get(key))} -> {_json(now.get(key))}")
        subsets0, subsets = list(before.get("subsets") or []), list(now.get("subsets") or [])
        names0 = {s["name"] for s in subsets0}
        kept = [s for s in subsets if s.get("name") in names0]
        if kept != subsets0:
            problems.append(f"{name} existing subsets changed: {_json(subsets0)} -> {_json(kept)}")
        added = {s.get("name"): s for s in subsets if s.get("name") not in names0}
        for subset in (self.stable, self.canary):
            if subset not in names0 and subset not in added:
                problems.append(f"{name} has no subset {subset!r}: {_json(subsets)}")
        stable_policy = next((s.get("trafficPolicy") for s in subsets0 if s["name"] == self.stable), None)
        for subset_name, subset in added.items():
            if subset_name not in self.versions:
                problems.append(f"{name} got a subset the release does not own: {_json(subset)}")
                continue
            wanted: dict[str, Any] = {"name": subset_name,
                                      "labels": {self.version_label: self.versions[subset_name]}}
            if subset_name == self.canary and stable_policy is not None:
                wanted["trafficPolicy"] = stable_policy
            if subset != wanted:
                problems.append(f"{name} added subset {_json(subset)}, expected {_json(wanted)}")
        meta0, meta = self.dr0["metadata"], dr["metadata"]
        for key in ("labels", "annotations"):
            if (meta0.get(key) or {}) != (meta.get(key) or {}):
                problems.append(f"{name} metadata.{key} changed")
        return problems

    def check_vs_at(self, vs: dict[str, Any], weight: int, match_route: bool | None) -> list[str]:
        """The owned route at `weight`% canary of the stable's share; everything else as created.
        `match_route`: the canary match route must be there (True), absent (False), either (None)."""
        problems: list[str] = []
        vs_name = vs["metadata"]["name"]
        name = f"VirtualService {self.namespace}/{vs_name}"
        vs0 = self.vs0_of(vs_name)
        spec0, spec = vs0["spec"], vs["spec"]
        for key in sorted(set(spec0) | set(spec)):
            if key != "http" and spec0.get(key) != spec.get(key):
                problems.append(f"{name} spec.{key} changed: {_json(spec0.get(key))} -> {_json(spec.get(key))}")
        meta0, meta = user_view(vs0) or {}, user_view(vs) or {}
        for key in ("labels", "annotations"):
            if meta0[key] != meta[key]:
                problems.append(f"{name} metadata.{key} changed: {_json(meta0[key])} -> {_json(meta[key])}")
        http = list(spec.get("http") or [])
        at = [i for i, r in enumerate(http) if r.get("name") == self.canary_route_name]
        if len(at) > 1:
            return [*problems, f"{name} has {len(at)} routes named {self.canary_route_name!r}"]
        canary_route = http.pop(at[0]) if at else None
        if match_route is True and canary_route is None:
            problems.append(f"{name} has no canary match route {self.canary_route_name!r} at {weight}%")
        if match_route is False and canary_route is not None:
            problems.append(f"{name} still has the canary match route: {_json(canary_route)}")
        owned = self.owned_index(vs_name)
        http0 = self.http0(vs_name)
        if len(http) != len(http0):
            return [*problems, f"{name} has {len(http)} http routes besides the canary match route, "
                               f"expected {len(http0)}: {_json(http)}"]
        for i, (route0, route) in enumerate(zip(http0, http, strict=True)):
            if i != owned and route0 != route:
                problems.append(f"{name} http route {i} ({route0.get('name', 'unnamed')}) changed: "
                                f"{_json(route0)} -> {_json(route)}")
        if canary_route is not None:
            if at[0] != owned:
                problems.append(f"{name} canary match route is at http[{at[0]}], not right before the "
                                f"owned route (http[{owned}] originally)")
            problems += self._check_canary_route(canary_route, vs_name)
        problems += self._check_owned(http[owned], weight, vs_name)
        return problems

    def _check_owned(self, route: dict[str, Any], weight: int, vs_name: str) -> list[str]:
        problems = []
        label = f"owned route of {vs_name} at {weight}%"
        route0 = self.owned0(vs_name)
        rest0 = {k: v for k, v in route0.items() if k != "route"}
        rest = {k: v for k, v in route.items() if k != "route"}
        if rest0 != rest:
            problems.append(f"{label}: fields besides route changed: {_json(rest0)} -> {_json(rest)}")
        entries0, entries = _entries(route0), _entries(route)
        ours = (self.stable, self.canary)
        others0 = sorted(_json(e) for e in entries0 if _subset(e) not in ours)
        others = sorted(_json(e) for e in entries if _subset(e) not in ours)
        if others0 != others:
            problems.append(f"{label}: destinations of other subsets changed: {others0} -> {others}")
        shares0, shares = shares_by_subset(entries0), shares_by_subset(entries)
        stable_share = shares0.get(self.stable, 0.0) + shares0.get(self.canary, 0.0)
        want_canary = stable_share * weight / 100
        slack = 0.0 if want_canary.is_integer() else 1.0
        got_canary, got_stable = shares.get(self.canary, 0.0), shares.get(self.stable, 0.0)
        if abs(got_canary - want_canary) > slack or abs(got_canary + got_stable - stable_share) > 1e-6:
            problems.append(f"{label}: {self.stable} {got_stable:g}%, {self.canary} {got_canary:g}%; expected "
                            f"{stable_share - want_canary:g}% / {want_canary:g}% of the stable's "
                            f"{stable_share:g}%: {_json(entries)}")
        explicit = (self.case.expect.get("canary_weights") or {}).get(weight)
        if explicit is not None and vs_name == self.vs_name:
            got = {k: v for k, v in shares.items() if v or k in explicit}
            if {k: float(v) for k, v in explicit.items() if v or k in got} != got:
                problems.append(f"{label}: shares {got}, expected {explicit}")
        problems += self._check_our_destinations(label, [e for e in entries if _subset(e) in ours], vs_name)
        return problems

    def _check_our_destinations(self, label: str, entries: list[dict[str, Any]], vs_name: str) -> list[str]:
        """Destinations the release writes keep the stable's host spelling and port selector."""
        stable = self.stable_destination(vs_name)
        problems = []
        for entry in entries:
            dest = entry.get("destination") or {}
            if dest.get("host") != stable.get("host") or dest.get("port") != stable.get("port"):
                problems.append(f"{label}: destination {_json(dest)} does not keep the stable's host "
                                f"{stable.get('host')!r} and port {_json(stable.get('port'))}")
        return problems

    def _check_canary_route(self, route: dict[str, Any], vs_name: str) -> list[str]:
        problems = []
        label = f"canary match route {self.canary_route_name!r}"
        entries = _entries(route)
        if not entries or any(_subset(e) != self.canary for e in entries):
            problems.append(f"{label} does not send only to subset {self.canary!r}: {_json(entries)}")
        problems += self._check_our_destinations(label, entries, vs_name)
        key = "cookie" if self.strategy == "cookie" else self.case.params.get("header_name") or "user-agent"
        owned_matches = self.owned0(vs_name).get("match") or [{}]
        matches = route.get("match") or []
        if len(matches) != len(owned_matches):
            return [*problems, f"{label} has {len(matches)} match entries, the owned route {len(owned_matches)}"]
        for match, owned_match in zip(matches, owned_matches, strict=True):
            headers = dict(match.get("headers") or {})
            condition = headers.pop(key, None)
            if not self._is_canary_condition(condition):
                problems.append(f"{label} match {_json(match)}: {key} {_json(condition)} is not the canary condition")
            rest = {k: v for k, v in match.items() if k != "headers"}
            if headers:
                rest["headers"] = headers
            if rest != owned_match:
                problems.append(f"{label} match {_json(match)} is not the owned route's {_json(owned_match)} "
                                f"and the canary condition")
        return problems

    def _is_canary_condition(self, condition: Any) -> bool:
        """header: exactly `header_value`; cookie: `cookie_regex` if set, else any RE2 regex that
        Envoy (full match) applies to a Cookie header carrying canary=true, and only to one."""
        p = self.case.params
        if not isinstance(condition, dict):
            return False
        if self.strategy == "header":
            return condition == {"exact": p.get("header_value") or "canary"}
        if p.get("cookie_regex"):
            return condition == {"regex": p["cookie_regex"]}
        pattern = condition.get("regex")
        if set(condition) != {"regex"} or not isinstance(pattern, str):
            return False
        compiled = re2.compile(pattern)
        carrying = ("canary=true", "session=abc; canary=true", "canary=true; theme=dark")
        without = ("canary=false", "session=abc", "")
        return all(compiled.fullmatch(c) for c in carrying) and not any(compiled.fullmatch(c) for c in without)

    def check_writes(self) -> list[str]:
        """Only the release's VirtualService and DestinationRule were written, and only updated
        (besides the Events the release creates to record its steps)."""
        allowed = {("destinationrules", self.dr_name)} | {("virtualservices", n) for n in self.vs_names}
        return [
            f"write outside the release: {w.verb} {w.resource} {self.namespace}/{w.name}"
            for w in self.writes()
            if (w.verb, w.resource) != ("create", "events")
            and (w.verb not in ("update", "patch") or (w.resource, w.name) not in allowed)
        ]

    def owned_now(self, vs: dict[str, Any]) -> dict[str, Any] | None:
        """The owned route in `vs`: by its name when it has one, else at its original index."""
        http = [r for r in vs["spec"].get("http") or [] if r.get("name") != self.canary_route_name]
        name = self.owned0().get("name")
        if name:
            return next((r for r in http if r.get("name") == name), None)
        return http[self.owned_index()] if self.owned_index() < len(http) else None

    def vs(self, name: str | None = None) -> dict[str, Any]:
        found = read(self.api, "VirtualService", self.namespace, name or self.vs_name)
        assert found is not None, f"VirtualService {self.namespace}/{name or self.vs_name} is gone"
        return found

    def all_vs_at(self, weight: int, match_route: bool | None) -> list[str]:
        return [p for n in self.vs_names for p in self.check_vs_at(self.vs(n), weight, match_route)]

    def all_vs_unchanged(self) -> list[str]:
        return [p for n in self.vs_names for p in self.check_vs_unchanged(self.vs(n))]

    def dr(self) -> dict[str, Any]:
        found = read(self.api, "DestinationRule", self.namespace, self.dr_name)
        assert found is not None, f"DestinationRule {self.namespace}/{self.dr_name} is gone"
        return found

    def expect_fine(self, stage: str, problems: list[str]) -> None:
        problems = problems + self.check_others()
        if problems:
            pytest.fail(f"{self.case.name}: after {stage}:\n- " + "\n- ".join(problems))


def _match_route_at(release: Release, weight: int) -> bool | None:
    if release.strategy not in ("header", "cookie"):
        return False
    return True if weight < 100 else None


@pytest.fixture
def release_of(api: CorpusApi, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """`release_of(case, run)` -> a Release with the case's objects created on the test's API
    server and the operators' connection set; all deleted afterwards."""
    namespaces: list[str] = []

    def make(case: Case, run: str) -> Release:
        release = Release(api, case, f"realworld__{case.name}__{run}")
        namespaces.append(release.namespace)
        monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", api.connection(release.namespace))
        release.create()
        return release

    yield make
    for namespace in namespaces:
        delete_objects(api, namespace)


# --------------------------------------------------------------------------- the tests


def test_corpus_is_there() -> None:
    assert len(CASES) >= 25 and REFUSED and RELEASED
    names = {c.name for c in CASES}
    assert set(KUBE_APISERVER_DIFFERENCES) <= names, "KUBE_APISERVER_DIFFERENCES names no such case"


@pytest.mark.parametrize(("api", "case"), REFUSED, indirect=["api"])
def test_refused(case: Case, release_of: Any) -> None:
    release = release_of(case, "refused")
    stage, error = "params", None
    try:
        ReleaseRequest.from_params(case.params)
        stage = "preflight"
        preflight = IstioPreflightOperator(task_id="preflight", release=dict(case.params))
        preflight.execute(release.context)
        # Not refused yet: how far does it get? (Each of these writes; the case fails either way.)
        stage = "destination rule"
        IstioDestinationRuleOperator(task_id="dr", release=dict(case.params)).execute(release.context)
        stage = f"step {release.steps[0]}"
        IstioTrafficShiftOperator(task_id="step", release=dict(case.params),
                                  canary_weight=release.steps[0]).execute(release.context)
        stage = "nowhere"
    except Exception as exc:
        error = exc
    writes = release.writes()
    text = f"{type(error).__name__}: {error}" if error is not None else ""
    problems = []
    if error is None:
        problems.append(f"not refused: preflight, destination rule and step {release.steps[0]} all went through")
    if writes:
        listed = ", ".join(str(w) for w in writes)
        problems.append(f"{len(writes)} writes before the refusal: {listed}")
    wanted = {"object": case.expect["object"], "field": case.expect["field"]}
    wanted.update({f"says[{i}]": s for i, s in enumerate(case.expect.get("says") or [])})
    missing = [f"{k} {v!r}" for k, v in wanted.items() if str(v) not in str(error or "")]
    if error is not None and missing:
        problems.append("the error does not name " + ", ".join(missing))
    assert not problems, f"{case.name}: refused at {stage}\n- " + "\n- ".join(problems) + f"\nerror: {text}"


@pytest.mark.parametrize(("api", "case"), RELEASED, indirect=["api"])
def test_promotion(case: Case, release_of: Any) -> None:
    release = release_of(case, "promote")
    try:
        ReleaseRequest.from_params(case.params)
    except Exception as exc:
        pytest.fail(f"{case.name}: params refused: {type(exc).__name__}: {exc}")
    release.run("preflight", IstioPreflightOperator)
    release.expect_fine("preflight", release.all_vs_unchanged() + release.check_dr_unchanged(release.dr()))
    release.run("destination rule", IstioDestinationRuleOperator)
    release.expect_fine("destination rule", release.all_vs_unchanged() + release.check_dr_with_subsets(release.dr()))
    for weight in release.steps:
        release.run(f"step {weight}", IstioTrafficShiftOperator, canary_weight=weight)
        release.expect_fine(f"step {weight}", release.all_vs_at(weight, _match_route_at(release, weight))
                            + release.check_dr_with_subsets(release.dr()))
    release.run("promote", IstioPromoteOperator)
    vs = release.vs()
    problems = release.all_vs_at(100, match_route=False) + release.check_dr_with_subsets(release.dr())
    pinned = case.expect.get("promoted_owned_route")
    if pinned is not None:
        owned = release.owned_now(vs)
        if owned != pinned:
            problems.append(f"promoted owned route {_json(owned)}, expected {_json(pinned)}")
    release.expect_fine("promote", problems + release.check_writes())


@pytest.mark.parametrize(("api", "case"), RELEASED, indirect=["api"])
def test_rollback(case: Case, release_of: Any) -> None:
    release = release_of(case, "rollback")
    try:
        ReleaseRequest.from_params(case.params)
    except Exception as exc:
        pytest.fail(f"{case.name}: params refused: {type(exc).__name__}: {exc}")
    snapshot = release.run("preflight", IstioPreflightOperator)["snapshot"]
    release.run("destination rule", IstioDestinationRuleOperator)
    weight = release.steps[0]
    release.run(f"step {weight}", IstioTrafficShiftOperator, canary_weight=weight)
    release.expect_fine(f"step {weight}", release.all_vs_at(weight, _match_route_at(release, weight))
                        + release.check_dr_with_subsets(release.dr()))
    release.run("rollback", IstioRollbackOperator, snapshot=snapshot, reason="real-world corpus")
    release.expect_fine("rollback", release.all_vs_unchanged() + release.check_dr_unchanged(release.dr())
                        + release.check_writes())
