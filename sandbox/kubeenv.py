"""A real Kubernetes control plane on loopback: etcd + kube-apiserver, for tests and the sandbox.

`make setup` builds kube-apiserver (and istioctl) from Go modules (tools/kubeenv/build.sh) and
links them into .cache/bin/; etcd is Debian's. `ControlPlane.start()` runs both with self-signed
certificates, `--authorization-mode=RBAC` and service-account token signing, installs Istio's
CRDs, and hands out kubeconfigs: the admin's (client certificate, group system:masters) and a
ServiceAccount's (a bound token from the TokenRequest API), so the real authorizer judges what
the pipeline may do.

No controller-manager, scheduler or kubelet run: Pods are stored objects whose status the
sandbox writes (through the status subresource, as a kubelet would). The ServiceAccount
admission plugin is off because no controller creates the `default` ServiceAccount.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from sandbox.kubeconfig import kubeconfig_yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BIN_DIR = PROJECT_ROOT / ".cache" / "bin"
# Istio's VirtualService and DestinationRule CRDs, cut out of the istio.io/istio module by
# tools/kubeenv/build.sh: the copy used when $SANDBOX_CRDS names none.
ISTIO_CRDS_DIR = PROJECT_ROOT / ".cache" / "crds"
READY_SECONDS = 60.0
STOP_GRACE_SECONDS = 10.0
SERVICE_CIDR = "10.96.0.0/16"


class KubeEnvError(RuntimeError):
    """The control plane could not be started or used; the message says what to do."""


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    istioctl: Path


def find_binaries() -> Binaries:
    """The three binaries from $KUBEENV_BIN or .cache/bin/ (make setup links them there)."""
    bin_dir = Path(os.environ.get("KUBEENV_BIN") or BIN_DIR)
    found = {name: bin_dir / name for name in ("etcd", "kube-apiserver", "istioctl")}
    missing = [name for name, path in found.items() if not os.access(path, os.X_OK)]
    if missing:
        raise KubeEnvError(
            f"{', '.join(missing)} not found in {bin_dir}: run `make setup` (tools/kubeenv/build.sh builds "
            "kube-apiserver and istioctl with Go; etcd comes from the Debian package etcd-server)"
        )
    return Binaries(found["etcd"], found["kube-apiserver"], found["istioctl"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- a small client ---------------------------------------------------------------------------

# kind -> (API path prefix, plural, namespaced): the kinds the sandbox and the tests write.
KINDS: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("/api/v1", "namespaces", False),
    "Service": ("/api/v1", "services", True),
    "Pod": ("/api/v1", "pods", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers", True),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "CustomResourceDefinition": ("/apis/apiextensions.k8s.io/v1", "customresourcedefinitions", False),
    "VirtualService": ("/apis/networking.istio.io/v1", "virtualservices", True),
    "DestinationRule": ("/apis/networking.istio.io/v1", "destinationrules", True),
}
PLURAL_KINDS = {plural: kind for kind, (_, plural, _) in KINDS.items()}


def resource_path(kind: str, namespace: str | None = None, name: str | None = None) -> str:
    """The REST path of a collection (no name) or an object; namespace None lists across all."""
    prefix, plural, namespaced = KINDS[kind]
    path = prefix
    if namespaced and namespace is not None:
        path += f"/namespaces/{namespace}"
    path += f"/{plural}"
    return f"{path}/{name}" if name else path


class KubeClient:
    """JSON over HTTPS to a kube-apiserver with the admin's client certificate. Raises
    KubeEnvError with the server's Status message on any unexpected answer."""

    def __init__(self, url: str, cert_dir: Path) -> None:
        self.url = url
        self.session = requests.Session()
        # Passed on every call: requests lets $REQUESTS_CA_BUNDLE override a session's `verify`.
        self.tls: dict[str, Any] = {
            "cert": (str(cert_dir / "admin.crt"), str(cert_dir / "admin.key")),
            "verify": str(cert_dir / "ca.crt"),
        }

    def request(self, method: str, path: str, body: Any = None, ok: Iterable[int] = (200, 201),
                **params: Any) -> requests.Response:
        resp = self.session.request(method, self.url + path, json=body, params=params or None, timeout=30,
                                    **self.tls)
        if resp.status_code not in ok:
            raise KubeEnvError(f"{method} {path}: {resp.status_code} {resp.text[:500]}")
        return resp

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        resp = self.request("GET", resource_path(kind, namespace, name), ok=(200, 404))
        return resp.json() if resp.status_code == 200 else None

    def list(self, kind: str, namespace: str | None = None) -> dict[str, Any]:
        return self.request("GET", resource_path(kind, namespace)).json()

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return self.request("POST", resource_path(obj["kind"], meta.get("namespace")), obj).json()

    def replace(self, obj: dict[str, Any], subresource: str = "") -> dict[str, Any]:
        meta = obj["metadata"]
        path = resource_path(obj["kind"], meta.get("namespace"), meta["name"]) + subresource
        return self.request("PUT", path, obj).json()

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create, or replace what is there (its resourceVersion taken, so nothing is merged)."""
        meta = obj["metadata"]
        current = self.get(obj["kind"], meta.get("namespace"), meta["name"])
        if current is None:
            return self.create(obj)
        fresh = {**obj, "metadata": {**meta, "resourceVersion": current["metadata"]["resourceVersion"]}}
        return self.replace(fresh)

    def delete(self, kind: str, namespace: str | None, name: str) -> None:
        self.request("DELETE", resource_path(kind, namespace, name), ok=(200, 202, 404))

    def watch(self, kind: str, resource_version: str, stop_after: float) -> Iterator[dict[str, Any]]:
        """Watch events (type, object) across namespaces from `resource_version`, for at most
        `stop_after` seconds (the server closes the stream then)."""
        params = {"watch": "1", "resourceVersion": resource_version, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(int(stop_after))}
        with self.session.get(self.url + resource_path(kind), params=params, stream=True,
                              timeout=(10, stop_after + 30), **self.tls) as resp:
            if resp.status_code != 200:
                raise KubeEnvError(f"watch {kind}: {resp.status_code} {resp.text[:300]}")
            for line in resp.iter_lines():
                if line:
                    yield json.loads(line)


# --- the control plane ----------------------------------------------------------------------


class ControlPlane:
    """etcd + kube-apiserver as child processes, data and certificates under `state_dir`.

    `new_session=True` starts each in its own process group (a test fixture's own processes);
    False keeps them in the caller's group, so stopping the sandbox's group stops them too."""

    def __init__(self, state_dir: Path, *, new_session: bool = True) -> None:
        self.state_dir = state_dir
        self.cert_dir = state_dir / "pki"
        self.new_session = new_session
        self.binaries = find_binaries()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.port = 0
        self._client: KubeClient | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def client(self) -> KubeClient:
        if self._client is None:
            self._client = KubeClient(self.url, self.cert_dir)
        return self._client

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.processes.items()}

    def _spawn(self, name: str, command: list[str]) -> None:
        log = (self.state_dir / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=self.new_session,
        )
        log.close()

    def start(self, crd_dir: Path | None = None) -> ControlPlane:
        """Start both, wait until /readyz answers ok, install the CRDs in `crd_dir`."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        from sandbox.certificates import write_certificates  # local: cryptography only when one starts

        write_certificates(self.cert_dir)
        etcd_port, etcd_peer = free_port(), free_port()
        self._spawn("etcd", [
            str(self.binaries.etcd), "--name", "kubeenv", "--data-dir", str(self.state_dir / "etcd-data"),
            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"kubeenv=http://127.0.0.1:{etcd_peer}",
            "--log-level", "warn",
        ])
        self.port = free_port()
        pki = self.cert_dir
        self._spawn("kube-apiserver", [
            str(self.binaries.kube_apiserver),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--disable-admission-plugins=ServiceAccount",
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            f"--cert-dir={pki}",
            "-v=1",
        ])
        self._wait_ready()
        if crd_dir is not None:
            self.install_crds(crd_dir)
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_SECONDS
        last = "no answer"
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise KubeEnvError(
                        f"{name} exited with code {proc.returncode}:\n{_tail(self.state_dir / f'{name}.log')}"
                    )
            with contextlib.suppress(requests.RequestException):
                resp = self.client.request("GET", "/readyz", ok=range(100, 600))
                if resp.status_code == 200:
                    return
                last = f"{resp.status_code} {resp.text[-300:]}"
            time.sleep(0.3)
        raise KubeEnvError(f"kube-apiserver not ready after {READY_SECONDS:.0f}s ({last}):\n"
                           f"{_tail(self.state_dir / 'kube-apiserver.log')}")

    def install_crds(self, crd_dir: Path) -> None:
        """Create every CRD in `crd_dir`/*.crd.yaml and wait until each is Established."""
        names = []
        for path in sorted(crd_dir.glob("*.crd.yaml")):
            for crd in yaml.safe_load_all(path.read_text()):
                if crd:
                    self.client.apply(crd)
                    names.append(crd["metadata"]["name"])
        deadline = time.monotonic() + READY_SECONDS
        for name in names:
            while True:
                crd = self.client.get("CustomResourceDefinition", None, name) or {}
                conditions = {c["type"]: c["status"] for c in (crd.get("status") or {}).get("conditions") or []}
                if conditions.get("Established") == "True":
                    break
                if time.monotonic() > deadline:
                    raise KubeEnvError(f"CRD {name} not Established: {conditions}")
                time.sleep(0.2)
        # Discovery of the new group can lag the Established condition by a moment.
        while self.client.request("GET", "/apis/networking.istio.io/v1", ok=(200, 404, 503)).status_code != 200:
            if time.monotonic() > deadline:
                raise KubeEnvError("networking.istio.io/v1 not served after its CRDs were Established")
            time.sleep(0.2)

    def apply_manifest(self, text: str) -> list[dict[str, Any]]:
        """Create-or-replace every object of a multi-document YAML."""
        return [self.client.apply(doc) for doc in yaml.safe_load_all(text) if doc]

    def service_account_token(self, namespace: str, name: str, seconds: int = 86400) -> str:
        """A bound token for the ServiceAccount, from the TokenRequest API."""
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": seconds}}
        path = resource_path("ServiceAccount", namespace, name) + "/token"
        return str(self.client.request("POST", path, body).json()["status"]["token"])

    def wait_until_allowed(self, namespace: str, service_account: str) -> None:
        """Until the authorizer lets the ServiceAccount do a release's first reads: list
        VirtualServices in `namespace` and DestinationRules everywhere. New RoleBindings reach
        kube-apiserver's RBAC authorizer through an informer, a moment after they are stored;
        a SubjectAccessReview asks that same authorizer."""
        user = f"system:serviceaccount:{namespace}:{service_account}"
        groups = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"]
        checks = [
            {"verb": "list", "group": "networking.istio.io", "resource": "virtualservices", "namespace": namespace},
            {"verb": "list", "group": "networking.istio.io", "resource": "destinationrules"},
        ]
        deadline = time.monotonic() + READY_SECONDS
        for attributes in checks:
            review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                      "spec": {"user": user, "groups": groups, "resourceAttributes": attributes}}
            while True:
                status = self.client.request(
                    "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review).json()["status"]
                if status.get("allowed"):
                    break
                if time.monotonic() > deadline:
                    raise KubeEnvError(f"{user} still may not {attributes}: {status.get('reason') or 'no rule'}")
                time.sleep(0.1)

    def admin_kubeconfig(self, namespace: str = "default") -> str:
        pki = self.cert_dir
        user = {"client-certificate": str(pki / "admin.crt"), "client-key": str(pki / "admin.key")}
        return kubeconfig_yaml(self.url, namespace, ca_file=pki / "ca.crt", user=user)

    def service_account_kubeconfig(self, namespace: str, name: str) -> str:
        token = self.service_account_token(namespace, name)
        return kubeconfig_yaml(self.url, namespace, token, ca_file=self.cert_dir / "ca.crt")

    def stop(self) -> None:
        """The API server first (it writes to etcd), then etcd; SIGKILL after a grace period."""
        for name in ("kube-apiserver", "etcd"):
            proc = self.processes.get(name)
            if proc is None or proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                if self.new_session:
                    os.killpg(proc.pid, signal.SIGTERM)
                else:
                    proc.terminate()
            try:
                proc.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL) if self.new_session else proc.kill()
                proc.wait(5)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
