"""Analysis config, built-in PromQL, custom metric templates and result parsing."""

from __future__ import annotations

import json
import math

import pytest

from istio_canary.core.analysis_config import AnalysisConfig, CustomMetric
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
    CounterSnapshot,
    MeasuredSpan,
    Measurement,
    custom_value,
    measurements_from_results,
    values_by_version,
    with_latency,
)
from istio_canary.core.validation import ValidationError

INJECTIONS = [
    'reviews"} or vector(1) #',
    'reviews",destination_version=~".*',
    "reviews}[5m]) or vector(1",
    "Reviews",
    "reviews\n",
    "",
    "a" * 64,
]
# Legal as a version (a Kubernetes label value, e.g. version=Reviews), not as a service or namespace.
LEGAL_VERSIONS = {"Reviews"}

# --------------------------------------------------------------------------- AnalysisConfig


def test_config_defaults_and_unrelated_keys_ignored() -> None:
    config = AnalysisConfig.from_params({"bake_seconds": 120, "service": "reviews", "steps": [10, 100]})
    assert config.bake_seconds == 120
    assert config.check_interval_seconds == 5
    assert config.min_requests == 50
    assert config.max_error_rate == 0.01
    assert config.max_p99_ms == 500
    assert config.latency_tolerance == 0.2
    assert config.alpha == 0.01
    assert config.max_inconclusive == 3
    assert config.max_bake_seconds == 360
    assert config.baseline_window_seconds == 3600
    assert config.custom_metrics == ()


def test_config_reads_values_and_round_trips_through_json() -> None:
    params = {
        "bake_seconds": "300",
        "check_interval_seconds": 10,
        "min_requests": 200.0,
        "max_error_rate": "0.02",
        "max_p99_ms": 250,
        "latency_tolerance": 0.1,
        "alpha": 0.05,
        "max_inconclusive": 0,
        "max_bake_seconds": 600,
        "baseline_window_seconds": 1800,
        "custom_metrics": [
            {
                "name": "queue_depth",
                "query": 'max(queue_depth{app="{service}",version="{version}"})',
                "direction": "lower",
                "threshold": 100,
                "compare_to_stable": 0.5,
            }
        ],
    }
    config = AnalysisConfig.from_params(params)
    assert (config.bake_seconds, config.check_interval_seconds, config.min_requests) == (300, 10, 200)
    assert (config.max_error_rate, config.alpha, config.max_inconclusive) == (0.02, 0.05, 0)
    assert config.custom_metrics[0].compare_to_stable == 0.5
    again = AnalysisConfig.from_params(json.loads(json.dumps(config.to_dict())))
    assert again == config


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("bake_seconds", 0),
        ("bake_seconds", -5),
        ("bake_seconds", 2.5),
        ("bake_seconds", True),
        ("bake_seconds", "soon"),
        ("check_interval_seconds", 0),
        ("check_interval_seconds", 301),
        ("min_requests", 0),
        ("max_error_rate", 0),
        ("max_error_rate", 1),
        ("max_error_rate", float("nan")),
        ("max_p99_ms", 0),
        ("latency_tolerance", -0.1),
        ("alpha", 0),
        ("alpha", 0.5),
        ("max_inconclusive", -1),
        ("max_bake_seconds", 299),
        ("baseline_window_seconds", 0),
        ("custom_metrics", "sum(up)"),
        ("custom_metrics", [{"name": "x"}]),
    ],
)
def test_config_rejects_bad_values_naming_field_and_value(key: str, value: object) -> None:
    params = {"bake_seconds": 300, key: value}
    with pytest.raises(ValidationError) as error:
        AnalysisConfig.from_params(params)
    assert error.value.field.startswith(key)
    assert key in str(error.value)


def test_config_requires_bake_seconds() -> None:
    with pytest.raises(ValidationError, match="bake_seconds"):
        AnalysisConfig.from_params({"check_interval_seconds": 5})


def test_config_rejects_duplicate_custom_metric_names() -> None:
    metric = {"name": "m", "query": "sum(up)", "direction": "lower", "threshold": 1}
    with pytest.raises(ValidationError, match="duplicate names: m"):
        AnalysisConfig.from_params({"bake_seconds": 60, "custom_metrics": [metric, metric]})


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
    req = ReleaseRequest(service="reviews", namespace="shop", stable_version="v1", canary_version="v2",
                         version_label=version_label)
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
    [(p, b) for p in ("service", "namespace", "version") for b in INJECTIONS
     if not (p == "version" and b in LEGAL_VERSIONS)],
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


# --------------------------------------------------------------------------- custom metrics


def test_custom_metric_renders_promql_with_its_own_braces() -> None:
    metric = CustomMetric(
        name="errors_per_s",
        query='sum(rate(app_errors_total{app="{service}",ns="{namespace}",version="{version}"}[{window}]))',
        direction="lower",
        threshold=1.5,
    )
    rendered = metric.render(service="reviews", namespace="shop", version="v2", window_seconds=60)
    assert rendered == 'sum(rate(app_errors_total{app="reviews",ns="shop",version="v2"}[60s]))'
    assert metric.placeholders == {"service", "namespace", "version", "window"}


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ('sum(x{app="{svc}"})', "unknown placeholder {svc}"),
        ("sum(x{app={Service}})", "unknown placeholder {Service}"),
        ('sum(x{app="{service}"})}', "unbalanced"),
        ('sum(x{app="{service}")', "unbalanced"),
        ("{{service}", "unbalanced"),
        ("", "non-empty"),
    ],
)
def test_custom_metric_rejects_bad_templates(query: str, problem: str) -> None:
    with pytest.raises(ValidationError, match="query") as error:
        CustomMetric(name="m", query=query, direction="lower", threshold=1)
    assert problem in str(error.value)


@pytest.mark.parametrize("bad", INJECTIONS)
def test_custom_metric_render_refuses_injection(bad: str) -> None:
    metric = CustomMetric(
        name="m", query='sum(x{app="{service}",v="{version}"})', direction="lower", threshold=1
    )
    for kwargs in ({"service": bad}, {"namespace": bad}, {"version": bad}):
        if "version" in kwargs and bad in LEGAL_VERSIONS:
            continue
        values = {"service": "reviews", "namespace": "shop", "version": "v2", **kwargs}
        with pytest.raises(ValidationError):
            metric.render(window_seconds=30, **values)
    with pytest.raises(ValidationError):
        metric.render(service="reviews", namespace="shop", version="v2", window_seconds="5m) or vector(1")


def test_custom_metric_fields_are_checked() -> None:
    with pytest.raises(ValidationError, match="name"):
        CustomMetric(name="bad name", query="sum(up)", direction="lower", threshold=1)
    with pytest.raises(ValidationError, match="direction"):
        CustomMetric(name="m", query="sum(up)", direction="down", threshold=1)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="threshold"):
        CustomMetric(name="m", query="sum(up)", direction="lower", threshold=float("inf"))
    with pytest.raises(ValidationError, match=r"needs \{version\}"):
        CustomMetric(name="m", query="sum(up)", direction="lower", threshold=1, compare_to_stable=0.1)


def test_custom_metric_direction_and_stable_limit() -> None:
    lower = CustomMetric(
        name="m", query='x{v="{version}"}', direction="lower", threshold=1, compare_to_stable=0.5
    )
    assert lower.stable_limit(10.0) == 15.0 and lower.is_worse(16.0, 15.0) and not lower.is_worse(14.0, 15.0)
    higher = CustomMetric(
        name="m", query='x{v="{version}"}', direction="higher", threshold=1, compare_to_stable=0.5
    )
    assert higher.stable_limit(10.0) == 5.0 and higher.is_worse(4.0, 5.0) and not higher.is_worse(6.0, 5.0)


# --------------------------------------------------------------------------- parsing results


def _sample(version: str | None, value: str, **labels: str) -> dict:
    metric = dict(labels)
    if version is not None:
        metric["destination_version"] = version
    return {"metric": metric, "value": [1700000000.0, value]}


def test_parsers_read_the_version_from_the_metric_label_they_are_given() -> None:
    revision = "destination_canonical_revision"

    def sample(version: str, value: str, **labels: str) -> dict:
        return {"metric": {revision: version, **labels}, "value": [1700000000.0, value]}

    assert values_by_version([sample("2.0", "12")], label=revision) == {"2.0": 12.0}
    assert values_by_version([sample("2.0", "12")]) == {}  # default: destination_version
    result = measurements_from_results(
        ["1.0", "2.0"], requests=[sample("1.0", "100"), sample("2.0", "10")], errors=[sample("2.0", "1")],
        label=revision,
    )
    assert result["1.0"] == Measurement(100.0, 0.0) and result["2.0"] == Measurement(10.0, 1.0)
    snapshot = CounterSnapshot.from_results(
        [sample("2.0", "40", response_code="200"), sample("2.0", "2", response_code="503")],
        at=1.0,
        label=revision,
    )
    assert snapshot.series == {"2.0": {"200": 40.0, "503": 2.0}}
    assert CounterSnapshot.from_results([sample("2.0", "40", response_code="200")], at=1.0).series == {}


def test_measurements_from_results_rounds_counts_and_maps_nan_to_none() -> None:
    result = measurements_from_results(
        ["v1", "v2"],
        requests=[_sample("v1", "1349.7"), _sample("v2", "150.4")],
        errors=[_sample("v1", "6.6"), _sample("v2", "151.2")],
        p99=[_sample("v1", "87.5"), _sample("v2", "NaN")],
        custom={"queue": {"v1": [_sample(None, "3")], "v2": []}},
    )
    assert result["v1"] == Measurement(1350.0, 7.0, 87.5, {"queue": 3.0})
    # Extrapolated errors never exceed requests; NaN and missing become None.
    assert result["v2"] == Measurement(150.0, 150.0, None, {"queue": None})


def test_missing_version_has_zero_requests_and_unanswered_query_is_nan() -> None:
    result = measurements_from_results(["v1", "v2"], requests=[_sample("v1", "10")], errors=[])
    assert result["v2"].requests == 0 and result["v2"].errors == 0 and result["v2"].p99_ms is None
    assert result["v2"].error_rate is None
    broken = measurements_from_results(["v2"], requests=None, errors=[])
    assert math.isnan(broken["v2"].requests) and not broken["v2"].counts_valid
    nan = measurements_from_results(["v2"], requests=[_sample("v2", "NaN")], errors=[])
    assert not nan["v2"].counts_valid


def test_custom_value_needs_exactly_one_finite_sample() -> None:
    assert custom_value([_sample(None, "2.5")]) == 2.5
    assert custom_value([]) is None
    assert custom_value(None) is None
    assert custom_value([_sample(None, "+Inf")]) is None
    assert custom_value([_sample("v1", "1"), _sample("v2", "2")]) is None


def test_counter_snapshots_give_exact_counts_with_resets_and_new_series() -> None:
    start = CounterSnapshot.from_results(
        [
            _sample("v1", "1000", response_code="200"),
            _sample("v1", "10", response_code="503"),
            _sample("v2", "50", response_code="200"),
        ],
        at=100.0,
    )
    now = CounterSnapshot.from_results(
        [
            _sample("v1", "1450", response_code="200"),
            _sample("v1", "12", response_code="503"),
            _sample("v2", "20", response_code="200"),  # reset: a canary pod restarted
            _sample("v2", "4", response_code="500"),  # first 500 since the start
            _sample("v2", "NaN", response_code="404"),  # ignored
        ],
        at=160.0,
    )
    deltas = now.since(start, ["v1", "v2", "v3"])
    assert deltas["v1"] == Measurement(452.0, 2.0)
    assert deltas["v2"] == Measurement(24.0, 4.0)
    assert deltas["v3"] == Measurement(0.0, 0.0)
    restored = CounterSnapshot.from_dict(json.loads(json.dumps(now.to_dict())))
    assert restored.since(start, ["v1", "v2"]) == {k: deltas[k] for k in ("v1", "v2")}
    # From nothing: everything counted so far.
    assert start.since(None, ["v1"])["v1"] == Measurement(1010.0, 10.0)


def test_measurement_helpers() -> None:
    window = Measurement(300.0, 6.0, 120.0, {"q": 1.0})
    earlier = Measurement(100.0, 1.0)
    assert window.minus(earlier) == Measurement(200.0, 5.0, 120.0, {"q": 1.0})
    assert window.error_rate == 0.02
    assert with_latency(Measurement(10.0, 0.0), 55.0, {"q": None}) == Measurement(
        10.0, 0.0, 55.0, {"q": None}
    )
    assert Measurement.from_dict(json.loads(json.dumps(window.to_dict()))) == window
    assert not Measurement(5.0, 6.0).counts_valid
    assert not Measurement(-1.0, 0.0).counts_valid
