"""Shared fixtures: a running sandbox (Kubernetes API stand-in, traffic generator, Prometheus).

- `sandbox` (session): one sandbox for the whole run, started with `python -m sandbox up`
  and always stopped with `down`. Tests that change routing or behaviour call
  `sandbox.reset()` when done (or use their own via `sandbox_factory`).
- `sandbox_factory(config: dict | None) -> SandboxInfo`: an extra sandbox with its own state
  dir (and world config), stopped when the test ends.
- `real_sandbox` (session): the same world on a real etcd + kube-apiserver (`up
  --real-apiserver`): RBAC by the real authorizer, the pipeline on the istio-canary
  ServiceAccount's token.
- `cluster`: the sandbox a test runs against; `sandbox` unless the test is marked
  `@BOTH_APIS`, which runs it once on each API server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox import client
from sandbox.client import SandboxInfo, stop_sandbox


def start_sandbox(state_dir: Path, config: dict[str, Any] | None = None, real_apiserver: bool = False) -> SandboxInfo:
    """sandbox.client.start_sandbox, failing the test (with up's output) when it does not start."""
    try:
        return client.start_sandbox(state_dir, config, real_apiserver=real_apiserver)
    except client.SandboxCliError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxInfo]:
    state_dir = tmp_path_factory.mktemp("sandbox")
    try:
        yield start_sandbox(state_dir)
    finally:
        stop_sandbox(state_dir)


@pytest.fixture(scope="session")
def real_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxInfo]:
    state_dir = tmp_path_factory.mktemp("real-sandbox")
    try:
        yield start_sandbox(state_dir, real_apiserver=True)
    finally:
        stop_sandbox(state_dir)


KUBE_APIS = ("sandbox", "kube-apiserver")
# Runs a test once against each API server: the sandbox's stand-in and a real kube-apiserver.
BOTH_APIS = pytest.mark.parametrize("cluster", KUBE_APIS, indirect=True)


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> SandboxInfo:
    """`sandbox`, or `real_sandbox` where a test is parametrized with BOTH_APIS."""
    which = getattr(request, "param", "sandbox")
    return request.getfixturevalue("real_sandbox" if which == "kube-apiserver" else "sandbox")


@pytest.fixture
def sandbox_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., SandboxInfo]]:
    started: list[Path] = []

    def start(config: dict[str, Any] | None = None) -> SandboxInfo:
        state_dir = tmp_path_factory.mktemp("sandbox-extra")
        started.append(state_dir)
        return start_sandbox(state_dir, config)

    try:
        yield start
    finally:
        for state_dir in started:
            stop_sandbox(state_dir)
