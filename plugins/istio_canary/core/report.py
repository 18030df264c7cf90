"""The release report: one row per phase, and the outcome with its reason (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _phase_row(phase: str, route: Mapping[str, Any] | None, analysis: Mapping[str, Any] | None) -> dict[str, Any]:
    stats = (analysis or {}).get("stats") or {}
    weight = (route or {}).get("canary_weight")
    if phase == "targeted" and route is not None:
        weight = "match"
    if phase == "mirror" and route is not None:
        # Clients get only stable's answers: the canary's share is copies, not a weight.
        weight = f"mirror {float(route.get('mirror_percent') or 0):g}%"
    return {
        "phase": phase,
        "weight": weight,
        "requests": stats.get("requests"),
        "error_rate": stats.get("error_rate"),
        "p99_ms": stats.get("p99_ms"),
        "verdict": (analysis or {}).get("outcome"),
        "reason": (analysis or {}).get("summary"),
        "duration_seconds": stats.get("duration_seconds"),
    }


def build_report(
    *,
    phases: Sequence[str],
    routes: Mapping[str, Mapping[str, Any] | None],
    analyses: Mapping[str, Mapping[str, Any] | None],
    promoted: Mapping[str, Any] | None,
    rolled_back: Mapping[str, Any] | None,
    validated: Mapping[str, Any] | None,
    rollback_failed: Mapping[str, Any] | None = None,
    aborted: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Phases that did not run (skipped) are left out. The outcome says why, in one line.

    `rollback_failed`: what a rollback that finally failed read back ({canary_weight,
    match_route, error}); the outcome is then `rollback_failed`, never `rolled_back`.
    `aborted`: {by, at, tasks} when a person aborted the release (the release page's Abort).
    """
    rows = [_phase_row(p, routes.get(p), analyses.get(p)) for p in phases if routes.get(p) or analyses.get(p)]
    failed = next((r for r in rows if r["verdict"] not in (None, "pass", "dry_run")), None)
    if validated is None:
        outcome, reason = "failed", "the release parameters were invalid; nothing was changed"
    elif validated.get("dry_run"):
        outcome, reason = "dry_run", "dry run: every step planned and logged, nothing written"
    elif promoted and not rolled_back:
        outcome, reason = "promoted", f"all traffic to {validated.get('canary_version')}"
    elif rollback_failed is not None:
        weight = rollback_failed.get("canary_weight")
        where = "at an unknown weight" if weight is None else f"at canary weight {weight}%"
        if rollback_failed.get("match_route"):
            where += " and through the canary match route"
        outcome, reason = "rollback_failed", (
            f"ROLLBACK FAILED: traffic may still reach {validated.get('canary_version')} {where}; "
            f"fix routing by hand or clear the rollback task ({rollback_failed.get('error')})"
        )
    elif aborted is not None:
        during = f" during {', '.join(aborted['tasks'])}" if aborted.get("tasks") else ""
        if (rolled_back or {}).get("changed"):
            outcome, reason = "rolled_back", f"aborted by {aborted.get('by')}{during}; routing put back"
        else:
            outcome, reason = "failed", f"aborted by {aborted.get('by')}{during}, before routing was changed"
    elif failed is not None:
        outcome, reason = "rolled_back", f"{failed['phase']}: {failed['reason']}"
    elif rolled_back is not None:
        outcome, reason = "rolled_back", "a release task failed (see the first failed task's log)"
    else:
        outcome, reason = "failed", "the release stopped before routing was changed (see the failed task)"
    return {
        "service": (validated or {}).get("service"),
        "namespace": (validated or {}).get("namespace"),
        "stable_version": (validated or {}).get("stable_version"),
        "canary_version": (validated or {}).get("canary_version"),
        "outcome": outcome,
        "reason": reason,
        "aborted_by": (aborted or {}).get("by"),
        "phases": rows,
    }


def _cell(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{100 * float(value):.2f}%"
    if kind == "ms":
        return f"{float(value):.0f}ms"
    if kind == "int":
        return f"{float(value):.0f}"
    if kind == "s":
        return f"{float(value):.0f}s"
    return str(value)


def render_report(report: Mapping[str, Any]) -> str:
    header = ("phase", "weight", "requests", "error rate", "p99", "verdict", "duration")
    kinds = ("str", "str", "int", "pct", "ms", "str", "s")
    keys = ("phase", "weight", "requests", "error_rate", "p99_ms", "verdict", "duration_seconds")
    rows = [header] + [tuple(_cell(row.get(k), kind) for k, kind in zip(keys, kinds, strict=True))
                       for row in report["phases"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        f"release {report.get('namespace')}/{report.get('service')} "
        f"{report.get('stable_version')} -> {report.get('canary_version')}: "
        f"{str(report['outcome']).upper()}: {report['reason']}"
    ]
    lines += ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in rows]
    return "\n".join(lines)
