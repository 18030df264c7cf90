"""The client of a running sandbox, for tests, benchmarks and tools.

- `start_sandbox` / `stop_sandbox` / `running_sandbox`: `python -m sandbox up|down` in a state dir;
- `SandboxInfo`: what `up` wrote there (URLs, kubeconfigs, env) and the calls a running sandbox
  answers: the traffic generator's control API (behaviour, reset, counts, routing revision),
  the API server's write faults, Prometheus queries, the CLI with its state dir;
- `sandbox_connections`: the Airflow connections (env-style) that point at it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
import yaml

from sandbox.kubeenv import ISTIO_CRDS_DIR

if TYPE_CHECKING:
    from kubernetes.client import CustomObjectsApi

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Istio's real CRDs: the reference copy beside the checkout, else the one `make setup` cut out
# of the istio.io/istio module (the Makefile's SANDBOX_CRDS default, in the same order).
_CRD_DIRS = (PROJECT_ROOT.parent / "shared" / "istio", ISTIO_CRDS_DIR)
AIRFLOW_CONNECTION_VARIABLES = ("AIRFLOW_CONN_KUBERNETES_DEFAULT", "AIRFLOW_CONN_PROMETHEUS_DEFAULT")
ISTIO_GROUP, ISTIO_VERSION = "networking.istio.io", "v1"


class SandboxCliError(RuntimeError):
    """`python -m sandbox up` or `down` exited non-zero; the message holds its output."""


def sandbox_env() -> dict[str, str]:
    """Environment for `python -m sandbox`: as `make test` sets it (SANDBOX_CRDS naming Istio's
    real CRDs when it is unset and a copy is found)."""
    env = dict(os.environ)
    for crds in _CRD_DIRS:
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
    """{name: value} of the shell-quoted `NAME=value` lines `up` writes to STATE_DIR/env."""
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

    def fault(self, *args: str) -> dict[str, Any]:
        """`python -m sandbox fault ARGS`, which must succeed; every fault's state afterwards."""
        result = self.cli("fault", *args)
        if result.returncode != 0:
            raise SandboxCliError(f"fault {' '.join(args)}: {result.stdout}{result.stderr}")
        return self.fault_state()

    def fault_state(self) -> dict[str, Any]:
        """Every fault's state, as `python -m sandbox fault status --json` prints it."""
        status = self.cli("fault", "status", "--json")
        if status.returncode != 0:
            raise SandboxCliError(f"fault status: {status.stderr}")
        return json.loads(status.stdout)

    # --- the Kubernetes API, as the admin
    @cached_property
    def istio(self) -> CustomObjectsApi:
        """Istio's custom objects on this sandbox's API server, with the admin's kubeconfig."""
        from kubernetes import client, config  # local: only callers that read objects need it

        return client.CustomObjectsApi(config.new_client_from_config(config_file=str(self.kubeconfig)))

    def istio_object(self, plural: str, name: str, namespace: str = "bookinfo") -> dict[str, Any]:
        """One Istio object as stored, e.g. `istio_object("virtualservices", "reviews")`."""
        return self.istio.get_namespaced_custom_object(ISTIO_GROUP, ISTIO_VERSION, namespace, plural, name)

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

    def clients(self) -> list[dict[str, Any]]:
        """Returning users (services whose `clients` is set): responses per route and version,
        and per client its responses per version, `left` and cookies (TrafficGenerator.clients_report)."""
        with urllib.request.urlopen(f"{self.control_url}/control/clients", timeout=10) as resp:
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
        """The series of an instant query (a scalar as one series without labels)."""
        params: dict[str, Any] = {"query": promql}
        if at is not None:
            params["time"] = at
        resp = requests.get(f"{self.prometheus_url}/api/v1/query", params=params, timeout=10)
        body = resp.json()
        if body.get("status") != "success":
            raise AssertionError(f"{promql}: {body}")  # what tests expect of a failed query
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
        """The query's value once `predicate` accepts it; TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.prom_query(promql)
            if predicate(value):
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{promql} stayed at {value} for {timeout:.0f}s")
            time.sleep(0.5)


def sandbox_connections(sandbox: SandboxInfo) -> dict[str, str]:
    """The two Airflow connections (env-style) that point at the sandbox."""
    return {key: sandbox.env[key] for key in AIRFLOW_CONNECTION_VARIABLES}


def start_sandbox(
    state_dir: Path,
    world: Mapping[str, Any] | None = None,
    *,
    real_apiserver: bool = False,
    timeout: float = 120.0,
) -> SandboxInfo:
    """`python -m sandbox up` in `state_dir` (with `world` as its --config); on failure it runs
    `down` there and raises SandboxCliError with up's output."""
    state_dir.mkdir(parents=True, exist_ok=True)
    args = ["up", "--state-dir", str(state_dir)] + (["--real-apiserver"] if real_apiserver else [])
    if world is not None:
        config_file = state_dir / "world.yaml"
        config_file.write_text(yaml.safe_dump(dict(world), sort_keys=False))
        args += ["--config", str(config_file)]
    result = sandbox_cli(*args, timeout=timeout)
    if result.returncode != 0:
        sandbox_cli("down", "--state-dir", str(state_dir))
        raise SandboxCliError(f"sandbox up failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return SandboxInfo.from_state_dir(state_dir)


def stop_sandbox(state_dir: Path, *, check: bool = True) -> None:
    """`python -m sandbox down` in `state_dir`; SandboxCliError if it fails and `check`."""
    result = sandbox_cli("down", "--state-dir", str(state_dir))
    if check and result.returncode != 0:
        raise SandboxCliError(f"sandbox down failed ({result.returncode}):\n{result.stderr}")


@contextlib.contextmanager
def running_sandbox(
    state_dir: Path, world: Mapping[str, Any] | None = None, *, timeout: float = 120.0
) -> Iterator[SandboxInfo]:
    """A sandbox started in `state_dir` for the `with` block, stopped (`down`) when it ends."""
    info = start_sandbox(state_dir, world, timeout=timeout)
    try:
        yield info
    finally:
        stop_sandbox(state_dir, check=False)
