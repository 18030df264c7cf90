"""What the live benchmarks (bench.overhead, bench.scale) share: a sandbox of their own, a dags
folder holding the release DAG, task-instance timings from the REST API, and process figures
from /proc.

The Airflow side is tools/live_airflow.py (the harness the live tests use); the sandbox side is
sandbox/client.py (`python -m sandbox up|down --state-dir DIR`, as the tests start theirs).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sandbox.client import SandboxInfo, running_sandbox, sandbox_connections
from sandbox.procs import group_members
from tools.live_airflow import PROJECT_ROOT, LiveAirflow

RELEASE_DAG_FILE = PROJECT_ROOT / "dags" / "istio_canary_release.py"
LOCAL_WORKER_TITLE = "airflow worker -- LocalExecutor:"

__all__ = [
    "RELEASE_DAG_FILE",
    "SandboxInfo",
    "busy_local_workers",
    "dags_folder",
    "describe_machine",
    "group_rss_kib",
    "machine",
    "median",
    "run_seconds",
    "sandbox_connections",
    "sandbox_up",
    "seconds_between",
    "ti_seconds",
    "wait_for_dags",
    "wait_for_runs",
    "work_dir",
]


@contextlib.contextmanager
def work_dir(path: Path | None, prefix: str = "bench-live-") -> Iterator[Path]:
    """`path` as given (created, kept afterwards), or a temporary directory removed on exit."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def sandbox_up(state_dir: Path, world: Mapping[str, Any] | None = None) -> contextlib.AbstractContextManager[SandboxInfo]:
    """`python -m sandbox up` in `state_dir` (with `world` as its --config), `down` on exit."""
    return running_sandbox(state_dir, world, timeout=180)


def dags_folder(root: Path, generated: Mapping[str, str] | None = None, *, release_dag: bool = True) -> Path:
    """`root/dags` with a symlink to the shipped release DAG file and `generated` {file name: source}.

    Only the release DAG of dags/: the calendar DAGs are scheduled and not what is measured.
    """
    folder = root / "dags"
    folder.mkdir(parents=True, exist_ok=True)
    if release_dag:
        (folder / RELEASE_DAG_FILE.name).symlink_to(RELEASE_DAG_FILE)
    for name, source in (generated or {}).items():
        (folder / name).write_text(source)
    return folder


def wait_for_dags(live: LiveAirflow, dag_ids: Iterable[str], timeout: float = 180) -> None:
    """Until every DAG in `dag_ids` is parsed and visible in the REST API."""
    pending = set(dag_ids)
    deadline = time.monotonic() + timeout
    while pending:
        pending = {d for d in pending if live.api("GET", f"/dags/{d}").status_code != 200}
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"DAG(s) {sorted(pending)} not parsed after {timeout:.0f}s; "
                               f"see {live.log_path('dag-processor')}")
        time.sleep(1)


def wait_for_runs(live: LiveAirflow, dag_id: str, run_ids: Sequence[str], timeout: float) -> dict[str, str]:
    """{run_id: final state} once every run has finished; TimeoutError naming the unfinished ones."""
    states: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while len(states) < len(run_ids):
        for run_id in run_ids:
            if run_id not in states:
                state = live.run_state(run_id, dag_id)
                if state in ("success", "failed"):
                    states[run_id] = state
        if len(states) < len(run_ids):
            if time.monotonic() > deadline:
                raise TimeoutError(f"runs not finished after {timeout:.0f}s: "
                                   f"{sorted(set(run_ids) - set(states))}; logs in {live.home}")
            time.sleep(2)
    return states


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds from one REST timestamp to another; None when either is missing."""
    begin, finish = parse_time(start), parse_time(end)
    return (finish - begin).total_seconds() if begin and finish else None


def ti_seconds(ti: Mapping[str, Any]) -> float | None:
    """A task instance's start-to-end time (its last try), from the REST API's dates."""
    return seconds_between(ti.get("start_date"), ti.get("end_date"))


def run_seconds(run: Mapping[str, Any]) -> float | None:
    """A DAG run's start-to-end time (running, not queued), from the REST API's dates."""
    return seconds_between(run.get("start_date"), run.get("end_date"))


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass  # gone between listing and reading
    return 0


def group_rss_kib(pgid: int) -> int:
    """Sum of VmRSS (KiB) over the live processes of one process group (shared pages counted
    in each process, as `ps` does)."""
    return sum(_status_kib(pid, "VmRSS") for pid in group_members(pgid))


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def busy_local_workers(scheduler_pgid: int) -> tuple[int, int]:
    """(busy, all) LocalExecutor worker processes of one scheduler: a worker sets its process
    title to `airflow worker -- LocalExecutor: <idle>` while it waits and to the workload's
    name while it supervises a task. A busy worker is one worker slot in use."""
    titles = [_cmdline(pid) for pid in group_members(scheduler_pgid)]
    workers = [t for t in titles if t.startswith(LOCAL_WORKER_TITLE)]
    return sum(1 for t in workers if not t.endswith("<idle>")), len(workers)


def machine() -> dict[str, Any]:
    """What the figures came from: cores, memory, CPU model, OS, load at the time."""
    info: dict[str, Any] = {"nproc": os.cpu_count()}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    info["mem_gib"] = round(_meminfo_kib("MemTotal") / 2**20, 1)
    with contextlib.suppress(OSError):
        release = dict(
            line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line
        )
        info["os"] = release.get("PRETTY_NAME", "").strip('"')
    info["loadavg"] = list(os.getloadavg())
    return info


def describe_machine(info: Mapping[str, Any]) -> str:
    """One line for a table footer: cores, memory, CPU, OS, 1-minute load at start and end."""
    load = f"load {info['loadavg_start'][0]:.1f} -> {info['loadavg'][0]:.1f}" if "loadavg_start" in info else ""
    parts = [f"{info.get('nproc')} cores", f"{info.get('mem_gib')} GiB", info.get("cpu", ""), info.get("os", ""), load]
    return "machine: " + ", ".join(p for p in parts if p)


def _meminfo_kib(field: str) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return 0
