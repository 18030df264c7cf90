from istio_canary.core.judge import Outcome
from istio_canary.core.metrics import AnalysisConfig, CounterSnapshot
from istio_canary.core.watch import (
    WatchProgress,
    WatchTarget,
    begin,
    next_action,
    record_check,
    record_missing_data,
)

TARGET = WatchTarget("reviews", "bookinfo", "v1", "v2")
CONFIG = AnalysisConfig.from_params({"bake_seconds": 30, "check_interval_seconds": 5, "min_requests": 20,
                                     "max_inconclusive": 2})


def snap(at: float, v1: tuple[float, float], v2: tuple[float, float]) -> CounterSnapshot:
    series = {
        "v1": {"200": v1[0] - v1[1], "503": v1[1]},
        "v2": {"200": v2[0] - v2[1], "503": v2[1]},
    }
    return CounterSnapshot(at=at, series=series)


def test_first_snapshot_only_opens_the_window():
    progress, verdict = record_check(CONFIG, TARGET, begin(0.0), snap(1, (1000, 5), (100, 0)))
    assert verdict is None and progress.start is not None
    assert progress.canary_requests == 0


def test_counts_are_differenced_from_the_window_start_and_survive_serialization():
    progress, _ = record_check(CONFIG, TARGET, begin(0.0), snap(1, (1000, 5), (100, 0)))
    progress, verdict = record_check(CONFIG, TARGET, progress, snap(6, (1225, 6), (125, 0)))
    assert verdict is not None and verdict.outcome is not Outcome.FAIL
    assert progress.window_counts["canary"].requests == 25
    assert progress.window_counts["stable"].errors == 1
    again = WatchProgress.from_dict(progress.to_dict())
    assert again.canary_requests == 25 and again.state == progress.state


def test_a_clearly_bad_canary_stops_the_watch():
    progress, _ = record_check(CONFIG, TARGET, begin(0.0), snap(1, (1000, 0), (100, 0)))
    v2_requests, v2_errors = 100, 0
    for i in range(1, 7):
        v2_requests, v2_errors = v2_requests + 25, v2_errors + 5
        progress, _ = record_check(CONFIG, TARGET, progress, snap(1 + 5 * i, (1000 + 225 * i, 0), (v2_requests, v2_errors)))
        if next_action(CONFIG, progress, 1 + 5 * i) == "stop":
            break
    assert next_action(CONFIG, progress, 1 + 5 * i) == "stop"
    assert progress.verdict.outcome is Outcome.FAIL


def test_bake_end_extends_while_the_canary_has_too_few_requests():
    progress, _ = record_check(CONFIG, TARGET, begin(0.0), snap(1, (1000, 0), (100, 0)))
    progress, _ = record_check(CONFIG, TARGET, progress, snap(31, (2000, 0), (105, 0)))
    assert next_action(CONFIG, progress, 10) == "continue"
    assert next_action(CONFIG, progress, 31) == "extend"
    assert next_action(CONFIG, progress, CONFIG.max_bake_seconds) == "finish"


def test_missing_data_fails_after_the_bound():
    progress = begin(0.0)
    outcomes = []
    for _ in range(3):
        progress, verdict = record_missing_data(CONFIG, progress, "no data: connection refused")
        outcomes.append(verdict.outcome)
    assert outcomes == [Outcome.INCONCLUSIVE, Outcome.INCONCLUSIVE, Outcome.FAIL]


def test_freshness_query_wraps_the_raw_selector():
    query = TARGET.freshness_query()
    assert query.startswith("max(timestamp(istio_requests_total{") and "sum" not in query


def test_bake_end_holds_while_stable_is_in_an_incident():
    progress, _ = record_check(CONFIG, TARGET, begin(0.0), snap(1, (1000, 0), (100, 0)))
    # Both versions at ~25 % errors in the last interval: stable is degraded, not the canary.
    progress, verdict = record_check(CONFIG, TARGET, progress, snap(31, (1225, 56), (125, 6)))
    assert any(r.name == "incident" for r in verdict.reasons), verdict.table()
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert next_action(CONFIG, progress, 31) == "extend"
    assert next_action(CONFIG, progress, CONFIG.max_bake_seconds) == "finish"
