"""`python -m sandbox up|down|status|set|fault`: start, stop, inspect and steer the local sandbox.

up      start the API stand-in, traffic generator and Prometheus in one background
        process group; return when all three answer (idempotent)
down    stop exactly what `up` started (idempotent)
status  health, ports, uptime, behaviour per version, generator CPU (exit 1 if unhealthy)
set     change a service's or version's behaviour while it runs (exit 2 on bad values)
fault   inject faults at run time: API write errors, Prometheus down or erroring, a
        concurrent writer, traffic at zero (`fault --help`; exit 2 on bad values)
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from sandbox.cli.behaviour import cmd_set
from sandbox.cli.common import DEFAULT_STATE_DIR
from sandbox.cli.faults import API_FAULT_KINDS, cmd_fault
from sandbox.cli.lifecycle import cmd_down, cmd_up
from sandbox.cli.status import cmd_status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def with_state_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="default: .sandbox")
        return p

    up = with_state_dir(sub.add_parser("up", help="start the sandbox in the background"))
    up.add_argument("--config", help="world YAML (default: sandbox/default_world.yaml)")
    up.add_argument(
        "--crd-dir",
        default=os.environ.get("SANDBOX_CRDS") or None,
        help="folder with Istio's CRD YAML to validate writes with (default: $SANDBOX_CRDS, else built-in)",
    )
    up.add_argument("--real-apiserver", action="store_true",
                    help="a real etcd + kube-apiserver (built by make setup) instead of the sandbox's API server; "
                         "the pipeline's kubeconfig is then the istio-canary ServiceAccount's token")
    up.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for readiness")
    up.set_defaults(func=cmd_up)

    down = with_state_dir(sub.add_parser("down", help="stop what `up` started"))
    down.set_defaults(func=cmd_down)

    status = with_state_dir(sub.add_parser("status", help="health, ports, behaviour, CPU"))
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    set_ = with_state_dir(sub.add_parser("set", help="change behaviour while running"))
    set_.add_argument("--service", default=None, help="default: the only service, or `reviews`")
    set_.add_argument("--namespace", default=None)
    set_.add_argument("--version", default=None, help="the version whose error rate/latency to change")
    set_.add_argument("--error-rate", dest="error_rate", type=float)
    set_.add_argument("--latency-ms-p50", dest="latency_ms_p50", type=float)
    set_.add_argument("--latency-ms-p99", dest="latency_ms_p99", type=float)
    set_.add_argument("--rps", type=float, help="requests per second for the whole service")
    set_.add_argument("--header-fraction", dest="header_fraction", type=float)
    set_.add_argument("--cookie-fraction", dest="cookie_fraction", type=float)
    set_.add_argument("--clients", type=int,
                      help="returning users keeping the cookies responses set (0: every request a new client)")
    set_.set_defaults(func=cmd_set)
    _add_fault_parser(sub, with_state_dir)
    return parser


FAULT_HELP = """Switch faults on and off while the sandbox runs (each prints every fault's state):

  fault api 500|timeout|409|403 [--count N] [--after M] [--seconds S] [--append]
        the next N writes of Istio objects fail (after letting M through): 500, a 504 after
        S seconds (default 30, as kube-apiserver times a request out), 409 Conflict, 403;
        --append queues this after what is armed. `fault api off` disarms.
  fault prometheus down|errors|up
        down: the Prometheus process is stopped (its port refuses connections); errors: it is
        restarted with --query.max-samples=1, so every aggregating or range query fails with
        its real HTTP 422 error; up: restarted normally on the same port, data kept.
  fault writer start [--service S] [--namespace N] [--interval SECONDS] | stop
        another controller edits the service's VirtualService every second: one route of its
        own (`sandbox-writer`), one header added per edit; it records each edit and any edit
        it finds lost (`fault status --json`).
  fault traffic zero|restore
        the traffic generator sends no requests at all / as configured again.
  fault status [--json]   fault clear   (everything off, Prometheus up)
"""


def _add_fault_parser(sub: Any, with_state_dir: Any) -> None:
    fault = with_state_dir(sub.add_parser("fault", help="inject faults at run time", description=FAULT_HELP,
                                          formatter_class=argparse.RawDescriptionHelpFormatter))
    fault.set_defaults(func=cmd_fault)
    targets = fault.add_subparsers(dest="target", required=True)

    def leaf(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = targets.add_parser(name, help=help_text)
        # Also accepted after the target; SUPPRESS keeps the value given before it.
        parser.add_argument("--state-dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return parser

    api = leaf("api", "fail the next writes of Istio objects")
    api.add_argument("kind", choices=[*API_FAULT_KINDS, "off"])
    api.add_argument("--count", type=int, default=None, help="how many writes fail (default 1)")
    api.add_argument("--after", type=int, default=None, help="let this many writes through first")
    api.add_argument("--seconds", type=float, default=None, help="timeout: seconds before the 504")
    api.add_argument("--append", action="store_true", help="queue after the faults already armed")
    prom = leaf("prometheus", "stop Prometheus, make it answer errors, or bring it back")
    prom.add_argument("action", choices=["down", "errors", "up"])
    writer = leaf("writer", "a concurrent writer editing the VirtualService's other routes")
    writer.add_argument("action", choices=["start", "stop"])
    writer.add_argument("--service", default=None, help="default: the only service, or give it")
    writer.add_argument("--namespace", default=None)
    writer.add_argument("--interval", type=float, default=None, help="seconds between edits (default 1)")
    traffic = leaf("traffic", "stop all traffic, or restore it")
    traffic.add_argument("action", choices=["zero", "restore"])
    status = leaf("status", "every fault's state")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    leaf("clear", "every fault off, Prometheus up")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


