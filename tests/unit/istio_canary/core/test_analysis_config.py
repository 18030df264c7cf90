"""The analysis settings a release is judged by, and custom metric templates."""

from __future__ import annotations

import json

import pytest

from istio_canary.core.analysis_config import AnalysisConfig, CustomMetric
from istio_canary.core.validation import ValidationError
from tests.helpers import INJECTIONS, LEGAL_VERSIONS

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
