"""The request generator: `TrafficGenerator` emits `rps * dt` requests per service every tick.

Requests differ only in their header class, so the routing distribution is computed once
per header class and per store change; per request there are only a few random draws (the
outcome, the version's errors, a log-normal latency) and a counter update. This keeps the
generator cheap at 50-100 services.
"""

from __future__ import annotations

import bisect
import copy
import logging
import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sandbox.config import (
    SERVICE_BEHAVIOUR_FIELDS,
    VERSION_BEHAVIOUR_FIELDS,
    ServiceConfig,
    WorldConfig,
    check_service_behaviour,
    check_version_behaviour,
)
from sandbox.errors import SandboxInputError
from sandbox.store import Store
from sandbox.traffic.clients import ClientPool, request_headers
from sandbox.traffic.istio_metrics import (
    ISTIO_BUCKETS_MS,
    IstioSeries,
    RequestCountKey,
    new_istio_series,
    render_exposition,
)
from sandbox.traffic.mirroring import ShadowTable, shadow_table
from sandbox.traffic.request import HEADER_CLASSES, Request, header_class_headers
from sandbox.traffic.routing import (
    MeshSnapshot,
    RouteOutcome,
    cumulative_distribution,
    routing_distribution,
    sample_outcome,
    traced_distribution,
)

log = logging.getLogger(__name__)

Z_99 = 2.326  # the standard normal's 99th percentile: p99 = p50 * exp(Z_99 * sigma)
# A local reply (no route, no healthy upstream) costs Envoy well under a millisecond.
LOCAL_REPLY_MS = 0.3


@dataclass
class _VersionModel:
    """A version's behaviour in the form the hot loop needs."""

    error_rate: float
    mu: float
    sigma: float

    @classmethod
    def of(cls, error_rate: float, p50: float, p99: float) -> _VersionModel:
        return cls(error_rate, math.log(p50), math.log(p99 / p50) / Z_99)


_UNKNOWN_VERSION_MODEL = _VersionModel.of(0.0, 20.0, 80.0)


class TrafficGenerator:
    """Emits simulated requests for every service of the world, tick by tick."""

    def __init__(
        self,
        store: Store,
        world: WorldConfig,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.world = world
        self._rng = rng or random.Random()
        self._clock = clock
        self._lock = threading.Lock()
        self._services: list[ServiceConfig] = copy.deepcopy(world.services)
        self._models: list[dict[str, _VersionModel]] = [self._models_for(s) for s in self._services]
        self._carry = [0.0] * len(self._services)
        self._tables: list[list[tuple[list[float], list[RouteOutcome]]]] = []
        self._shadow_tables: list[list[ShadowTable]] = []  # mirrors, per service and header class
        self._compiled_revision = -1
        self._compiled_changes = -1
        self._mesh: MeshSnapshot | None = None
        self._pools: dict[int, ClientPool] = {}  # returning users, for services with `clients`
        self._istio_series: dict[tuple[int, RouteOutcome, int], IstioSeries] = {}
        self._request_counts: dict[RequestCountKey, int] = {}
        self._last_tick: float | None = None
        self.started_at = datetime.now(UTC)
        self._started_mono = time.monotonic()
        self._cpu_seconds = 0.0  # generator's own CPU: tick work + metric rendering
        self._cpu_samples: deque[tuple[float, float, float]] = deque(maxlen=200)
        self.ticks = 0
        self._traffic_zero = False  # fault: every service's traffic stops, its configured rps kept

    # faults --------------------------------------------------------------------------------

    @property
    def traffic_zero(self) -> bool:
        return self._traffic_zero

    def set_traffic_zero(self, zero: bool) -> None:
        """Stop (True) or resume (False) all traffic without changing any service's rps."""
        with self._lock:
            self._traffic_zero = zero
            self._carry = [0.0] * len(self._services)  # no burst of "owed" requests on resume

    # behaviour -----------------------------------------------------------------------------

    @staticmethod
    def _models_for(svc: ServiceConfig) -> dict[str, _VersionModel]:
        return {
            name: _VersionModel.of(v.error_rate, v.latency_ms_p50, v.latency_ms_p99)
            for name, v in svc.versions.items()
        }

    def update_behaviour(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Change a service's rps/fractions and/or one version's error rate and latency.
        All checks pass before anything changes; raises SandboxInputError naming the field."""
        allowed = {"service", "namespace", "version", *SERVICE_BEHAVIOUR_FIELDS, *VERSION_BEHAVIOUR_FIELDS}
        if not isinstance(payload, Mapping):
            raise SandboxInputError("body", payload, "must be a JSON object")
        for key, value in payload.items():
            if key not in allowed:
                raise SandboxInputError(key, value, f"unknown field (allowed: {', '.join(sorted(allowed))})")
        with self._lock:
            index = self._service_index(payload.get("service"), payload.get("namespace"))
            svc = self._services[index]
            version_name = payload.get("version")
            version_updates = {k: payload[k] for k in VERSION_BEHAVIOUR_FIELDS if payload.get(k) is not None}
            service_updates = {k: payload[k] for k in SERVICE_BEHAVIOUR_FIELDS if payload.get(k) is not None}
            if version_updates and version_name is None:
                raise SandboxInputError("version", None, f"required to change {', '.join(version_updates)}")
            if version_name is not None and version_name not in svc.versions:
                raise SandboxInputError(
                    "version",
                    version_name,
                    f"no such version of {svc.name} (known: {', '.join(svc.versions)})",
                )
            new_version: dict[str, float] | None = None
            if version_name is not None and version_updates:
                current = svc.versions[version_name].behaviour()
                try:
                    new_version = check_version_behaviour("", {**current, **version_updates})
                except SandboxInputError as exc:
                    if exc.field == "latency_ms_p99" and "latency_ms_p99" not in version_updates:
                        # Only p50 was given: the value the caller chose is the one to name.
                        p50 = version_updates["latency_ms_p50"]
                        raise SandboxInputError(
                            "latency_ms_p50",
                            p50,
                            f"must be at most latency_ms_p99 ({current['latency_ms_p99']:g})",
                        ) from exc
                    raise
            new_service = check_service_behaviour("", {**svc.behaviour(), **service_updates})
            # Everything checked: apply.
            for key, value in new_service.items():
                setattr(svc, key, value)
            if new_version is not None and version_name is not None:
                for key, value in new_version.items():
                    setattr(svc.versions[version_name], key, value)
                self._models[index] = self._models_for(svc)
            return {"service": svc.name, "namespace": svc.namespace, **svc.behaviour()}

    def reset_behaviour(self) -> None:
        with self._lock:
            self._pools = {}  # new users: no cookies, nothing counted
            self._services = copy.deepcopy(self.world.services)
            self._models = [self._models_for(s) for s in self._services]

    def _service_index(self, name: Any, namespace: Any) -> int:
        svc = self.world.find_service(name, namespace)
        return self.world.services.index(svc)

    # routing tables ------------------------------------------------------------------------

    def _refresh_routing(self) -> None:
        changes, revision = self.store.changes, self.store.revision
        if changes == self._compiled_changes:
            return
        mesh = self._mesh = MeshSnapshot.from_store(self.store)
        tables = []
        shadows = []
        for svc in self._services:
            per_class = []
            for ua, ck in HEADER_CLASSES:
                request = Request(svc.name, svc.namespace, header_class_headers(ua, ck), port=svc.port)
                per_class.append(cumulative_distribution(routing_distribution(request, mesh)))
            tables.append(per_class)
            shadows.append([shadow_table(Request(svc.name, svc.namespace, header_class_headers(ua, ck),
                                                 port=svc.port), mesh) for ua, ck in HEADER_CLASSES])
        self._tables = tables
        self._shadow_tables = shadows
        self._compiled_revision = revision
        self._compiled_changes = changes

    def routing_table(self, service_index: int = 0) -> dict[str, list[tuple[float, RouteOutcome]]]:
        """Current distribution per header class, for status output and tests."""
        with self._lock:
            self._refresh_routing()
            out = {}
            for (ua, ck), (cum, outcomes) in zip(HEADER_CLASSES, self._tables[service_index], strict=True):
                probs = [c - (cum[i - 1] if i else 0.0) for i, c in enumerate(cum)]
                out[f"ua_canary={ua},cookie_canary={ck}"] = list(zip(probs, outcomes, strict=True))
            return out

    # the hot loop --------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> int:
        """Emit the requests due since the last tick; returns how many."""
        cpu_start = time.thread_time()
        now = self._clock() if now is None else now
        with self._lock:
            if self._last_tick is None:
                self._last_tick = now
                self._refresh_routing()
                return 0
            # Bounded catch-up: a stalled process does not emit minutes of traffic at once.
            dt = min(max(now - self._last_tick, 0.0), 2.0)
            self._last_tick = now
            self._refresh_routing()
            emitted = 0
            for index, svc in enumerate(self._services):
                if self._traffic_zero:
                    continue
                due = svc.rps * dt + self._carry[index]
                n = int(due + 1e-9)  # float dust: 50 rps * 0.1 s must be 5 requests, not 4
                self._carry[index] = due - n
                if n and svc.clients:
                    self._emit_clients(index, svc, n, now)
                    emitted += n
                elif n:
                    self._emit(index, svc, n)
                    emitted += n
            self.ticks += 1
        self._account_cpu(time.thread_time() - cpu_start)
        return emitted

    def _emit(self, index: int, svc: ServiceConfig, n: int) -> None:
        rand = self._rng.random
        gauss = self._rng.gauss
        tables = self._tables[index]
        shadow_tables = self._shadow_tables[index]
        models = self._models[index]
        hf, cf = svc.header_fraction, svc.cookie_fraction
        istio, request_counts = self._istio_series, self._request_counts
        for _ in range(n):
            ua = rand() < hf
            ck = rand() < cf
            cls = 2 * ua + ck
            cum, outcomes = tables[cls]
            outcome = outcomes[0] if len(outcomes) == 1 else sample_outcome(cum, outcomes, rand())
            if outcome.status is None:
                model = models.get(outcome.version or "", _UNKNOWN_VERSION_MODEL)
                if model.error_rate and rand() < model.error_rate:
                    code = 500 if rand() < 0.5 else 503
                else:
                    code = 200
                latency = math.exp(model.mu + model.sigma * gauss())
            else:
                code = outcome.status
                latency = LOCAL_REPLY_MS
            latency += outcome.delay_ms
            skey = (index, outcome.version or "unknown", cls, code)
            request_counts[skey] = request_counts.get(skey, 0) + 1
            ikey = (index, outcome, code)
            series = istio.get(ikey)
            if series is None:
                series = istio[ikey] = new_istio_series(svc, outcome, code)
            series.buckets[bisect.bisect_left(ISTIO_BUCKETS_MS, latency)] += 1
            series.total_ms += latency
            series.count += 1
            if shadow_tables[cls]:
                for shadow in shadow_tables[cls].draw(rand):
                    self._serve_shadow(index, svc, shadow)

    def _serve_shadow(self, index: int, svc: ServiceConfig, outcome: RouteOutcome) -> None:
        """A mirrored copy served by `outcome`'s pod: only that pod's sidecar reports it
        (sandbox/traffic/mirroring.py); the client never sees it, so sandbox_requests_total,
        which counts what clients got, leaves it out."""
        rand = self._rng.random
        model = self._models[index].get(outcome.version or "", _UNKNOWN_VERSION_MODEL)
        failed = model.error_rate and rand() < model.error_rate
        code = (500 if rand() < 0.5 else 503) if failed else 200
        latency = math.exp(model.mu + model.sigma * self._rng.gauss())
        key = (index, outcome, code)
        series = self._istio_series.get(key)
        if series is None:
            series = self._istio_series[key] = new_istio_series(svc, outcome, code)
        series.buckets[bisect.bisect_left(ISTIO_BUCKETS_MS, latency)] += 1
        series.total_ms += latency
        series.count += 1

    # returning users ----------------------------------------------------------------------

    def _pool(self, index: int, svc: ServiceConfig) -> ClientPool:
        """The service's client pool; a new one (new users) when its settings changed."""
        pool = self._pools.get(index)
        if pool is None or pool.settings != (svc.clients, svc.header_fraction, svc.cookie_fraction):
            pool = self._pools[index] = ClientPool(svc.clients, svc.header_fraction, svc.cookie_fraction, self._rng)
        if pool.tables_for != self._compiled_changes:
            pool.tables, pool.tables_for = {}, self._compiled_changes
        return pool

    def _emit_clients(self, index: int, svc: ServiceConfig, n: int, now: float) -> None:
        """`n` requests from the service's returning users: each carries its client's cookies,
        is routed with them, and the cookies its response sets go into that client's jar."""
        pool, rand, mesh = self._pool(index, svc), self._rng.random, self._mesh
        assert mesh is not None  # _refresh_routing ran in this tick
        for _ in range(n):
            client = pool.pick(rand())
            jar = client.jar_at(now)
            table = pool.tables.get((client.header_class, jar))
            if table is None:
                request = Request(svc.name, svc.namespace, request_headers(client, jar), port=svc.port)
                traced = traced_distribution(request, mesh)
                cum, _ = cumulative_distribution([(p, o) for p, o, _ in traced])
                table = pool.tables[(client.header_class, jar)] = (cum, [(o, t) for _, o, t in traced])
            cum, entries = table
            u = rand() * cum[-1]
            outcome, trace = entries[min(bisect.bisect_right(cum, u), len(entries) - 1)]
            self._serve(index, svc, client.header_class, outcome)
            client.served(outcome, trace, now)
            pool.count(outcome, trace)

    def _serve(self, index: int, svc: ServiceConfig, cls: int, outcome: RouteOutcome) -> None:
        """One request's response code, latency and counters (as `_emit` does inline)."""
        rand = self._rng.random
        if outcome.status is None:
            model = self._models[index].get(outcome.version or "", _UNKNOWN_VERSION_MODEL)
            failed = model.error_rate and rand() < model.error_rate
            code = (500 if rand() < 0.5 else 503) if failed else 200
            latency = math.exp(model.mu + model.sigma * self._rng.gauss())
        else:
            code, latency = outcome.status, LOCAL_REPLY_MS
        latency += outcome.delay_ms
        skey = (index, outcome.version or "unknown", cls, code)
        self._request_counts[skey] = self._request_counts.get(skey, 0) + 1
        series = self._istio_series.get((index, outcome, code))
        if series is None:
            series = self._istio_series[(index, outcome, code)] = new_istio_series(svc, outcome, code)
        series.buckets[bisect.bisect_left(ISTIO_BUCKETS_MS, latency)] += 1
        series.total_ms += latency
        series.count += 1
        shadows = self._shadow_tables[index][cls] if self._shadow_tables else None
        if shadows:
            for shadow in shadows.draw(rand):
                self._serve_shadow(index, svc, shadow)

    def clients_report(self) -> list[dict[str, Any]]:
        """Per service with returning users: responses per route and version, and per client
        its header class, requests, responses per version, `left` (version -> how often the
        next response came from another version) and the cookies it holds."""
        with self._lock:
            return [{"service": svc.name, "namespace": svc.namespace, **self._pools[i].report()}
                    for i, svc in enumerate(self._services) if i in self._pools and svc.clients]

    def run_forever(self, stop: threading.Event) -> None:
        """Tick every `tick_ms` until `stop` is set; keeps the schedule, skips missed ticks."""
        interval = self.world.tick_ms / 1000.0
        next_at = time.monotonic()
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # a bad object in the store must not stop all traffic
                log.exception("traffic tick failed")
            next_at += interval
            delay = next_at - time.monotonic()
            if delay < 0:
                next_at = time.monotonic()
                delay = 0
            stop.wait(delay)

    # CPU accounting ------------------------------------------------------------------------

    def _account_cpu(self, seconds: float) -> None:
        with self._lock:
            self._cpu_seconds += seconds
            now = time.monotonic()
            process = sum(os.times()[:2])
            if not self._cpu_samples or now - self._cpu_samples[-1][0] >= 0.5:
                self._cpu_samples.append((now, self._cpu_seconds, process))

    def cpu_report(self) -> dict[str, float]:
        """Generator CPU as % of one core: recent (last ~10 s) and since start; plus the whole
        supervisor process (API server and HTTP threads included)."""
        with self._lock:
            now = time.monotonic()
            process_now = sum(os.times()[:2])
            recent = [s for s in self._cpu_samples if now - s[0] <= 10.0]
            window_start = recent[0] if recent else (self._started_mono, 0.0, 0.0)
            span = max(now - window_start[0], 1e-6)
            uptime = max(now - self._started_mono, 1e-6)
            return {
                "generator_percent_recent": round(100 * (self._cpu_seconds - window_start[1]) / span, 2),
                "generator_percent_average": round(100 * self._cpu_seconds / uptime, 2),
                "generator_cpu_seconds": round(self._cpu_seconds, 3),
                "process_percent_recent": round(100 * (process_now - window_start[2]) / span, 2)
                if recent
                else round(100 * process_now / uptime, 2),
            }

    # exposition ----------------------------------------------------------------------------

    def render_metrics(self) -> str:
        """Prometheus text exposition (format 0.0.4) of everything emitted so far."""
        cpu_start = time.thread_time()
        with self._lock:
            istio = [series.copy() for series in self._istio_series.values()]
            request_counts = list(self._request_counts.items())
            services = [(s.name, s.namespace) for s in self._services]
        text = render_exposition(istio, request_counts, services)
        self._account_cpu(time.thread_time() - cpu_start)
        return text

    def counts(self) -> list[dict[str, Any]]:
        """Exact request counts since start, one row per (service, version, header class, code)."""
        with self._lock:
            rows = sorted(self._request_counts.items())
            services = [(s.name, s.namespace) for s in self._services]
        out = []
        for (index, version, cls, code), n in rows:
            ua, ck = HEADER_CLASSES[cls]
            out.append(
                {
                    "service": services[index][0],
                    "namespace": services[index][1],
                    "version": version,
                    "user_agent_canary": ua,
                    "cookie_canary": ck,
                    "response_code": code,
                    "count": n,
                }
            )
        return out

    def state(self) -> dict[str, Any]:
        counts = self.counts()
        with self._lock:
            services = []
            for svc in self._services:
                by_version: dict[str, dict[str, int]] = {}
                for row in counts:
                    if row["service"] == svc.name and row["namespace"] == svc.namespace:
                        totals = by_version.setdefault(row["version"], {"requests": 0, "errors": 0})
                        totals["requests"] += row["count"]
                        totals["errors"] += row["count"] if row["response_code"] >= 500 else 0
                services.append(
                    {
                        "name": svc.name,
                        "namespace": svc.namespace,
                        **svc.behaviour(),
                        "totals": {
                            "requests": sum(t["requests"] for t in by_version.values()),
                            "by_version": by_version,
                        },
                    }
                )
            revision = self._compiled_revision
            ticks = self.ticks
            traffic_zero = self._traffic_zero
        return {
            "started_at": self.started_at.isoformat(),
            "uptime_s": round(time.monotonic() - self._started_mono, 3),
            "tick_ms": self.world.tick_ms,
            "ticks": ticks,
            "routing_revision": revision,
            "traffic_zero": traffic_zero,
            "cpu": self.cpu_report(),
            "services": services,
            "counts": counts,
        }
