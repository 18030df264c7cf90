"""bench.judge: verdict quality of ours vs Flagger, Argo, Kayenta and the SPRT oracle.

    python -m bench.judge [--replicas N] [--seed S] [--scenarios a,b] [--json PATH]

Every rule sees the same seeded per-interval counts in a replica (bench/sim.py). "ours" is
the project's watch and judge as shipped: `core.watch.begin/record_check/next_action` fed
with counter snapshots every 10 s, the analysis operator's final check at bake end, the
judge state carried from step to step, the pre-release hour as history. See bench/README.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench import emit
from bench.rules import ANCHORS
from bench.sim import INTERVAL_SECONDS, SCENARIOS, STEPS, Decision, Interval, Served, Traffic, window_p99
from istio_canary.core.judge import Outcome
from istio_canary.core.metrics import AnalysisConfig, CounterSnapshot, Measurement
from istio_canary.core.watch import WatchTarget, begin, next_action, record_check

RULES: tuple[str, ...] = ("ours", "flagger", "argo", "kayenta", "oracle")
ANCHOR_NAMES: tuple[str, ...] = RULES[1:]
OUTCOMES: tuple[str, ...] = ("promoted", "rolled_back", "inconclusive")
OURS_BAKE_SECONDS = 60
DEFAULT_REPLICAS = 500
DEFAULT_SEED = 20240601
_TARGET = WatchTarget("bench", "bench", "stable", "canary")


def ours_config() -> AnalysisConfig:
    """The project's defaults; only bake and check interval set to the benchmark's schedule."""
    return AnalysisConfig.from_params(
        {"bake_seconds": OURS_BAKE_SECONDS, "check_interval_seconds": INTERVAL_SECONDS}
    )


def run_ours(traffic: Traffic, config: AnalysisConfig | None = None) -> Decision:
    """One release through the shipped watch loop and analysis, step by step.

    Per step, as CanaryWatchOperator + CanaryWatchTrigger + CanaryAnalysisOperator do it:
    begin() with the previous step's judge state and the pre-release history, a first
    counter snapshot that opens the window, then a snapshot + window p99 every check
    interval until next_action() says stop or finish (extend keeps checking), then the
    final check with final=True on the same snapshot. FAIL rolls back; INCONCLUSIVE at the
    final check ends the release without promotion (the DAG rolls back; reported apart).
    """
    config = config or ours_config()
    history_requests, history_errors = traffic.history()
    history = Measurement(float(history_requests), float(history_errors))
    counters = {"canary": [0, 0], "stable": [0, 0]}  # cumulative (ok, 5xx)
    served = Served()
    state = None
    index = 0
    for weight in STEPS:
        progress = begin(index * INTERVAL_SECONDS, state, history)
        progress, _ = record_check(config, _TARGET, progress, _snapshot(index, counters))
        window: list[Interval] = []
        while True:
            action = next_action(config, progress, index * INTERVAL_SECONDS)
            if action == "stop":
                return served.decide("rolled_back", index * INTERVAL_SECONDS)
            if action == "finish":
                break
            iv = traffic.interval(index, weight)
            index += 1
            served.add(iv)
            window.append(iv)
            _count(counters, iv)
            progress, _ = record_check(
                config, _TARGET, progress, _snapshot(index, counters), _window_p99s(window)
            )
        progress, verdict = record_check(
            config, _TARGET, progress, _snapshot(index, counters), _window_p99s(window), final=True
        )
        assert verdict is not None
        if verdict.outcome is Outcome.FAIL:
            return served.decide("rolled_back", index * INTERVAL_SECONDS)
        if verdict.outcome is Outcome.INCONCLUSIVE:
            return served.decide("inconclusive", index * INTERVAL_SECONDS)
        state = progress.state
    return served.decide("promoted", index * INTERVAL_SECONDS)


def _count(counters: dict[str, list[int]], iv: Interval) -> None:
    counters["canary"][0] += iv.canary_requests - iv.canary_errors
    counters["canary"][1] += iv.canary_errors
    counters["stable"][0] += iv.stable_requests - iv.stable_errors
    counters["stable"][1] += iv.stable_errors


def _snapshot(index: int, counters: Mapping[str, Sequence[int]]) -> CounterSnapshot:
    return CounterSnapshot(
        at=float(index * INTERVAL_SECONDS),
        series={v: {"200": float(ok), "503": float(bad)} for v, (ok, bad) in counters.items()},
    )


def _window_p99s(window: Sequence[Interval]) -> dict[str, float | None]:
    return {"canary": window_p99(window, "canary"), "stable": window_p99(window, "stable")}


RUNNERS: dict[str, Callable[[Traffic], Decision]] = {"ours": run_ours, **ANCHORS}


# --------------------------------------------------------------------------- the benchmark


def replica_seed(seed: int, scenario_index: int, replica: int) -> int:
    return seed * 1_000_003 + scenario_index * 100_003 + replica


def run_scenario(name: str, replicas: int, seed: int, rules: Sequence[str] = RULES) -> dict[str, dict[str, float]]:
    """Summary per rule for one scenario over `replicas` seeded replicas."""
    scenario = SCENARIOS[name]
    scenario_index = list(SCENARIOS).index(name)
    decisions: dict[str, list[Decision]] = {rule: [] for rule in rules}
    for replica in range(replicas):
        traffic = Traffic(scenario, replica_seed(seed, scenario_index, replica))
        for rule in rules:
            decisions[rule].append(RUNNERS[rule](traffic))
    return {rule: summarize(decisions[rule]) for rule in rules}


def summarize(decisions: Sequence[Decision]) -> dict[str, float]:
    n = len(decisions)
    summary = {outcome: sum(d.outcome == outcome for d in decisions) / n for outcome in OUTCOMES}
    summary["blast_radius_mean"] = sum(d.canary_errors for d in decisions) / n
    summary["canary_requests_mean"] = sum(d.canary_requests for d in decisions) / n
    summary["decision_seconds_mean"] = sum(d.seconds for d in decisions) / n
    return summary


def run(
    replicas: int = DEFAULT_REPLICAS,
    seed: int = DEFAULT_SEED,
    scenarios: Iterable[str] | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> dict[str, Any]:
    """The benchmark's JSON: {"scenarios": {scenario: {rule: summary}}}."""
    if replicas < 1:
        raise ValueError("replicas must be >= 1")
    names = list(scenarios) if scenarios is not None else list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    result: dict[str, Any] = {"scenarios": {}}
    for name in names:
        started = time.perf_counter()
        result["scenarios"][name] = run_scenario(name, replicas, seed)
        if progress:
            progress(name, time.perf_counter() - started)
    return result


# --------------------------------------------------------------------------- the table


def _ratio(ours: float, other: float) -> str:
    if other == 0:
        return "-" if ours == 0 else "inf"
    return f"{ours / other:.2f}x"


def format_table(result: Mapping[str, Any]) -> str:
    header = (
        f"{'rule':<8} {'promoted':>8} {'rolled':>8} {'inconcl':>8} {'blast':>8} "
        f"{'canary_req':>10} {'decide_s':>9}  {'ours/rule blast':>15} {'ours/rule time':>14}"
    )
    lines = []
    for name, per_rule in result["scenarios"].items():
        scenario = SCENARIOS[name]
        lines.append(f"\n== {name} (a good rule should {scenario.expected})")
        lines.append(header)
        ours = per_rule.get("ours")
        for rule, s in per_rule.items():
            blast_ratio = time_ratio = ""
            if ours is not None and rule != "ours":
                blast_ratio = _ratio(ours["blast_radius_mean"], s["blast_radius_mean"])
                time_ratio = _ratio(ours["decision_seconds_mean"], s["decision_seconds_mean"])
            lines.append(
                f"{rule:<8} {s['promoted']:>8.1%} {s['rolled_back']:>8.1%} {s['inconclusive']:>8.1%} "
                f"{s['blast_radius_mean']:>8.1f} {s['canary_requests_mean']:>10.0f} "
                f"{s['decision_seconds_mean']:>9.0f}  {blast_ratio:>15} {time_ratio:>14}"
            )
    healthy = result["scenarios"].get("healthy")
    if healthy:
        lines.append("\nfalse rollbacks of healthy canaries (rolled_back of healthy): " + ", ".join(
            f"{rule} {s['rolled_back']:.1%}" for rule, s in healthy.items()
        ))
    return "\n".join(lines).lstrip("\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.judge", description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=DEFAULT_REPLICAS, help="seeded replicas per scenario")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--scenarios", help="comma-separated subset (default: all)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    scenarios = args.scenarios.split(",") if args.scenarios else None
    started = time.perf_counter()

    def report(name: str, seconds: float) -> None:
        print(f"  {name}: {seconds:.1f}s", file=sys.stderr, flush=True)

    print(f"bench.judge: {args.replicas} replicas per scenario, seed {args.seed}", file=sys.stderr)
    try:
        result = run(args.replicas, args.seed, scenarios, progress=report)
    except ValueError as error:
        parser.error(str(error))
    emit(f"{format_table(result)}\n\n({args.replicas} replicas per scenario, seed {args.seed}, "
         f"{time.perf_counter() - started:.0f}s)", result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
