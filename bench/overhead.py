"""bench.overhead: a dry-run release on a live Airflow against a DAG of the same shape whose tasks do nothing.

    python -m bench.overhead [--runs N] [--json PATH] [--keep DIR]

One live Airflow (tools/live_airflow.py: api-server, scheduler, dag-processor, triggerer;
LocalExecutor, SQLite) and one sandbox of its own. The release DAG runs with `dry_run: true`:
every task runs, reads the cluster and logs what it would write, but nothing is written and
nothing waits (no bake, no analysis queries). The no-op DAG is generated from the release DAG
itself: the same task ids, task groups, dependencies and trigger rules; EmptyOperator where the
release DAG has one, a branch that picks what the dry run picked where it branches, and a
PythonOperator that returns at once everywhere else. So both runs execute and skip the same
tasks, and the difference is what our operators cost on top of Airflow's own per-task cost.

An untimed dry run first (warm caches, and the branch paths the no-op DAG copies), then N runs
of each, one at a time, alternating which goes first. Wall time per run from the DAG run's
start/end dates, per task from each task instance's start/end dates (REST API v2).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench import measure_and_emit, say
from bench.live import (
    RELEASE_DAG_FILE,
    dags_folder,
    describe_machine,
    machine,
    median,
    run_seconds,
    sandbox_connections,
    sandbox_up,
    ti_seconds,
    wait_for_dags,
    wait_for_runs,
    work_dir,
)
from tools.live_airflow import PROJECT_ROOT, RELEASE_DAG_ID, LiveAirflow, start_live_airflow

NOOP_DAG_ID = "bench_overhead_noop"
DEFAULT_RUNS = 5
RUN_TIMEOUT_SECONDS = 900
DRY_RUN_CONF: dict[str, Any] = {
    "service": "reviews", "namespace": "bookinfo", "stable_version": "v1", "canary_version": "v2",
    "dry_run": True,
}
# Runs go one at a time: a few worker processes are plenty (LocalExecutor forks them all at start).
AIRFLOW_ENV = {"AIRFLOW__CORE__PARALLELISM": "4"}


# --------------------------------------------------------------------------- the no-op DAG


def load_dag(path: Path = RELEASE_DAG_FILE, dag_id: str = RELEASE_DAG_ID) -> Any:
    """The DAG `dag_id` defined by the file at `path`, loaded as the DAG processor loads it."""
    from airflow.sdk import DAG

    spec = importlib.util.spec_from_file_location(f"bench_overhead_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"no DAG file at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for value in vars(module).values():
        if isinstance(value, DAG) and value.dag_id == dag_id:
            return value
    raise LookupError(f"{path} defines no DAG {dag_id!r}")


def dag_shape(dag: Any) -> dict[str, Any]:
    """Task ids, groups (parents first), kinds, trigger rules and upstream ids, in topological order."""
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk.bases.branch import BranchMixIn

    groups: dict[str, dict[str, Any]] = {}

    def add_group(group: Any) -> str | None:
        if group is None or group.is_root:
            return None
        if group.group_id not in groups:
            parent = add_group(group.parent_group)
            local = group.group_id.removeprefix(f"{parent}.") if parent else group.group_id
            groups[group.group_id] = {"group_id": group.group_id, "local_id": local, "parent": parent}
        return group.group_id

    tasks = []
    for task in dag.topological_sort():
        group_id = add_group(task.task_group)
        kind = "empty" if isinstance(task, EmptyOperator) else "branch" if isinstance(task, BranchMixIn) else "task"
        tasks.append({
            "task_id": task.task_id,
            "local_id": task.task_id.removeprefix(f"{group_id}.") if group_id else task.task_id,
            "group": group_id,
            "kind": kind,
            "trigger_rule": str(getattr(task.trigger_rule, "value", task.trigger_rule)),
            "upstream": sorted(task.upstream_task_ids),
            "downstream": sorted(task.downstream_task_ids),
        })
    return {"groups": list(groups.values()), "tasks": tasks}


def release_dag_shape(env: Mapping[str, str]) -> dict[str, Any]:
    """`dag_shape` of the shipped release DAG, computed in a child process with Airflow's
    environment (its AIRFLOW_HOME, not the caller's)."""
    code = "import json; from bench.overhead import dag_shape, load_dag; print(json.dumps(dag_shape(load_dag())))"
    done = subprocess.run([sys.executable, "-c", code], env=dict(env), cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"reading the release DAG's shape failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def branch_choices(shape: Mapping[str, Any], states: Mapping[str, str | None]) -> dict[str, list[str]]:
    """{branch task id: the downstream tasks it followed}, read from a finished run's states."""
    return {
        t["task_id"]: [d for d in t["downstream"] if states.get(d) not in (None, "skipped")]
        for t in shape["tasks"] if t["kind"] == "branch"
    }


_NOOP_TEMPLATE = '''"""Generated by bench.overhead: the shape of {source} (task ids, groups, dependencies,
trigger rules, and the branch paths its dry run took) with tasks that do nothing."""

import json

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import BranchPythonOperator, PythonOperator
from airflow.sdk import DAG, TaskGroup

SHAPE = json.loads(r"""{shape}""")


def _nothing():
    return None


def _follow(chosen):
    return chosen


with DAG(dag_id={dag_id!r}, schedule=None, catchup=False, default_args={{"retries": 0}},
         tags=["bench"]) as dag:
    groups = {{}}
    for g in SHAPE["groups"]:
        groups[g["group_id"]] = TaskGroup(g["local_id"], parent_group=groups.get(g["parent"]))
    tasks = {{}}
    for t in SHAPE["tasks"]:
        common = {{"task_id": t["local_id"], "task_group": groups.get(t["group"]), "trigger_rule": t["trigger_rule"]}}
        if t["kind"] == "empty":
            tasks[t["task_id"]] = EmptyOperator(**common)
        elif t["kind"] == "branch":
            tasks[t["task_id"]] = BranchPythonOperator(python_callable=_follow, op_args=[t["choices"]], **common)
        else:
            tasks[t["task_id"]] = PythonOperator(python_callable=_nothing, **common)
    for t in SHAPE["tasks"]:
        for upstream in t["upstream"]:
            tasks[upstream] >> tasks[t["task_id"]]
'''


def noop_dag_source(shape: Mapping[str, Any], choices: Mapping[str, list[str]],
                    dag_id: str = NOOP_DAG_ID, source: str = RELEASE_DAG_ID) -> str:
    """A DAG file: `shape`'s tasks doing nothing; branch tasks follow `choices`."""
    tasks = [{**t, "choices": list(choices.get(t["task_id"], []))} for t in shape["tasks"]]
    body = json.dumps({"groups": shape["groups"], "tasks": tasks}, indent=1)
    return _NOOP_TEMPLATE.format(source=source, shape=body, dag_id=dag_id)


# --------------------------------------------------------------------------- one run's figures


def run_figures(live: LiveAirflow, dag_id: str, run_id: str) -> dict[str, Any]:
    """Wall time of the run and, per task, state and start-to-end seconds."""
    run = live.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}").json()
    tis = live.task_instances(run_id, dag_id)
    # A skipped task never ran: no time, rather than the 0 s its equal start and end dates give.
    tasks = {tid: {"state": ti["state"], "seconds": None if ti["state"] == "skipped" else ti_seconds(ti)}
             for tid, ti in sorted(tis.items())}
    task_sum = sum(t["seconds"] or 0.0 for t in tasks.values())
    wall = run_seconds(run)
    return {
        "run_id": run_id,
        "state": run["state"],
        "wall_s": wall,
        "task_sum_s": task_sum,
        "gap_s": wall - task_sum if wall is not None else None,
        "tasks": tasks,
    }


def run_one(live: LiveAirflow, dag_id: str, conf: Mapping[str, Any]) -> dict[str, Any]:
    run_id = live.trigger(dict(conf), dag_id=dag_id)
    state = wait_for_runs(live, dag_id, [run_id], RUN_TIMEOUT_SECONDS)[run_id]
    if state != "success":
        raise RuntimeError(f"{dag_id} run {run_id} ended {state}; logs in {live.home}")
    return run_figures(live, dag_id, run_id)


def summarize(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Medians over runs: wall, sum of task times, time between tasks, and per task."""
    task_ids = sorted({tid for r in runs for tid in r["tasks"]})
    tasks = {}
    for tid in task_ids:
        states = sorted({r["tasks"][tid]["state"] for r in runs if tid in r["tasks"]})
        tasks[tid] = {"median_s": median(r["tasks"].get(tid, {}).get("seconds") for r in runs),
                      "state": "/".join(s or "none" for s in states)}
    ran = [sum(1 for t in r["tasks"].values() if t["state"] == "success") for r in runs]
    return {
        "run_s": [r["wall_s"] for r in runs],
        "median_run_s": median(r["wall_s"] for r in runs),
        "median_task_sum_s": median(r["task_sum_s"] for r in runs),
        "median_gap_s": median(r["gap_s"] for r in runs),
        "tasks_run": max(ran) if ran else 0,
        "tasks": tasks,
        "runs": list(runs),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def compare(real: Sequence[Mapping[str, Any]], noop: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The JSON: both sides summarized, `ratio` (median wall, real / no-op) and `task_ratio`
    (median sum of task times), and whether both executed and skipped the same tasks."""
    real_s, noop_s = summarize(real), summarize(noop)
    same = all(
        {tid: t["state"] for tid, t in a["tasks"].items()} == {tid: t["state"] for tid, t in b["tasks"].items()}
        for a, b in zip(real, noop, strict=False)
    )
    return {
        "runs": len(real),
        "ratio": _ratio(real_s["median_run_s"], noop_s["median_run_s"]),
        "task_ratio": _ratio(real_s["median_task_sum_s"], noop_s["median_task_sum_s"]),
        "extra_run_s": (real_s["median_run_s"] or 0) - (noop_s["median_run_s"] or 0),
        "same_task_states": same,
        "real": real_s,
        "noop": noop_s,
    }


# --------------------------------------------------------------------------- the live part


def measure(runs: int = DEFAULT_RUNS, workdir: Path | None = None,
            progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Sandbox + live Airflow, a warm-up dry run, then `runs` dry runs and `runs` no-op runs."""
    if runs < 1:
        raise ValueError(f"runs={runs}: must be >= 1")
    say = progress or (lambda _msg: None)
    started = time.monotonic()
    load_at_start = list(os.getloadavg())  # other work on the machine skews the figures
    with work_dir(workdir) as root, sandbox_up(root / "sandbox") as sandbox:
        folder = dags_folder(root)
        say(f"sandbox up; starting Airflow in {root / 'airflow'}")
        with start_live_airflow(root / "airflow", connections=sandbox_connections(sandbox),
                                dags_folder=folder, extra_env=AIRFLOW_ENV) as live:
            wait_for_dags(live, [RELEASE_DAG_ID])
            say("warm-up dry run (untimed)")
            warmup = run_one(live, RELEASE_DAG_ID, DRY_RUN_CONF)
            shape = release_dag_shape(live.env)
            choices = branch_choices(shape, {t: v["state"] for t, v in warmup["tasks"].items()})
            (folder / f"{NOOP_DAG_ID}.py").write_text(noop_dag_source(shape, choices))
            wait_for_dags(live, [NOOP_DAG_ID])
            real: list[dict[str, Any]] = []
            noop: list[dict[str, Any]] = []
            for index in range(runs):
                order = [(RELEASE_DAG_ID, DRY_RUN_CONF, real), (NOOP_DAG_ID, {}, noop)]
                for dag_id, conf, into in order if index % 2 == 0 else reversed(order):
                    into.append(run_one(live, dag_id, conf))
                    say(f"run {index + 1}/{runs} {dag_id}: {into[-1]['wall_s']:.1f}s")
    result = compare(real, noop)
    result["seconds"] = time.monotonic() - started
    result["machine"] = {**machine(), "loadavg_start": load_at_start}
    return result


# --------------------------------------------------------------------------- the table


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _fmt_ratio(a: float | None, b: float | None) -> str:
    # EmptyOperator tasks never reach a worker: their ~0 s times make no meaningful ratio.
    if a is None or b is None or min(a, b) < 0.01:
        return "-"
    return f"{a / b:.2f}x"


def format_table(result: Mapping[str, Any]) -> str:
    real, noop = result["real"], result["noop"]
    lines = [f"{'task (median of ' + str(result['runs']) + ' runs)':<32} {'dry-run s':>10} {'no-op s':>9} "
             f"{'ratio':>7}  state"]
    for tid, r in real["tasks"].items():
        n = noop["tasks"].get(tid, {})
        lines.append(f"{tid:<32} {_fmt(r['median_s']):>10} {_fmt(n.get('median_s')):>9} "
                     f"{_fmt_ratio(r['median_s'], n.get('median_s')):>7}  {r['state']}")
    lines.append("")
    lines.append(f"{'per run (median)':<32} {'dry-run s':>10} {'no-op s':>9} {'ratio':>7}")
    for label, key in (("wall (run start -> end)", "median_run_s"), ("sum of task times", "median_task_sum_s"),
                       ("between tasks (wall - sum)", "median_gap_s")):
        lines.append(f"{label:<32} {_fmt(real[key]):>10} {_fmt(noop[key]):>9} {_fmt_ratio(real[key], noop[key]):>7}")
    per_task_real = _ratio(real["median_task_sum_s"], real["tasks_run"])
    per_task_noop = _ratio(noop["median_task_sum_s"], noop["tasks_run"])
    lines.append(f"{'per task run (sum / tasks run)':<32} {_fmt(per_task_real):>10} {_fmt(per_task_noop):>9} "
                 f"{_fmt_ratio(per_task_real, per_task_noop):>7}")
    lines.append(f"{'tasks run':<32} {real['tasks_run']:>10} {noop['tasks_run']:>9}")
    lines.append("")
    lines.append(f"ratio (median wall, dry run / no-op): {_fmt(result['ratio'])}x; "
                 f"task_ratio (sum of task times): {_fmt(result['task_ratio'])}x; "
                 f"same tasks run and skipped: {'yes' if result['same_task_states'] else 'NO'}")
    if "seconds" in result:
        lines.append(f"(walls {', '.join(_fmt(s, '.1f') for s in real['run_s'])} s dry run; "
                     f"{', '.join(_fmt(s, '.1f') for s in noop['run_s'])} s no-op; bench {result['seconds']:.0f} s)")
    if "machine" in result:
        lines.append(f"({describe_machine(result['machine'])})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="timed runs of each DAG")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it (Airflow logs, sandbox)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs {args.runs}: must be >= 1")
    print(f"bench.overhead: {args.runs} dry runs and {args.runs} no-op runs on a live Airflow", file=sys.stderr)
    return measure_and_emit("bench.overhead", lambda: measure(args.runs, args.keep, progress=say), format_table,
                            args.json, (RuntimeError, TimeoutError, LookupError))


if __name__ == "__main__":
    sys.exit(main())
