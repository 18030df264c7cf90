"""`make demo`: two canary releases on the local sandbox, run by Airflow (`airflow dags test`).

1. a healthy v2: 10% -> 50% -> 100%, judged on Prometheus at each step, promoted;
2. a v2 that answers 5% of requests with errors: stopped during the 10% step, rolled back.

Everything it starts (the sandbox, with its Prometheus) runs in its own process group under
`.sandbox-demo/` and is stopped at the end, also on error or Ctrl-C. Airflow's state lives in
`.demo-airflow/`; each release's full task log is kept there.
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

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
    subprocess.run([sys.executable, "-m", "sandbox", *args, "--state-dir", str(STATE_DIR)],
                   cwd=PROJECT_ROOT, check=True, stdout=subprocess.DEVNULL)


def sandbox_env() -> dict[str, str]:
    return dict(shlex.split(line)[0].split("=", 1) for line in (STATE_DIR / "env").read_text().splitlines() if line)


def post(url: str, payload: dict[str, Any]) -> None:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10):
        pass


def routes(kubeconfig: str) -> str:
    from kubernetes import client, config

    api = client.CustomObjectsApi(config.new_client_from_config(config_file=kubeconfig))
    vs = api.get_namespaced_custom_object("networking.istio.io", "v1", "bookinfo", "virtualservices", "reviews")
    owned = vs["spec"]["http"][-1]["route"]
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
    env_file = sandbox_env()
    AIRFLOW_HOME.mkdir(exist_ok=True)
    env = airflow_env(AIRFLOW_HOME, {"AIRFLOW_CONN_KUBERNETES_DEFAULT": env_file["AIRFLOW_CONN_KUBERNETES_DEFAULT"],
                       "AIRFLOW_CONN_PROMETHEUS_DEFAULT": env_file["AIRFLOW_CONN_PROMETHEUS_DEFAULT"]})
    say("Preparing Airflow's metadata database (.demo-airflow/)")
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    sandbox("set", "--rps", "200")
    print(f"   routing now: {routes(env_file['KUBECONFIG'])}")

    say("Release 1: a healthy reviews v2 (bake 8 s per step)")
    release(1, {**RELEASE, "bake_seconds": 8}, env)
    print(f"   routing now: {routes(env_file['KUBECONFIG'])}")

    say("Release 2: back to v1, and v2 now fails 5% of requests (v1 0.5%); bake 60 s per step")
    post(f"{env_file['SANDBOX_CONTROL_URL']}/control/reset", {})
    sandbox("set", "--rps", "200", "--version", "v1", "--error-rate", "0.005")
    sandbox("set", "--version", "v2", "--error-rate", "0.05")
    print(f"   routing now: {routes(env_file['KUBECONFIG'])}")
    release(2, {**RELEASE, "bake_seconds": 60}, env)
    print(f"   routing now: {routes(env_file['KUBECONFIG'])}")


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
        subprocess.run([sys.executable, "-m", "sandbox", "down", "--state-dir", str(STATE_DIR)], cwd=PROJECT_ROOT)
    return code


if __name__ == "__main__":
    sys.exit(main())
