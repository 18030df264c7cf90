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

import json
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from sandbox.kubeenv import ISTIO_CRDS_DIR

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_SHARED_CRDS = PROJECT_ROOT.parent / "shared" / "istio"


def sandbox_env() -> dict[str, str]:
    """Environment for `python -m sandbox`: as `make test` sets it (Istio's real CRDs: the
    reference copy beside the checkout, else the one `make setup` cut out of the istio.io/istio
    module)."""
    env = dict(os.environ)
    for crds in (_SHARED_CRDS, ISTIO_CRDS_DIR):
        if not env.get("SANDBOX_CRDS") and (crds / "virtualservices.crd.yaml").exists():
            env["SANDBOX_CRDS"] = str(crds)
    return env


def sandbox_cli(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run `python -m sandbox ARGS` from the project root; never raises on a non-zero exit."""
    return subprocess.run(
        [sys.executable, "-m", "sandbox", *args],
        cwd=PROJECT_ROOT,
        env=sandbox_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def parse_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = shlex.split(line)[0].partition("=")
            env[key] = value
    return env


@dataclass
class SandboxInfo:
    state_dir: Path
    kubeconfig: Path  # the admin's: tests set up and inspect with it
    api_url: str
    prometheus_url: str
    control_url: str
    env: dict[str, str] = field(default_factory=dict)
    kube_api: str = "sandbox"  # or "kube-apiserver"
    pipeline_kubeconfig: Path | None = None  # what the release's Airflow connection uses

    @classmethod
    def from_state_dir(cls, state_dir: Path) -> SandboxInfo:
        env = parse_env_file(state_dir / "env")
        return cls(
            state_dir=state_dir,
            kubeconfig=Path(env["KUBECONFIG"]),
            api_url=env["SANDBOX_API_URL"],
            prometheus_url=env["PROMETHEUS_URL"],
            control_url=env["SANDBOX_CONTROL_URL"],
            env=env,
            kube_api=env.get("SANDBOX_KUBE_API", "sandbox"),
            pipeline_kubeconfig=Path(env.get("PIPELINE_KUBECONFIG") or env["KUBECONFIG"]),
        )

    @property
    def real(self) -> bool:
        return self.kube_api != "sandbox"

    def clear_api_faults(self) -> None:
        """Disarm the sandbox API's write faults (a real kube-apiserver has none)."""
        if not self.real:
            requests.delete(f"{self.api_url}/sandbox/faults", timeout=5)

    @property
    def process_state(self) -> dict[str, Any]:
        """state.json: pgid, pids, ports, started_at."""
        return json.loads((self.state_dir / "state.json").read_text())

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`python -m sandbox <command> --state-dir <this> <rest>`."""
        command, *rest = args
        return sandbox_cli(command, "--state-dir", str(self.state_dir), *rest)

    # --- the generator's control API
    def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.control_url}{path}",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise ValueError(f"POST {path} {payload}: {exc.code} {exc.read().decode()}") from exc

    def set_behaviour(self, version: str | None = None, **changes: Any) -> dict[str, Any]:
        """Change behaviour, e.g. `set_behaviour("v2", error_rate=0.2)` or `set_behaviour(rps=500)`;
        `service=`/`namespace=` pick the service when there are several. Raises ValueError on 400."""
        payload = {k: v for k, v in {"version": version, **changes}.items() if v is not None}
        return self._post("/control/behaviour", payload)

    def reset(self) -> None:
        """Seeded objects and configured behaviour back (counters keep counting)."""
        self._post("/control/reset", {})

    def state(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.control_url}/control/state", timeout=10) as resp:
            return json.loads(resp.read())

    def counts(self) -> list[dict[str, Any]]:
        """Exact simulated request counts: rows of service, namespace, version (or "unknown"),
        user_agent_canary, cookie_canary, response_code, count."""
        return self.state()["counts"]

    @staticmethod
    def total(rows: list[dict[str, Any]], **filters: Any) -> int:
        return sum(r["count"] for r in rows if all(r[k] == v for k, v in filters.items()))

    def wait_for_routing(self, resource_version: str | int, timeout: float = 10.0) -> None:
        """Until the generator routes by a store at least as new as `resource_version`."""
        deadline = time.monotonic() + timeout
        while self.state()["routing_revision"] < int(resource_version):
            if time.monotonic() > deadline:
                raise TimeoutError(f"generator did not pick up resourceVersion {resource_version}")
            time.sleep(0.05)

    # --- Prometheus
    def prom_result(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": promql}
        if at is not None:
            params["time"] = at
        resp = requests.get(f"{self.prometheus_url}/api/v1/query", params=params, timeout=10)
        body = resp.json()
        assert body.get("status") == "success", f"{promql}: {body}"
        data = body["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def prom_query(self, promql: str, at: float | None = None) -> float | None:
        """The first sample's value of an instant query, or None if it returned nothing."""
        result = self.prom_result(promql, at)
        return float(result[0]["value"][1]) if result else None

    def prom_by(self, promql: str, label: str, at: float | None = None) -> dict[str, float]:
        """{value of `label`: sample value} for a query returning one series per label value."""
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in self.prom_result(promql, at)}

    def prom_wait(
        self, promql: str, predicate: Callable[[float | None], bool], timeout: float = 30.0
    ) -> float | None:
        deadline = time.monotonic() + timeout
        while True:
            value = self.prom_query(promql)
            if predicate(value):
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{promql} stayed at {value} for {timeout:.0f}s")
            time.sleep(0.5)


def start_sandbox(state_dir: Path, config: dict[str, Any] | None = None, real_apiserver: bool = False) -> SandboxInfo:
    state_dir.mkdir(parents=True, exist_ok=True)
    args = ["up", "--state-dir", str(state_dir)] + (["--real-apiserver"] if real_apiserver else [])
    if config is not None:
        config_file = state_dir / "world.yaml"
        config_file.write_text(yaml.safe_dump(config))
        args += ["--config", str(config_file)]
    result = sandbox_cli(*args)
    if result.returncode != 0:
        sandbox_cli("down", "--state-dir", str(state_dir))
        pytest.fail(f"sandbox up failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return SandboxInfo.from_state_dir(state_dir)


def stop_sandbox(state_dir: Path) -> None:
    result = sandbox_cli("down", "--state-dir", str(state_dir))
    assert result.returncode == 0, result.stderr


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
