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
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from istio_canary.core.judge import JudgeState
from istio_canary.core.metrics import (
    AnalysisConfig,
    CounterSnapshot,
    Measurement,
    custom_value,
    measurements_from_results,
    values_by_version,
)
from istio_canary.core.watch import (
    WatchProgress,
    WatchTarget,
    begin,
    next_action,
    record_check,
    record_missing_data,
)
from istio_canary.hooks.prometheus import PrometheusQueryError, aquery


class CanaryWatchTrigger(BaseTrigger):
    """
    :param prometheus: `PrometheusHook.connection_config()` (url, headers, verify, timeout).
        Holds credentials: Airflow stores trigger kwargs encrypted; never logged here.
    :param target: `WatchTarget.to_dict()` (with its metric label; without one, destination_version).
    :param analysis: `AnalysisConfig.to_dict()`.
    :param started_at: epoch seconds the bake started (the step's route was set).
    :param judge_state: the judge's state from the previous step, if any.
    :param history_at: epoch seconds at which to read the pre-release stable baseline.
    """

    def __init__(
        self,
        *,
        prometheus: dict[str, Any],
        target: dict[str, str],
        analysis: dict[str, Any],
        started_at: float,
        judge_state: dict[str, Any] | None = None,
        history_at: float | None = None,
    ) -> None:
        super().__init__()
        self.prometheus = prometheus
        self.target = target
        self.analysis = analysis
        self.started_at = started_at
        self.judge_state = judge_state
        self.history_at = history_at

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "prometheus": self.prometheus,
                "target": self.target,
                "analysis": self.analysis,
                "started_at": self.started_at,
                "judge_state": self.judge_state,
                "history_at": self.history_at,
            },
        )

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
        window = max(1, int(time.time() - progress.started_at) + 1)
        try:
            at = time.time()
            snapshot = CounterSnapshot.from_results(
                await aquery(self.prometheus, target.snapshot_query(), at), at, label=target.metric_label
            )
            p99 = values_by_version(
                await aquery(self.prometheus, target.latency_query(window), at), label=target.metric_label
            )
            custom = {
                name: {version: custom_value(await aquery(self.prometheus, query, at))
                       for version, query in per_version.items()}
                for name, per_version in target.custom_queries(config, window).items()
            }
        except PrometheusQueryError as error:
            self.log.warning("check failed: %s", error)
            progress, verdict = record_missing_data(config, progress, f"no data: {error.message}")
            self.log.info("%s", verdict.table())
            return progress
        progress, verdict = record_check(config, target, progress, snapshot, p99, custom)
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
                result = await aquery(self.prometheus, target.freshness_query())
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
            requests = await aquery(self.prometheus, requests_q, self.history_at)
            errors = await aquery(self.prometheus, errors_q, self.history_at)
        except PrometheusQueryError as error:
            self.log.warning("no pre-release history: %s", error)
            return None
        stable = measurements_from_results(
            [target.stable_version], requests, errors, label=target.metric_label
        )[target.stable_version]
        return stable if stable.counts_valid and stable.requests > 0 else None

