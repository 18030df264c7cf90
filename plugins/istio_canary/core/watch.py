"""The bake + watch loop's decisions, without the waiting (pure: no network, no Airflow).

The trigger owns the clock and the queries; this module turns what it read into
observations for the judge and says what to do next. Its progress is a small JSON-able
record, so it can travel in a trigger event and in XCom (and be looked at in the UI).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from istio_canary.core.analysis_config import AnalysisConfig
from istio_canary.core.judge import final_verdict, judge, judge_no_data, needs_extension
from istio_canary.core.judge_state import JudgeState, Observation
from istio_canary.core.promql import (
    DESTINATION_VERSION,
    counter_snapshot_query,
    error_count_query,
    p99_query,
    request_count_query,
    scrape_time_query,
)
from istio_canary.core.samples import (
    CounterSnapshot,
    MeasuredSpan,
    Measurement,
    measurements_from_results,
    with_latency,
)
from istio_canary.core.verdict import EXTEND_BAKE, Verdict, VerdictOutcome

Action = Literal["continue", "extend", "stop", "finish"]
# An extension for noise runs the bake to this many times its length: the noise of a rate or
# a p99 halves with four times the requests.
EXTENSION_FACTOR = 4.0


@dataclass(frozen=True)
class WatchTarget:
    """Which service and versions are watched. Names are validated identifiers (no injection).
    `metric_label` is the Istio label the versions are read from (the request's
    `metric_version_label`; targets serialized before it existed mean destination_version)."""

    service: str
    namespace: str
    stable_version: str
    canary_version: str
    metric_label: str = DESTINATION_VERSION

    @property
    def versions(self) -> tuple[str, str]:
        return (self.canary_version, self.stable_version)

    def snapshot_query(self) -> str:
        return counter_snapshot_query(self.service, self.namespace, self.versions, label=self.metric_label)

    def freshness_query(self) -> str:
        return scrape_time_query(self.service, self.namespace, self.versions, label=self.metric_label)

    def latency_query(self, window_seconds: int) -> str:
        return p99_query(self.service, self.namespace, self.versions, window_seconds, label=self.metric_label)

    def custom_queries(self, config: AnalysisConfig, window_seconds: int) -> dict[str, dict[str, str]]:
        """metric name -> version -> PromQL, for the user-defined metrics."""
        return {
            metric.name: {
                version: metric.render(
                    service=self.service, namespace=self.namespace, version=version,
                    window_seconds=window_seconds,
                )
                for version in self.versions
            }
            for metric in config.custom_metrics
        }

    def history_queries(self, config: AnalysisConfig) -> tuple[str, str]:
        """Stable's requests and 5xx over the pre-release window (evaluated at release start)."""
        return self._count_queries((self.stable_version,), config.baseline_window_seconds)

    def traffic_queries(self, window_seconds: int) -> tuple[str, str]:
        """Requests and 5xx to both versions over the last `window_seconds` (for the bake plan)."""
        return self._count_queries(self.versions, window_seconds)

    def _count_queries(self, versions: tuple[str, ...], window_seconds: int) -> tuple[str, str]:
        return (
            request_count_query(self.service, self.namespace, versions, window_seconds, label=self.metric_label),
            error_count_query(self.service, self.namespace, versions, window_seconds, label=self.metric_label),
        )

    def traffic(self, requests: Any, errors: Any, window_seconds: int) -> tuple[float, float | None]:
        """(requests/s, error rate) from the results of `traffic_queries`."""
        measured = measurements_from_results(self.versions, requests, errors, label=self.metric_label)
        valid = [m for m in measured.values() if m.counts_valid]
        total = sum(m.requests for m in valid)
        failed = sum(m.errors for m in valid)
        return total / window_seconds, (failed / total if total > 0 else None)

    def to_dict(self) -> dict[str, str]:
        return {"service": self.service, "namespace": self.namespace,
                "stable_version": self.stable_version, "canary_version": self.canary_version,
                "metric_label": self.metric_label}


@dataclass(frozen=True)
class WatchProgress:
    """Where a watch is: its first and last counter snapshots, the judge's state, the checks."""

    started_at: float
    start: CounterSnapshot | None = None
    last: CounterSnapshot | None = None
    state: JudgeState = field(default_factory=JudgeState)
    history: Measurement | None = None
    verdict: Verdict | None = None
    checks: tuple[str, ...] = ()
    # Cumulative counts since the first snapshot, keyed "canary" / "stable".
    window_counts: Mapping[str, Measurement] = field(default_factory=dict)
    # Counts of the intervals the judge called incidents, keyed like window_counts.
    discounted: Mapping[str, Measurement] = field(default_factory=dict)
    # The window's canary (requests, errors) per interval, oldest first.
    canary_intervals: tuple[tuple[float, float], ...] = ()
    # Set when the bake ended wanting more data: watch until then (epoch seconds), whatever
    # the next checks say, so the extension is not cut short by the first check that passes.
    extend_until: float | None = None

    @property
    def canary_requests(self) -> float:
        canary = self.window_counts.get("canary")
        return canary.requests if canary is not None else 0.0

    @property
    def clean_canary_requests(self) -> float:
        """Canary requests outside incidents: the ones the bake-end floor can judge."""
        discounted = self.discounted.get("canary")
        return self.canary_requests - (discounted.requests if discounted is not None else 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "start": self.start.to_dict() if self.start else None,
            "last": self.last.to_dict() if self.last else None,
            "state": self.state.to_dict(),
            "history": self.history.to_dict() if self.history else None,
            "verdict": self.verdict.to_dict() if self.verdict else None,
            "checks": list(self.checks),
            "window_counts": {k: m.to_dict() for k, m in self.window_counts.items()},
            "discounted": {k: m.to_dict() for k, m in self.discounted.items()},
            "canary_intervals": [list(pair) for pair in self.canary_intervals],
            "extend_until": self.extend_until,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> WatchProgress:
        return cls(
            started_at=float(raw["started_at"]),
            start=CounterSnapshot.from_dict(raw["start"]) if raw.get("start") else None,
            last=CounterSnapshot.from_dict(raw["last"]) if raw.get("last") else None,
            state=JudgeState.from_dict(raw["state"]),
            history=Measurement.from_dict(raw["history"]) if raw.get("history") else None,
            verdict=Verdict.from_dict(raw["verdict"]) if raw.get("verdict") else None,
            checks=tuple(raw.get("checks") or ()),
            window_counts={k: Measurement.from_dict(m) for k, m in (raw.get("window_counts") or {}).items()},
            discounted={k: Measurement.from_dict(m) for k, m in (raw.get("discounted") or {}).items()},
            canary_intervals=tuple((float(n), float(e)) for n, e in raw.get("canary_intervals") or ()),
            extend_until=raw.get("extend_until"),
        )


def begin(started_at: float, state: JudgeState | None = None, history: Measurement | None = None) -> WatchProgress:
    """A new watch. `state` carries the judge across the release's steps (one alpha overall)."""
    return WatchProgress(started_at=started_at, state=state or JudgeState(), history=history)


def record_check(
    config: AnalysisConfig,
    target: WatchTarget,
    progress: WatchProgress,
    snapshot: CounterSnapshot,
    p99_ms: Mapping[str, float | None] | None = None,
    custom: Mapping[str, Mapping[str, float | None]] | None = None,
    *,
    final: bool = False,
) -> tuple[WatchProgress, Verdict | None]:
    """Judge what changed since the previous snapshot. The first snapshot only starts the
    window (no verdict): counts before it belong to earlier steps."""
    if progress.start is None:
        return replace(progress, start=snapshot, last=snapshot), None
    canary, stable = target.canary_version, target.stable_version
    interval = snapshot.since(progress.last, target.versions)
    window = snapshot.since(progress.start, target.versions)
    canary_intervals = _canary_intervals(progress, snapshot, interval[canary])
    observation = Observation(
        canary=interval[canary],
        window_canary=_with_extras(window[canary], canary, p99_ms, custom),
        stable=interval[stable],
        window_stable=_with_extras(window[stable], stable, p99_ms, custom),
        history=progress.history,
        window=MeasuredSpan(progress.start.at, snapshot.at),
        discounted_canary=progress.discounted.get("canary"),
        discounted_stable=progress.discounted.get("stable"),
        canary_intervals=canary_intervals,
    )
    verdict, state = (final_verdict if final else judge)(config, observation, progress.state)
    progress = replace(
        progress,
        last=snapshot,
        state=state,
        verdict=verdict,
        checks=(*progress.checks, verdict.table()),
        window_counts={"canary": window[canary], "stable": window[stable]},
        discounted=_discounted(progress, verdict, interval[canary], interval[stable]),
        canary_intervals=canary_intervals,
        extend_until=_extend_until(config, progress, snapshot.at, verdict, final),
    )
    return progress, verdict


def _with_extras(
    counts: Measurement,
    version: str,
    p99_ms: Mapping[str, float | None] | None,
    custom: Mapping[str, Mapping[str, float | None]] | None,
) -> Measurement:
    """A version's window counts with its p99 and custom values."""
    values = {name: per_version.get(version) for name, per_version in (custom or {}).items()}
    return with_latency(counts, (p99_ms or {}).get(version), values)


def _canary_intervals(
    progress: WatchProgress, snapshot: CounterSnapshot, canary: Measurement
) -> tuple[tuple[float, float], ...]:
    """The canary's intervals with this one added, unless it is broken or empty and instant."""
    if canary.counts_valid and (canary.requests > 0 or snapshot.at > progress.last.at):
        return (*progress.canary_intervals, (canary.requests, canary.errors))
    return progress.canary_intervals


def _discounted(
    progress: WatchProgress, verdict: Verdict, canary: Measurement, stable: Measurement
) -> dict[str, Measurement]:
    """The incident counts, with this interval's added when the judge called it an incident."""
    discounted = dict(progress.discounted)
    if in_incident(verdict):
        for role, counts in (("canary", canary), ("stable", stable)):
            before = discounted.get(role, Measurement(0.0, 0.0))
            discounted[role] = Measurement(before.requests + counts.requests, before.errors + counts.errors)
    return discounted


def _extend_until(
    config: AnalysisConfig, progress: WatchProgress, at: float, verdict: Verdict, final: bool
) -> float | None:
    """Set once, when the bake has run its length and the judge wants more data."""
    elapsed = at - progress.started_at
    if progress.extend_until is None and not final and elapsed >= config.bake_seconds and wants_more_data(verdict):
        return progress.started_at + min(EXTENSION_FACTOR * elapsed, config.max_bake_seconds)
    return progress.extend_until


def record_missing_data(
    config: AnalysisConfig, progress: WatchProgress, detail: str, *, final: bool = False
) -> tuple[WatchProgress, Verdict]:
    """A check whose queries failed (Prometheus down): inconclusive, a fail after the bound."""
    verdict, state = judge_no_data(config, progress.state, detail, final=final)
    return replace(progress, state=state, verdict=verdict, checks=(*progress.checks, verdict.table())), verdict


def next_action(config: AnalysisConfig, progress: WatchProgress, now: float) -> Action:
    """stop: the judge failed (roll back now); finish: bake done; extend: bake done but more
    data is needed: the canary saw too few requests outside incidents, or at bake end its
    error rate was above max_error_rate without being significantly so, or its p99 above
    stable's tolerance by no more than noise (then the bake runs on to EXTENSION_FACTOR times
    its length, within max_bake_seconds); continue: keep baking. An incident (stable degraded
    too) does not stop the clock: its intervals are discounted."""
    if progress.verdict is not None and progress.verdict.outcome is VerdictOutcome.FAIL:
        return "stop"
    elapsed = now - progress.started_at
    if elapsed < config.bake_seconds:
        return "continue"
    requests = progress.clean_canary_requests  # a step spent in an incident has not been judged
    if needs_extension(config, elapsed, requests if math.isfinite(requests) else 0.0):
        return "extend"
    if progress.extend_until is not None and now < progress.extend_until:
        return "extend"
    return "finish"


def wants_more_data(verdict: Verdict | None) -> bool:
    """The check saw the canary above max_error_rate, not (yet) significantly, or its p99
    above stable's tolerance by no more than noise: more requests will tell."""
    return verdict is not None and bool(verdict.statistics.get(EXTEND_BAKE))


def in_incident(verdict: Verdict | None) -> bool:
    return verdict is not None and any(r.name == "incident" for r in verdict.reasons)
