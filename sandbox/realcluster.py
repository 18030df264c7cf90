"""The sandbox's world in a real kube-apiserver (`python -m sandbox up --real-apiserver`).

The same objects the sandbox's own API server is seeded with (namespaces, Services, Pods,
Deployments, HorizontalPodAutoscalers, DestinationRules, VirtualServices) are written to a real etcd + kube-apiserver
(`sandbox.kubeenv.ControlPlane`), with Istio's CRDs and the pipeline's RBAC manifest. The
traffic generator still routes by a `Store`: `mirror_into` keeps it a copy of the real
server's objects through list + watch, as Envoy's config follows istiod's. Pod readiness is
written through the status subresource, as a kubelet would.

Two kubeconfigs: the admin's (tests set up and inspect with it) and the pipeline's, a
ServiceAccount token (`istio-canary`): the real RBAC authorizer decides what a release may do.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sandbox.config import SEEDED_RESOURCES, WorldConfig, namespace_object, service_objects
from sandbox.kubeenv import PLURAL_KINDS, ControlPlane, KubeEnvError
from sandbox.store import Store

log = logging.getLogger("sandbox.realcluster")

RBAC_MANIFEST = Path(__file__).resolve().parent.parent / "include" / "manifests" / "rbac.yaml"
RBAC_NAMESPACE = "bookinfo"  # the namespace rbac.yaml is written for
PIPELINE_SERVICE_ACCOUNT = "istio-canary"
WATCH_SECONDS = 300
# No kubelet or controller-manager runs: the sandbox writes these kinds' status itself (Pod
# readiness, a Deployment's Ready replicas, an HPA's current replicas).
STATUS_WRITTEN_KINDS = ("Pod", "Deployment", "HorizontalPodAutoscaler")
# What the traffic generator routes by; Deployments and HPAs are only read by releases.
MIRRORED_RESOURCES = tuple(r for r in SEEDED_RESOURCES if r not in ("deployments", "horizontalpodautoscalers"))  # one watch stream's life; the mirror resumes from the last resourceVersion


class RealCluster:
    def __init__(self, state_dir: Path, world: WorldConfig, crd_dir: Path) -> None:
        self.world = world
        self.crd_dir = crd_dir
        # Children of the supervisor, in its process group: `sandbox down` stops them too.
        self.control_plane = ControlPlane(state_dir / "kubeenv", new_session=False)
        self.namespace = world.services[0].namespace

    @property
    def client(self) -> Any:
        return self.control_plane.client

    @property
    def url(self) -> str:
        return self.control_plane.url

    @property
    def ca_file(self) -> Path:
        return self.control_plane.cert_dir / "ca.crt"

    def start(self) -> None:
        self.control_plane.start(self.crd_dir)
        self.seed()
        rbac = RBAC_MANIFEST.read_text().replace(f"namespace: {RBAC_NAMESPACE}", f"namespace: {self.namespace}")
        self.control_plane.apply_manifest(rbac)
        self.control_plane.wait_until_allowed(self.namespace, PIPELINE_SERVICE_ACCOUNT)

    def stop(self) -> None:
        self.control_plane.stop()

    def kubeconfigs(self) -> tuple[str, str]:
        """(admin kubeconfig, the pipeline ServiceAccount's kubeconfig) as YAML."""
        return (
            self.control_plane.admin_kubeconfig(self.namespace),
            self.control_plane.service_account_kubeconfig(self.namespace, PIPELINE_SERVICE_ACCOUNT),
        )

    # --- the world's objects ----------------------------------------------------------------

    def _write(self, obj: dict[str, Any]) -> None:
        status = obj.get("status") if obj["kind"] in STATUS_WRITTEN_KINDS else None
        stored = self.client.apply(obj)
        if status is not None:  # the kubelet's and controllers' part: the status subresource
            self.client.replace({**stored, "status": status}, "/status")

    def seed(self) -> int:
        written = 0
        for ns in sorted({s.namespace for s in self.world.services}):
            self._write(namespace_object(ns))
            written += 1
        for svc in self.world.services:
            for _resource, obj in service_objects(svc):
                self._write(obj)
                written += 1
        return written

    def reseed(self) -> int:
        """Back to the seeded state in the world's namespaces: objects added since are deleted."""
        seeded = {
            (resource, obj["metadata"]["namespace"], obj["metadata"]["name"])
            for svc in self.world.services
            for resource, obj in service_objects(svc)
        }
        for ns in sorted({s.namespace for s in self.world.services}):
            for resource in SEEDED_RESOURCES:
                kind = PLURAL_KINDS[resource]
                for obj in self.client.list(kind, ns).get("items", []):
                    if (resource, ns, obj["metadata"]["name"]) not in seeded:
                        self.client.delete(kind, ns, obj["metadata"]["name"])
        return self.seed()

    def update_virtual_service(
        self, namespace: str, name: str, edit: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any]:
        """Read, `edit` in place, write back with the read resourceVersion (a 409 if someone
        wrote in between: the caller tries again on its next turn)."""
        vs = self.client.get("VirtualService", namespace, name)
        if vs is None:
            raise LookupError(f"VirtualService {namespace}/{name} not found")
        edit(vs)
        return self.client.replace(vs)

    # --- the generator's copy ---------------------------------------------------------------

    def mirror_into(self, store: Store, stop: threading.Event) -> list[threading.Thread]:
        """One list + watch thread per resource the generator routes by. Returns once each
        resource's first list is in `store`, so routing starts from the real state."""
        threads = []
        for resource in MIRRORED_RESOURCES:
            listed = threading.Event()
            thread = threading.Thread(
                target=self._mirror, args=(resource, store, stop, listed), name=f"mirror-{resource}", daemon=True
            )
            thread.start()
            if not listed.wait(30):
                raise KubeEnvError(f"could not list {resource} from {self.url}")
            threads.append(thread)
        return threads

    def _mirror(self, resource: str, store: Store, stop: threading.Event, listed: threading.Event) -> None:
        kind = PLURAL_KINDS[resource]
        resource_version = ""
        while not stop.is_set():
            try:
                if not resource_version:
                    body = self.client.list(kind)
                    resource_version = body["metadata"]["resourceVersion"]
                    store.mirror_all(resource, body.get("items", []), resource_version)
                    listed.set()
                for event in self.client.watch(kind, resource_version, WATCH_SECONDS):
                    obj = event["object"]
                    if event["type"] == "ERROR":  # e.g. 410 Gone: too old, list again
                        log.info("watch %s: %s; listing again", resource, obj.get("message"))
                        resource_version = ""
                        break
                    resource_version = obj["metadata"]["resourceVersion"]
                    if event["type"] == "BOOKMARK":
                        continue
                    meta = obj["metadata"]
                    store.mirror(resource, meta.get("namespace", ""), meta["name"],
                                 None if event["type"] == "DELETED" else obj, resource_version)
                    if stop.is_set():
                        break
            except Exception as exc:  # the server restarting, a stream cut: list again shortly
                if stop.is_set():
                    return
                log.warning("mirror of %s: %r; listing again in 1s", resource, exc)
                resource_version = ""
                stop.wait(1.0)
