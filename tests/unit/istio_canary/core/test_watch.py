from istio_canary.core.analysis_config import AnalysisConfig
from istio_canary.core.samples import CounterSnapshot
from istio_canary.core.verdict import VerdictOutcome
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
    assert verdict is not None and verdict.outcome is not VerdictOutcome.FAIL
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
    assert progress.verdict.outcome is VerdictOutcome.FAIL


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
    assert outcomes == [VerdictOutcome.INCONCLUSIVE, VerdictOutcome.INCONCLUSIVE, VerdictOutcome.FAIL]


def test_freshness_query_wraps_the_raw_selector():
    query = TARGET.freshness_query()
    assert query.startswith("max(timestamp(istio_requests_total{") and "sum" not in query


P99 = {"v1": 100.0, "v2": 100.0}


def steps(progress: WatchProgress, start: float, intervals, config: AnalysisConfig = CONFIG):
    """Feed (stable n, stable e, canary n, canary e) intervals as cumulative snapshots 5 s apart."""
    at = start
    v1, v2 = progress.last.series["v1"], progress.last.series["v2"]
    s_n, s_e = sum(v1.values()), v1.get("503", 0.0)
    c_n, c_e = sum(v2.values()), v2.get("503", 0.0)
    verdict = None
    for stable_n, stable_e, canary_n, canary_e in intervals:
        at += 5
        s_n, s_e, c_n, c_e = s_n + stable_n, s_e + stable_e, c_n + canary_n, c_e + canary_e
        progress, verdict = record_check(config, TARGET, progress, snap(at, (s_n, s_e), (c_n, c_e)), P99)
    return progress, verdict, at


def test_an_incident_is_discounted_and_does_not_stop_the_clock():
    progress, _ = record_check(CONFIG, TARGET, begin(0.0), snap(1, (1000, 0), (100, 0)))
    healthy = [(225, 1, 25, 0)] * 5
    # Both versions at ~25 % errors in one interval: stable is degraded, not the canary.
    progress, verdict, at = steps(progress, 1, [*healthy, (225, 56, 25, 6)])
    assert any(r.name == "incident" and r.outcome is VerdictOutcome.PASS for r in verdict.reasons), verdict.table()
    assert progress.discounted["canary"].errors == 6 and progress.discounted["stable"].errors == 56
    assert next_action(CONFIG, progress, at) == "finish"  # the bake ends on time
    progress, final = record_check(CONFIG, TARGET, progress, progress.last, P99, final=True)
    floor = next(r for r in final.reasons if r.name == "error_rate")
    assert "25 canary requests in incidents discounted" in floor.detail and floor.value == 0.0, final.table()
    assert final.outcome is VerdictOutcome.PASS, final.table()
    again = WatchProgress.from_dict(progress.to_dict())
    assert again.discounted == progress.discounted


def test_one_burst_at_100_percent_is_forgiven_a_steady_failure_is_not():
    last_step = AnalysisConfig.from_params({"bake_seconds": 30, "check_interval_seconds": 5, "min_requests": 20})
    start, _ = record_check(last_step, TARGET, begin(0.0), snap(1, (1000, 0), (100, 0)))
    quiet = (0, 0, 500, 2)
    progress, verdict, at = steps(start, 1, [quiet, quiet, (0, 0, 500, 50), quiet, quiet, quiet], last_step)
    assert next_action(last_step, progress, at) == "finish", verdict.table()
    progress, final = record_check(last_step, TARGET, progress, progress.last, P99, final=True)
    assert final.outcome is VerdictOutcome.PASS, final.table()
    floor = next(r for r in final.reasons if r.name == "error_rate")
    assert "1 burst interval(s), 500 requests, discounted" in floor.detail
    # The same errors every interval are a failing canary, whatever the cap.
    progress, verdict, at = steps(start, 1, [(0, 0, 500, 25)] * 6, last_step)
    assert verdict.outcome is VerdictOutcome.FAIL, verdict.table()


def test_bake_end_extends_while_the_canary_is_above_max_error_rate_but_not_significantly():
    progress, _ = record_check(CONFIG, TARGET, begin(0.0), snap(1, (1000, 0), (100, 0)))
    # 2 errors in 150 canary requests (1.3 %), stable 0.4 %: above 1 %, far from significant.
    progress, verdict, _at = steps(progress, 1, [(225, 1, 25, 0)] * 4 + [(225, 1, 25, 1)] * 2)
    assert verdict.outcome is not VerdictOutcome.FAIL, verdict.table()
    assert next_action(CONFIG, progress, 31) == "extend"
    assert next_action(CONFIG, progress, CONFIG.max_bake_seconds) == "finish"
    progress, final = record_check(CONFIG, TARGET, progress, progress.last, P99, final=True)
    floor = next(r for r in final.reasons if r.name == "error_rate")
    assert floor.outcome is VerdictOutcome.PASS and "not significantly" in floor.detail


def test_a_p99_regression_within_noise_extends_the_bake_and_the_extension_is_not_cut_short():
    progress, _ = record_check(CONFIG, TARGET, begin(0.0), snap(1, (1000, 0), (1000, 0)))
    healthy = [(600, 0, 600, 0)] * 6  # 3,600 requests a side: p99s compared
    slightly_slow = {"v1": 100.0, "v2": 125.0}  # +25 %, tolerance 20 %: within two p99s' noise
    for stable_n, stable_e, canary_n, canary_e in healthy:
        last = progress.last
        at = last.at + 5
        v1, v2 = last.series["v1"], last.series["v2"]
        progress, verdict = record_check(
            CONFIG, TARGET, progress,
            snap(at, (sum(v1.values()) + stable_n, stable_e), (sum(v2.values()) + canary_n, canary_e)),
            slightly_slow,
        )
    assert "within noise" in verdict.table()
    assert next_action(CONFIG, progress, 31) == "extend"
    assert progress.extend_until == CONFIG.max_bake_seconds  # 4 x 31 s, bounded by max_bake (90 s)
    # A later check within the tolerance does not end the extension early.
    progress, verdict, at = steps(progress, 31, [(600, 0, 600, 0)])
    assert not any("within noise" in r.detail for r in verdict.reasons)
    assert next_action(CONFIG, progress, at) == "extend"
    assert next_action(CONFIG, progress, CONFIG.max_bake_seconds) == "finish"
    again = WatchProgress.from_dict(progress.to_dict())
    assert again.extend_until == progress.extend_until
