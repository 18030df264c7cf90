"""The built-in PromQL: Istio labels, one query for both versions, no injection."""

from __future__ import annotations

import pytest

from istio_canary.core.promql import (
    counter_snapshot_query,
    error_count_query,
    error_ratio_graph_query,
    metric_label_for,
    p99_query,
    request_count_query,
    scrape_time_query,
)
from istio_canary.core.request import ReleaseRequest
from istio_canary.core.samples import (
    MeasuredSpan,
)
from istio_canary.core.validation import ValidationError
from tests.helpers import INJECTIONS, LEGAL_VERSIONS

# --------------------------------------------------------------------------- built-in queries


def test_builtin_queries_use_istio_labels_one_query_for_both_versions() -> None:
    selector = (
        '{reporter="destination",destination_service_name="reviews",'
        'destination_workload_namespace="shop",destination_version=~"v1|v2"'
    )
    assert request_count_query("reviews", "shop", ["v1", "v2"], 30) == (
        f"sum by (destination_version) (increase(istio_requests_total{selector}}}[30s]))"
    )
    assert error_count_query("reviews", "shop", ["v1", "v2"], 30) == (
        f'sum by (destination_version) (increase(istio_requests_total{selector},response_code=~"5.."}}[30s]))'
    )
    assert p99_query("reviews", "shop", ["v1", "v2"], 3600) == (
        "histogram_quantile(0.99, sum by (le, destination_version) "
        f"(increase(istio_request_duration_milliseconds_bucket{selector}}}[3600s])))"
    )
    assert counter_snapshot_query("reviews", "shop", ["v1", "v2"]) == (
        f"sum by (destination_version, response_code) (istio_requests_total{selector}}})"
    )


@pytest.mark.parametrize(
    ("version_label", "metric_label"),
    [
        ("version", "destination_version"),
        ("app.kubernetes.io/version", "destination_canonical_revision"),
        ("service.istio.io/canonical-revision", "destination_canonical_revision"),
    ],
)
def test_every_builtin_query_selects_and_groups_by_the_requests_metric_label(
    version_label: str, metric_label: str
) -> None:
    req = ReleaseRequest(
        service="reviews",
        namespace="shop",
        stable_version="v1",
        canary_version="v2",
        version_label=version_label,
    )
    label = req.metric_version_label
    assert label == metric_label == metric_label_for(version_label)
    versions = [req.canary_version, req.stable_version]
    queries = [
        request_count_query("reviews", "shop", versions, 30, label=label),
        error_count_query("reviews", "shop", versions, 30, label=label),
        p99_query("reviews", "shop", versions, 30, label=label),
        counter_snapshot_query("reviews", "shop", versions, label=label),
        scrape_time_query("reviews", "shop", versions, label=label),
        error_ratio_graph_query("reviews", "shop", versions, label=label),
    ]
    other = ({"destination_version", "destination_canonical_revision"} - {metric_label}).pop()
    for query in queries:
        assert f'{metric_label}=~"v2|v1"' in query, query
        assert other not in query, query
    assert queries[0].startswith(f"sum by ({metric_label}) (")
    assert f"sum by (le, {metric_label})" in queries[2]
    assert queries[3].startswith(f"sum by ({metric_label}, response_code) (")


def test_metric_label_is_one_of_istios_version_labels() -> None:
    for bad in ('destination_version"} or vector(1) #', "version", "destination_workload", ""):
        with pytest.raises(ValidationError) as error:
            request_count_query("reviews", "shop", ["v1"], 30, label=bad)
        assert error.value.field == "metric_label" and error.value.value == bad
        assert "destination_version, destination_canonical_revision" in str(error.value)
    with pytest.raises(ValidationError) as error:
        metric_label_for("app")
    assert error.value.field == "version_label" and "use one of: version," in str(error.value)


@pytest.mark.parametrize(
    ("position", "bad"),
    [
        (p, b)
        for p in ("service", "namespace", "version")
        for b in INJECTIONS
        if not (p == "version" and b in LEGAL_VERSIONS)
    ],
)
def test_builtin_queries_refuse_injection(bad: str, position: str) -> None:
    args = {"service": "reviews", "namespace": "shop", "versions": ["v1", "v2"]}
    if position == "version":
        args["versions"] = ["v1", bad]
    else:
        args[position] = bad
    for build in (request_count_query, error_count_query, p99_query):
        with pytest.raises(ValidationError) as error:
            build(args["service"], args["namespace"], args["versions"], 30)
        assert error.value.field == position and error.value.value == bad


@pytest.mark.parametrize("window", [0, -30, 2.5, "30s", True, None])
def test_windows_are_positive_whole_seconds(window: object) -> None:
    with pytest.raises(ValidationError, match="window_seconds"):
        request_count_query("reviews", "shop", ["v1"], window)  # type: ignore[arg-type]


def test_window_seconds_cover_the_interval() -> None:
    assert MeasuredSpan(100.0, 130.0).seconds == 30
    assert MeasuredSpan(100.0, 130.2).seconds == 31
    assert MeasuredSpan(100.0, 100.0).seconds == 1
