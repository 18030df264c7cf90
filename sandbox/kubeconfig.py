"""The one kubeconfig writer for the sandbox's API (plain HTTP, a token) and the real control plane
(TLS with its own CA, a token or a client certificate)."""

from __future__ import annotations

from pathlib import Path

import yaml

DEFAULT_TOKEN = "sandbox-token"


def kubeconfig_yaml(
    server_url: str,
    namespace: str = "default",
    token: str = DEFAULT_TOKEN,
    *,
    ca_file: Path | None = None,
    user: dict[str, str] | None = None,
) -> str:
    """A kubeconfig that kubectl and `kubernetes.config.load_kube_config` accept.

    `user` is a whole kubeconfig user entry (client certificate and key paths); without it the
    user authenticates with `token`. `ca_file` is the CA that signed the server's certificate."""
    cluster: dict[str, str] = {"server": server_url}
    if ca_file is not None:
        cluster["certificate-authority"] = str(ca_file)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sandbox", "cluster": cluster}],
        "users": [{"name": "sandbox", "user": user if user is not None else {"token": token}}],
        "contexts": [
            {"name": "sandbox", "context": {"cluster": "sandbox", "user": "sandbox", "namespace": namespace}}
        ],
        "current-context": "sandbox",
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=False)
