"""What `python -m sandbox fault` switches at run time (served at /control/faults by the
generator's HTTP server): the Prometheus child stopped, restarted answering errors, or back up;
a concurrent writer editing a VirtualService; all traffic stopped. API write faults live in the
API server (`sandbox.apiserver.Faults`); `all clear` disarms them too.
"""

from __future__ import annotations

import collections
import copy
import logging
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandbox import prometheus
from sandbox.errors import SandboxInputError
from sandbox.procs import daemon_thread, process_starttime, stop_child

log = logging.getLogger("sandbox.supervisor")

PROMETHEUS_START_ATTEMPTS = 3
PROMETHEUS_READY_SECONDS = 30.0


def _start_prometheus(state_dir: Path, generator_target: str) -> tuple[subprocess.Popen[bytes], int]:
    """Start Prometheus and wait for /-/ready; a new port if it lost the race for one."""
    for attempt in range(1, PROMETHEUS_START_ATTEMPTS + 1):
        port = prometheus.free_port()
        proc = prometheus.start(state_dir, port, generator_target)
        deadline = time.monotonic() + PROMETHEUS_READY_SECONDS
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if prometheus.is_ready(f"http://127.0.0.1:{port}", timeout=1.0):
                return proc, port
            time.sleep(0.1)
        if proc.poll() is None:
            stop_child(proc)
            raise RuntimeError(
                f"Prometheus not ready after {PROMETHEUS_READY_SECONDS:.0f}s (see prometheus.log)"
            )
        log.warning("Prometheus exited with %s on attempt %d (port %d)", proc.returncode, attempt, port)
    raise RuntimeError(f"Prometheus failed to start {PROMETHEUS_START_ATTEMPTS} times (see prometheus.log)")


PROMETHEUS_MODES = ("up", "down", "errors")
# "errors": the real Prometheus restarted with a sample limit every query of the pipeline
# exceeds (any aggregation or range): it answers HTTP 422 {"errorType": "execution", "error":
# "query processing would load too many samples into memory ..."}, as a real one does when a
# query hits --query.max-samples. Single-series instant queries (its own `up`) still work, so
# it looks alive to a health check, as an overloaded Prometheus does.
PROMETHEUS_ERROR_ARGS = ("--query.max-samples=1",)
WRITER_ROUTE = "sandbox-writer"
WRITER_HEADER_PREFIX = "x-sandbox-edit-"
WRITER_KEPT_EDITS = 200  # the route keeps the newest edits only: the object stays small
FAULT_TARGETS = {
    "prometheus": PROMETHEUS_MODES,
    "writer": ("start", "stop"),
    "traffic": ("zero", "restore"),
    "all": ("clear",),
}


class MainThreadCalls:
    """Runs callables on the supervisor's main thread for the HTTP threads. Prometheus must be
    started there: its death signal (PR_SET_PDEATHSIG) fires when the *thread* that started it
    exits, and an HTTP handler thread exits after each request."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Callable[[], Any], threading.Event, list[Any]]] = queue.Queue()

    def call(self, fn: Callable[[], Any], timeout: float = 90.0) -> Any:
        done, outcome = threading.Event(), []
        self._queue.put((fn, done, outcome))
        if not done.wait(timeout):
            raise RuntimeError(f"the supervisor did not act within {timeout:.0f}s")
        result, error = outcome
        if error is not None:
            raise error
        return result

    def run_pending(self, wait: float) -> None:
        """Run what is queued, waiting up to `wait` seconds for the first call."""
        block = True
        while True:
            try:
                fn, done, outcome = self._queue.get(block=block, timeout=wait if block else None)
            except queue.Empty:
                return
            block = False
            try:
                outcome[:] = [fn(), None]
            except Exception as exc:  # handed to the caller, who answers with it
                outcome[:] = [None, exc]
            done.set()


class PrometheusChild:
    """The Prometheus child: started on a free port, then stopped or restarted on that same
    port by faults, its TSDB kept (as across a real outage). Main thread only, see above."""

    def __init__(self, state_dir: Path, generator_target: str) -> None:
        self.state_dir = state_dir
        self.generator_target = generator_target
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.mode = "up"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc, self.port = _start_prometheus(self.state_dir, self.generator_target)

    def stop(self) -> None:
        if self.proc is not None:
            stop_child(self.proc)

    def exited_unexpectedly(self) -> bool:
        return self.mode != "down" and self.proc is not None and self.proc.poll() is not None

    def set_mode(self, mode: str) -> None:
        if mode not in PROMETHEUS_MODES:
            raise SandboxInputError("prometheus", mode, f"must be one of {', '.join(PROMETHEUS_MODES)}")
        if mode == self.mode and (mode == "down" or (self.proc is not None and self.proc.poll() is None)):
            return
        self.stop()
        self.mode = "down"  # until Prometheus answers again
        if mode == "down":
            log.warning("fault: Prometheus stopped (port %d now refuses connections)", self.port)
            return
        extra = PROMETHEUS_ERROR_ARGS if mode == "errors" else ()
        restarted = time.time()
        proc = prometheus.start(self.state_dir, self.port, self.generator_target, fresh=False, extra_args=extra)
        deadline = time.monotonic() + PROMETHEUS_READY_SECONDS
        while not prometheus.is_ready(self.url, timeout=1.0):
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_child(proc)
                raise RuntimeError(
                    f"Prometheus did not come back on port {self.port} (exit code {proc.returncode}); "
                    f"see {self.state_dir / 'prometheus.log'}"
                )
            time.sleep(0.1)
        self.proc, self.mode = proc, mode
        if mode == "up":  # with errors on, the check's own query fails: nothing to wait for
            self._await_scrape_after(restarted)
        log.warning("fault: Prometheus %s (pid %d, port %d)",
                    "answering errors" if mode == "errors" else "back up", proc.pid, self.port)

    def _await_scrape_after(self, since: float, timeout: float = 10.0) -> None:
        """Until a scrape newer than the restart is stored, so the next query sees fresh data."""
        query = f'timestamp(up{{job="{prometheus.SCRAPE_JOB}",instance="{self.generator_target}"}})'
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                scraped = prometheus.scalar(self.url, query, timeout=2.0)
            except (OSError, RuntimeError, ValueError):
                scraped = None
            if scraped is not None and scraped >= since:
                return
            time.sleep(0.2)
        log.warning("Prometheus restarted but has not scraped the generator within %.0fs", timeout)

    def state(self) -> dict[str, Any]:
        proc = self.proc
        alive = proc is not None and proc.poll() is None
        pid = proc.pid if proc is not None and alive else None
        return {"mode": self.mode, "pid": pid, "starttime": process_starttime(pid) if pid else None,
                "port": self.port, "url": self.url}


VirtualServiceUpdate = Callable[[str, str, Callable[[dict[str, Any]], None]], dict[str, Any]]


def store_virtual_service_update(store: Any) -> VirtualServiceUpdate:
    """Read-edit-write of a VirtualService in the sandbox's own store, atomic under its lock."""

    def update(namespace: str, name: str, edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        with store.lock:  # read-check-write in one step, as the API server does
            vs = store.get("virtualservices", namespace, name)
            if vs is None:
                raise LookupError(f"VirtualService {namespace}/{name} not found")
            edit(vs)
            return dict(store.put("virtualservices", vs))

    return update


class ConcurrentWriter:
    """Another controller editing the same VirtualService, every `interval` seconds.

    It owns one HTTP route, `sandbox-writer`, put first in `spec.http` and matching only a
    header the traffic generator never sends (traffic is unaffected). Each edit adds one
    request header `x-sandbox-edit-<n>: "<n>"` to it (the newest WRITER_KEPT_EDITS are kept).
    Before each edit it checks that the route is exactly as it left it; if not, its previous
    edit was lost (someone wrote a stale copy) and that is recorded in `lost`.

    It writes through `update` (read, edit, write back in one step): straight to the store,
    as a write by another API client lands, or to a real kube-apiserver. Either way the
    object's resourceVersion moves, so a release writing with an older one gets a real 409.
    Going around the sandbox's API keeps it out of the API fault plan (armed faults stay the
    release's).
    """

    def __init__(self, update: VirtualServiceUpdate, namespace: str, name: str, interval: float) -> None:
        self.update, self.namespace, self.name, self.interval = update, namespace, name, interval
        self.seq = 0
        self.edits: collections.deque[dict[str, Any]] = collections.deque(maxlen=WRITER_KEPT_EDITS)
        self.lost: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.started_at = time.time()
        self.stopped_at: float | None = None
        self._last: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._thread = daemon_thread(self._run, "fault-writer")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self.stopped_at = self.stopped_at or time.time()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.edit_once()
            except Exception as exc:  # keep writing; say what went wrong
                self.errors.append(f"{datetime.now(UTC).isoformat()}: {exc!r}")
                del self.errors[:-20]
            self._stop.wait(self.interval)

    def edit_once(self) -> None:
        seq = self.seq + 1
        edited: dict[str, Any] = {}

        def edit(vs: dict[str, Any]) -> None:
            http = vs.setdefault("spec", {}).setdefault("http", [])
            index = next((i for i, r in enumerate(http) if isinstance(r, dict) and r.get("name") == WRITER_ROUTE),
                         None)
            current = http[index] if index is not None else None
            if self._last is not None and current != self._last:
                self.lost.append({"seq": self.seq, "at": time.time(), "expected": self._last, "found": current})
            route = copy.deepcopy(current) if current is not None else self._new_route(vs)
            headers = route.setdefault("headers", {}).setdefault("request", {}).setdefault("set", {})
            headers[f"{WRITER_HEADER_PREFIX}{seq}"] = str(seq)
            for old in sorted((k for k in headers if k.startswith(WRITER_HEADER_PREFIX)),
                              key=lambda k: int(k.removeprefix(WRITER_HEADER_PREFIX)))[:-WRITER_KEPT_EDITS]:
                del headers[old]
            if index is None:
                http.insert(0, route)
            else:
                http[index] = route
            edited["route"] = route

        stored = self.update(self.namespace, self.name, edit)
        self.seq, self._last = seq, edited["route"]
        self.edits.append({"seq": seq, "resource_version": stored["metadata"]["resourceVersion"], "at": time.time()})

    @staticmethod
    def _new_route(vs: dict[str, Any]) -> dict[str, Any]:
        host = (vs.get("spec", {}).get("hosts") or [vs["metadata"]["name"]])[0]
        destination: dict[str, Any] = {"host": host}
        # Pinned to the subset the routes use now, as a well-kept route is: a route without one
        # would balance over every pod, canary included, and a release rightly refuses that.
        subset = next((e["destination"]["subset"] for r in vs.get("spec", {}).get("http") or []
                       for e in r.get("route") or [] if (e.get("destination") or {}).get("subset")), None)
        if subset:
            destination["subset"] = subset
        return {
            "name": WRITER_ROUTE,
            "match": [{"headers": {"x-sandbox-writer": {"exact": "never-sent"}}}],
            "route": [{"destination": destination}],
        }

    def state(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "namespace": self.namespace,
            "name": self.name,
            "route": WRITER_ROUTE,
            "interval_seconds": self.interval,
            "edit_count": self.seq,
            "edits": list(self.edits),
            "lost": list(self.lost),
            "errors": list(self.errors),
            "started_at": self.started_at,
            "stopped_at": self.stopped_at,
        }


def _number(field: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise SandboxInputError(field, value, f"must be a number in [{low:g}, {high:g}]")
    return float(value)


# The API fault state on a real kube-apiserver: the same shape, nothing ever armed.
NO_API_FAULTS: dict[str, Any] = {"available": False, "kind": None, "count": 0, "after": 0,
                                 "timeout_seconds": None, "queue": [], "injected": 0}


class FaultControl:
    """What `python -m sandbox fault` switches at run time. GET: every fault's state. POST
    {"target", "action", ...}: prometheus up|down|errors, writer start|stop (service,
    namespace, interval_seconds), traffic zero|restore, all clear. API write faults are armed
    at the API server's own /sandbox/faults; `all clear` disarms them too."""

    def __init__(self, *, api: Any, generator: Any, update_vs: VirtualServiceUpdate, world: Any,
                 prom: PrometheusChild, main: MainThreadCalls, on_prometheus_change: Callable[[], None]) -> None:
        # `api` is None on a real kube-apiserver: its write faults are the sandbox API's own.
        self.api, self.generator, self.update_vs, self.world = api, generator, update_vs, world
        self.prom, self.main = prom, main
        self.on_prometheus_change = on_prometheus_change
        self.writer: ConcurrentWriter | None = None
        self._lock = threading.Lock()  # one change at a time

    def __call__(self, method: str, payload: Any) -> tuple[int, Any]:
        try:
            if method == "GET":
                return 200, self.state()
            if not isinstance(payload, dict):
                raise SandboxInputError("body", payload, "must be a JSON object")
            with self._lock:
                self.apply(payload)
            return 200, self.state()
        except SandboxInputError as exc:
            return 400, {"error": str(exc), "field": exc.field, "value": exc.value, "problem": exc.problem}
        except (RuntimeError, LookupError) as exc:
            return 409, {"error": str(exc)}

    def apply(self, payload: dict[str, Any]) -> None:
        target, action = payload.get("target"), payload.get("action")
        if target not in FAULT_TARGETS:
            raise SandboxInputError("target", target, f"must be one of {', '.join(FAULT_TARGETS)}")
        if action not in FAULT_TARGETS[target]:
            raise SandboxInputError("action", action, f"for {target}: must be one of {', '.join(FAULT_TARGETS[target])}")
        if target == "prometheus":
            self._prometheus(action)
        elif target == "traffic":
            self.generator.set_traffic_zero(action == "zero")
            log.warning("fault: traffic %s", "stopped (0 requests/s)" if action == "zero" else "restored")
        elif target == "writer" and action == "start":
            self._start_writer(payload)
        elif target == "writer":
            self._stop_writer()
        else:
            if self.api is not None:
                self.api.faults.disarm()
            self._stop_writer()
            self.generator.set_traffic_zero(False)
            self._prometheus("up")
            log.warning("fault: all cleared")

    def _prometheus(self, mode: str) -> None:
        try:
            self.main.call(lambda: self.prom.set_mode(mode))
        finally:
            self.on_prometheus_change()

    def _start_writer(self, payload: dict[str, Any]) -> None:
        svc = self.world.find_service(payload.get("service"), payload.get("namespace"))
        interval = _number("interval_seconds", payload.get("interval_seconds", 1.0), 0.05, 3600)
        if self.writer is not None and self.writer.running:
            raise RuntimeError(
                f"the writer is already running on {self.writer.namespace}/{self.writer.name}; stop it first"
            )
        self.writer = ConcurrentWriter(self.update_vs, svc.namespace, svc.name, interval)
        self.writer.start()
        log.warning("fault: writer editing VirtualService %s/%s every %gs", svc.namespace, svc.name, interval)

    def _stop_writer(self) -> None:
        if self.writer is not None and self.writer.running:
            self.writer.stop()
            log.warning("fault: writer stopped after %d edits (%d lost)", self.writer.seq, len(self.writer.lost))

    def state(self) -> dict[str, Any]:
        return {
            "api": self.api.faults.state() if self.api is not None else NO_API_FAULTS,
            "prometheus": self.prom.state(),
            "writer": self.writer.state() if self.writer is not None else {"running": False, "edit_count": 0},
            "traffic": {"zero": self.generator.traffic_zero},
        }

    def stop(self) -> None:
        self._stop_writer()
