"""Returning users in the traffic generator: cookie jars filled by Set-Cookie response headers,
routing that reads them, and the per-client and per-route counts, without any network."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from istio_canary.core.lock import with_lock
from istio_canary.core.request import ReleaseRequest
from istio_canary.core.routing import apply_plan, plan_for_step, promote
from sandbox.config import load_config, seed_world
from sandbox.store import Store
from sandbox.traffic import (
    MeshSnapshot,
    Request,
    TrafficGenerator,
    header_class_headers,
    routing_distribution,
)
from sandbox.traffic.clients import Client, parse_set_cookie, request_headers
from sandbox.traffic.routing import RouteOutcome, RouteTrace, traced_distribution

STICKY = {"service": "reviews", "namespace": "bookinfo", "stable_version": "v1", "canary_version": "v2",
          "sticky_sessions": True}


def world_and_store(clients: int) -> tuple[Any, Store]:
    world = load_config()
    world.services[0].clients = clients
    world.services[0].rps = 400.0
    store = Store()
    seed_world(store, world)
    dr_obj = store.get("destinationrules", "bookinfo", "reviews")
    dr_obj["spec"]["subsets"].append({"name": "v2", "labels": {"version": "v2"}})
    store.put("destinationrules", dr_obj)
    return world, store


def release_step(store: Store, weight: int, request: ReleaseRequest, holder: str = "dag/run-1") -> dict[str, Any]:
    """Write the VirtualService the release writes at `weight` (the real routing core)."""
    vs_obj = store.get("virtualservices", "bookinfo", "reviews")
    locked = with_lock(vs_obj, holder, {"virtualService": copy.deepcopy(vs_obj), "destinationRule": None})
    written = apply_plan(locked, request, plan_for_step(request, weight))
    store.put("virtualservices", written)
    return written


def run(generator: TrafficGenerator, start: int, ticks: int) -> int:
    for i in range(start, start + ticks):
        generator.tick(i * 0.1)
    return start + ticks


@pytest.mark.parametrize(
    ("header", "parsed"),
    [
        ("a=b", ("a", "b", None)),
        ("istio-canary-reviews=v2-abc; Max-Age=600; Path=/", ("istio-canary-reviews", "v2-abc", 600.0)),
        ("a=b; max-age=0", ("a", "b", 0.0)),
        ("a=b; Max-Age=soon; HttpOnly", ("a", "b", None)),
        ("a=", ("a", "", None)),
        ("no-equals-sign", None),
        ("=b", None),
    ],
)
def test_parse_set_cookie(header: str, parsed: Any) -> None:
    assert parse_set_cookie(header) == parsed


def test_a_client_keeps_cookies_until_they_expire_and_max_age_zero_deletes() -> None:
    client = Client(user_agent_canary=False, cookie_canary=True)
    served = RouteOutcome(version="v2")
    client.served(served, RouteTrace("r", ("s=1; Max-Age=10", "t=2")), now=100.0)
    assert client.jar_at(105.0) == (("s", "1"), ("t", "2"))
    assert request_headers(client, client.jar_at(105.0))["cookie"] == "session=abc123; canary=true; theme=dark; s=1; t=2"
    assert client.jar_at(110.0) == (("t", "2"),)  # Max-Age elapsed
    client.served(served, RouteTrace("r", ("t=2; Max-Age=0",)), now=111.0)
    assert client.jar_at(111.0) == ()
    client.served(RouteOutcome(version="v1"), RouteTrace("r"), now=112.0)
    assert (client.by_version, client.left) == ({"v2": 2, "v1": 1}, {"v2": 1})


def test_traced_distribution_adds_up_to_the_routing_distribution_and_sees_set_cookie() -> None:
    _, store = world_and_store(0)
    request = ReleaseRequest.from_params(STICKY)
    written = release_step(store, 10, request)
    mesh = MeshSnapshot.from_store(store)
    plain = Request("reviews", "bookinfo", header_class_headers(False, False))
    traced = traced_distribution(plain, mesh)
    summed: dict[RouteOutcome, float] = {}
    for p, outcome, _ in traced:
        summed[outcome] = summed.get(outcome, 0.0) + p
    assert summed == pytest.approx({o: p for p, o in routing_distribution(plain, mesh)})
    by_version = {o.version: t for _, o, t in traced}
    assert by_version["v1"] == RouteTrace("http[1]")
    set_cookie = written["spec"]["http"][1]["route"][1]["headers"]["response"]["add"]["set-cookie"]
    assert by_version["v2"] == RouteTrace("http[1]", (set_cookie,))
    # The cookie it sets is the one the sticky route reads: such a request goes to v2 only.
    name_value = set_cookie.split(";")[0]
    returning = Request("reviews", "bookinfo", {**header_class_headers(False, False),
                                                "cookie": f"session=abc123; {name_value}"})
    assert [(p, o.version, t.route) for p, o, t in traced_distribution(returning, mesh)] == [
        (1.0, "v2", "reviews-canary-sticky")]


def test_clients_the_canary_served_stay_on_it_through_the_sticky_steps() -> None:
    world, store = world_and_store(200)
    request = ReleaseRequest.from_params(STICKY)
    generator = TrafficGenerator(store, world, random.Random(7))
    generator.tick(0.0)
    release_step(store, 10, request)
    tick = run(generator, 1, 10)  # 1 s at 400 rps: two requests per client
    clients = generator.clients_report()[0]["per_client"]
    on_canary = [c for c in clients if c["by_version"].get("v2")]
    assert 0 < len(on_canary) < len(clients) / 2
    assert all(set(c["cookies"]) == {"istio-canary-reviews"} for c in on_canary)
    assert all(not c["cookies"] for c in clients if not c["by_version"].get("v2"))
    tick = run(generator, tick, 90)
    release_step(store, 50, request)
    run(generator, tick, 100)  # every client returns dozens of times

    (report,) = generator.clients_report()
    clients = report["per_client"]
    on_canary = [c for c in clients if c["by_version"].get("v2")]
    assert len(on_canary) > len(clients) / 2  # returning users pile up on the canary
    assert all(c["left"].get("v2", 0) == 0 for c in on_canary), [c for c in on_canary if c["left"].get("v2")][:3]
    assert all(c["left"].get("v1", 0) <= 1 for c in clients)  # left v1 at most once, for good
    assert report["by_route"]["reviews-canary-sticky"] == {"v2": report["by_route"]["reviews-canary-sticky"]["v2"]}
    assert report["by_route"]["reviews-canary-sticky"]["v2"] > report["by_route"]["http[1]"]["v2"]
    # The Prometheus side counts the same requests as before: per version and header class.
    assert sum(r["count"] for r in generator.counts()) == 200 * 40


def test_without_sticky_sessions_returning_clients_flip_between_versions() -> None:
    world, store = world_and_store(200)
    request = ReleaseRequest.from_params({**STICKY, "sticky_sessions": False})
    generator = TrafficGenerator(store, world, random.Random(7))
    generator.tick(0.0)
    release_step(store, 50, request)
    run(generator, 1, 50)
    (report,) = generator.clients_report()
    assert sum(1 for c in report["per_client"] if c["left"].get("v2")) > 100
    assert all(not c["cookies"] for c in report["per_client"])


def test_after_rollback_or_promotion_the_cookie_routes_nowhere() -> None:
    world, store = world_and_store(100)
    request = ReleaseRequest.from_params(STICKY)
    generator = TrafficGenerator(store, world, random.Random(3))
    generator.tick(0.0)
    before = copy.deepcopy(store.get("virtualservices", "bookinfo", "reviews"))
    written = release_step(store, 10, request)
    tick = run(generator, 1, 50)
    during = generator.clients_report()[0]["per_client"]
    sticky_clients = [c["client"] for c in during if c["cookies"]]
    assert sticky_clients
    # Rollback: the snapshot's routing back; the sticky clients keep their cookie, and go to v1.
    store.put("virtualservices", {**written, "spec": copy.deepcopy(before["spec"])})
    tick = run(generator, tick, 30)
    after = generator.clients_report()[0]["per_client"]
    for i in sticky_clients:
        assert after[i]["cookies"] == during[i]["cookies"]
        assert after[i]["by_version"]["v2"] == during[i]["by_version"]["v2"]
        assert after[i]["by_version"]["v1"] > during[i]["by_version"].get("v1", 0)
    # Promotion: everyone on v2 through the owned route; the sticky route is gone.
    sticky_served = generator.clients_report()[0]["by_route"]["reviews-canary-sticky"]["v2"]
    store.put("virtualservices", promote(written, request))
    run(generator, tick, 30)
    promoted = generator.clients_report()[0]
    assert promoted["by_route"]["reviews-canary-sticky"]["v2"] == sticky_served
    returned = [c for c in promoted["per_client"] if c["requests"] > after[c["client"]]["requests"]]
    assert returned
    for c in returned:
        assert c["by_version"]["v2"] > after[c["client"]]["by_version"].get("v2", 0)
        assert c["by_version"].get("v1") == after[c["client"]]["by_version"].get("v1")


def test_clients_zero_is_the_anonymous_model_and_reset_forgets_the_pool() -> None:
    world, store = world_and_store(0)
    generator = TrafficGenerator(store, world, random.Random(1))
    generator.tick(0.0)
    run(generator, 1, 20)
    assert generator.clients_report() == []
    generator.update_behaviour({"clients": 10})
    run(generator, 21, 20)
    (report,) = generator.clients_report()
    assert report["clients"] == 10 and sum(c["requests"] for c in report["per_client"]) == 400 * 2
    generator.reset_behaviour()
    assert generator.clients_report() == []


def test_clients_is_checked_like_every_behaviour_field() -> None:
    from sandbox.errors import SandboxInputError

    world, store = world_and_store(0)
    generator = TrafficGenerator(store, world)
    for bad in (-1, 1.5, True, 100_001):
        with pytest.raises(SandboxInputError) as caught:
            generator.update_behaviour({"clients": bad})
        assert caught.value.field == "clients"
