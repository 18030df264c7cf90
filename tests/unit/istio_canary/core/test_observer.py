"""The one observer of a watch check: its queries, and its reading of the answers."""

from __future__ import annotations

import pytest

from istio_canary.core.analysis_config import AnalysisConfig
from istio_canary.core.observer import CheckReading, plan_check, plan_window_start, window_seconds_since
from istio_canary.core.watch import WatchTarget

TARGET = WatchTarget("reviews", "bookinfo", "v1", "v2")
CONFIG = AnalysisConfig.from_params(
    {
        "bake_seconds": 30,
        "custom_metrics": [
            {"name": "lat", "query": 'sum(x{v="{version}"}[{window}])', "direction": "lower", "threshold": 1},
        ],
    }
)


def _sample(value: str, **labels: str) -> dict:
    return {"metric": labels, "value": [1700000000.0, value]}


def test_a_check_sends_counters_then_p99_then_each_custom_metric_per_version() -> None:
    plan = plan_check(TARGET, CONFIG, 42)
    assert plan.queries() == (
        TARGET.snapshot_query(),
        TARGET.latency_query(42),
        'sum(x{v="v2"}[42s])',
        'sum(x{v="v1"}[42s])',
    )
    assert [what for what, _ in plan.described()] == [
        "counters, differenced between checks",
        "p99 over the window",
        "lat, v2",
        "lat, v1",
    ]


def test_the_answers_become_counters_p99_and_custom_values() -> None:
    plan = plan_check(TARGET, CONFIG, 42)
    counters = [
        _sample("100", destination_version="v1", response_code="200"),
        _sample("3", destination_version="v1", response_code="503"),
        _sample("20", destination_version="v2", response_code="200"),
    ]
    p99 = [_sample("75", destination_version="v1"), _sample("NaN", destination_version="v2")]
    reading = plan.read([counters, p99, [_sample("0.5")], [_sample("1"), _sample("2")]], at=123.0)
    assert reading.snapshot.at == 123.0
    assert reading.snapshot.series == {"v1": {"200": 100.0, "503": 3.0}, "v2": {"200": 20.0}}
    assert reading.p99_ms == {"v1": 75.0, "v2": None}
    # A custom query must answer one sample: two are ambiguous.
    assert reading.custom == {"lat": {"v2": 0.5, "v1": None}}


def test_the_window_start_reads_the_counters_only() -> None:
    plan = plan_window_start(TARGET)
    assert plan.queries() == (TARGET.snapshot_query(),)
    reading = plan.read([[_sample("7", destination_version="v2", response_code="200")]], at=5.0)
    assert reading == CheckReading(reading.snapshot, {}, {})
    assert reading.snapshot.series == {"v2": {"200": 7.0}}


def test_the_version_is_read_from_the_targets_metric_label() -> None:
    target = WatchTarget("reviews", "bookinfo", "v1", "v2", "destination_canonical_revision")
    plan = plan_window_start(target)
    assert "destination_canonical_revision" in plan.snapshot_query
    answer = [_sample("9", destination_canonical_revision="v1", response_code="200")]
    assert plan.read([answer], at=1.0).snapshot.series == {"v1": {"200": 9.0}}


def test_answers_must_match_the_queries() -> None:
    with pytest.raises(ValueError, match="1 answers to 4 queries"):
        plan_check(TARGET, CONFIG, 10).read([[]], at=1.0)


def test_the_window_covers_the_watch_in_whole_seconds() -> None:
    assert window_seconds_since(100.0, 100.0) == 1
    assert window_seconds_since(100.0, 129.5) == 30
