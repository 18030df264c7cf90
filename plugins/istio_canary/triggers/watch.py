"""CanaryWatchTrigger: bake a step without a worker slot, checking Prometheus while waiting.

Runs in the triggerer. Every `check_interval_seconds` it reads the raw request counters
(one query), the windowed p99 (one query) and any custom metrics, asks the judge, and
stops at once when the judge fails; at bake end (extended while the canary has too few
requests, up to `max_bake_seconds`) it hands the progress back to the task. All network
I/O is async (aiohttp); the judge is pure and cheap. The whole progress travels in the
event payload: the `kwargs=` given to `defer` arrive as None under `airflow dags test`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from functools import cached_property
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from istio_canary.core.analysis_config import AnalysisConfig
from istio_canary.core.judge_state import JudgeState
from istio_canary.core.observer import plan_check, window_seconds_since
from istio_canary.core.samples import Measurement, custom_value, measurements_from_results
from istio_canary.core.watch import (
    WatchProgress,
    WatchTarget,
    begin,
    next_action,
    record_check,
    record_missing_data,
)
from istio_canary.hooks.prometheus import PrometheusHook, PrometheusQueryError, aquery


class CanaryWatchTrigger(BaseTrigger):
    """
    :param prometheus_conn_id: the Prometheus connection; the trigger reads it itself, so no
        credential travels in its kwargs.
    :param target: `WatchTarget.to_dict()` (with its metric label; without one, destination_version).
    :param analysis: `AnalysisConfig.to_dict()`.
    :param started_at: epoch seconds the bake started (the step's route was set).
    :param judge_state: the judge's state from the previous step, if any.
    :param history_at: epoch seconds at which to read the pre-release stable baseline.
    """

    def __init__(
        self,
        *,
        prometheus_conn_id: str,
        target: dict[str, str],
        analysis: dict[str, Any],
        started_at: float,
        judge_state: dict[str, Any] | None = None,
        history_at: float | None = None,
    ) -> None:
        super().__init__()
        self.prometheus_conn_id = prometheus_conn_id
        self.target = target
        self.analysis = analysis
        self.started_at = started_at
        self.judge_state = judge_state
        self.history_at = history_at

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "prometheus_conn_id": self.prometheus_conn_id,
                "target": self.target,
                "analysis": self.analysis,
                "started_at": self.started_at,
                "judge_state": self.judge_state,
                "history_at": self.history_at,
            },
        )

    @cached_property
    def hook(self) -> PrometheusHook:
        return PrometheusHook(self.prometheus_conn_id)

    async def _query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """One instant query over aiohttp; the connection is read once, without blocking."""
        return await aquery(await self.hook.aconnection_config(), promql, at)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        config = AnalysisConfig.from_params(self.analysis)
        target = WatchTarget(**self.target)
        state = JudgeState.from_dict(self.judge_state) if self.judge_state else None
        progress = begin(self.started_at, state, await self._history(config, target))
        await self._await_scrape_after(target, self.started_at, timeout=max(10.0, 3.0 * config.check_interval_seconds))
        progress = await self._check(config, target, progress)  # the window's first snapshot
        while True:
            now = time.time()
            action = next_action(config, progress, now)
            if action in ("stop", "finish"):
                self.log.info("watch %s after %.0fs: %s", action, now - progress.started_at,
                              progress.verdict.summary if progress.verdict else "no verdict")
                yield TriggerEvent({"action": action, "progress": progress.to_dict(), "ended_at": now})
                return
            if action == "extend" and now - progress.started_at < config.bake_seconds + config.check_interval_seconds:
                self.log.info("bake extended: canary saw %.0f requests, fewer than min_requests %d; "
                              "watching up to max_bake_seconds=%d", progress.canary_requests,
                              config.min_requests, config.max_bake_seconds)
            await asyncio.sleep(config.check_interval_seconds)
            progress = await self._check(config, target, progress)

    async def _check(self, config: AnalysisConfig, target: WatchTarget, progress: WatchProgress) -> WatchProgress:
        plan = plan_check(target, config, window_seconds_since(progress.started_at, time.time()))
        try:
            at = time.time()
            reading = plan.read([await self._query(query, at) for query in plan.queries()], at)
        except PrometheusQueryError as error:
            self.log.warning("check failed: %s", error)
            progress, verdict = record_missing_data(config, progress, f"no data: {error.message}")
            self.log.info("%s", verdict.table())
            return progress
        progress, verdict = record_check(config, target, progress, reading.snapshot, reading.p99_ms, reading.custom)
        if verdict is not None:
            self.log.info("%s", verdict.table())
        return progress

    async def _await_scrape_after(self, target: WatchTarget, started_at: float, timeout: float) -> None:
        """Wait until Prometheus holds counters scraped after the step's route was set.

        Prometheus lags the service by up to one scrape interval: a snapshot taken at once
        would leave requests served under the previous routing inside this step's window.
        """
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                result = await self._query(target.freshness_query())
            except PrometheusQueryError:
                return  # the first check records the outage
            scraped = custom_value(result)  # the single sample of max(timestamp(...)), if any
            if scraped is not None and scraped >= started_at:
                return
            await asyncio.sleep(0.5)
        self.log.warning("no scrape newer than the route change after %.0fs; starting the window anyway", timeout)

    async def _history(self, config: AnalysisConfig, target: WatchTarget) -> Measurement | None:
        """Stable's error rate before the release; None when Prometheus has no such history."""
        if self.history_at is None:
            return None
        requests_q, errors_q = target.history_queries(config)
        try:
            requests = await self._query(requests_q, self.history_at)
            errors = await self._query(errors_q, self.history_at)
        except PrometheusQueryError as error:
            self.log.warning("no pre-release history: %s", error)
            return None
        stable = measurements_from_results(
            [target.stable_version], requests, errors, label=target.metric_label
        )[target.stable_version]
        return stable if stable.counts_valid and stable.requests > 0 else None

