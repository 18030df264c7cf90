"""Istio's own analyzer (`istioctl analyze`) as a test oracle for what a release writes.

The project's checks (core/istio_rules.py) are our reading of Istio's rules; `istioctl
analyze` is Istio's. This module runs it offline (`--use-kube=false`) on objects exported
from an API server, so it works the same against the sandbox's API stand-in (which istioctl
cannot analyze live: it lacks the discovery istioctl needs) and a real kube-apiserver.

- `analyze(objects)`: write the objects to a temporary directory, run istioctl, parse its JSON.
- `fetch_mesh_objects(source)`: Namespaces, Services, Pods, DestinationRules and
  VirtualServices as the API returns them, through the official `kubernetes` client.
- `StepAnalyzer`: during a release, analyze the mesh each time the VirtualService (or the
  DestinationRule) changes, so a test can assert that no step left an Error-level message.

No Airflow imports: usable from integration and end-to-end tests alike.
"""

from __future__ import annotations

import copy
import json
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from istio_canary.core.routing import destination_of, route_entries, weight_of
from sandbox.kubeenv import find_binaries

# istioctl's exit code when messages reach --failure-threshold (log output; JSON output exits 0).
EXIT_ANALYZER_FOUND_ISSUES = 79
ISTIOCTL_TIMEOUT_SECONDS = 60.0
ISTIO_API = "/apis/networking.istio.io/v1"
# (kind, API prefix, plural): what the analyzers of a release's objects read. Namespaces carry
# the injection label, Services and Pods are what subsets and hosts resolve to.
MESH_KINDS: tuple[tuple[str, str, str], ...] = (
    ("Service", "/api/v1", "services"),
    ("Pod", "/api/v1", "pods"),
    ("DestinationRule", ISTIO_API, "destinationrules"),
    ("VirtualService", ISTIO_API, "virtualservices"),
)
# Bookkeeping that is not configuration: dropped so the files istioctl reads stay small.
NOISE_METADATA = ("managedFields",)
NOISE_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


class IstioctlError(RuntimeError):
    """istioctl analyze did not run or did not answer JSON; the message has its stderr."""


@dataclass(frozen=True)
class Message:
    """One analyzer message, e.g. IST0109 Error on `VirtualService bookinfo/reviews`."""

    code: str
    level: str  # "Error" | "Warning" | "Info"
    origin: str  # "<Kind> <namespace>/<name>"
    text: str
    reference: str = ""  # "<file>:<line>" in the analyzed files

    @property
    def is_error(self) -> bool:
        return self.level == "Error"

    def __str__(self) -> str:
        return f"{self.level} [{self.code}] ({self.origin}) {self.text}"


# --------------------------------------------------------------------------- analyze


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    meta = out.get("metadata") or {}
    for key in NOISE_METADATA:
        meta.pop(key, None)
    annotations = meta.get("annotations")
    if isinstance(annotations, dict):
        for key in NOISE_ANNOTATIONS:
            annotations.pop(key, None)
    return out


def _flatten(objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Objects, with any `...List` (kubectl get -o json) expanded into its items."""
    out: list[dict[str, Any]] = []
    for obj in objects:
        if str(obj.get("kind", "")).endswith("List") and isinstance(obj.get("items"), list):
            item_kind = str(obj["kind"])[: -len("List")]
            out += [{"apiVersion": obj.get("apiVersion"), "kind": item_kind, **item} for item in obj["items"]]
        else:
            out.append(obj)
    return out


def _file_name(index: int, obj: dict[str, Any]) -> str:
    # One object per file, named after it: a message's `reference` then says which object.
    meta = obj.get("metadata") or {}
    parts = [obj.get("kind", "Object"), meta.get("namespace") or "cluster", meta.get("name", "unnamed")]
    return f"{index:03d}-" + "-".join(str(p) for p in parts) + ".yaml"


def analyze(objects: Sequence[dict[str, Any]], *, istioctl: Path | None = None,
            timeout: float = ISTIOCTL_TIMEOUT_SECONDS) -> list[Message]:
    """Every message (Info and up) `istioctl analyze --use-kube=false` gives for `objects`.

    `--all-namespaces` matters: offline, istioctl otherwise analyzes only `default` and
    says "no validation issues" about objects in any other namespace. Offline, istioctl reads
    Services, Pods, Namespaces, Nodes and Secrets from files but drops them, so the analyzers
    needing them are skipped (`-v` lists them): what runs are the Istio-config analyzers, e.g.
    IST0101 (VirtualService to a subset no DestinationRule defines), IST0109 (two mesh
    VirtualServices for one host) and schema validation. `analyze_live` runs the rest.
    """
    items = _flatten(objects)
    if not items:
        return []
    binary = istioctl or find_binaries().istioctl
    with tempfile.TemporaryDirectory(prefix="istio-analyze-") as tmp:
        files = []
        for index, obj in enumerate(items):
            path = Path(tmp) / _file_name(index, obj)
            path.write_text(yaml.safe_dump(_clean(obj), sort_keys=False))
            files.append(str(path))
        command = [str(binary), "analyze", "--use-kube=false", "--all-namespaces", "--output", "json",
                   "--output-threshold", "Info", "--failure-threshold", "Error", *files]
        # Inside the `with`: the files must exist while istioctl reads them.
        return _run_istioctl(command, timeout, cwd=tmp)


def analyze_live(kubeconfig: str | Path, *, istioctl: Path | None = None,
                 timeout: float = ISTIOCTL_TIMEOUT_SECONDS) -> list[Message]:
    """Every message `istioctl analyze` gives for the cluster itself (all namespaces).

    Needs a real kube-apiserver (istioctl reads discovery, CRDs and many kinds) and credentials
    that may list them cluster-wide. Offline analysis leaves Services, Pods and Namespaces out
    (istioctl drops those kinds from files), so only this runs the injection, destination-host,
    subset-selects-pods and port-name analyzers.
    """
    binary = istioctl or find_binaries().istioctl
    command = [str(binary), "analyze", "--all-namespaces", "--kubeconfig", str(kubeconfig),
               "--output", "json", "--output-threshold", "Info", "--failure-threshold", "Error",
               "--timeout", f"{int(timeout)}s"]
    return _run_istioctl(command, timeout + 15, cwd=None)


def _run_istioctl(command: list[str], timeout: float, cwd: str | None) -> list[Message]:
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise IstioctlError(f"istioctl analyze took more than {timeout:.0f}s") from exc
    if proc.returncode not in (0, EXIT_ANALYZER_FOUND_ISSUES):
        raise IstioctlError(f"istioctl analyze exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    try:
        raw = json.loads(proc.stdout)
    except ValueError as exc:
        raise IstioctlError(f"istioctl analyze did not print JSON: {proc.stdout[:500]!r} "
                            f"{proc.stderr.strip()[-1000:]}") from exc
    return [
        Message(code=str(m.get("code", "")), level=str(m.get("level", "")), origin=str(m.get("origin", "")),
                text=str(m.get("message", "")), reference=Path(str(m.get("reference", ""))).name)
        for m in raw or []
    ]


def errors(messages: Iterable[Message]) -> list[Message]:
    return [m for m in messages if m.is_error]


# --------------------------------------------------------------------------- fetching from an API


def api_client_for(source: str | Path) -> client.ApiClient:
    """A client for a kubeconfig file, or for a bare API URL (the sandbox's stand-in takes any
    token over plain HTTP; a real server needs the credentials a kubeconfig carries)."""
    text = str(source)
    if text.startswith(("http://", "https://")):
        configuration = client.Configuration()
        configuration.host = text.rstrip("/")
        return client.ApiClient(configuration)
    return config.new_client_from_config(config_file=text)


def is_real_apiserver(source: str | Path | client.ApiClient) -> bool:
    """False for the sandbox's own API stand-in (its /version says gitCommit "sandbox"), which
    `istioctl analyze` cannot read live; True for a kube-apiserver."""
    api = source if isinstance(source, client.ApiClient) else api_client_for(source)
    try:
        return _get_json(api, "/version").get("gitCommit") != "sandbox"
    finally:
        if not isinstance(source, client.ApiClient):
            api.close()


def _get_json(api: client.ApiClient, path: str) -> dict[str, Any]:
    # Raw JSON rather than the typed models: typed Pods/Services drop unknown fields and the
    # items of a list come back without kind/apiVersion, which istioctl needs.
    resp = api.call_api(path, "GET", header_params={"Accept": "application/json"},
                        auth_settings=["BearerToken"], _preload_content=False,
                        _return_http_data_only=True, _request_timeout=15)
    return json.loads(resp.data)


def _list(api: client.ApiClient, kind: str, prefix: str, plural: str, namespace: str | None) -> list[dict[str, Any]]:
    path = f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"
    body = _get_json(api, path)
    api_version = body.get("apiVersion") or prefix.removeprefix("/apis/").removeprefix("/api/")
    return [{**item, "apiVersion": item.get("apiVersion") or api_version, "kind": item.get("kind") or kind}
            for item in body.get("items") or []]


def fetch_mesh_objects(source: str | Path | client.ApiClient,
                       namespaces: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Namespaces, Services, Pods, DestinationRules, VirtualServices from the API at `source`
    (kubeconfig path, API URL, or a client), as the API returns them.

    `namespaces=None` lists cluster-wide (an admin's credentials); given namespaces are listed
    one by one, which a namespaced Role allows. A Namespace object the credentials may not read
    is left out (it only carries the injection label).
    """
    api = source if isinstance(source, client.ApiClient) else api_client_for(source)
    try:
        objects: list[dict[str, Any]] = []
        if namespaces is None:
            objects += _list(api, "Namespace", "/api/v1", "namespaces", None)
            for kind, prefix, plural in MESH_KINDS:
                objects += _list(api, kind, prefix, plural, None)
            return objects
        for ns in namespaces:
            try:
                objects.append({"apiVersion": "v1", "kind": "Namespace", **_get_json(api, f"/api/v1/namespaces/{ns}")})
            except ApiException as exc:
                if exc.status not in (403, 404):
                    raise
        for ns in namespaces:
            for kind, prefix, plural in MESH_KINDS:
                objects += _list(api, kind, prefix, plural, ns)
        return objects
    finally:
        if not isinstance(source, client.ApiClient):
            api.close()


# --------------------------------------------------------------------------- during a release


RouteWeights = tuple[tuple[str, tuple[tuple[str, int], ...]], ...]


def route_weights(vs: dict[str, Any]) -> RouteWeights:
    """((route name or http[i], ((subset or host, weight), ...)), ...) of a VirtualService;
    a lone destination without a weight carries 100, as Istio reads it."""
    out = []
    for i, route in enumerate((vs.get("spec") or {}).get("http") or []):
        entries = route_entries(route)
        weights = []
        for entry in entries:
            dest = destination_of(entry)
            target = str(dest.get("subset") or dest.get("host"))
            weights.append((target, 100 if len(entries) == 1 and "weight" not in entry else weight_of(entry)))
        out.append((str(route.get("name") or f"http[{i}]"), tuple(weights)))
    return tuple(out)


def describe_weights(weights: RouteWeights) -> str:
    return " | ".join(f"{name}: " + " ".join(f"{t}={w}" for t, w in entries) for name, entries in weights)


@dataclass(frozen=True)
class StepRecord:
    """The analysis of one observed state of the release's objects."""

    vs_resource_version: str
    dr_resource_version: str
    weights: RouteWeights
    messages: tuple[Message, ...]
    seconds: float  # how long fetch + analyze took

    def describe(self) -> str:
        found = "; ".join(str(m) for m in self.messages) or "no messages"
        return (f"VS rv {self.vs_resource_version}, DR rv {self.dr_resource_version} "
                f"[{describe_weights(self.weights)}] ({self.seconds:.2f}s): {found}")


@dataclass
class StepAnalyzer:
    """Analyze the mesh at every change of a release's VirtualService/DestinationRule.

    A context manager: entering analyzes the state before the release (the baseline),
    synchronously; a thread then polls both objects every `interval` seconds and, when either
    resourceVersion changed, fetches the mesh objects and runs `istioctl analyze`; leaving
    stops the thread and analyzes the final state once more (a rollback's last write may
    land between two polls). Polling can merge writes less than `interval` apart: every state
    that lasts (a step bakes for seconds) is seen. Bounded by `max_records` and `max_seconds`.

    `live=True` (a real kube-apiserver, `source` a kubeconfig that may list cluster-wide) runs
    `istioctl analyze` against the API server instead of on the fetched objects: every
    analyzer runs, and the recorded resourceVersions are those read just before it.
    """

    source: str | Path
    namespace: str
    virtual_service: str
    destination_rule: str = ""
    namespaces: Sequence[str] | None = None  # what to fetch; default: just `namespace`
    live: bool = False
    interval: float = 0.5
    max_records: int = 200
    max_seconds: float = 1800.0
    records: list[StepRecord] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _api: client.ApiClient | None = field(default=None, repr=False)
    _seen: tuple[str, str] | None = field(default=None, repr=False)

    def __enter__(self) -> StepAnalyzer:
        self._api = api_client_for(self.source)
        self._record()  # the baseline, before the caller starts the release
        if not self.records:
            self._api.close()
            raise AssertionError("could not analyze the state before the release: " + "; ".join(self.failures))
        self._thread = threading.Thread(target=self._run, name="istio-step-analyzer", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(ISTIOCTL_TIMEOUT_SECONDS + 30)
            if self._thread.is_alive():
                self.failures.append("the analyzer thread did not stop")
        if self._thread is None or not self._thread.is_alive():
            self._record()  # the final state; only once the thread cannot record concurrently
        if self._api is not None:
            self._api.close()

    # -- polling

    def _names(self) -> tuple[str, str]:
        return self.virtual_service, self.destination_rule or self.virtual_service

    def _resource_versions(self) -> tuple[str, str]:
        assert self._api is not None
        vs_name, dr_name = self._names()
        base = f"{ISTIO_API}/namespaces/{self.namespace}"
        vs = _get_json(self._api, f"{base}/virtualservices/{vs_name}")
        dr = _get_json(self._api, f"{base}/destinationrules/{dr_name}")
        return str(vs["metadata"]["resourceVersion"]), str(dr["metadata"]["resourceVersion"])

    def _record(self) -> None:
        """Fetch and analyze now, unless nothing changed since the last record."""
        assert self._api is not None
        started = time.monotonic()
        try:
            objects = fetch_mesh_objects(self._api, self.namespaces or [self.namespace])
            vs_name, dr_name = self._names()
            vs = _find(objects, "VirtualService", self.namespace, vs_name)
            dr = _find(objects, "DestinationRule", self.namespace, dr_name)
            key = (str(vs["metadata"]["resourceVersion"]), str(dr["metadata"]["resourceVersion"]))
            if key == self._seen:
                return
            messages = tuple(analyze_live(self.source) if self.live else analyze(objects))
        except Exception as exc:  # kept, reported by check(): the thread must not die silently
            self.failures.append(f"{type(exc).__name__}: {exc}")
            return
        self._seen = key
        self.records.append(StepRecord(key[0], key[1], route_weights(vs), messages,
                                       round(time.monotonic() - started, 3)))

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.wait(self.interval):
            if time.monotonic() > deadline or len(self.records) >= self.max_records:
                self.failures.append(f"stopped polling early: {len(self.records)} records, "
                                     f"limits {self.max_records} records / {self.max_seconds:.0f}s")
                return
            if len(self.failures) > 20:
                return  # the API is gone; check() reports what happened
            try:
                if self._resource_versions() == self._seen:
                    continue
            except Exception as exc:
                self.failures.append(f"poll: {type(exc).__name__}: {exc}")
                continue
            self._record()

    # -- results

    @property
    def baseline(self) -> StepRecord:
        return self.records[0]

    def release_errors(self) -> list[tuple[StepRecord, Message]]:
        """Error-level messages of any observed state that the state before the release did not
        have: the ones the release caused."""
        before = {(m.code, m.origin, m.text) for m in errors(self.baseline.messages)}
        return [(r, m) for r in self.records for m in errors(r.messages) if (m.code, m.origin, m.text) not in before]

    def observed_weights(self, subset: str) -> set[int]:
        """Weights `subset` had in the last (catch-all) route across the observed states."""
        return {w for r in self.records if r.weights for t, w in r.weights[-1][1] if t == subset}

    def describe(self) -> str:
        lines = [f"{len(self.records)} states analyzed:"] + [f"  {r.describe()}" for r in self.records]
        lines += [f"  failure: {f}" for f in self.failures]
        return "\n".join(lines)

    def check(self) -> None:
        """AssertionError unless every state was analyzed and none has an Error-level message
        the release caused."""
        assert not self.failures, "the analyzer did not see every step:\n" + self.describe()
        found = self.release_errors()
        assert not found, "istioctl analyze found errors caused by the release:\n" + "\n".join(
            f"  {m} (at VS rv {r.vs_resource_version}: {describe_weights(r.weights)})" for r, m in found
        ) + "\n" + self.describe()


def _find(objects: Sequence[dict[str, Any]], kind: str, namespace: str, name: str) -> dict[str, Any]:
    for obj in objects:
        meta = obj.get("metadata") or {}
        if obj.get("kind") == kind and meta.get("namespace") == namespace and meta.get("name") == name:
            return obj
    raise LookupError(f"{kind} {namespace}/{name} not found")

