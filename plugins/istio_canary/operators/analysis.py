"""Canary analysis operators: the deferred bake + watch, and the one-shot judgement."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from functools import cached_property
from typing import Any
from urllib.parse import urlencode

from airflow.sdk import BaseOperator, BaseOperatorLink

from istio_canary.core.analysis_config import AnalysisConfig
from istio_canary.core.judge_state import JudgeState
from istio_canary.core.observer import (
    CheckPlan,
    CheckReading,
    plan_check,
    plan_window_start,
    window_seconds_since,
)
from istio_canary.core.plan import BakePlan, plan_bake
from istio_canary.core.promql import error_ratio_graph_query
from istio_canary.core.request import ReleaseRequest
from istio_canary.core.verdict import Verdict, VerdictOutcome
from istio_canary.core.watch import (
    WatchProgress,
    WatchTarget,
    begin,
    record_check,
    record_missing_data,
)
from istio_canary.hooks.prometheus import PrometheusHook, PrometheusQueryError
from istio_canary.operators.base import as_bool, parse_release
from istio_canary.ui.links import ReleasePageLink

# Slack on top of max_bake_seconds before Airflow gives up on the trigger.
TRIGGER_TIMEOUT_SLACK_SECONDS = 300
# The bake plan reads the service's request and error rate over this recent window.
PLAN_WINDOW_SECONDS = 120


class PrometheusGraphLink(BaseOperatorLink):
    """"Prometheus graph" button on watch/analysis tasks: the canary's and stable's error ratio.

    The URL is built when the task runs (it needs the connection) and kept in XCom, where
    the UI reads it.
    """

    name = "Prometheus graph"

    def get_link(self, operator: BaseOperator, *, ti_key: Any) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        return XCom.get_value(ti_key=ti_key, key=self.xcom_key) or ""


def prometheus_graph_url(base_url: str, query: str) -> str:
    return f"{base_url.rstrip('/')}/graph?" + urlencode({"g0.expr": query, "g0.tab": "0", "g0.range_input": "30m"})


class _CanaryAnalysisBase(BaseOperator):
    template_fields: Sequence[str] = ("release", "analysis", "prometheus_conn_id", "dry_run")
    ui_color = "#fdf0d5"
    operator_extra_links = (PrometheusGraphLink(), ReleasePageLink())

    def __init__(
        self,
        *,
        release: Mapping[str, Any] | Any,
        analysis: Mapping[str, Any] | Any | None = None,
        prometheus_conn_id: str = "prometheus_default",
        dry_run: bool | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.release = release
        self.analysis = analysis
        self.prometheus_conn_id = prometheus_conn_id
        self.dry_run = dry_run

    @cached_property
    def request(self) -> ReleaseRequest:
        return ReleaseRequest.from_params(parse_release(self.release))

    @cached_property
    def config(self) -> AnalysisConfig:
        # The release's params carry the analysis settings too, unless given apart.
        return AnalysisConfig.from_params(parse_release(self.analysis if self.analysis is not None else self.release))

    @cached_property
    def target(self) -> WatchTarget:
        req = self.request
        return WatchTarget(
            req.service, req.namespace, req.stable_version, req.canary_version, req.metric_version_label
        )

    @cached_property
    def hook(self) -> PrometheusHook:
        return PrometheusHook(self.prometheus_conn_id)

    def push_graph_link(self, context: Mapping[str, Any]) -> None:
        req = self.request
        query = error_ratio_graph_query(
            req.service, req.namespace, (req.canary_version, req.stable_version), label=req.metric_version_label
        )
        url = prometheus_graph_url(self.hook.connection_config()["url"], query)
        context["ti"].xcom_push(key=PrometheusGraphLink().xcom_key, value=url)
        self.log.info("Prometheus graph: %s", url)

    def plan_from_traffic(
        self, config: AnalysisConfig, weights: Sequence[int], judge_state: Mapping[str, Any] | None = None
    ) -> BakePlan | None:
        """The bake of the first of `weights` planned from the service's recent traffic (see
        `core.plan`); None when the traffic cannot be read."""
        requests_q, errors_q = self.target.traffic_queries(PLAN_WINDOW_SECONDS)
        self.log.info("PromQL (traffic for the bake plan): %s ; %s", requests_q, errors_q)
        try:
            now = time.time()
            rps, rate = self.target.traffic(
                self.hook.query(requests_q, at=now), self.hook.query(errors_q, at=now), PLAN_WINDOW_SECONDS
            )
        except PrometheusQueryError as error:
            self.log.warning("no bake plan (cannot read the traffic: %s): baking bake_seconds", error)
            return None
        state = JudgeState.from_dict(judge_state) if judge_state else None
        return plan_bake(
            config, weights=weights, service_rps=rps, baseline_rate=rate,
            seen_requests=state.canary_requests if state else 0.0,
            dispersion=state.dispersion if state else 0.0,
        )

    def log_queries(self, window_seconds: int) -> None:
        self.log_plan(plan_check(self.target, self.config, window_seconds))

    def log_plan(self, plan: CheckPlan) -> None:
        for what, query in plan.described():
            self.log.info("PromQL (%s): %s", what, query)

    def observe(self, plan: CheckPlan, at: float) -> CheckReading:
        """One look at Prometheus, every query of `plan` evaluated at `at`."""
        return plan.read([self.hook.query(query, at=at) for query in plan.queries()], at)


class CanaryBakePlanOperator(_CanaryAnalysisBase):
    """Before any write: plan the release's bakes from the service's traffic (`core.plan`)
    and refuse a release that even `max_bake_seconds` at every step cannot give the canary
    requests to tell a 2x error rate. Reads Prometheus only. Returns the plan (each step is
    planned again from the traffic of its own start).

    :param steps: the pipeline's canary weights, in order.
    """

    def __init__(self, *, steps: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.steps = list(steps)

    def execute(self, context: Mapping[str, Any]) -> dict[str, Any]:
        config = self.config
        if as_bool(self.dry_run):
            self.log.info("DRY RUN: no traffic read, each step bakes bake_seconds (%ds)", config.bake_seconds)
            return {"planned": False, "reason": "dry run"}
        if not config.plan_bake:
            self.log.info("plan_bake is off: each step bakes bake_seconds (%ds), up to max_bake_seconds (%ds) "
                          "while the canary has too few requests", config.bake_seconds, config.max_bake_seconds)
            return {"planned": False, "reason": "plan_bake off"}
        plan = self.plan_from_traffic(config, self.steps)
        if plan is None:
            return {"planned": False, "reason": "traffic unreadable; each step plans at its start"}
        self.log.info("%s", plan.describe(config))
        if not plan.enough:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(f"release refused before any change: {plan.refusal(config)}")
        return {"planned": True, **plan.to_dict()}


class CanaryWatchOperator(_CanaryAnalysisBase):
    """Bake one step without holding a worker slot, stopping early when the judge fails.

    Defers to `CanaryWatchTrigger`, which checks Prometheus every `check_interval_seconds`.
    Returns the watch's progress (counter snapshots, judge state, every check's table), which
    the analysis operator turns into the step's verdict.

    :param judge_state_from: task id whose XCom holds the previous step's `judge_state`, so
        one error budget (alpha) covers the whole release; or several, latest phase first (the
        first that ran is used: a phase before may have been skipped).
    :param plan_weights: this step's canary weight and every later step's: the bake is then
        planned from traffic (`core.plan`, when the release's `plan_bake` is on). None (the
        targeted phase, whose share of traffic is unknown): bake as configured. A release
        whose traffic cannot be enough was refused before any write (`CanaryBakePlanOperator`);
        a step whose traffic fell since bakes up to `max_bake_seconds` and is judged on that.
    """

    def __init__(self, *, judge_state_from: str | Sequence[str] | None = None,
                 plan_weights: Sequence[float] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.judge_state_from = judge_state_from
        self.plan_weights = list(plan_weights) if plan_weights else None

    def execute(self, context: Mapping[str, Any]) -> dict[str, Any] | None:
        config = self.config
        if as_bool(self.dry_run):
            self._log_bake(config)
            self.log.info("DRY RUN: no bake, no queries")
            return {"action": "dry_run", "progress": None}
        self.push_graph_link(context)
        judge_state = None
        # Several sources (latest phase first): the first phase that ran and was judged.
        sources = [self.judge_state_from] if isinstance(self.judge_state_from, str) else self.judge_state_from or []
        for source in sources:
            judge_state = (context["ti"].xcom_pull(task_ids=source) or {}).get("judge_state")
            if judge_state:
                break
        if sources:
            self.log.info("judge state carried from %s: %s", source if judge_state else " or ".join(sources),
                          "yes" if judge_state else "none (first judged step)")
        plan = None
        if config.plan_bake and self.plan_weights:
            plan = self.plan_from_traffic(config, self.plan_weights, judge_state)
        if plan is not None:
            self.log.info("%s", plan.describe(config))
            if not plan.enough:
                self.log.warning("traffic fell since the release was planned: this step bakes up to "
                                 "max_bake_seconds and is judged on what it gets")
            config = replace(config, bake_seconds=plan.seconds)
        self._log_bake(config)
        dag_run = context.get("dag_run")
        start_date = getattr(dag_run, "start_date", None)
        self.defer(
            trigger=_watch_trigger(
                prometheus_conn_id=self.prometheus_conn_id,
                target=self.target.to_dict(),
                analysis=config.to_dict(),
                started_at=time.time(),
                judge_state=judge_state,
                history_at=start_date.timestamp() if start_date else None,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=config.max_bake_seconds + TRIGGER_TIMEOUT_SLACK_SECONDS),
        )
        return None

    def _log_bake(self, config: AnalysisConfig) -> None:
        self.log.info(
            "bake %ds (up to %ds while the canary has too few requests or errors above "
            "max_error_rate not yet significant), checking every %ds",
            config.bake_seconds, config.max_bake_seconds, config.check_interval_seconds,
        )
        self.log_queries(config.bake_seconds)

    def execute_complete(self, context: Mapping[str, Any], event: Mapping[str, Any]) -> dict[str, Any]:
        progress = WatchProgress.from_dict(event["progress"])
        for table in progress.checks:
            self.log.info("%s", table)
        elapsed = float(event["ended_at"]) - progress.started_at
        if event["action"] == "stop":
            self.log.warning(
                "stopped EARLY after %.0fs of %ds, %.0f canary requests: %s", elapsed,
                self.config.bake_seconds, progress.canary_requests,
                progress.verdict.summary if progress.verdict else "",
            )
        else:
            self.log.info("bake finished after %.0fs, %.0f canary requests", elapsed, progress.canary_requests)
        return {"action": event["action"], "elapsed_seconds": elapsed, "progress": progress.to_dict()}


def _watch_trigger(**kwargs: Any) -> Any:
    from istio_canary.triggers.watch import CanaryWatchTrigger

    return CanaryWatchTrigger(**kwargs)


class CanaryAnalysisOperator(_CanaryAnalysisBase):
    """The step's verdict: pass, fail or inconclusive, with the numbers behind it.

    After a watch (`watch_task_id`): a failed watch is the verdict; otherwise one last check
    at bake end plus the absolute floors (error rate, p99, custom) on the whole window. On its
    own: judges the last `window_seconds` (default: bake_seconds) from counter snapshots at
    both ends of the window.
    """

    def __init__(self, *, watch_task_id: str | None = None, window_seconds: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.watch_task_id = watch_task_id
        self.window_seconds = window_seconds

    def execute(self, context: Mapping[str, Any]) -> dict[str, Any]:
        if as_bool(self.dry_run):
            self.log.info("DRY RUN: no analysis; the step counts as passed so the whole plan is shown")
            return {"outcome": "dry_run", "summary": "dry run: not analysed", "judge_state": None, "stats": {}}
        self.push_graph_link(context)
        watch = context["ti"].xcom_pull(task_ids=self.watch_task_id) if self.watch_task_id else None
        if watch and watch.get("progress"):
            progress = WatchProgress.from_dict(watch["progress"])
        else:
            progress = self._standalone_start()
        if progress.verdict is not None and progress.verdict.outcome is VerdictOutcome.FAIL:
            verdict = progress.verdict
            self.log.info("the watch stopped the step early; its verdict stands")
        else:
            progress, verdict = self._final_check(progress)
        self.log.info("%s", verdict.table())
        self.log.info("verdict: %s", verdict.summary)
        return self._result(progress, verdict)

    def _standalone_start(self) -> WatchProgress:
        window = self.window_seconds or self.config.bake_seconds
        start = time.time() - window
        progress = begin(start)
        plan = plan_window_start(self.target)
        self.log.info("PromQL (counters at window start): %s", plan.snapshot_query)
        try:
            reading = self.observe(plan, start)
        except PrometheusQueryError as error:
            progress, _ = record_missing_data(self.config, progress, f"no data: {error.message}")
            return progress
        progress, _ = record_check(self.config, self.target, progress, reading.snapshot)
        return progress

    def _final_check(self, progress: WatchProgress) -> tuple[WatchProgress, Verdict]:
        now = time.time()
        plan = plan_check(self.target, self.config, window_seconds_since(progress.started_at, now))
        self.log_plan(plan)
        try:
            reading = self.observe(plan, now)
        except PrometheusQueryError as error:
            self.log.warning("final check failed: %s", error)
            return record_missing_data(self.config, progress, f"no data: {error.message}", final=True)
        self.log.info("raw counters: %s; p99 ms: %s", reading.snapshot.series, reading.p99_ms)
        if progress.start is None:
            # The window never got its first snapshot (Prometheus was down): nothing to difference.
            return record_missing_data(self.config, progress, "no counter snapshot at window start", final=True)
        progress, verdict = record_check(
            self.config, self.target, progress, reading.snapshot, reading.p99_ms, reading.custom, final=True
        )
        assert verdict is not None
        return progress, verdict

    def _result(self, progress: WatchProgress, verdict: Verdict) -> dict[str, Any]:
        canary = progress.window_counts.get("canary")
        p99 = next((r.value for r in verdict.reasons if r.name == "p99_ms"), None)
        stats = {
            "requests": canary.requests if canary else 0.0,
            "errors": canary.errors if canary else 0.0,
            "error_rate": canary.error_rate if canary else None,
            "p99_ms": p99,
            "duration_seconds": round(time.time() - progress.started_at, 1),
        }
        return {
            "outcome": verdict.outcome.value,
            "summary": verdict.summary,
            "verdict": verdict.to_dict(),
            "judge_state": progress.state.to_dict(),
            "stats": stats,
        }

