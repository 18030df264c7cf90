"""The sandbox's object store: what etcd is to a real API server.

Objects are plain dicts as the API serves them (apiVersion, kind, metadata, spec). Keys are
(resource plural, namespace, name). Every read returns a deep copy, so callers can never
change stored state by accident. `revision` increases on every write: the API server uses
it for `metadata.resourceVersion`, the traffic generator to notice routing changes.
"""

from __future__ import annotations

import copy
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

Key = tuple[str, str, str]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._objects: dict[Key, dict[str, Any]] = {}
        self._revision = 0
        self._changes = 0

    @property
    def lock(self) -> threading.RLock:
        """Held by the API server across a read-check-write, so writes are atomic."""
        return self._lock

    @property
    def revision(self) -> int:
        with self._lock:
            return self._revision

    @property
    def changes(self) -> int:
        """Bumped on every write: what a reader compares to notice any change (a mirror's
        `revision` follows another server's resourceVersions, which may arrive out of order
        across resources)."""
        with self._lock:
            return self._changes

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            obj = self._objects.get((resource, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Objects of one resource, in one namespace or all, sorted by namespace then name."""
        with self._lock:
            found = [
                copy.deepcopy(obj)
                for (res, ns, _), obj in self._objects.items()
                if res == resource and (namespace is None or ns == namespace)
            ]
        return sorted(found, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))

    def put(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store `obj` as the new state: stamps resourceVersion (and uid/creationTimestamp on
        create, generation on spec change). Callers check preconditions under `lock` first."""
        with self._lock:
            meta = obj.setdefault("metadata", {})
            key = (resource, meta.get("namespace", ""), meta["name"])
            old = self._objects.get(key)
            self._revision += 1
            stored = copy.deepcopy(obj)
            meta = stored["metadata"]
            if old is None:
                meta["uid"] = str(uuid.uuid4())
                meta["creationTimestamp"] = _now()
                meta["generation"] = 1
            else:
                meta["uid"] = old["metadata"]["uid"]
                meta["creationTimestamp"] = old["metadata"]["creationTimestamp"]
                generation = old["metadata"].get("generation", 1)
                meta["generation"] = generation + 1 if old.get("spec") != stored.get("spec") else generation
            meta["resourceVersion"] = str(self._revision)
            self._objects[key] = stored
            self._changes += 1
            return copy.deepcopy(stored)

    def delete(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            obj = self._objects.pop((resource, namespace, name), None)
            if obj is not None:
                self._revision += 1
                self._changes += 1
            return obj

    # --- a copy of another server's objects (the sandbox on a real kube-apiserver) ---------

    def mirror(self, resource: str, namespace: str, name: str, obj: dict[str, Any] | None,
               resource_version: str) -> None:
        """Take an object as another server stored it, metadata and all (None: deleted there).
        `revision` follows that server's resourceVersion."""
        with self._lock:
            if obj is None:
                self._objects.pop((resource, namespace, name), None)
            else:
                self._objects[(resource, namespace, name)] = copy.deepcopy(obj)
            self._revision = max(self._revision, int(resource_version))
            self._changes += 1

    def mirror_all(self, resource: str, objects: list[dict[str, Any]], resource_version: str) -> None:
        """Every object of `resource` replaced by another server's list of them."""
        with self._lock:
            for key in [k for k in self._objects if k[0] == resource]:
                del self._objects[key]
            for obj in objects:
                meta = obj["metadata"]
                self._objects[(resource, meta.get("namespace", ""), meta["name"])] = copy.deepcopy(obj)
            self._revision = max(self._revision, int(resource_version))
            self._changes += 1
