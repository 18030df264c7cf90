"""bench.parse: how long Airflow takes to import our DAG files, against a trivial DAG.

    python -m bench.parse [--runs N] [--dag PATH ...] [--json PATH]

Each sample is a fresh `python -c` process (the venv's interpreter) that times, with
`time.perf_counter()`, exactly one thing: executing the DAG file as a module the way Airflow's
DAG processor loads it (`importlib.util.spec_from_file_location` + `exec_module`). The first
`import airflow.sdk` happens inside that timed region in both files, so the baseline is
"Airflow's own import + a one-line DAG" and the difference is what our file adds on top
(plugins, factory, operators). Interpreter start-up is not timed. AIRFLOW_HOME is a temp dir,
`plugins/` and the repository root are on PYTHONPATH (as Airflow puts its plugins folder on
sys.path). One untimed warm-up per file first (config file creation, OS file cache), then the
files alternate run by run so drift on a shared machine hits all of them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench import measure_and_emit

REPO = Path(__file__).resolve().parent.parent
DAG_FILES: tuple[Path, ...] = (REPO / "dags" / "istio_canary_release.py", REPO / "dags" / "release_calendar.py")
DEFAULT_RUNS = 7
BASELINE_SOURCE = '''"""The baseline: Airflow's own import and one empty DAG."""
from airflow.sdk import DAG

dag = DAG(dag_id="bench_parse_baseline", schedule=None)
'''

_PROBE = r"""
import importlib.util, json, sys, time
path = sys.argv[1]
started = time.perf_counter()
spec = importlib.util.spec_from_file_location("bench_parse_target", path)
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
elapsed = time.perf_counter() - started
from airflow.sdk import DAG
dags = sorted(v.dag_id for v in vars(module).values() if isinstance(v, DAG))
print(json.dumps({"seconds": elapsed, "dags": dags}))
"""


class ProbeError(RuntimeError):
    pass


def probe(path: Path, env: dict[str, str], cwd: Path, timeout: float = 300.0) -> dict[str, Any]:
    """One fresh process: seconds to import `path`, and the DAG ids it defined."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path)],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
        start_new_session=True,
    )
    if done.returncode != 0:
        raise ProbeError(f"importing {path} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def probe_env(home: Path, dags_folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags_folder),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        PYTHONPATH=os.pathsep.join([str(REPO / "plugins"), str(REPO)]),
    )
    return env


def measure(dag_files: Sequence[Path], runs: int = DEFAULT_RUNS, *, warmup: bool = True) -> dict[str, Any]:
    """Median import seconds per file and the baseline's; ratios to the baseline.

    JSON: {"median_s", "baseline_median_s", "ratio"} for the first file, and "files":
    {path: {"median_s", "ratio", "extra_s", "samples_s", "dags"}} for every file.
    """
    if runs < 1:
        raise ValueError("runs must be >= 1")
    files = [Path(f).resolve() for f in dag_files]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"no DAG file at {', '.join(missing)}")
    with tempfile.TemporaryDirectory(prefix="bench-parse-") as tmp:
        root = Path(tmp)
        baseline = root / "baseline_dag.py"
        baseline.write_text(BASELINE_SOURCE)
        env = probe_env(root / "airflow_home", files[0].parent if files else root)
        targets = [baseline, *files]
        for target in targets if warmup else ():  # untimed
            probe(target, env, root)
        samples: dict[Path, list[float]] = {t: [] for t in targets}
        dags: dict[Path, list[str]] = {}
        for run in range(runs):
            order = targets if run % 2 == 0 else list(reversed(targets))
            for target in order:
                outcome = probe(target, env, root)
                samples[target].append(outcome["seconds"])
                dags[target] = outcome["dags"]
    base = statistics.median(samples[baseline])
    per_file = {}
    for f in files:
        median = statistics.median(samples[f])
        per_file[_display(f)] = {
            "median_s": median,
            "ratio": median / base,
            "extra_s": median - base,
            "samples_s": samples[f],
            "dags": dags[f],
        }
    first = per_file[_display(files[0])] if files else {"median_s": base, "ratio": 1.0}
    return {
        "median_s": first["median_s"],
        "baseline_median_s": base,
        "ratio": first["ratio"],
        "runs": runs,
        "baseline_samples_s": samples[baseline],
        "files": per_file,
    }


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def format_table(result: Mapping[str, Any]) -> str:
    lines = [f"{'file':<36} {'median_s':>9} {'extra_s':>8} {'ratio':>7}  dags",
             f"{'baseline (import airflow.sdk + DAG)':<36} {result['baseline_median_s']:>9.3f} {'':>8} {'1.00x':>7}"]
    for name, f in result["files"].items():
        lines.append(f"{name:<36} {f['median_s']:>9.3f} {f['extra_s']:>+8.3f} {f['ratio']:>6.2f}x  "
                     + (", ".join(f["dags"]) or "NONE"))
    lines.append(f"(median of {result['runs']} fresh processes per file)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.parse", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="fresh processes per file (>= 7 for the record)")
    parser.add_argument("--dag", type=Path, action="append", help="DAG file(s) to time (default: ours in dags/)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    files = args.dag or [f for f in DAG_FILES if f.is_file()]
    if not files:
        parser.error(f"no DAG file found: {', '.join(str(f) for f in DAG_FILES)}")
    if args.runs < 7:
        print(f"note: --runs {args.runs} is below 7; fine for a smoke run, not for the record", file=sys.stderr)
    return measure_and_emit("bench.parse", lambda: measure(files, args.runs), format_table, args.json,
                            (ValueError, FileNotFoundError, ProbeError))


if __name__ == "__main__":
    sys.exit(main())
