"""The running sandbox routes simulated traffic as the stored VirtualService says, and the
real Prometheus sees Istio's metrics matching the configured behaviour.

Routing changes go through the Kubernetes API with the official client, as the release
pipeline will make them. Counts come from the generator's exact counters (deltas over at
least 2,000 requests at a raised rps), rates and error ratios from Prometheus.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from istio_canary.core.fields import DEFAULT_COOKIE_REGEX
from tests.helpers import dest, route_to

pytestmark = pytest.mark.integration

GROUP, VERSION, NS = "networking.istio.io", "v1", "bookinfo"
SELECTOR = (
    'reporter="destination",destination_service_name="reviews",destination_workload_namespace="bookinfo"'
)


@pytest.fixture(scope="module")
def istio(sandbox: Any) -> client.CustomObjectsApi:
    return sandbox.istio


@pytest.fixture(autouse=True)
def clean_world(sandbox: Any) -> Iterator[None]:
    """Each test starts from the seeded world and leaves it so for the next one."""
    sandbox.reset()
    yield
    sandbox.reset()


def count_new_requests(sandbox: Any, resource_version: str, at_least: int) -> list[dict[str, Any]]:
    """Rows of requests emitted after the generator picked up `resource_version`, once there
    are `at_least` of them (count deltas: the counters never reset)."""
    sandbox.wait_for_routing(resource_version)
    before = {_key(r): r["count"] for r in sandbox.counts()}
    deadline = time.monotonic() + 60
    while True:
        rows = [{**r, "count": r["count"] - before.get(_key(r), 0)} for r in sandbox.counts()]
        if sandbox.total(rows) >= at_least or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def _key(row: dict[str, Any]) -> tuple:
    return tuple(
        row[k]
        for k in ("service", "namespace", "version", "user_agent_canary", "cookie_canary", "response_code")
    )


def canary_route_first(header: str, string_match: dict[str, str]) -> list[dict[str, Any]]:
    """HTTP routes sending requests whose `header` matches to v2, everything else to v1."""
    return [
        {"name": "canary", "match": [{"headers": {header: string_match}}], "route": [dest("v2")]},
        {"route": [dest("v1")]},
    ]


def assert_exactly_the_marked_reach_v2(sandbox: Any, rows: list[dict[str, Any]], marked: str) -> None:
    """Every request of the `marked` header class (a counts column) went to v2, no other did."""
    carrying = sandbox.total(rows, **{marked: True})
    assert carrying > 300
    assert sandbox.total(rows, **{marked: True}, version="v2") == carrying
    assert sandbox.total(rows, **{marked: False}, version="v2") == 0


def test_weighted_route_90_10_gives_about_10_percent_canary(
    sandbox: Any, istio: client.CustomObjectsApi
) -> None:
    sandbox.set_behaviour(rps=1000)
    rv = route_to(istio, [{"route": [dest("v1", 90), dest("v2", 10)]}])
    rows = count_new_requests(sandbox, rv, at_least=3000)
    total = sandbox.total(rows)
    assert total >= 3000
    assert sandbox.total(rows, version="v1") + sandbox.total(rows, version="v2") == total
    share = sandbox.total(rows, version="v2") / total
    assert 0.07 <= share <= 0.13, f"canary share {share:.3f} of {total}"


def test_header_match_route_sends_exactly_the_canary_user_agent_to_v2(
    sandbox: Any, istio: client.CustomObjectsApi
) -> None:
    sandbox.set_behaviour(rps=1000, header_fraction=0.3)
    rv = route_to(istio, canary_route_first("user-agent", {"exact": "canary"}))
    rows = count_new_requests(sandbox, rv, at_least=2000)
    assert_exactly_the_marked_reach_v2(sandbox, rows, "user_agent_canary")
    assert sandbox.total(rows, user_agent_canary=False, version="v1") == sandbox.total(
        rows, user_agent_canary=False
    )


def test_cookie_regex_route_sends_exactly_the_canary_cookie_to_v2(
    sandbox: Any, istio: client.CustomObjectsApi
) -> None:
    sandbox.set_behaviour(rps=1000, cookie_fraction=0.3)
    # The release's default: the simulated canary cookie must match it.
    rv = route_to(istio, canary_route_first("cookie", {"regex": DEFAULT_COOKIE_REGEX}))
    rows = count_new_requests(sandbox, rv, at_least=2000)
    assert_exactly_the_marked_reach_v2(sandbox, rows, "cookie_canary")
    # The user-agent is independent of the cookie and plays no part in this route.
    assert sandbox.total(rows, user_agent_canary=True, cookie_canary=False, version="v1") > 0


def test_prometheus_rates_error_ratio_and_latency_match_the_behaviour(
    sandbox: Any, istio: client.CustomObjectsApi
) -> None:
    # 1,000 rps: a p99 from a 5 s window needs thousands of samples per version, or the few
    # requests above 100 ms (0.35 % of v1's) push the estimate over its bucket edge by chance.
    sandbox.set_behaviour(rps=1000)
    sandbox.set_behaviour("v2", error_rate=0.2, latency_ms_p50=30, latency_ms_p99=350)
    rv = route_to(istio, [{"route": [dest("v1", 50), dest("v2", 50)]}])
    sandbox.wait_for_routing(rv)
    changed_at = time.time()
    # Evaluate a 5 s window that starts after the change, once Prometheus has scraped it.
    at = changed_at + 6
    while time.time() < at + 2.5:
        time.sleep(0.5)

    rates = sandbox.prom_by(
        f"sum by (destination_version) (rate(istio_requests_total{{{SELECTOR}}}[5s]))",
        "destination_version",
        at,
    )
    assert set(rates) == {"v1", "v2"}
    for version in ("v1", "v2"):
        assert 350 <= rates[version] <= 650, rates  # 1,000 rps split 50/50, +-30%
    # The seeded pods carry service.istio.io/canonical-revision = their version: the same split.
    by_revision = sandbox.prom_by(
        f"sum by (destination_canonical_revision) (rate(istio_requests_total{{{SELECTOR}}}[5s]))",
        "destination_canonical_revision",
        at,
    )
    assert by_revision == pytest.approx(rates)

    def error_ratio(version: str) -> float | None:
        sel = f'{SELECTOR},destination_version="{version}"'
        return sandbox.prom_query(
            f'(sum(rate(istio_requests_total{{{sel},response_code=~"5.."}}[5s])) or vector(0))'
            f" / sum(rate(istio_requests_total{{{sel}}}[5s]))",
            at,
        )

    assert error_ratio("v1") == 0.0
    v2_ratio = error_ratio("v2")
    assert v2_ratio is not None and 0.13 <= v2_ratio <= 0.27

    def p99(version: str) -> float | None:
        sel = f'{SELECTOR},destination_version="{version}"'
        return sandbox.prom_query(
            f"histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket{{{sel}}}[5s])))",
            at,
        )

    # p99 80 ms (v1) and 350 ms (v2) land in Istio's buckets (50, 100] and (250, 500]. v2's p99
    # sits well inside its bucket: 2.2 % of its requests are above 250 ms and 0.4 % above 500 ms,
    # so ~2,000 samples put the estimate there with room to spare (at 300 ms only 1.6 % were
    # above 250 ms, and one run in a few dozen estimated 249.8).
    v1_p99, v2_p99 = p99("v1"), p99("v2")
    assert v1_p99 is not None and 50 <= v1_p99 <= 100
    assert v2_p99 is not None and 250 <= v2_p99 <= 500


def test_set_rejects_bad_values_names_the_flag_and_changes_nothing(sandbox: Any) -> None:
    before = sandbox.state()["services"][0]
    cases = [
        (["--version", "v2", "--error-rate", "1.5"], "--error-rate", "1.5"),
        (["--version", "v2", "--latency-ms-p50", "100", "--latency-ms-p99", "50"], "--latency-ms-p99", "50"),
        (["--version", "v2", "--latency-ms-p50", "500"], "--latency-ms-p50", "500"),
        (["--version", "v9", "--error-rate", "0.1"], "--version", "v9"),
        (["--service", "ratings", "--rps", "10"], "--service", "ratings"),
        (["--rps", "-5"], "--rps", "-5"),
        (["--header-fraction", "1.1"], "--header-fraction", "1.1"),
        (["--cookie-fraction", "-0.1"], "--cookie-fraction", "-0.1"),
        (["--version", "v2", "--error-rate", "lots"], "--error-rate", "lots"),
    ]
    for args, flag, value in cases:
        result = sandbox.cli("set", *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert flag in result.stderr and value in result.stderr, (args, result.stderr)
    after = sandbox.state()["services"][0]
    assert {k: after[k] for k in ("rps", "header_fraction", "cookie_fraction", "versions")} == {
        k: before[k] for k in ("rps", "header_fraction", "cookie_fraction", "versions")
    }
    ok = sandbox.cli("set", "--version", "v2", "--error-rate", "0.05", "--latency-ms-p99", "120")
    assert ok.returncode == 0, ok.stderr
    assert sandbox.state()["services"][0]["versions"]["v2"] == {
        "error_rate": 0.05,
        "latency_ms_p50": 20,
        "latency_ms_p99": 120,
    }


def test_status_reports_every_part_behaviour_and_generator_cpu(sandbox: Any) -> None:
    sandbox.set_behaviour("v2", error_rate=0.1)
    result = sandbox.cli("status")
    assert result.returncode == 0, result.stdout + result.stderr
    for expected in ("healthy", "api", "generator", "prometheus", "v2: error_rate 0.1", "% of a core"):
        assert expected in result.stdout
    as_json = sandbox.cli("status", "--json")
    report = json.loads(as_json.stdout)
    assert report["healthy"] and all(part["ok"] for part in report["parts"].values())
    assert report["cpu"]["generator_percent_recent"] >= 0
