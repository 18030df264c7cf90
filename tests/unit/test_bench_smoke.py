"""Smoke tests for the benchmarks: tiny sizes, JSON shapes, sane verdicts. No timing assertions."""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import statistics

import pytest

from bench import judge, parse
from bench.rules import mann_whitney_u
from bench.sim import SCENARIOS, Traffic, binomial_from_normal, poisson_from_normal

SUMMARY_KEYS = {
    "promoted", "rolled_back", "inconclusive",
    "blast_radius_mean", "canary_requests_mean", "decision_seconds_mean",
}
SMOKE_SCENARIOS = ("healthy", "error_5pct", "no_canary_traffic")


@pytest.fixture(scope="module")
def smoke_result() -> dict:
    return judge.run(replicas=10, seed=7, scenarios=SMOKE_SCENARIOS)


def test_judge_json_has_every_rule_with_rates_summing_to_one(smoke_result):
    assert set(smoke_result) == {"scenarios"}
    assert list(smoke_result["scenarios"]) == list(SMOKE_SCENARIOS)
    for per_rule in smoke_result["scenarios"].values():
        assert list(per_rule) == ["ours", "flagger", "argo", "kayenta", "oracle"]
        for summary in per_rule.values():
            assert set(summary) == SUMMARY_KEYS
            assert math.isclose(summary["promoted"] + summary["rolled_back"] + summary["inconclusive"], 1.0)
            assert all(v >= 0 and math.isfinite(v) for v in summary.values())
    json.dumps(smoke_result)  # serializable as is


def test_ours_and_the_oracle_stop_bad_canaries_and_promote_healthy_ones(smoke_result):
    scenarios = smoke_result["scenarios"]
    for rule in ("ours", "oracle"):
        assert scenarios["error_5pct"][rule]["rolled_back"] >= 0.8, rule
        assert scenarios["healthy"][rule]["promoted"] > 0.5, rule
    # A 5 % canary is stopped well before the 180 s schedule ends, after few errors.
    assert scenarios["error_5pct"]["ours"]["decision_seconds_mean"] < 120
    assert scenarios["error_5pct"]["ours"]["blast_radius_mean"] < scenarios["error_5pct"]["flagger"]["blast_radius_mean"]


def test_no_rule_promotes_a_canary_that_got_no_traffic(smoke_result):
    no_traffic = smoke_result["scenarios"]["no_canary_traffic"]
    assert all(s["promoted"] == 0 for s in no_traffic.values())
    assert all(s["canary_requests_mean"] == 0 for s in no_traffic.values())
    # Documented timings: Flagger's 5th failed 1-minute check at 300 s, rollback on the next
    # tick; Argo's 5th consecutive empty measurement (0, 5, ..., 20 min) exceeds the limit of 4.
    assert no_traffic["flagger"]["decision_seconds_mean"] == 360
    assert no_traffic["argo"]["decision_seconds_mean"] == 1200
    assert no_traffic["ours"]["inconclusive"] == 1.0


def test_cli_prints_the_table_with_ratios_and_writes_json(tmp_path, capsys):
    out = tmp_path / "judge.json"
    assert judge.main(["--replicas", "2", "--scenarios", "error_2pct", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "error_2pct" in printed and "ours/rule blast" in printed
    assert re.search(r"^flagger .* \d+\.\d\dx +\d+\.\d\dx$", printed, re.MULTILINE)
    written = json.loads(out.read_text())
    assert set(written["scenarios"]["error_2pct"]) == set(judge.RULES)


def test_unknown_scenario_is_refused():
    with pytest.raises(ValueError, match="unknown scenario"):
        judge.run(replicas=1, scenarios=["nope"])


def test_traffic_is_the_same_whatever_order_rules_read_it():
    first, second = Traffic(SCENARIOS["healthy"], 11), Traffic(SCENARIOS["healthy"], 11)
    late = first.interval(12, 50)
    early = [second.interval(i, 10) for i in range(12)]
    assert second.interval(12, 50) == late
    assert [first.interval(i, 10) for i in range(12)] == early
    # Common random numbers: more weight never means fewer canary requests in an interval.
    assert all(first.interval(i, 50).canary_requests >= first.interval(i, 10).canary_requests for i in range(12))


@pytest.mark.parametrize(("mean_n", "p"), [(450, 0.005), (450, 0.2), (40, 0.5)])
def test_binomial_sampler_has_the_right_mean_and_variance(mean_n, p):
    rng = random.Random(3)
    draws = [binomial_from_normal(mean_n, p, rng.gauss(0, 1)) for _ in range(20000)]
    assert statistics.fmean(draws) == pytest.approx(mean_n * p, rel=0.05)
    assert statistics.pvariance(draws) == pytest.approx(mean_n * p * (1 - p), rel=0.1)


@pytest.mark.parametrize("mean", [0.2, 5.0, 500.0])
def test_poisson_sampler_has_the_right_mean_and_variance(mean):
    rng = random.Random(5)
    draws = [poisson_from_normal(mean, rng.gauss(0, 1)) for _ in range(20000)]
    assert statistics.fmean(draws) == pytest.approx(mean, rel=0.05)
    assert statistics.pvariance(draws) == pytest.approx(mean, rel=0.1)


def test_mann_whitney_u_counts_pairs_and_uses_the_exact_tie_corrected_variance():
    x, y = [0.0, 0.0, 0.01, 0.02], [0.0, 0.01, 0.01, 0.03, 0.05]
    u, z, p = mann_whitney_u(x, y)
    pairs = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in x for b in y)
    assert u == pairs and z < 0 and 0 < p < 1
    # The tie-corrected variance equals U's exact variance over all relabelings.
    pooled = x + y
    us = []
    for chosen in itertools.combinations(range(len(pooled)), len(x)):
        xs = [pooled[i] for i in chosen]
        ys = [pooled[i] for i in range(len(pooled)) if i not in chosen]
        us.append(sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in xs for b in ys))
    shift = u - len(x) * len(y) / 2
    assert ((abs(shift) - 0.5) / z) ** 2 == pytest.approx(statistics.pvariance(us))
    assert mann_whitney_u([0.0] * 3, [0.0] * 4)[1:] == (0.0, 1.0)  # all tied: no evidence


def test_parse_bench_times_a_stand_in_dag_against_the_baseline(tmp_path):
    stand_in = tmp_path / "stand_in_dag.py"
    stand_in.write_text('from airflow.sdk import DAG\n\ndag = DAG(dag_id="stand_in", schedule=None)\n')
    result = parse.measure([stand_in], runs=1, warmup=False)
    assert {"median_s", "baseline_median_s", "ratio"} <= set(result)
    assert result["median_s"] > 0 and result["baseline_median_s"] > 0 and result["ratio"] > 0
    (entry,) = result["files"].values()
    assert entry["dags"] == ["stand_in"] and len(entry["samples_s"]) == 1


def test_parse_bench_reports_a_broken_dag_file(tmp_path):
    broken = tmp_path / "broken_dag.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(parse.ProbeError, match="boom"):
        parse.probe(broken, parse.probe_env(tmp_path / "home", tmp_path), tmp_path)


def test_parse_cli_refuses_a_missing_file(tmp_path, capsys):
    assert parse.main(["--runs", "1", "--dag", str(tmp_path / "nope.py")]) == 1
    assert "no DAG file" in capsys.readouterr().err
