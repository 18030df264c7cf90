"""`python -m sandbox.demo` (`make demo`): a canary traffic shift in the sandbox, in under a minute.

Brings a sandbox up in `.sandbox-demo/`, shows the seeded VirtualService, reads live
per-version request rates and error ratios from Prometheus, shifts 10% of traffic to v2
through the Kubernetes API (official client, via the sandbox's kubeconfig), shows the rates
again, and stops everything it started, also on error or Ctrl-C.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from sandbox import prometheus

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = PROJECT_ROOT / ".sandbox-demo"
GROUP, VERSION, NAMESPACE, SERVICE = "networking.istio.io", "v1", "bookinfo", "reviews"
SELECTOR = f'reporter="destination",destination_service_name="{SERVICE}",destination_workload_namespace="{NAMESPACE}"'


def sandbox(*args: str) -> None:
    """Run `python -m sandbox ARGS --state-dir .sandbox-demo`, showing its output."""
    command = [sys.executable, "-m", "sandbox", *args, "--state-dir", str(STATE_DIR)]
    print(f"$ python -m sandbox {' '.join(args)} --state-dir {STATE_DIR.name}", flush=True)
    subprocess.run(command, cwd=PROJECT_ROOT, check=True)


def heading(text: str) -> None:
    print(f"\n== {text}", flush=True)


def wait(seconds: float, why: str) -> None:
    print(f"   (waiting {seconds:.0f} s {why})", flush=True)
    time.sleep(seconds)


def print_rates(prometheus_url: str, window: str) -> None:
    rate = f"rate(istio_requests_total{{{SELECTOR}}}[{window}])"
    errors = f'rate(istio_requests_total{{{SELECTOR},response_code=~"5.."}}[{window}])'
    queries = {
        "rps": f"sum by (destination_version) ({rate})",
        "errors": f"sum by (destination_version) ({errors})",
    }
    for name, promql in queries.items():
        print(f"   PromQL {name}: {promql}")
    by_version = {
        r["metric"].get("destination_version", "?"): float(r["value"][1])
        for r in prometheus.query(prometheus_url, queries["rps"])
    }
    errors_by_version = {
        r["metric"].get("destination_version", "?"): float(r["value"][1])
        for r in prometheus.query(prometheus_url, queries["errors"])
    }
    total = sum(by_version.values()) or 1.0
    print(f"   {'version':<8} {'req/s':>8} {'share':>7} {'error ratio':>12}")
    for version in sorted(by_version):
        rps = by_version[version]
        ratio = errors_by_version.get(version, 0.0) / rps if rps else 0.0
        print(f"   {version:<8} {rps:>8.1f} {rps / total:>7.1%} {ratio:>12.3f}")


def shift_to_canary(kubeconfig: Path, canary_weight: int) -> dict[str, Any]:
    from kubernetes import client, config  # imported late: costs a second, needed only here

    api = client.CustomObjectsApi(config.new_client_from_config(config_file=str(kubeconfig)))
    rule = api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "destinationrules", SERVICE)
    if all(s["name"] != "v2" for s in rule["spec"]["subsets"]):
        rule["spec"]["subsets"].append({"name": "v2", "labels": {"version": "v2"}})
        api.replace_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "destinationrules", SERVICE, rule)
        print("   DestinationRule reviews: added subset v2 (labels version=v2)")
    vs = api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "virtualservices", SERVICE)
    vs["spec"]["http"][-1]["route"] = [
        {"destination": {"host": SERVICE, "subset": "v1"}, "weight": 100 - canary_weight},
        {"destination": {"host": SERVICE, "subset": "v2"}, "weight": canary_weight},
    ]
    # replace carries metadata.resourceVersion: a concurrent edit would get a 409, not be lost.
    return api.replace_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "virtualservices", SERVICE, vs)


def read_virtual_service(kubeconfig: Path) -> dict[str, Any]:
    from kubernetes import client, config

    api = client.CustomObjectsApi(config.new_client_from_config(config_file=str(kubeconfig)))
    return api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "virtualservices", SERVICE)


def show(obj: dict[str, Any]) -> None:
    trimmed = {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "metadata": {k: obj["metadata"][k] for k in ("name", "namespace", "resourceVersion")},
        "spec": obj["spec"],
    }
    print("   " + yaml.safe_dump(trimmed, sort_keys=False).replace("\n", "\n   ").rstrip())


def run() -> None:
    heading("Starting the sandbox (Kubernetes API stand-in, traffic generator, Prometheus)")
    sandbox("up")
    env = dict(shlex.split(line)[0].split("=", 1) for line in (STATE_DIR / "env").read_text().splitlines())
    prometheus_url = env["PROMETHEUS_URL"]
    kubeconfig = STATE_DIR / "kubeconfig"

    heading("More traffic (200 req/s) and a 5% error rate for the canary, so both show clearly")
    sandbox("set", "--rps", "200", "--version", "v2", "--error-rate", "0.05")

    heading("The seeded VirtualService: 100% of reviews traffic to subset v1")
    show(read_virtual_service(kubeconfig))

    wait(12, "for traffic to accumulate in Prometheus")
    heading("Live rates from Prometheus (before the shift)")
    print_rates(prometheus_url, "10s")

    heading("Shifting 10% to v2 through the Kubernetes API (official client)")
    show(shift_to_canary(kubeconfig, canary_weight=10))

    wait(12, "for the new split to show in a 10 s rate window")
    heading("Live rates from Prometheus (after the shift: about 90/10)")
    print_rates(prometheus_url, "10s")


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # SIGTERM ends the demo like Ctrl-C does, so the sandbox is always stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
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
        heading("Stopping the sandbox")
        subprocess.run(
            [sys.executable, "-m", "sandbox", "down", "--state-dir", str(STATE_DIR)],
            cwd=PROJECT_ROOT,
            check=False,
        )
    print(f"\ndemo took {time.monotonic() - started:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
