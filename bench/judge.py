"""bench.judge: verdict quality of ours vs Flagger, Argo, Kayenta and the SPRT oracle.

    python -m bench.judge [--replicas N] [--seed S] [--family F,G | --scenarios a,b]
                          [--markdown] [--json PATH] [--list]

Every rule sees the same seeded per-interval counts in a replica (bench/sim.py). "ours" is
the project's watch and judge as shipped: `core.watch.begin/record_check/next_action` fed
with counter snapshots every 10 s, the analysis operator's final check at bake end, the
judge state carried from step to step, the pre-release hour as history. Scenarios come in
families (`bench.sim.FAMILIES`); the default run is all of them. See bench/README.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import emit, say
from bench.rules import ANCHORS
from bench.sim import (
    FAMILIES,
    HISTORY_SECONDS,
    INTERVAL_SECONDS,
    SCENARIOS,
    STEPS,
    Decision,
    Interval,
    Served,
    Traffic,
    window_p99,
)
from istio_canary.core.analysis_config import AnalysisConfig
from istio_canary.core.plan import plan_bake
from istio_canary.core.samples import CounterSnapshot, Measurement
from istio_canary.core.verdict import VerdictOutcome
from istio_canary.core.watch import WatchTarget, begin, next_action, record_check

RULES: tuple[str, ...] = ("ours", "flagger", "argo", "kayenta", "oracle")
ANCHOR_NAMES: tuple[str, ...] = RULES[1:]
OUTCOMES: tuple[str, ...] = ("promoted", "rolled_back", "inconclusive")
OURS_BAKE_SECONDS = 60
# The planner may extend a step's bake up to this (ten bakes): its time cost shows in decide_s.
OURS_MAX_BAKE_SECONDS = 600
# Before each step the operator reads the service's request and error rate over this window.
PLAN_WINDOW_SECONDS = 120
DEFAULT_REPLICAS = 500
DEFAULT_SEED = 20240601
_TARGET = WatchTarget("bench", "bench", "stable", "canary")


def ours_config() -> AnalysisConfig:
    """The project's defaults; bake, its bound and check interval set to the benchmark's schedule."""
    return AnalysisConfig.from_params(
        {"bake_seconds": OURS_BAKE_SECONDS, "check_interval_seconds": INTERVAL_SECONDS,
         "max_bake_seconds": OURS_MAX_BAKE_SECONDS}
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
    seen: list[Interval] = []
    for number, weight in enumerate(STEPS):
        step_config = config
        if config.plan_bake:
            rps, rate = _recent_traffic(seen, history)
            plan = plan_bake(config, weights=STEPS[number:], service_rps=rps, baseline_rate=rate,
                             seen_requests=state.canary_requests if state else 0.0,
                             dispersion=state.dispersion if state else 0.0)
            if not plan.enough and number == 0:
                return served.decide("inconclusive", 0.0)  # refused before the bake: not promoted
            step_config = replace(config, bake_seconds=plan.seconds)
        progress = begin(index * INTERVAL_SECONDS, state, history)
        progress, _ = record_check(config, _TARGET, progress, _snapshot(index, counters))
        window: list[Interval] = []
        while True:
            action = next_action(step_config, progress, index * INTERVAL_SECONDS)
            if action == "stop":
                return served.decide("rolled_back", index * INTERVAL_SECONDS)
            if action == "finish":
                break
            iv = traffic.interval(index, weight)
            index += 1
            served.add(iv)
            window.append(iv)
            seen.append(iv)
            _count(counters, iv)
            progress, _ = record_check(
                step_config, _TARGET, progress, _snapshot(index, counters), _window_p99s(window)
            )
        progress, verdict = record_check(
            step_config, _TARGET, progress, _snapshot(index, counters), _window_p99s(window), final=True
        )
        assert verdict is not None
        if verdict.outcome is VerdictOutcome.FAIL:
            return served.decide("rolled_back", index * INTERVAL_SECONDS)
        if verdict.outcome is VerdictOutcome.INCONCLUSIVE:
            return served.decide("inconclusive", index * INTERVAL_SECONDS)
        state = progress.state
    return served.decide("promoted", index * INTERVAL_SECONDS)


def _recent_traffic(seen: Sequence[Interval], history: Measurement) -> tuple[float, float | None]:
    """The service's requests/s and error rate over the last PLAN_WINDOW_SECONDS, as the watch
    operator reads them from Prometheus before a step (the pre-release hour before the first)."""
    recent = seen[-(PLAN_WINDOW_SECONDS // INTERVAL_SECONDS):]
    if not recent:
        return history.requests / HISTORY_SECONDS, history.error_rate
    requests = sum(iv.canary_requests + iv.stable_requests for iv in recent)
    errors = sum(iv.canary_errors + iv.stable_errors for iv in recent)
    return requests / (len(recent) * INTERVAL_SECONDS), (errors / requests if requests else None)


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


def select(scenarios: Iterable[str] | None = None, families: Iterable[str] | None = None) -> list[str]:
    """Scenario names to run, in `SCENARIOS` order: the named ones and those of the named
    families; all of them when neither is given."""
    if scenarios is None and families is None:
        return list(SCENARIOS)
    names = list(scenarios or ())
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    family_names = list(families or ())
    unknown = [f for f in family_names if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown family(ies): {', '.join(unknown)}; known: {', '.join(FAMILIES)}")
    chosen = set(names).union(*(FAMILIES[f] for f in family_names))
    if scenarios is not None and families is None:
        return names  # as asked, in the order asked
    return [n for n in SCENARIOS if n in chosen]


def run(
    replicas: int = DEFAULT_REPLICAS,
    seed: int = DEFAULT_SEED,
    scenarios: Iterable[str] | None = None,
    progress: Callable[[str, float], None] | None = None,
    families: Iterable[str] | None = None,
) -> dict[str, Any]:
    """The benchmark's JSON: {"scenarios": {scenario: {rule: summary}}}."""
    if replicas < 1:
        raise ValueError("replicas must be >= 1")
    names = select(scenarios, families)
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
    family = None
    for name, per_rule in result["scenarios"].items():
        scenario = SCENARIOS[name]
        if scenario.family != family:
            family = scenario.family
            lines.append(f"\n######## family {family}")
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
    worst = family_worst(result)
    if worst:
        rules = list(next(iter(result["scenarios"].values())))
        lines.append(
            "\nworst setting per family, in %: healthy canaries rolled back / healthy inconclusive / "
            "clearly bad canaries promoted (>= 2x stable and > 1 % errors, >= 10 rps; -: no such setting run)"
        )
        lines.append(f"{'family':<14}" + "".join(f"{rule:>20}" for rule in rules))
        for fam, per_rule in worst.items():
            lines.append(f"{fam:<14}" + "".join(f"{_worst_cell(per_rule[rule]):>20}" for rule in rules))
    return "\n".join(lines).lstrip("\n")


def family_worst(result: Mapping[str, Any]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Per family and rule, the worst setting: the highest false-rollback and inconclusive
    rates among healthy canaries, the highest promotion rate among clearly bad canaries
    (None when the family has no such setting in the run)."""
    worst: dict[str, dict[str, dict[str, float | None]]] = {}
    for name, per_rule in result["scenarios"].items():
        scenario = SCENARIOS[name]
        for rule, summary in per_rule.items():
            cell = worst.setdefault(scenario.family, {}).setdefault(
                rule, {"healthy_rolled_back": None, "healthy_inconclusive": None, "bad_promoted": None}
            )
            picks: list[tuple[str, str]] = []
            if scenario.healthy:
                picks += [("healthy_rolled_back", "rolled_back"), ("healthy_inconclusive", "inconclusive")]
            if scenario.clearly_bad:
                picks.append(("bad_promoted", "promoted"))
            for key, outcome in picks:
                seen = cell[key]
                cell[key] = summary[outcome] if seen is None else max(seen, summary[outcome])
    return worst


def _worst_cell(cell: Mapping[str, float | None]) -> str:
    values = (cell["healthy_rolled_back"], cell["healthy_inconclusive"], cell["bad_promoted"])
    return " / ".join("-" if v is None else f"{100 * v:.1f}" for v in values)


def format_markdown(result: Mapping[str, Any]) -> str:
    """One Markdown table per family, a row per setting, a column per rule (for the README)."""
    lines: list[str] = []
    family = None
    rules: list[str] = []
    for name, per_rule in result["scenarios"].items():
        scenario = SCENARIOS[name]
        if scenario.family != family:
            family = scenario.family
            rules = list(per_rule)
            lines += ["", f"#### {family}", "", "| scenario | should | " + " | ".join(rules) + " |",
                      "| --- | --- |" + " --- |" * len(rules)]
        cells = [
            f"{100 * s['promoted']:.1f} / {100 * s['rolled_back']:.1f} / {100 * s['inconclusive']:.1f}"
            f" · {s['blast_radius_mean']:.1f} · {s['decision_seconds_mean']:.0f}"
            for s in (per_rule[rule] for rule in rules)
        ]
        should = f"{scenario.expected}{' (clearly bad)' if scenario.clearly_bad else ''}"
        lines.append(f"| {name} | {should} | " + " | ".join(cells) + " |")
    return "\n".join(lines).lstrip("\n")


def format_list() -> str:
    """Families and their scenarios with what a good rule does (for --list)."""
    lines = []
    for family, names in FAMILIES.items():
        lines.append(family)
        lines += [f"  {name:<40} {SCENARIOS[name].expected}" for name in names]
    return "\n".join(lines)


def _names(raw: str | None) -> list[str] | None:
    return [n for n in raw.split(",") if n] if raw else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.judge", description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=DEFAULT_REPLICAS, help="seeded replicas per scenario")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--scenarios", help="comma-separated scenarios (default: all)")
    parser.add_argument("--family", help=f"comma-separated families, with --scenarios: both ({', '.join(FAMILIES)})")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables per family instead")
    parser.add_argument("--list", action="store_true", help="list the families and scenarios, run nothing")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    if args.list:
        print(format_list())
        return 0
    started = time.perf_counter()

    def report(name: str, seconds: float) -> None:
        say(f"{name}: {seconds:.1f}s")

    print(f"bench.judge: {args.replicas} replicas per scenario, seed {args.seed}", file=sys.stderr)
    try:
        result = run(args.replicas, args.seed, _names(args.scenarios), progress=report, families=_names(args.family))
    except ValueError as error:
        parser.error(str(error))
    table = format_markdown(result) if args.markdown else format_table(result)
    emit(f"{table}\n\n({args.replicas} replicas per scenario, seed {args.seed}, "
         f"{time.perf_counter() - started:.0f}s)", result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
