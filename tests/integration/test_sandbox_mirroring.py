"""The running sandbox mirrors as Envoy does: a route's `mirror` copies requests to the canary,
the real Prometheus sees the copies only as the canary's destination-reported series (what the
release's judge queries read), and clients still get only stable's responses."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from istio_canary.core.promql import error_count_query, request_count_query
from tests.helpers import dest, route_to
from tests.integration.test_sandbox_traffic import count_new_requests

pytestmark = pytest.mark.integration

WINDOW = 5


@pytest.fixture(autouse=True)
def clean_world(sandbox: Any) -> Iterator[None]:
    sandbox.reset()
    yield
    sandbox.reset()


def _after_scrape(changed_at: float) -> float:
    """An instant whose WINDOW-second look-back starts after `changed_at`, once Prometheus scraped it."""
    at = changed_at + WINDOW + 1.5
    while time.time() < at + 2.5:
        time.sleep(0.5)
    return at


def _by(sandbox: Any, promql: str, at: float, *labels: str) -> dict[tuple[str, ...], float]:
    """Series with samples in the window (counters of earlier tests in this sandbox stay at rate 0)."""
    return {tuple(r["metric"].get(k, "") for k in labels): float(r["value"][1])
            for r in sandbox.prom_result(promql, at) if float(r["value"][1]) > 0}


def test_mirrored_requests_reach_prometheus_only_as_the_canarys_destination_series(sandbox: Any) -> None:
    sandbox.set_behaviour(rps=1000)
    sandbox.set_behaviour("v2", error_rate=0.2)
    rv = route_to(sandbox.istio, [{"route": [dest("v1")], "mirror": {"host": "reviews", "subset": "v2"},
                                   "mirrorPercentage": {"value": 50.0}}])
    sandbox.wait_for_routing(rv)
    at = _after_scrape(time.time())
    rates = _by(sandbox, f'sum by (reporter, destination_version) (rate(istio_requests_total'
                         f'{{destination_service_name="reviews"}}[{WINDOW}s]))', at, "reporter", "destination_version")
    assert set(rates) == {("destination", "v1"), ("destination", "v2")}, rates  # no source-reported copy
    assert 700 <= rates[("destination", "v1")] <= 1300, rates
    assert 350 <= rates[("destination", "v2")] <= 650, rates  # half of the requests, copied
    # The judge's own queries see the copies as the canary's traffic, with the canary's errors.
    requests = _by(sandbox, request_count_query("reviews", "bookinfo", ("v2", "v1"), WINDOW), at,
                   "destination_version")
    errors = _by(sandbox, error_count_query("reviews", "bookinfo", ("v2", "v1"), WINDOW), at, "destination_version")
    assert requests[("v2",)] > 1000
    assert 0.13 <= errors[("v2",)] / requests[("v2",)] <= 0.27
    assert errors.get(("v1",), 0.0) == 0.0
    # What clients got: stable only, none failed.
    rows = count_new_requests(sandbox, rv, at_least=2000)
    assert sandbox.total(rows) == sandbox.total(rows, version="v1", response_code=200) >= 2000


def test_a_mirror_envoy_cannot_send_is_dropped_without_a_trace(sandbox: Any) -> None:
    sandbox.set_behaviour(rps=1000)
    # Subset v9 is in no DestinationRule: Envoy has no cluster for the copy and drops it.
    rv = route_to(sandbox.istio, [{"route": [dest("v1")], "mirror": {"host": "reviews", "subset": "v9"}}])
    sandbox.wait_for_routing(rv)
    at = _after_scrape(time.time())
    rates = _by(sandbox, f'sum by (reporter, destination_version, response_code) (rate(istio_requests_total'
                         f'{{destination_service_name="reviews"}}[{WINDOW}s]))', at,
                "reporter", "destination_version", "response_code")
    assert set(rates) == {("destination", "v1", "200")}, rates
    rows = count_new_requests(sandbox, rv, at_least=2000)
    assert sandbox.total(rows) == sandbox.total(rows, version="v1", response_code=200)
