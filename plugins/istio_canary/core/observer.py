"""One look at Prometheus during a watch: which queries it sends, and what the answers mean
(pure: no network).

The task (sync, `PrometheusHook.query`) and the trigger (async, `hooks.prometheus.aquery`)
observe the same way and differ only in transport: each asks `plan_check` (or
`plan_window_start`) for the queries, runs `CheckPlan.queries()` in order at one evaluation
time, and hands the answers to `CheckPlan.read`, whose `CheckReading` goes to
`core.watch.record_check`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from istio_canary.core.analysis_config import AnalysisConfig
from istio_canary.core.samples import CounterSnapshot, custom_value, values_by_version
from istio_canary.core.watch import WatchTarget

# A query's answer: the instant vector `PrometheusHook.query` and `aquery` return.
Answer = Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class CheckReading:
    """What one check saw: the raw counters, and per version the window's p99 and custom values."""

    snapshot: CounterSnapshot
    p99_ms: Mapping[str, float | None] = field(default_factory=dict)
    custom: Mapping[str, Mapping[str, float | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckPlan:
    """The PromQL of one check. `latency_query` None: the counters only (a window's start)."""

    metric_label: str
    snapshot_query: str
    latency_query: str | None = None
    # metric name -> version -> PromQL
    custom_queries: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def queries(self) -> tuple[str, ...]:
        """Every query of the check, in the order `read` takes their answers."""
        latency = (self.latency_query,) if self.latency_query is not None else ()
        custom = tuple(
            query for per_version in self.custom_queries.values() for query in per_version.values()
        )
        return (self.snapshot_query, *latency, *custom)

    def read(self, answers: Sequence[Answer], at: float) -> CheckReading:
        """The check's reading from the answers to `queries()`, all evaluated at `at`."""
        if len(answers) != len(self.queries()):
            raise ValueError(f"{len(answers)} answers to {len(self.queries())} queries")
        pending = iter(answers)
        snapshot = CounterSnapshot.from_results(next(pending), at, label=self.metric_label)
        p99 = (
            values_by_version(next(pending), label=self.metric_label)
            if self.latency_query is not None
            else {}
        )
        custom = {
            name: {version: custom_value(next(pending)) for version in per_version}
            for name, per_version in self.custom_queries.items()
        }
        return CheckReading(snapshot, p99, custom)

    def described(self) -> list[tuple[str, str]]:
        """(what, PromQL) for the task log."""
        lines = [("counters, differenced between checks", self.snapshot_query)]
        if self.latency_query is not None:
            lines.append(("p99 over the window", self.latency_query))
        for name, per_version in self.custom_queries.items():
            lines += [(f"{name}, {version}", query) for version, query in per_version.items()]
        return lines


def plan_check(target: WatchTarget, config: AnalysisConfig, window_seconds: int) -> CheckPlan:
    """A check: the counters, the p99 and the custom metrics over the last `window_seconds`."""
    return CheckPlan(
        metric_label=target.metric_label,
        snapshot_query=target.snapshot_query(),
        latency_query=target.latency_query(window_seconds),
        custom_queries=target.custom_queries(config, window_seconds),
    )


def plan_window_start(target: WatchTarget) -> CheckPlan:
    """The window's first look: the counters it is differenced from."""
    return CheckPlan(metric_label=target.metric_label, snapshot_query=target.snapshot_query())


def window_seconds_since(started_at: float, now: float) -> int:
    """The PromQL range, in whole seconds, that covers the watch so far."""
    return max(1, int(now - started_at) + 1)
