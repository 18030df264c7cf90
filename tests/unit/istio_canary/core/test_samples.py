"""Reading query results: counts per version, NaN as missing, counter resets."""

from __future__ import annotations

import json
import math

from istio_canary.core.samples import (
    CounterSnapshot,
    Measurement,
    custom_value,
    measurements_from_results,
    values_by_version,
    with_latency,
)

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
        ["1.0", "2.0"],
        requests=[sample("1.0", "100"), sample("2.0", "10")],
        errors=[sample("2.0", "1")],
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
