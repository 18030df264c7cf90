"""The release page's charts: range, PromQL, matrix reading, and the SVG's contract."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

from istio_canary.core.release_chart import (
    MIN_RATE_WINDOW_SECONDS,
    TARGET_POINTS,
    chart_queries,
    chart_range,
    render_chart,
    series_by_role,
)
from istio_canary.core.release_page import Marker
from istio_canary.core.request import ReleaseRequest

REQUEST = ReleaseRequest.from_params({"service": "reviews", "namespace": "bookinfo", "stable_version": "v1",
                                      "canary_version": "v2"})
SVG = "{http://www.w3.org/2000/svg}"


def test_range_spans_the_run_from_a_minute_before_with_bounded_points() -> None:
    span = chart_range(10_000.0, 13_600.0, now=20_000.0)
    assert (span.start, span.end) == (9_940.0, 13_600.0)
    assert (span.end - span.start) / span.step <= TARGET_POINTS and span.window == max(MIN_RATE_WINDOW_SECONDS,
                                                                                       2 * span.step)
    running = chart_range(10_000.0, None, now=10_030.0)
    assert running.end == 10_030.0 and running.step == 1 and running.window == MIN_RATE_WINDOW_SECONDS


def test_queries_give_both_versions_their_error_ratio_and_p99() -> None:
    queries = chart_queries(REQUEST, 30)
    assert 'destination_version=~"v2|v1"' in queries["error_rate"]
    assert 'response_code=~"5.."' in queries["error_rate"] and " or " in queries["error_rate"]
    assert "[30s]" in queries["error_rate"] and queries["p99_ms"].startswith("histogram_quantile(0.99,")


def test_matrix_is_read_by_role_dropping_nan() -> None:
    matrix = [
        {"metric": {"destination_version": "v2"}, "values": [[3, "0.05"], [1, "0.1"], [2, "NaN"]]},
        {"metric": {"destination_version": "v1"}, "values": [[1, "0"], [2, "+Inf"]]},
        {"metric": {"destination_version": "v3"}, "values": [[1, "1"]]},
    ]
    assert series_by_role(matrix, "destination_version", REQUEST) == {
        "canary": [(1.0, 0.1), (3.0, 0.05)], "stable": [(1.0, 0.0)]}


def test_chart_is_an_svg_with_both_series_and_the_markers() -> None:
    span = chart_range(1000.0, 1100.0, now=2000.0)
    series = {"canary": [(1000.0 + i, 0.02 * (i > 50)) for i in range(100)], "stable": [(1000.0, 0.0), (1099.0, 0.0)]}
    marks = [Marker(1010.0, "step", "10%", "step_10"), Marker(1040.0, "verdict", "10% fail", "step_10", "fail"),
             Marker(1050.0, "rollback", "rolled back"), Marker(5000.0, "step", "50%", "step_50")]
    svg = render_chart("5xx error rate", "%", series, marks, span, "error_rate")
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg" and root.get("class") == "release-chart" and root.get("data-metric") == "error_rate"
    paths = {p.get("class"): p for p in root.iter(f"{SVG}path")}
    assert set(paths) == {"series series-canary", "series series-stable"}
    assert paths["series series-canary"].get("data-points") == "100"
    assert len(re.findall(r"[ML]", paths["series series-canary"].get("d"))) == 100
    groups = [(g.get("class"), "".join(g.itertext())) for g in root.iter(f"{SVG}g") if "marker" in (g.get("class") or "")]
    # The 50% marker lies outside the range: not drawn.
    assert groups == [("marker marker-step", "10%"), ("marker marker-verdict verdict-fail", "10% fail"),
                      ("marker marker-rollback", "rolled back")]


def test_points_are_inside_the_plot_and_the_y_axis_fits_the_highest_value() -> None:
    span = chart_range(0.0, 100.0, now=100.0)
    svg = render_chart("p99", "ms", {"canary": [(0.0, 180.0), (100.0, 20.0)]}, [], span, "p99_ms")
    root = ET.fromstring(svg)
    d = next(root.iter(f"{SVG}path")).get("d")
    ys = [float(y) for y in re.findall(r"[ML][\d.]+,([\d.]+)", d)]
    assert all(0 < y < 260 for y in ys) and not any(math.isnan(y) for y in ys)
    assert "200 ms" in svg  # the axis' top: the next round number above 180
    assert "stable (no data)" in svg


def test_labels_are_escaped() -> None:
    span = chart_range(0.0, 100.0, now=100.0)
    svg = render_chart("<b>", "%", {}, [Marker(10.0, "abort", "aborted by <x>&")], span, "error_rate")
    ET.fromstring(svg)  # well-formed
    assert "aborted by &lt;x&gt;&amp;" in svg


def test_a_gap_in_a_series_starts_a_new_segment() -> None:
    span = chart_range(0.0, 200.0, now=200.0)
    points = [(float(t), 0.1) for t in (0, 1, 2, 100, 101)]
    d = next(ET.fromstring(render_chart("x", "%", {"canary": points}, [], span, "e")).iter(f"{SVG}path")).get("d")
    assert re.findall(r"[ML]", d) == ["M", "L", "L", "M", "L"]
