"""The API server itself: listening socket, store and schemas, audit log, fault queue, and the
bearer tokens it handed out."""

from __future__ import annotations

import collections
import secrets
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from typing import Any

import yaml

from sandbox.apiserver.discovery import build_openapi
from sandbox.apiserver.faults import Faults
from sandbox.apiserver.handler import Handler
from sandbox.apiserver.rbac import ADMIN, RBAC_KINDS, UserInfo, service_account_user
from sandbox.schema import CrdSchemas, load_schemas
from sandbox.store import Store

AUDIT_LIMIT = 10000


class ApiServer(ThreadingHTTPServer):
    """Kubernetes API stand-in. Run `serve_forever()` in a thread; `url` is where it listens."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, store: Store, schemas: CrdSchemas, host: str = "127.0.0.1", port: int = 0, verbose: bool = False
    ) -> None:
        self.store = store
        self.schemas = schemas
        self.verbose = verbose
        self.tokens: dict[str, UserInfo] = {}  # tokens handed out by service_account_token
        self.audit: collections.deque[dict[str, Any]] = collections.deque(maxlen=AUDIT_LIMIT)
        self.faults = Faults()
        self.started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.openapi_documents = build_openapi(schemas)
        super().__init__((host, port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def audit_records(self) -> list[dict[str, Any]]:
        return list(self.audit)

    def load_rbac(self, manifest: str) -> int:
        """Store the ServiceAccounts, Roles, ClusterRoles and bindings of a YAML manifest (e.g.
        include/manifests/rbac.yaml); returns how many. Other kinds raise ValueError."""
        documents = [d for d in yaml.safe_load_all(manifest) if d]
        for doc in documents:
            kind = doc.get("kind") if isinstance(doc, dict) else None
            if kind not in RBAC_KINDS:
                raise ValueError(f"load_rbac takes {', '.join(RBAC_KINDS)}, not {kind!r}")
            resource, namespaced = RBAC_KINDS[kind]
            metadata = doc.setdefault("metadata", {})
            if namespaced and not metadata.get("namespace"):
                raise ValueError(f"{kind} {metadata.get('name')!r} needs metadata.namespace")
            if not namespaced:
                metadata.pop("namespace", None)
            self.store.put(resource, doc)
        return len(documents)

    def service_account_token(self, namespace: str, name: str) -> str:
        """A bearer token for the ServiceAccount (stored by `load_rbac`): requests with it are
        judged by RBAC, as with a TokenRequest token on a real server."""
        if self.store.get("serviceaccounts", namespace, name) is None:
            raise KeyError(f"no ServiceAccount {namespace}/{name}: load it with load_rbac first")
        token = f"sandbox-sa-{secrets.token_urlsafe(24)}"
        self.tokens[token] = service_account_user(namespace, name)
        return token

    def user_for(self, authorization: str | None) -> UserInfo:
        """Who sent a request with this Authorization header."""
        scheme, _, token = (authorization or "").partition(" ")
        return self.tokens.get(token.strip(), ADMIN) if scheme.lower() == "bearer" else ADMIN

    def server_close(self) -> None:
        self.faults.stopping.set()  # ends pending "timeout" faults and open watches
        super().server_close()

    def shutdown(self) -> None:
        self.faults.stopping.set()
        super().shutdown()


def make_api_server(
    store: Store, host: str = "127.0.0.1", port: int = 0, crd_dir: str | None = None, verbose: bool = False
) -> ApiServer:
    """An API server over `store`, validating against Istio's CRDs in `crd_dir` (built-in schema
    if None). The caller runs `serve_forever()` in a thread and `shutdown()`/`server_close()`."""
    return ApiServer(store, load_schemas(crd_dir), host, port, verbose)
