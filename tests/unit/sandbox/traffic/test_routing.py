"""Routing as Envoy does it (VirtualService + DestinationRule + Pods + headers -> version), and
the generator's counts and Prometheus exposition, without any network."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from istio_canary.core.fields import DEFAULT_COOKIE_REGEX
from sandbox.apiserver import istio_admission
from sandbox.config import load_config, parse_config, seed_world
from sandbox.store import Store
from sandbox.traffic import (
    ISTIO_BUCKETS_MS,
    MeshSnapshot,
    Request,
    RouteOutcome,
    TrafficGenerator,
    header_class_headers,
    route_request,
    routing_distribution,
)
from tests.helpers import dest

PLAIN = header_class_headers(user_agent_canary=False, cookie_canary=False)
UA_CANARY = header_class_headers(user_agent_canary=True, cookie_canary=False)
COOKIE_CANARY = header_class_headers(user_agent_canary=False, cookie_canary=True)


def vs(
    *http: dict[str, Any], hosts: list[str] | None = None, namespace: str = "bookinfo", **spec: Any
) -> dict:
    return {
        "metadata": {"name": "reviews", "namespace": namespace},
        "spec": {"hosts": hosts or ["reviews"], "http": list(http), **spec},
    }


def dr(*subsets: str, host: str = "reviews") -> dict:
    return {
        "metadata": {"name": "reviews", "namespace": "bookinfo"},
        "spec": {"host": host, "subsets": [{"name": s, "labels": {"version": s}} for s in subsets]},
    }


def pod(version: str, ready: bool = True, sidecar: bool = True, index: int = 0) -> dict:
    containers = [{"name": "reviews"}] + ([{"name": "istio-proxy"}] if sidecar else [])
    return {
        "metadata": {
            "name": f"reviews-{version}-{index}",
            "namespace": "bookinfo",
            "labels": {"app": "reviews", "version": version},
        },
        "spec": {"containers": containers},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


SERVICE = {"metadata": {"name": "reviews", "namespace": "bookinfo"}, "spec": {"selector": {"app": "reviews"}}}


def mesh(
    virtual_service: dict | None, destination_rule: dict | None = None, pods: list | None = None
) -> MeshSnapshot:
    return MeshSnapshot(
        [virtual_service] if virtual_service else [],
        [destination_rule or dr("v1", "v2")],
        [SERVICE],
        pods if pods is not None else [pod("v1"), pod("v2")],
    )


def versions(request_headers: dict[str, str], snapshot: MeshSnapshot) -> dict[str | None, float]:
    dist = routing_distribution(Request("reviews", "bookinfo", request_headers), snapshot)
    assert sum(p for p, _ in dist) == pytest.approx(1.0)
    return {o.version: round(p, 6) for p, o in dist}


def outcome(request_headers: dict[str, str], snapshot: MeshSnapshot) -> RouteOutcome:
    dist = routing_distribution(Request("reviews", "bookinfo", request_headers), snapshot)
    assert len(dist) == 1, dist
    return dist[0][1]


def test_seeded_route_sends_everything_to_v1() -> None:
    assert versions(PLAIN, mesh(vs({"route": [dest("v1")]}))) == {"v1": 1.0}


def test_weights_split_traffic_and_a_single_destination_takes_all() -> None:
    split = mesh(vs({"route": [dest("v1", 90), dest("v2", 10)]}))
    assert versions(PLAIN, split) == {"v1": 0.9, "v2": 0.1}
    assert versions(PLAIN, mesh(vs({"route": [dest("v2", 30)]}))) == {"v2": 1.0}
    # Weights need not total 100 (Istio normalizes); a destination without weight gets 0.
    assert versions(PLAIN, mesh(vs({"route": [dest("v1", 1), dest("v2", 3)]}))) == {"v1": 0.25, "v2": 0.75}
    assert versions(PLAIN, mesh(vs({"route": [dest("v1"), dest("v2", 50)]}))) == {"v2": 1.0}


def test_all_zero_weights_is_a_503() -> None:
    result = outcome(PLAIN, mesh(vs({"route": [dest("v1", 0), dest("v2", 0)]})))
    assert (result.status, result.flags) == (503, "NR")


def test_header_exact_match_sends_only_canary_user_agent_to_v2() -> None:
    snapshot = mesh(
        vs(
            {
                "name": "canary",
                "match": [{"headers": {"user-agent": {"exact": "canary"}}}],
                "route": [dest("v2")],
            },
            {"route": [dest("v1")]},
        )
    )
    assert versions(UA_CANARY, snapshot) == {"v2": 1.0}
    assert versions(PLAIN, snapshot) == {"v1": 1.0}
    assert versions(COOKIE_CANARY, snapshot) == {"v1": 1.0}


def test_cookie_regex_must_match_the_whole_value_as_re2() -> None:
    whole = mesh(
        vs(
            {"match": [{"headers": {"cookie": {"regex": ".*canary=true.*"}}}], "route": [dest("v2")]},
            {"route": [dest("v1")]},
        )
    )
    assert versions(COOKIE_CANARY, whole) == {"v2": 1.0}
    assert versions(PLAIN, whole) == {"v1": 1.0}
    # Full match: "canary=true" alone does not match "session=abc123; canary=true; theme=dark".
    partial = mesh(
        vs(
            {"match": [{"headers": {"cookie": {"regex": "canary=true"}}}], "route": [dest("v2")]},
            {"route": [dest("v1")]},
        )
    )
    assert versions(COOKIE_CANARY, partial) == {"v1": 1.0}
    # A look-ahead is valid for Python's `re` but not RE2: such a rule matches nothing.
    lookahead = mesh(
        vs(
            {"match": [{"headers": {"cookie": {"regex": "(?=.*canary).*"}}}], "route": [dest("v2")]},
            {"route": [dest("v1")]},
        )
    )
    assert re.fullmatch("(?=.*canary).*", COOKIE_CANARY["cookie"])
    assert versions(COOKIE_CANARY, lookahead) == {"v1": 1.0}


def test_the_releases_default_cookie_regex_takes_the_sandboxs_canary_cookie_only() -> None:
    snapshot = mesh(
        vs(
            {"match": [{"headers": {"cookie": {"regex": DEFAULT_COOKIE_REGEX}}}], "route": [dest("v2")]},
            {"route": [dest("v1")]},
        )
    )
    assert versions(COOKIE_CANARY, snapshot) == {"v2": 1.0}
    assert versions(PLAIN, snapshot) == {"v1": 1.0}
    for cookie in ("session=abc123; notcanary=true", "canary=true2; session=abc123"):
        assert versions({**COOKIE_CANARY, "cookie": cookie}, snapshot) == {"v1": 1.0}, cookie


def test_match_blocks_are_or_and_conditions_inside_a_block_are_and() -> None:
    either = {
        "match": [
            {"headers": {"user-agent": {"exact": "canary"}}},
            {"headers": {"cookie": {"prefix": "session=abc123; canary"}}},
        ],
        "route": [dest("v2")],
    }
    snapshot = mesh(vs(either, {"route": [dest("v1")]}))
    assert versions(UA_CANARY, snapshot) == {"v2": 1.0}
    assert versions(COOKIE_CANARY, snapshot) == {"v2": 1.0}
    assert versions(PLAIN, snapshot) == {"v1": 1.0}
    both = {
        "match": [{"headers": {"user-agent": {"exact": "canary"}, "cookie": {"regex": ".*canary=true.*"}}}],
        "route": [dest("v2")],
    }
    snapshot = mesh(vs(both, {"route": [dest("v1")]}))
    assert versions(UA_CANARY, snapshot) == {"v1": 1.0}
    assert versions(header_class_headers(True, True), snapshot) == {"v2": 1.0}


def test_routes_are_evaluated_in_order_first_match_wins() -> None:
    snapshot = mesh(
        vs(
            {"route": [dest("v1")]},
            {"match": [{"headers": {"user-agent": {"exact": "canary"}}}], "route": [dest("v2")]},
        )
    )
    assert versions(UA_CANARY, snapshot) == {"v1": 1.0}


def test_uri_without_headers_and_gateways_conditions() -> None:
    uri = mesh(
        vs({"match": [{"uri": {"prefix": "/reviews"}}], "route": [dest("v2")]}, {"route": [dest("v1")]})
    )
    assert versions(PLAIN, uri) == {"v2": 1.0}
    other_uri = mesh(
        vs({"match": [{"uri": {"exact": "/ratings"}}], "route": [dest("v2")]}, {"route": [dest("v1")]})
    )
    assert versions(PLAIN, other_uri) == {"v1": 1.0}
    without = mesh(
        vs(
            {"match": [{"withoutHeaders": {"user-agent": {"exact": "canary"}}}], "route": [dest("v2")]},
            {"route": [dest("v1")]},
        )
    )
    assert versions(PLAIN, without) == {"v2": 1.0}
    assert versions(UA_CANARY, without) == {"v1": 1.0}
    gateway_only = mesh(
        vs({"match": [{"gateways": ["bookinfo-gateway"]}], "route": [dest("v2")]}, {"route": [dest("v1")]})
    )
    assert versions(PLAIN, gateway_only) == {"v1": 1.0}


def test_no_matching_route_is_404_nr() -> None:
    result = outcome(
        PLAIN, mesh(vs({"match": [{"headers": {"user-agent": {"exact": "canary"}}}], "route": [dest("v2")]}))
    )
    assert (result.status, result.flags, result.version) == (404, "NR", None)


def test_subset_missing_from_destination_rule_is_503_nr() -> None:
    result = outcome(PLAIN, mesh(vs({"route": [dest("v2")]}), dr("v1")))
    assert (result.status, result.flags) == (503, "NR")
    # Only the share routed to the missing subset fails.
    split = routing_distribution(
        Request("reviews", "bookinfo", PLAIN), mesh(vs({"route": [dest("v1", 80), dest("v2", 20)]}), dr("v1"))
    )
    assert {(o.version, o.status): round(p, 6) for p, o in split} == {("v1", None): 0.8, (None, 503): 0.2}


def test_subset_without_ready_pods_is_503_uh_and_unready_pods_get_no_traffic() -> None:
    no_ready = mesh(vs({"route": [dest("v2")]}), pods=[pod("v1"), pod("v2", ready=False)])
    result = outcome(PLAIN, no_ready)
    assert (result.status, result.flags) == (503, "UH")
    assert versions(PLAIN, mesh(vs({"route": [dest(None)]}), pods=[pod("v1"), pod("v2", ready=False)])) == {
        "v1": 1.0
    }


def test_host_as_fqdn_and_no_virtual_service_means_all_pods() -> None:
    fqdn = mesh(
        vs(
            {"route": [dest("v2", host="reviews.bookinfo.svc.cluster.local")]},
            hosts=["reviews.bookinfo.svc.cluster.local"],
        )
    )
    assert versions(PLAIN, fqdn) == {"v2": 1.0}
    # Envoy's default route without a VirtualService: round robin over every Ready pod.
    assert versions(PLAIN, mesh(None, pods=[pod("v1", index=0), pod("v1", index=1), pod("v2")])) == {
        "v1": 0.666667,
        "v2": 0.333333,
    }


def test_only_dot_free_rule_hosts_are_expanded_as_istio_does() -> None:
    # `reviews.bookinfo` in a rule is taken as written: no Service has that name.
    two_part = mesh(vs({"route": [dest("v2")]}, hosts=["reviews.bookinfo"]))
    assert versions(PLAIN, two_part) == {"v1": 0.5, "v2": 0.5}  # the rule binds nothing: default route
    three_part = mesh(vs({"route": [dest("v2")]}, hosts=["reviews.bookinfo.svc"]))
    assert versions(PLAIN, three_part) == {"v1": 0.5, "v2": 0.5}
    for host in ("reviews.bookinfo", "reviews.bookinfo.svc"):
        result = outcome(PLAIN, mesh(vs({"route": [dest("v2", host=host)]})))
        assert (result.status, result.flags) == (503, "NC"), host
    # A DestinationRule whose host is not expanded defines no subset of reviews.
    result = outcome(PLAIN, mesh(vs({"route": [dest("v2")]}), dr("v1", "v2", host="reviews.bookinfo")))
    assert (result.status, result.flags) == (503, "NR")


@pytest.mark.parametrize(
    ("dr_host", "route_host", "warned"),
    [
        ("reviews", "reviews", False),
        ("reviews.bookinfo.svc.cluster.local", "reviews", False),
        ("reviews", "reviews.bookinfo.svc.cluster.local", False),
        ("reviews.bookinfo", "reviews", True),  # not expanded: another host than reviews
        ("reviews", "reviews.bookinfo.svc", True),
    ],
)
def test_the_api_servers_missing_subset_warning_expands_hosts_as_istio_does(
    dr_host: str, route_host: str, warned: bool
) -> None:
    store = Store()
    store.put("destinationrules", dr("v1", host=dr_host))
    _, warnings = istio_admission("virtualservices", vs({"route": [dest("v1", host=route_host)]}), "bookinfo", store)
    assert bool(warnings) == warned, warnings


def test_a_request_may_name_its_host_by_any_dns_search_form() -> None:
    snapshot = mesh(vs({"route": [dest("v2")]}))
    for host in ("reviews", "reviews.bookinfo", "reviews.bookinfo.svc", "reviews.bookinfo.svc.cluster.local"):
        dist = routing_distribution(Request(host, "bookinfo", PLAIN), snapshot)
        assert {o.version: p for p, o in dist} == {"v2": 1.0}, host
    # A bare name from another namespace is a Service of that namespace (none here).
    dist = routing_distribution(Request("reviews", "other", PLAIN), snapshot)
    assert [(o.status, o.flags) for _, o in dist] == [(503, "NC")]


def test_virtual_service_bound_only_to_a_gateway_does_not_apply_to_mesh_traffic() -> None:
    ingress_only = mesh(vs({"route": [dest("v2")]}, gateways=["bookinfo-gateway"]))
    assert versions(PLAIN, ingress_only) == {"v1": 0.5, "v2": 0.5}


def test_unknown_destination_host_is_503_nc() -> None:
    result = outcome(PLAIN, mesh(vs({"route": [dest("v1", host="ratings")]})))
    assert (result.status, result.flags) == (503, "NC")


def test_pod_without_sidecar_is_reached_but_marked() -> None:
    result = outcome(PLAIN, mesh(vs({"route": [dest("v2")]}), pods=[pod("v1"), pod("v2", sidecar=False)]))
    assert (result.version, result.sidecar, result.status) == ("v2", False, None)


def test_fault_abort_replies_at_the_caller() -> None:
    snapshot = mesh(
        vs({"route": [dest("v1")], "fault": {"abort": {"httpStatus": 503, "percentage": {"value": 25}}}})
    )
    dist = routing_distribution(Request("reviews", "bookinfo", PLAIN), snapshot)
    assert {(o.version, o.status, o.flags): round(p, 6) for p, o in dist} == {
        ("v1", None, "-"): 0.75,
        (None, 503, "FI"): 0.25,
    }


def test_route_request_samples_the_distribution() -> None:
    snapshot = mesh(vs({"route": [dest("v1", 90), dest("v2", 10)]}))
    rng = random.Random(7)
    picks = [route_request(Request("reviews", "bookinfo", PLAIN), snapshot, rng).version for _ in range(4000)]
    assert 0.08 < picks.count("v2") / len(picks) < 0.12


# --- the generator, driven with a fake clock ------------------------------------------------


def run_generator(store: Store, world: Any, seconds: float, seed: int = 1) -> TrafficGenerator:
    generator = TrafficGenerator(store, world, random.Random(seed))
    generator.tick(0.0)
    ticks = int(seconds * 10)
    for i in range(1, ticks + 1):
        generator.tick(i * 0.1)
    return generator


def test_generator_emits_configured_rate_routed_by_the_stored_virtual_service() -> None:
    world = load_config()
    store = Store()
    seed_world(store, world)
    generator = run_generator(store, world, 20)  # 50 rps for 20 s
    counts = generator.counts()
    assert sum(r["count"] for r in counts) == 1000
    assert {r["version"] for r in counts} == {"v1"}

    # A route change in the store is used from the next tick on.
    vs_obj = store.get("virtualservices", "bookinfo", "reviews")
    vs_obj["spec"]["http"] = [
        {"match": [{"headers": {"user-agent": {"exact": "canary"}}}], "route": [dest("v2")]},
        {"route": [dest("v1")]},
    ]
    store.put("virtualservices", vs_obj)
    dr_obj = store.get("destinationrules", "bookinfo", "reviews")
    dr_obj["spec"]["subsets"].append({"name": "v2", "labels": {"version": "v2"}})
    store.put("destinationrules", dr_obj)
    generator.update_behaviour({"rps": 500, "header_fraction": 0.3})
    before = generator.counts()
    for i in range(201, 241):
        generator.tick(i * 0.1)
    after = generator.counts()

    def delta(**filters: Any) -> int:
        total = lambda rows: sum(r["count"] for r in rows if all(r[k] == v for k, v in filters.items()))  # noqa: E731
        return total(after) - total(before)

    assert delta() == 2000
    assert delta(user_agent_canary=True) == delta(user_agent_canary=True, version="v2") > 0
    assert delta(user_agent_canary=False) == delta(user_agent_canary=False, version="v1") > 0


def test_error_rate_and_latency_follow_the_version_behaviour() -> None:
    world = parse_config(
        {
            "services": [
                {
                    "name": "reviews",
                    "rps": 1000,
                    "versions": {"v1": {"error_rate": 0.2, "latency_ms_p50": 30, "latency_ms_p99": 300}},
                }
            ]
        }
    )
    store = Store()
    seed_world(store, world)
    generator = run_generator(store, world, 10)
    counts = generator.counts()
    total = sum(r["count"] for r in counts)
    errors = sum(r["count"] for r in counts if r["response_code"] >= 500)
    assert total == 10000
    assert 0.18 < errors / total < 0.22
    assert {r["response_code"] for r in counts} == {200, 500, 503}

    text = generator.render_metrics()
    buckets = {
        float(m.group(1)) if m.group(1) != "+Inf" else float("inf"): int(m.group(2))
        for m in re.finditer(
            r'istio_request_duration_milliseconds_bucket\{[^}]*response_code="200"[^}]*le="([^"]+)"\} (\d+)',
            text,
        )
    }
    assert sorted(buckets)[:-1] == [float(b) for b in ISTIO_BUCKETS_MS]
    ok_total = buckets[float("inf")]
    assert buckets[25] < 0.5 * ok_total <= buckets[50]  # p50 = 30 ms lies in (25, 50]
    assert buckets[250] / ok_total < 0.99 <= buckets[500] / ok_total  # p99 = 300 ms lies in (250, 500]


def test_exposition_has_istio_labels_and_unrouted_requests_are_source_reported() -> None:
    world = load_config()
    store = Store()
    seed_world(store, world)
    vs_obj = store.get("virtualservices", "bookinfo", "reviews")
    vs_obj["spec"]["http"] = [{"route": [dest("v1", 50), dest("v2", 50)]}]  # no v2 subset yet: half 503 NR
    store.put("virtualservices", vs_obj)
    text = run_generator(store, world, 4).render_metrics()
    assert "# TYPE istio_requests_total counter" in text
    assert "# TYPE istio_request_duration_milliseconds histogram" in text
    served = re.search(r'^istio_requests_total\{([^}]*destination_version="v1"[^}]*)\} (\d+)$', text, re.M)
    assert served is not None
    labels = dict(re.findall(r'(\w+)="([^"]*)"', served.group(1)))
    assert labels == {
        "reporter": "destination",
        "source_workload": "productpage-v1",
        "destination_service": "reviews.bookinfo.svc.cluster.local",
        "destination_service_name": "reviews",
        "destination_service_namespace": "bookinfo",
        "destination_workload": "reviews-v1",
        "destination_workload_namespace": "bookinfo",
        "destination_app": "reviews",
        "destination_version": "v1",
        "destination_canonical_revision": "v1",
        "request_protocol": "http",
        "response_code": "200",
        "response_flags": "-",
    }
    assert re.search(
        r'istio_requests_total\{reporter="source"[^}]*destination_version="unknown",'
        r'destination_canonical_revision="unknown"[^}]*response_code="503",response_flags="NR"\} \d+',
        text,
    )
    # The histogram carries the same labels, the canonical revision included.
    assert re.search(
        r'^istio_request_duration_milliseconds_bucket\{[^}]*destination_version="v1",'
        r'destination_canonical_revision="v1"[^}]*le="\+Inf"\} \d+$',
        text,
        re.M,
    )
    assert re.search(
        r'^sandbox_requests_total\{service="reviews",namespace="bookinfo",version="v1",user_agent_canary="false",cookie_canary="false",response_code="200"\} \d+$',
        text,
        re.M,
    )


def test_behaviour_updates_are_checked_before_anything_changes() -> None:
    world = load_config()
    generator = TrafficGenerator(Store(), world)
    before = generator.state()["services"]
    bad = [
        ({"version": "v2", "error_rate": 1.5}, "error_rate"),
        ({"version": "v2", "latency_ms_p99": 10}, "latency_ms_p99"),
        ({"version": "v2", "latency_ms_p50": 500}, "latency_ms_p50"),
        ({"version": "v9", "error_rate": 0.1}, "version"),
        ({"error_rate": 0.1}, "version"),
        ({"rps": -1, "version": "v2", "error_rate": 0.5}, "rps"),
        ({"service": "ratings", "rps": 5}, "service"),
        ({"cookie_fraction": 2}, "cookie_fraction"),
        ({"colour": "red"}, "colour"),
    ]
    for payload, field in bad:
        with pytest.raises(ValueError) as info:
            generator.update_behaviour(payload)
        assert info.value.field == field, payload  # type: ignore[attr-defined]
    assert generator.state()["services"] == before
    updated = generator.update_behaviour({"version": "v2", "error_rate": 0.3, "rps": 10})
    assert updated["versions"]["v2"]["error_rate"] == 0.3 and updated["rps"] == 10


def test_canonical_revision_follows_istios_label_precedence_and_version_only_the_version_label() -> None:
    def labelled(name: str, **labels: str) -> dict:
        p = pod("x", index=0)
        p["metadata"] = {"name": name, "namespace": "bookinfo", "labels": {"app": "reviews", **labels}}
        return p

    pods = [
        labelled("a", version="v1",
                 **{"service.istio.io/canonical-revision": "1.0", "app.kubernetes.io/version": "1.x"}),
        labelled("b", version="v2", **{"app.kubernetes.io/version": "2.0"}),
        labelled("c", version="v3"),
        labelled("d", **{"app.kubernetes.io/version": "4.0"}),
        labelled("e"),
    ]
    dist = routing_distribution(Request("reviews", "bookinfo", PLAIN), mesh(None, pods=pods))
    assert {(o.version, o.revision) for _, o in dist} == {
        ("v1", "1.0"), ("v2", "2.0"), ("v3", "v3"), ("unknown", "4.0"), ("unknown", "latest"),
    }


def test_exposition_exports_the_canonical_revision_from_the_pods_labels() -> None:
    world = load_config()
    store = Store()
    seed_world(store, world)
    for obj in store.list("pods"):
        labels = obj["metadata"]["labels"]
        if labels["version"] == "v1":
            labels["service.istio.io/canonical-revision"] = "1.4.2"
            store.put("pods", obj)
    text = run_generator(store, world, 2).render_metrics()
    served = re.findall(r'^istio_requests_total\{[^}]*destination_version="([^"]*)",'
                        r'destination_canonical_revision="([^"]*)"[^}]*\} \d+$', text, re.M)
    assert set(served) == {("v1", "1.4.2")}
