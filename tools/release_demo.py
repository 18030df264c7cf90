"""`make demo`: two canary releases on the local sandbox, run by Airflow (`airflow dags test`).

1. a healthy v2: 10% -> 50% -> 100%, judged on Prometheus at each step, promoted;
2. a v2 that answers 5% of requests with errors: stopped during the 10% step, rolled back.

Everything it starts (the sandbox, with its Prometheus) runs in its own process group under
`.sandbox-demo/` and is stopped at the end, also on error or Ctrl-C. Airflow's state lives in
`.demo-airflow/`; each release's full task log is kept there.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any

from sandbox.client import SandboxInfo, sandbox_cli, sandbox_connections
from tools.live_airflow import AIRFLOW, PROJECT_ROOT, airflow_env

STATE_DIR = PROJECT_ROOT / ".sandbox-demo"
AIRFLOW_HOME = PROJECT_ROOT / ".demo-airflow"
RELEASE = {"service": "reviews", "namespace": "bookinfo", "stable_version": "v1", "canary_version": "v2",
           "check_interval_seconds": 2, "min_requests": 30,
           # Short demo bakes on the sandbox's modest traffic: planned bakes would stretch them.
           "plan_bake": False}


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def sandbox(*args: str) -> None:
    """`python -m sandbox ARGS --state-dir .sandbox-demo`; its errors shown, CalledProcessError on failure."""
    result = sandbox_cli(*args, "--state-dir", str(STATE_DIR))
    sys.stderr.write(result.stderr)
    result.check_returncode()


def routes(box: SandboxInfo) -> str:
    owned = box.istio_object("virtualservices", "reviews")["spec"]["http"][-1]["route"]
    return ", ".join(f"{d['destination']['subset']} {d.get('weight', 100)}%" for d in owned)


def release(number: int, conf: dict[str, Any], env: dict[str, str]) -> None:
    log = AIRFLOW_HOME / f"release-{number}.log"
    started = time.monotonic()
    with log.open("w") as out:
        result = subprocess.run([AIRFLOW, "dags", "test", "istio_canary_release", "-c", json.dumps(conf)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    lines = log.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("release bookinfo/reviews")), None)
    table = ["(no report: see the log)"]
    if start is not None:  # the report: its headline, then rows until the next log line
        table = [lines[start]] + [line for line in lines[start + 1:start + 8] if not line[:2].isdigit()]
        table = table[: next((i for i, line in enumerate(table[1:], 1) if not line.strip()), len(table))]
    finished = [line for line in lines if "DagRun Finished:" in line]
    state = finished[-1].split("state=", 1)[1].split(",", 1)[0] if finished else "unknown"
    print(f"   airflow dags test exited {result.returncode}; DAG run {state} "
          f"in {time.monotonic() - started:.0f} s; full log: {log.relative_to(PROJECT_ROOT)}")
    print("   " + "\n   ".join(table))


def run() -> None:
    say("Starting the sandbox: Kubernetes API stand-in, traffic generator, real Prometheus")
    sandbox("up")
    box = SandboxInfo.from_state_dir(STATE_DIR)
    AIRFLOW_HOME.mkdir(exist_ok=True)
    env = airflow_env(AIRFLOW_HOME, sandbox_connections(box))
    say("Preparing Airflow's metadata database (.demo-airflow/)")
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    sandbox("set", "--rps", "200")
    print(f"   routing now: {routes(box)}")

    say("Release 1: a healthy reviews v2 (bake 8 s per step)")
    release(1, {**RELEASE, "bake_seconds": 8}, env)
    print(f"   routing now: {routes(box)}")

    say("Release 2: back to v1, and v2 now fails 5% of requests (v1 0.5%); bake 60 s per step")
    box.reset()
    sandbox("set", "--rps", "200", "--version", "v1", "--error-rate", "0.005")
    sandbox("set", "--version", "v2", "--error-rate", "0.05")
    print(f"   routing now: {routes(box)}")
    release(2, {**RELEASE, "bake_seconds": 60}, env)
    print(f"   routing now: {routes(box)}")


def main() -> int:
    def interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    code = 0
    try:
        run()
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        code = 130
    except Exception as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        code = 1
    finally:
        say("Stopping the sandbox")
        stopped = sandbox_cli("down", "--state-dir", str(STATE_DIR))
        print(stopped.stdout + stopped.stderr, end="")
    return code


if __name__ == "__main__":
    sys.exit(main())
