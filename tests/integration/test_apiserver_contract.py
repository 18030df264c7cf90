"""Contract: the sandbox's Kubernetes API answers the pipeline's requests as a real kube-apiserver does.

Two servers hold the same state: a real control plane (etcd + kube-apiserver with RBAC, started
by `sandbox.kubeenv`) and the sandbox's API server in-process, both with Istio's real CRDs, the
pipeline's RBAC manifest (include/manifests/rbac.yaml) and the default world's objects (the
reviews Service, Pods, DestinationRule and VirtualService). Each case sends the same request
through the official Python client, as the pipeline does (CustomObjectsApi / CoreV1Api from a
kubeconfig), to both: as the pipeline's ServiceAccount (its bound token; the real RBAC
authorizer and the sandbox's judge it) or as the admin. What a client acts on is compared: the
HTTP status, the Status `reason`, the fields of `details.causes`, and where a case says so the
message, the unknown-field warnings or parts of the returned object.

A difference that stays is listed in KNOWN_DIFFERENCES with its reason: its case is a strict
xfail, and `test_known_differences_are_listed_and_real` fails when the list and the servers'
answers disagree either way (so the list cannot go stale), and prints it.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from sandbox.apiserver import make_api_server
from sandbox.client import sandbox_env
from sandbox.config import load_config, seed_world, service_objects
from sandbox.kubeconfig import kubeconfig_yaml
from sandbox.kubeenv import ControlPlane, KubeEnvError
from sandbox.store import Store

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RBAC_MANIFEST = REPO / "include" / "manifests" / "rbac.yaml"
GROUP, VERSION, NS = "networking.istio.io", "v1", "bookinfo"
SERVICE_ACCOUNT = "istio-canary"  # rbac.yaml's ServiceAccount: what a release runs as
PIPELINE, ADMIN = "pipeline", "admin"
TIMEOUT = 10.0  # seconds per request
RAW = {"_preload_content": False, "_request_timeout": TIMEOUT}  # status and headers, unread body
VS_ARGS = (GROUP, VERSION, NS, "virtualservices")
DR_ARGS = (GROUP, VERSION, NS, "destinationrules")

# case id -> why the sandbox still answers differently. Ideally empty.
KNOWN_DIFFERENCES: dict[str, str] = {
    "create-vs-negative-weight": (
        "the sandbox emulates istiod's validating webhook (negative weight refused, 422); the test "
        "control plane runs no istiod, so kube-apiserver stores it"
    ),
}


# --------------------------------------------------------------------------- the two servers


@dataclass(frozen=True)
class Api:
    """One identity's clients on one server."""

    custom: client.CustomObjectsApi
    core: client.CoreV1Api

    @classmethod
    def from_kubeconfig(cls, path: Path) -> Api:
        api_client = config.new_client_from_config(config_file=str(path))
        return cls(client.CustomObjectsApi(api_client), client.CoreV1Api(api_client))


@dataclass(frozen=True)
class Server:
    name: str
    pipeline: Api  # the ServiceAccount's token
    admin: Api

    def api(self, identity: str) -> Api:
        return self.pipeline if identity == PIPELINE else self.admin


def _crd_dir() -> Path:
    crds = sandbox_env().get("SANDBOX_CRDS")
    if not crds:
        pytest.fail("Istio's CRD files not found: set SANDBOX_CRDS, or run `make setup` (it writes .cache/crds)")
    return Path(crds)


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    state = tmp_path_factory.mktemp("kubeenv")
    try:
        plane = ControlPlane(state)  # $KUBEENV_BIN, else .cache/bin (make setup links them there)
    except KubeEnvError as exc:
        pytest.fail(str(exc))
    try:
        plane.start(_crd_dir())
        world = load_config()
        for namespace in sorted({svc.namespace for svc in world.services}):
            plane.client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        plane.apply_manifest(RBAC_MANIFEST.read_text())
        for svc in world.services:
            for _resource, obj in service_objects(svc):
                plane.client.create(copy.deepcopy(obj))  # a Pod's status is dropped: nothing compares it
        admin, pipeline = state / "admin.kubeconfig", state / "pipeline.kubeconfig"
        admin.write_text(plane.admin_kubeconfig(NS))
        pipeline.write_text(plane.service_account_kubeconfig(NS, SERVICE_ACCOUNT))
        plane.wait_until_allowed(NS, SERVICE_ACCOUNT)
        yield Server("kube-apiserver", Api.from_kubeconfig(pipeline), Api.from_kubeconfig(admin))
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def sandbox_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    store = Store()
    seed_world(store, load_config())
    api_server = make_api_server(store, crd_dir=str(_crd_dir()))
    api_server.load_rbac(RBAC_MANIFEST.read_text())
    threading.Thread(target=api_server.serve_forever, daemon=True).start()
    try:
        state = tmp_path_factory.mktemp("sandbox-api")
        admin, pipeline = state / "admin.kubeconfig", state / "pipeline.kubeconfig"
        admin.write_text(kubeconfig_yaml(api_server.url, NS))
        token = api_server.service_account_token(NS, SERVICE_ACCOUNT)
        pipeline.write_text(kubeconfig_yaml(api_server.url, NS, token=token))
        yield Server("sandbox", Api.from_kubeconfig(pipeline), Api.from_kubeconfig(admin))
    finally:
        api_server.shutdown()
        api_server.server_close()


# --------------------------------------------------------------------------- answers


@dataclass(frozen=True)
class Answer:
    """What a client can act on in one response."""

    status: int
    reason: str | None  # the Status reason; None when the body is no Status (a plain 404 page)
    causes: tuple[str, ...] = ()  # details.causes[].field, sorted
    message: str | None = None  # only where the case compares it
    warnings: tuple[str, ...] = ()  # `unknown field` warnings, sorted (webhook warnings differ)
    body: str | None = None  # JSON of the parts of a 2xx body the case compares

    def __str__(self) -> str:
        parts = [f"{self.status} {self.reason}"]
        parts += [f"causes={list(self.causes)}"] if self.causes else []
        parts += [f"message={self.message!r}"] if self.message is not None else []
        parts += [f"warnings={list(self.warnings)}"] if self.warnings else []
        parts += [f"body={self.body}"] if self.body is not None else []
        return " ".join(parts)


@dataclass(frozen=True)
class Case:
    id: str
    identity: str  # PIPELINE or ADMIN
    send: Callable[[Api], Any]  # the request (after any reads it needs); returns the raw response
    keep: Callable[[dict[str, Any]], Any] | None = None  # parts of a 2xx body to compare
    message: bool = False  # compare the Status message too
    cleanup: Callable[[Api], None] | None = None  # as admin, after: undo a write only one server took


_WARNING = re.compile(r'\d{3} \S+ "((?:[^"\\]|\\.)*)"')


def _warnings(headers: Any) -> tuple[str, ...]:
    # urllib3 joins repeated Warning headers with ", ": take each quoted warn-text.
    found = [m.replace('\\"', '"') for m in _WARNING.findall((headers or {}).get("Warning") or "")]
    return tuple(sorted(w for w in found if w.startswith("unknown field")))


def _answer(case: Case, server: Server) -> Answer:
    try:
        response = case.send(server.api(case.identity))
        status, headers, data = response.status, response.headers, response.data
    except ApiException as exc:
        status, headers, data = exc.status, exc.headers, exc.body
    text = data.decode() if isinstance(data, bytes) else str(data or "")
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    warnings = _warnings(headers)
    if 200 <= status < 300:
        kept = json.dumps(case.keep(body), sort_keys=True) if case.keep else None
        return Answer(status, None, warnings=warnings, body=kept)
    if not (isinstance(body, dict) and body.get("kind") == "Status"):
        return Answer(status, None, warnings=warnings)
    causes = tuple(sorted(str(c.get("field")) for c in (body.get("details") or {}).get("causes") or []))
    message = body.get("message") if case.message else None
    return Answer(status, body.get("reason"), causes, message, warnings)


@pytest.fixture(scope="module")
def ask(sandbox_server: Server, real_server: Server) -> Callable[[Case], tuple[Answer, Answer]]:
    """Each case's (sandbox, kube-apiserver) answers, asked once: the listing test reuses them."""
    answers: dict[str, tuple[Answer, Answer]] = {}

    def answer_both(case: Case) -> tuple[Answer, Answer]:
        if case.id not in answers:
            answers[case.id] = (_answer(case, sandbox_server), _answer(case, real_server))
            if case.cleanup:
                case.cleanup(sandbox_server.admin)
                case.cleanup(real_server.admin)
        return answers[case.id]

    return answer_both


# --------------------------------------------------------------------------- requests


def _read(api: Api, plural: str = "virtualservices", name: str = "reviews") -> dict[str, Any]:
    return api.custom.get_namespaced_custom_object(GROUP, VERSION, NS, plural, name, _request_timeout=TIMEOUT)


def _replace(
    api: Api, obj: dict[str, Any], plural: str = "virtualservices", name: str = "reviews", **options: Any
) -> Any:
    return api.custom.replace_namespaced_custom_object(
        GROUP, VERSION, NS, plural, name, obj, **RAW, **options
    )


def _edit_and_replace(
    edit: Callable[[dict[str, Any]], None],
    plural: str = "virtualservices",
    url_name: str = "reviews",
    **options: Any,
) -> Callable[[Api], Any]:
    """The pipeline's read-modify-write: read the live object, edit it, replace it (with the
    resourceVersion read, unless the edit changes that)."""

    def send(api: Api) -> Any:
        obj = _read(api, plural)
        edit(obj)
        return _replace(api, obj, plural, url_name, **options)

    return send


def _set_weights(obj: dict[str, Any]) -> None:
    obj["spec"]["http"][0]["route"] = [
        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 90},
        {"destination": {"host": "reviews", "subset": "v2"}, "weight": 10},
    ]


def _add_canary_subset(obj: dict[str, Any]) -> None:
    if all(s["name"] != "v2" for s in obj["spec"]["subsets"]):
        obj["spec"]["subsets"].append({"name": "v2", "labels": {"version": "v2"}})


def _stale_replace(api: Api) -> Any:
    """A replace built on a read that another write has since made stale."""
    read = _read(api)
    newer = copy.deepcopy(read)
    newer["metadata"].setdefault("annotations", {})["contract.test/written"] = str(time.time_ns())
    api.custom.replace_namespaced_custom_object(
        GROUP, VERSION, NS, "virtualservices", "reviews", newer, _request_timeout=TIMEOUT
    )
    return _replace(api, read)


def _create_vs(obj: dict[str, Any]) -> Callable[[Api], Any]:
    def send(api: Api) -> Any:
        return api.custom.create_namespaced_custom_object(
            GROUP, VERSION, NS, "virtualservices", copy.deepcopy(obj), **RAW
        )

    return send


def _delete_vs(name: str) -> Callable[[Api], None]:
    def cleanup(api: Api) -> None:
        try:
            api.custom.delete_namespaced_custom_object(
                GROUP, VERSION, NS, "virtualservices", name, _request_timeout=TIMEOUT
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    return cleanup


def _names(listing: dict[str, Any]) -> list[str]:
    return sorted(f"{i['metadata'].get('namespace', '')}/{i['metadata']['name']}" for i in listing["items"])


def _spec(obj: dict[str, Any]) -> Any:
    return obj["spec"]


def _written(obj: dict[str, Any]) -> dict[str, Any]:
    return {"spec": obj["spec"], "generation": obj["metadata"].get("generation")}


def _service(obj: dict[str, Any]) -> dict[str, Any]:
    # Only what the pipeline reads: a real server adds defaults (ipFamilies, sessionAffinity...).
    return {"selector": obj["spec"]["selector"], "ports": [p["port"] for p in obj["spec"]["ports"]]}


# The seed article's mis-indented route entry: host/subset beside `destination`, not in it.
MISINDENTED_VS = yaml.safe_load(
    """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-misindented, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination:
      host: reviews
      subset: v1
"""
)
NEGATIVE_WEIGHT_VS = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "VirtualService",
    "metadata": {"name": "negative-weight", "namespace": NS},
    "spec": {
        "hosts": ["reviews"],
        "http": [
            {
                "route": [
                    {"destination": {"host": "reviews", "subset": "v1"}, "weight": 110},
                    {"destination": {"host": "reviews", "subset": "v2"}, "weight": -10},
                ]
            }
        ],
    },
}
OTHER_UID = "00000000-0000-0000-0000-000000000000"


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """An edit setting a dotted path (`spec.http.0.timeout`; list items by index), or deleting
    it when `value` is `...`."""

    def edit(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = obj
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is ...:
            del node[last]
        else:
            node[last] = copy.deepcopy(value)

    return edit


def _both(*edits: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def edit(obj: dict[str, Any]) -> None:
        for one in edits:
            one(obj)

    return edit


def _unknown_fields(obj: dict[str, Any]) -> None:
    obj["spec"]["http"][0]["retrys"] = {"attempts": 3}  # a typo of `retries`
    obj["spec"]["hostz"] = ["reviews"]


CASES: list[Case] = [
    # Reads a release makes (as the ServiceAccount).
    Case(
        "get-vs",
        PIPELINE,
        lambda api: api.custom.get_namespaced_custom_object(*VS_ARGS, "reviews", **RAW),
        _spec,
    ),
    Case(
        "get-vs-missing",
        PIPELINE,
        lambda api: api.custom.get_namespaced_custom_object(*VS_ARGS, "nope", **RAW),
        message=True,
    ),
    Case(
        "get-dr",
        PIPELINE,
        lambda api: api.custom.get_namespaced_custom_object(*DR_ARGS, "reviews", **RAW),
        _spec,
    ),
    Case(
        "list-vs-namespaced",
        PIPELINE,
        lambda api: api.custom.list_namespaced_custom_object(*VS_ARGS, **RAW),
        _names,
    ),
    Case(
        "list-dr-namespaced",
        PIPELINE,
        lambda api: api.custom.list_namespaced_custom_object(*DR_ARGS, **RAW),
        _names,
    ),
    Case(
        "list-dr-all-namespaces",
        PIPELINE,
        lambda api: api.custom.list_cluster_custom_object(GROUP, VERSION, "destinationrules", **RAW),
        _names,
    ),
    Case(
        "get-service", PIPELINE, lambda api: api.core.read_namespaced_service("reviews", NS, **RAW), _service
    ),
    Case(
        "list-pods-by-label",
        PIPELINE,
        lambda api: api.core.list_namespaced_pod(NS, label_selector="app=reviews,version=v2", **RAW),
        _names,
    ),
    Case(
        "list-pods-bad-selector",
        PIPELINE,
        lambda api: api.core.list_namespaced_pod(NS, label_selector="version in v2", **RAW),
    ),
    # Writes a release makes: read-modify-write with the resourceVersion read.
    Case("replace-vs-current-rv", PIPELINE, _edit_and_replace(_set_weights), _written),
    Case(
        "replace-dr-current-rv", PIPELINE, _edit_and_replace(_add_canary_subset, "destinationrules"), _written
    ),
    Case("replace-vs-unchanged", PIPELINE, _edit_and_replace(lambda obj: None), _written),
    Case("replace-vs-stale-rv", PIPELINE, _stale_replace, message=True),
    Case(
        "replace-vs-without-rv",
        PIPELINE,
        _edit_and_replace(_set("metadata.resourceVersion", ...)),
        message=True,
    ),
    Case("replace-vs-other-uid", PIPELINE, _edit_and_replace(_set("metadata.uid", OTHER_UID))),
    Case(
        "replace-vs-missing-object",
        PIPELINE,
        _edit_and_replace(_set("metadata.name", "nope"), url_name="nope"),
        message=True,
    ),
    Case(
        "replace-vs-name-mismatch",
        PIPELINE,
        _edit_and_replace(_set("metadata.name", "ratings")),
        message=True,
    ),
    Case(
        "replace-vs-namespace-mismatch",
        PIPELINE,
        _edit_and_replace(_set("metadata.namespace", "default")),
        message=True,
    ),
    Case(
        "replace-vs-other-api-version",
        PIPELINE,
        _edit_and_replace(_set("apiVersion", f"{GROUP}/v1beta1")),
        message=True,
    ),
    Case(
        "replace-vs-kind-mismatch", PIPELINE, _edit_and_replace(_set("kind", "DestinationRule")), message=True
    ),
    Case("replace-vs-kind-missing", PIPELINE, _edit_and_replace(_set("kind", ...))),
    Case(
        "replace-vs-label-not-string",
        PIPELINE,
        _edit_and_replace(_set("metadata.labels", {"istio-canary/step": 10})),
        message=True,
    ),
    # Objects the CRD schema refuses (422 Invalid, naming the fields).
    Case(
        "replace-vs-weight-string",
        PIPELINE,
        _edit_and_replace(_set("spec.http.0.route.0.weight", "100")),
        message=True,
    ),
    Case(
        "replace-dr-unknown-tls-mode",
        PIPELINE,
        _edit_and_replace(_set("spec.trafficPolicy.tls.mode", "STRICT"), "destinationrules"),
        message=True,
    ),
    Case(
        "replace-vs-short-timeout",
        PIPELINE,
        _edit_and_replace(_set("spec.http.0.timeout", "0.5ms")),
        message=True,
    ),
    Case(
        "replace-vs-weight-string-and-short-timeout",
        PIPELINE,
        _edit_and_replace(
            _both(_set("spec.http.0.route.0.weight", "x"), _set("spec.http.0.timeout", "0.5ms"))
        ),
        message=True,
    ),
    # Unknown fields: pruned with a warning by default, refused under fieldValidation=Strict.
    Case("replace-vs-unknown-fields", PIPELINE, _edit_and_replace(_unknown_fields), _written),
    Case(
        "replace-vs-unknown-fields-strict",
        PIPELINE,
        _edit_and_replace(_unknown_fields, field_validation="Strict"),
        message=True,
    ),
    Case(
        "create-vs-misindented",
        ADMIN,
        _create_vs(MISINDENTED_VS),
        _spec,
        cleanup=_delete_vs("reviews-misindented"),
    ),
    Case(
        "create-vs-negative-weight",
        ADMIN,
        _create_vs(NEGATIVE_WEIGHT_VS),
        _spec,
        cleanup=_delete_vs("negative-weight"),
    ),
    # Kinds and versions no one serves.
    Case(
        "get-missing-crd",
        ADMIN,
        lambda api: api.custom.get_namespaced_custom_object(GROUP, VERSION, NS, "gateways", "reviews", **RAW),
    ),
    Case(
        "list-missing-version",
        ADMIN,
        lambda api: api.custom.list_namespaced_custom_object(GROUP, "v2", NS, "virtualservices", **RAW),
    ),
    Case(
        "get-vs-without-namespace",
        ADMIN,
        lambda api: api.custom.get_cluster_custom_object(GROUP, VERSION, "virtualservices", "reviews", **RAW),
    ),
    # What rbac.yaml does not grant the ServiceAccount.
    Case(
        "forbidden-delete-vs",
        PIPELINE,
        lambda api: api.custom.delete_namespaced_custom_object(*VS_ARGS, "reviews", **RAW),
        message=True,
    ),
    Case(
        "forbidden-create-vs",
        PIPELINE,
        _create_vs({**NEGATIVE_WEIGHT_VS, "metadata": {"name": "created"}}),
        message=True,
        cleanup=_delete_vs("created"),
    ),
    Case(
        "forbidden-patch-vs",
        PIPELINE,
        lambda api: api.custom.patch_namespaced_custom_object(
            *VS_ARGS, "reviews", {"metadata": {"labels": {"patched": "yes"}}}, **RAW
        ),
        message=True,
    ),
    Case(
        "forbidden-watch-vs",
        PIPELINE,
        lambda api: api.custom.list_namespaced_custom_object(*VS_ARGS, watch=True, timeout_seconds=1, **RAW),
        message=True,
    ),
    Case(
        "forbidden-list-vs-all-namespaces",
        PIPELINE,
        lambda api: api.custom.list_cluster_custom_object(GROUP, VERSION, "virtualservices", **RAW),
        message=True,
    ),
    Case(
        "forbidden-get-vs-other-namespace",
        PIPELINE,
        lambda api: api.custom.get_namespaced_custom_object(
            GROUP, VERSION, "default", "virtualservices", "reviews", **RAW
        ),
        message=True,
    ),
    Case(
        "forbidden-get-missing-crd",
        PIPELINE,
        lambda api: api.custom.get_namespaced_custom_object(GROUP, VERSION, NS, "gateways", "reviews", **RAW),
        message=True,
    ),
    Case(
        "forbidden-delete-pod",
        PIPELINE,
        lambda api: api.core.delete_namespaced_pod("reviews-v1", NS, **RAW),
        message=True,
    ),
    Case(
        "forbidden-list-services-all-namespaces",
        PIPELINE,
        lambda api: api.core.list_service_for_all_namespaces(**RAW),
        message=True,
    ),
    # The capacity check's reads (apps/v1, autoscaling/v2): read-only for the pipeline.
    Case(
        "list-deployments",
        PIPELINE,
        lambda api: client.AppsV1Api(api.core.api_client).list_namespaced_deployment(NS, **RAW),
        _names,
    ),
    Case(
        "list-hpas",
        PIPELINE,
        lambda api: client.AutoscalingV2Api(api.core.api_client).list_namespaced_horizontal_pod_autoscaler(
            NS, **RAW),
        _names,
    ),
    Case(
        "get-deployment-missing",
        PIPELINE,
        lambda api: client.AppsV1Api(api.core.api_client).read_namespaced_deployment("nope", NS, **RAW),
        message=True,
    ),
    Case(
        "forbidden-delete-deployment",
        PIPELINE,
        lambda api: client.AppsV1Api(api.core.api_client).delete_namespaced_deployment("reviews-v2", NS, **RAW),
        message=True,
    ),
]


def _case_param(case: Case) -> Any:
    # A listed difference is a strict xfail: it fails the run once the servers agree on it.
    reason = KNOWN_DIFFERENCES.get(case.id)
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_case_param(c) for c in CASES])
def test_sandbox_answers_as_kube_apiserver(case: Case, ask: Callable[[Case], tuple[Answer, Answer]]) -> None:
    sandbox, real = ask(case)
    assert sandbox == real, (
        f"{case.id} ({case.identity}):\n  sandbox:        {sandbox}\n  kube-apiserver: {real}"
    )


def test_known_differences_are_listed_and_real(ask: Callable[[Case], tuple[Answer, Answer]]) -> None:
    """Exactly the cases in KNOWN_DIFFERENCES get different answers: none forgotten, none stale."""
    ids = [case.id for case in CASES]
    assert len(set(ids)) == len(ids), "case ids must be unique"
    assert set(KNOWN_DIFFERENCES) <= set(ids), f"listed but no such case: {set(KNOWN_DIFFERENCES) - set(ids)}"
    answers = {case.id: ask(case) for case in CASES}
    differing = {case_id for case_id, (sandbox, real) in answers.items() if sandbox != real}
    lines = [f"sandbox vs kube-apiserver: {len(CASES)} cases, {len(differing)} answered differently"]
    for case_id in sorted(differing | set(KNOWN_DIFFERENCES)):
        sandbox, real = answers[case_id]
        reason = KNOWN_DIFFERENCES.get(case_id, "NOT LISTED in KNOWN_DIFFERENCES")
        lines += [f"- {case_id}: {reason}", f"    sandbox:        {sandbox}", f"    kube-apiserver: {real}"]
    print("\n".join(lines))
    assert differing == set(KNOWN_DIFFERENCES), "\n".join(lines)
