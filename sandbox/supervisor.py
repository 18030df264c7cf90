"""The sandbox's one background process: `python -m sandbox.supervisor --state-dir DIR`.

It runs the Kubernetes API stand-in and the traffic generator in threads and the real
Prometheus as its child, all in the process group `sandbox up` created for it. When it is
ready it writes `<state-dir>/runtime.json` (pids, ports, URLs). On SIGTERM/SIGINT/SIGHUP it
stops Prometheus, then its own servers. If Prometheus exits on its own, the supervisor
stops too (fail fast: a sandbox is either whole or gone), unless a fault stopped it.

Run-time faults (`python -m sandbox fault ...`) are sandbox.faultcontrol's; the /proc helpers
`sandbox down` uses to find and stop exactly what was started are sandbox.procs'.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandbox.errors import SandboxInputError
from sandbox.faultcontrol import FaultControl, MainThreadCalls, PrometheusChild, store_virtual_service_update
from sandbox.procs import daemon_thread, process_starttime, write_json_atomic

log = logging.getLogger("sandbox.supervisor")

RUNTIME_FILE = "runtime.json"


class Supervisor:
    """The parts of one sandbox, built from its world config, and the phases of their life:
    `start`, `write_runtime`, `supervise` until stopped, `shutdown`."""

    def __init__(self, state_dir: Path, config_path: str | None, crd_dir: str | None, real_apiserver: bool,
                 stop: threading.Event) -> None:
        # Imported here: the CLI imports this module for RUNTIME_FILE and should start fast.
        from sandbox.apiserver import make_api_server
        from sandbox.config import load_config, seed_world
        from sandbox.store import Store
        from sandbox.traffic import TrafficGenerator, make_generator_server

        self.state_dir, self.crd_dir, self.stop = state_dir, crd_dir, stop
        self.world = world = load_config(config_path)
        store = Store()
        self.api: Any = None
        self.cluster: Any = None
        if real_apiserver:
            from sandbox.realcluster import RealCluster

            if not crd_dir:
                raise SandboxInputError("--crd-dir", crd_dir,
                                        "a real kube-apiserver needs Istio's CRD YAML (or $SANDBOX_CRDS)")
            self.cluster = RealCluster(state_dir, world, Path(crd_dir))
        else:
            seeded = seed_world(store, world)
            log.info("seeded %d objects for %d services from %s", seeded, len(world.services), world.source)
            self.api = make_api_server(store, "127.0.0.1", 0, crd_dir=crd_dir)
        self.store = store
        self.generator = TrafficGenerator(store, world)
        self.gen_server = make_generator_server(self.generator, "127.0.0.1", 0)
        self.prom = PrometheusChild(state_dir, f"127.0.0.1:{self.gen_server.server_address[1]}")
        self.main_calls = MainThreadCalls()
        self.runtime: dict[str, Any] = {}
        update_vs = (self.cluster.update_virtual_service if self.cluster is not None
                     else store_virtual_service_update(store))
        self.faults = FaultControl(api=self.api, generator=self.generator, update_vs=update_vs, world=world,
                                   prom=self.prom, main=self.main_calls, on_prometheus_change=self.record_prometheus)
        self.gen_server.fault_control = self.faults
        self.threads: list[threading.Thread] = []
        self.servers = [self.gen_server] if self.api is None else [self.api, self.gen_server]

    def record_prometheus(self) -> None:
        """runtime.json names the live Prometheus: a restart by a fault changes its pid."""
        state = self.prom.state()
        if self.runtime and state["pid"]:
            self.runtime["prometheus_pid"] = state["pid"]
            self.runtime["starttimes"] = {**self.runtime["starttimes"], str(state["pid"]): state["starttime"]}
            write_json_atomic(self.state_dir / RUNTIME_FILE, self.runtime)

    def start(self) -> None:
        """The API server (the stand-in's thread, or the real control plane and its kubeconfigs),
        the generator's threads, then Prometheus."""
        cluster = self.cluster
        if cluster is not None:
            cluster.start()
            log.info("real kube-apiserver at %s; seeded from %s", cluster.url, self.world.source)
            self.gen_server.reseed = cluster.reseed
            cluster.mirror_into(self.store, self.stop)
            admin, pipeline = cluster.kubeconfigs()
            (self.state_dir / "kubeconfig").write_text(admin)
            (self.state_dir / "pipeline-kubeconfig").write_text(pipeline)
        else:
            self.threads.append(daemon_thread(self.api.serve_forever, "apiserver"))
        self.threads.append(daemon_thread(self.gen_server.serve_forever, "generator-http"))
        self.threads.append(daemon_thread(self.generator.run_forever, "generator", self.stop))
        self.prom.start()

    def write_runtime(self) -> None:
        """runtime.json: what `sandbox up` waits for (pids, ports, URLs)."""
        prom, cluster = self.prom, self.cluster
        assert prom.proc is not None
        api_url = cluster.url if cluster is not None else self.api.url
        pid = os.getpid()
        self.runtime = {
            "supervisor_pid": pid,
            "pgid": os.getpgid(0),
            "prometheus_pid": prom.proc.pid,
            "starttimes": {str(pid): process_starttime(pid), str(prom.proc.pid): process_starttime(prom.proc.pid)},
            "ports": {"api": int(api_url.rsplit(":", 1)[1]), "generator": self.gen_server.server_address[1],
                      "prometheus": prom.port},
            "urls": {"api": api_url, "generator": self.gen_server.url, "prometheus": f"http://127.0.0.1:{prom.port}"},
            "config": self.world.source,
            "crd_dir": self.crd_dir,
            "kube_api": "kube-apiserver" if cluster is not None else "sandbox",
            "api_ca": str(cluster.ca_file) if cluster is not None else None,
            "started_at": self.generator.started_at.isoformat(),
        }
        if cluster is not None:
            self.runtime["control_plane_pids"] = cluster.control_plane.pids()
        write_json_atomic(self.state_dir / RUNTIME_FILE, self.runtime)
        log.info("running: api %s, generator %s, prometheus %s (pid %d)",
                 api_url, self.gen_server.url, self.runtime["urls"]["prometheus"], prom.proc.pid)

    def supervise(self) -> int:
        """Until stopped (0), or until Prometheus exits on its own (1)."""
        while not self.stop.is_set():
            self.main_calls.run_pending(0.5)  # fault changes to Prometheus happen on this thread
            if self.prom.exited_unexpectedly():
                assert self.prom.proc is not None
                log.error("Prometheus exited with code %s; stopping the sandbox", self.prom.proc.returncode)
                return 1
        return 0

    def shutdown(self) -> None:
        """Faults off, Prometheus stopped, then the servers and the real control plane."""
        self.stop.set()
        self.faults.stop()
        self.prom.stop()
        for server in self.servers:
            if self.threads:  # shutdown() waits for serve_forever: only once it was started
                server.shutdown()
            server.server_close()
        if self.cluster is not None:
            self.cluster.stop()
        log.info("stopped at %s", datetime.now(UTC).isoformat())


def _stop_on_signals(stop: threading.Event) -> None:
    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)


def run(state_dir: Path, config_path: str | None, crd_dir: str | None, real_apiserver: bool = False) -> int:
    stop = threading.Event()
    _stop_on_signals(stop)
    sandbox = Supervisor(state_dir, config_path, crd_dir, real_apiserver, stop)
    try:
        sandbox.start()
        sandbox.write_runtime()
        return sandbox.supervise()
    finally:
        sandbox.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.supervisor", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--config", default=None, help="world YAML (default: sandbox/default_world.yaml)")
    parser.add_argument("--crd-dir", default=os.environ.get("SANDBOX_CRDS") or None)
    parser.add_argument("--real-apiserver", action="store_true",
                        help="a real etcd + kube-apiserver instead of the sandbox's API server")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stdout,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    state_dir = Path(args.state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        return run(state_dir, args.config, args.crd_dir, args.real_apiserver)
    except SandboxInputError as exc:
        log.error("bad config: %s", exc)
        return 2
    except Exception:
        log.exception("supervisor failed")
        return 1


if __name__ == "__main__":
    sys.exit(main())
