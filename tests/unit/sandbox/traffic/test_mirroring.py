"""Request mirroring as Envoy does it: copies reported only at the mirror's pods, clients unaffected."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from sandbox.config import load_config, seed_world
from sandbox.store import Store
from sandbox.traffic import Request, TrafficGenerator, header_class_headers
from sandbox.traffic.mirroring import mirror_targets, route_mirrors, shadow_table
from tests.helpers import dest
from tests.unit.sandbox.traffic.test_routing import dr, mesh, pod, vs

PLAIN = Request("reviews", "bookinfo", header_class_headers(user_agent_canary=False, cookie_canary=False))


def mirrored(percent: float | None = 50, **route: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"route": [dest("v1")], "mirror": {"host": "reviews", "subset": "v2"}, **route}
    if percent is not None:
        out["mirrorPercentage"] = {"value": percent}
    return out


def test_mirror_percentage_defaults_to_every_request_as_in_istio() -> None:
    assert list(route_mirrors(mirrored(None))) == [({"host": "reviews", "subset": "v2"}, 100.0)]
    assert list(route_mirrors(mirrored(None, mirrorPercent=30))) == [({"host": "reviews", "subset": "v2"}, 30.0)]
    assert list(route_mirrors({"route": [], "mirrors": [{"destination": {"host": "a"}, "percentage": {"value": 5}},
                                                        {"destination": {"host": "b"}}]})) == [
        ({"host": "a"}, 5.0), ({"host": "b"}, 100.0)]


def test_copies_land_on_the_mirror_subsets_pods() -> None:
    [(share, landing)] = mirror_targets(PLAIN, mesh(vs(mirrored(25))))
    assert share == 0.25
    assert [(p, o.version) for p, o in landing] == [(1.0, "v2")]


@pytest.mark.parametrize(("snapshot", "why"), [
    (mesh(vs(mirrored(50)), dr("v1")), "subset missing from the DestinationRule"),
    (mesh(vs(mirrored(50)), pods=[pod("v1"), pod("v2", ready=False)]), "no Ready endpoint"),
    (mesh(vs(mirrored(50)), pods=[pod("v1"), pod("v2", sidecar=False)]), "no sidecar to report it"),
    (mesh(vs({**mirrored(50), "mirror": {"host": "ghost"}})), "no such service"),
    (mesh(vs(mirrored(50, fault={"abort": {"httpStatus": 503, "percentage": {"value": 100}}}))), "aborted"),
    (mesh(vs({"directResponse": {"status": 200}, "mirror": {"host": "reviews", "subset": "v2"}})), "no upstream"),
    (mesh(vs(mirrored(0))), "0%"),
    (mesh(vs({"route": [dest("v1")]})), "no mirror"),
])
def test_copies_envoy_cannot_send_or_nobody_reports_leave_no_trace(snapshot: Any, why: str) -> None:
    assert mirror_targets(PLAIN, snapshot) == [], why
    assert not shadow_table(PLAIN, snapshot)


def test_a_partial_abort_copies_only_the_requests_that_passed_the_fault_filter() -> None:
    route = mirrored(100, fault={"abort": {"httpStatus": 503, "percentage": {"value": 40}}})
    [(share, _)] = mirror_targets(PLAIN, mesh(vs(route)))
    assert share == pytest.approx(0.6)


def test_the_table_draws_copies_at_the_mirror_percentage() -> None:
    table = shadow_table(PLAIN, mesh(vs(mirrored(30))))
    rng = random.Random(7)
    copies = sum(len(table.draw(rng.random)) for _ in range(20000))
    assert 0.28 < copies / 20000 < 0.32


def _series(text: str, metric: str = "istio_requests_total") -> dict[tuple[str, str, str], int]:
    out: dict[tuple[str, str, str], int] = {}
    for labels, value in re.findall(rf"^{metric}\{{([^}}]*)\}} (\d+)$", text, re.M):
        d = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        key = (d.get("reporter", ""), d.get("destination_version", d.get("version", "")), d["response_code"])
        out[key] = out.get(key, 0) + int(value)
    return out


def test_the_generator_reports_copies_only_at_the_canary_and_clients_get_only_stable() -> None:
    world = load_config()
    store = Store()
    seed_world(store, world)
    generator = TrafficGenerator(store, world, random.Random(3))
    generator.update_behaviour({"rps": 1000})
    generator.update_behaviour({"version": "v2", "error_rate": 0.1})
    vs_obj = store.get("virtualservices", "bookinfo", "reviews")
    vs_obj["spec"]["http"] = [mirrored(50)]
    store.put("virtualservices", vs_obj)
    dr_obj = store.get("destinationrules", "bookinfo", "reviews")
    dr_obj["spec"]["subsets"].append({"name": "v2", "labels": {"version": "v2"}})
    store.put("destinationrules", dr_obj)
    generator.tick(0.0)
    for i in range(1, 101):
        generator.tick(i * 0.1)  # 10 s at 1000 rps
    text = generator.render_metrics()
    istio = _series(text)
    clients = _series(text, "sandbox_requests_total")
    # What clients got: every request, from stable, none failed (v1 does not fail).
    assert sum(clients.values()) == 10000 and {v for _, v, _ in clients} == {"v1"}
    assert sum(n for (_, v, _), n in istio.items() if v == "v1") == 10000
    # The copies: about half, served by v2 with v2's errors, reported by the destination only.
    copies = {k: n for k, n in istio.items() if k[1] == "v2"}
    assert {reporter for reporter, _, _ in copies} == {"destination"}
    total = sum(copies.values())
    assert 4700 < total < 5300
    errors = sum(n for (_, _, code), n in copies.items() if code.startswith("5"))
    assert 0.08 < errors / total < 0.12
    assert not any(reporter == "source" for reporter, _, _ in istio)
    # Its latency histogram is the canary's too.
    assert re.search(r'istio_request_duration_milliseconds_count\{reporter="destination"[^}]*'
                     r'destination_version="v2"[^}]*\} \d+', text)
