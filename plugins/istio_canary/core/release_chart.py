"""The release page's charts (pure): canary vs stable error rate and p99 over a release, from
Prometheus range queries, drawn as inline SVG with the step boundaries and verdicts marked.

No JavaScript, no CDN: the page must render where the UI's machine has no internet. The SVG's
classes are its contract (the browser test reads them): `release-chart` per chart,
`series series-canary` / `series series-stable` paths, `marker marker-step` /
`marker marker-verdict verdict-<outcome>` / `marker-promote` / `marker-rollback` /
`marker-abort` groups, each with its label.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from typing import Any

from istio_canary.core.promql import error_count_query, p99_query, request_count_query
from istio_canary.core.release_page import Marker
from istio_canary.core.request import ReleaseRequest

WIDTH, HEIGHT = 880, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 44
# Points per chart: enough for a smooth line, few enough for a light page.
TARGET_POINTS = 240
MIN_RATE_WINDOW_SECONDS = 30
COLOURS = {"canary": "#d9480f", "stable": "#1c7ed6"}
MARKER_COLOURS = {"step": "#495057", "pass": "#2b8a3e", "fail": "#c92a2a", "inconclusive": "#e67700",
                  "dry_run": "#868e96", "promote": "#2b8a3e", "rollback": "#c92a2a", "abort": "#862e9c"}


@dataclass(frozen=True)
class ChartRange:
    start: float
    end: float
    step: int
    window: int  # the rate window each point averages over (seconds)


@dataclass
class ChartData:
    """Both charts of a release: the range, each metric's series by role, the PromQL, or why not."""

    span: ChartRange
    series: dict[str, dict[str, list[tuple[float, float]]]] = field(default_factory=dict)
    queries: dict[str, str] = field(default_factory=dict)
    error: str | None = None


def chart_range(start: float, end: float | None, now: float, *, lead_seconds: int = 60) -> ChartRange:
    """From a minute before the run to its end (or now), about TARGET_POINTS points."""
    begin = start - lead_seconds
    finish = max(min(end if end is not None else now, now), begin + 60)
    step = max(1, math.ceil((finish - begin) / TARGET_POINTS))
    return ChartRange(begin, finish, step, max(MIN_RATE_WINDOW_SECONDS, 2 * step))


def chart_queries(request: ReleaseRequest, window_seconds: int) -> dict[str, str]:
    """{"error_rate": ..., "p99_ms": ...}: one series per version (canary and stable)."""
    versions = (request.canary_version, request.stable_version)
    args = (request.service, request.namespace, versions, window_seconds)
    label = request.metric_version_label
    errors = error_count_query(*args, label=label)
    requests = request_count_query(*args, label=label)
    # A version without 5xx has no error series: `or requests * 0` draws it at 0, not as a gap.
    return {"error_rate": f"({errors} or {requests} * 0) / {requests}", "p99_ms": p99_query(*args, label=label)}


def series_by_role(
    matrix: Sequence[Mapping[str, Any]], label: str, request: ReleaseRequest
) -> dict[str, list[tuple[float, float]]]:
    """{"canary": [(t, v)], "stable": [...]} from a range query's matrix; NaN and Inf dropped."""
    roles = {request.canary_version: "canary", request.stable_version: "stable"}
    out: dict[str, list[tuple[float, float]]] = {}
    for item in matrix:
        role = roles.get(str((item.get("metric") or {}).get(label)))
        if role is None:
            continue
        points = []
        for t, raw in item.get("values") or []:
            try:
                value = float(raw)
            except (TypeError, ValueError):
                continue
            if math.isfinite(value):
                points.append((float(t), value))
        out.setdefault(role, []).extend(points)
    return {role: sorted(points) for role, points in out.items()}


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= value)


def _fmt(value: float, unit: str) -> str:
    if unit == "%":
        return f"{100 * value:.3g}%"
    return f"{value:.3g} {unit}"


@dataclass(frozen=True)
class _Frame:
    start: float
    end: float
    top: float

    def x(self, t: float) -> float:
        span = max(self.end - self.start, 1e-9)
        return LEFT + (WIDTH - LEFT - RIGHT) * (t - self.start) / span

    def y(self, v: float) -> float:
        return HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * min(v, self.top) / self.top


def render_chart(
    title: str, unit: str, series: Mapping[str, Sequence[tuple[float, float]]], marks: Sequence[Marker],
    span: ChartRange, metric: str,
) -> str:
    """One chart as an `<svg>` element: axes, a path per version, a line per marker."""
    highest = max((v for points in series.values() for _, v in points), default=0.0)
    # All-zero series (a healthy error rate) still get a readable scale: 1% or 100 ms.
    top = _nice_max(highest or (0.01 if unit == "%" else 100.0))
    frame = _Frame(span.start, span.end, top)
    parts = [
        f'<svg class="release-chart" data-metric="{escape(metric)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="100%" role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{LEFT}" y="16" class="chart-title" font-size="13" font-weight="bold">{escape(title)}</text>',
        *_axes(frame, unit),
        *(_marker(frame, mark, index) for index, mark in enumerate(m for m in marks if span.start <= m.at <= span.end)),
        *_paths(frame, series, span.step),
        *_legend(series),
        "</svg>",
    ]
    return "\n".join(parts)


def _axes(frame: _Frame, unit: str) -> list[str]:
    bottom, right = HEIGHT - BOTTOM, WIDTH - RIGHT
    out = [f'<line x1="{LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#adb5bd"/>',
           f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="#adb5bd"/>']
    for i in range(5):
        value = frame.top * i / 4
        y = frame.y(value)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#f1f3f5"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{_fmt(value, unit)}</text>')
    for i in range(5):
        t = frame.start + (frame.end - frame.start) * i / 4
        label = datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")
        anchor = ("start", "middle", "middle", "middle", "end")[i]
        out.append(f'<text x="{frame.x(t):.1f}" y="{bottom + 16}" text-anchor="{anchor}" font-size="11">{label}</text>')
    return out


def _paths(frame: _Frame, series: Mapping[str, Sequence[tuple[float, float]]], step: int) -> list[str]:
    out = []
    for role in ("stable", "canary"):
        points = [(t, v) for t, v in series.get(role, ()) if frame.start <= t <= frame.end]
        if not points:
            continue
        # A gap (no requests, so no ratio) starts a new segment rather than a line across it.
        moves = ["M" if i == 0 or t - points[i - 1][0] > 1.5 * step else "L" for i, (t, _) in enumerate(points)]
        d = " ".join(f"{move}{frame.x(t):.1f},{frame.y(v):.1f}" for move, (t, v) in zip(moves, points, strict=True))
        out.append(f'<path class="series series-{role}" data-points="{len(points)}" d="{d}" fill="none" '
                   f'stroke="{COLOURS[role]}" stroke-width="2"/>')
    return out


def _marker(frame: _Frame, mark: Marker, index: int) -> str:
    x = frame.x(mark.at)
    colour = MARKER_COLOURS.get(mark.outcome if mark.kind == "verdict" else mark.kind, "#495057")
    classes = f"marker marker-{mark.kind}" + (f" verdict-{mark.outcome}" if mark.kind == "verdict" else "")
    dash = ' stroke-dasharray="4 3"' if mark.kind == "step" else ""
    # Labels alternate between two rows so neighbouring markers stay readable.
    label_y = TOP + 10 + 12 * (index % 2)
    # A label that would run past the right edge goes to the line's left (about 6px a character).
    near_end = x + 3 + 6 * len(mark.label) > WIDTH - RIGHT
    label_x, anchor = (x - 3, "end") if near_end else (x + 3, "start")
    return (f'<g class="{classes}" data-phase="{escape(mark.phase)}">'
            f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{HEIGHT - BOTTOM}" stroke="{colour}"{dash}/>'
            f'<text x="{label_x:.1f}" y="{label_y}" text-anchor="{anchor}" font-size="10" fill="{colour}">'
            f"{escape(mark.label)}</text></g>")


def _legend(series: Mapping[str, Sequence[tuple[float, float]]]) -> list[str]:
    out = []
    for i, role in enumerate(("canary", "stable")):
        x = WIDTH - RIGHT - 160 + 80 * i
        y = HEIGHT - 8
        note = "" if series.get(role) else " (no data)"
        out.append(f'<g class="legend legend-{role}"><rect x="{x}" y="{y - 9}" width="10" height="10" '
                   f'fill="{COLOURS[role]}"/><text x="{x + 14}" y="{y}" font-size="11">{role}{note}</text></g>')
    return out
