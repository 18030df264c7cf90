"""Preflight's handle-or-refuse checks: each refusal names the object, the field and the fix."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from istio_canary.core.preflight import (
    Refusal,
    ReleaseRefusedError,
    destination_rule_refusals,
    other_destination_rule_refusals,
    other_virtual_service_refusals,
    pod_selector,
    service_refusals,
    unselected_pods_refusal,
    virtual_service_refusals,
)
from istio_canary.core.request import ReleaseRequest

NS = "bookinfo"
FQDN = "reviews.bookinfo.svc.cluster.local"


def request(**params: Any) -> ReleaseRequest:
    return ReleaseRequest.from_params({"service": "reviews", "namespace": NS, "stable_version": "v1",
                                       "canary_version": "v2", **params})


def meta(name: str, namespace: str = NS) -> dict[str, Any]:
    return {"name": name, "namespace": namespace}


def vs(http: list[dict[str, Any]], name: str = "reviews", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": meta(name),
            "spec": {"hosts": ["reviews"], "http": http, **spec}}


def dr(subsets: list[dict[str, Any]] | None = None, name: str = "reviews", namespace: str = NS,
       host: str = "reviews", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"host": host, **spec}
    if subsets is not None:
        body["subsets"] = subsets
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": meta(name, namespace),
            "spec": body}


def subset(name: str, version: str | None = None) -> dict[str, Any]:
    return {"name": name, "labels": {"version": version or name}}


def to(subset_name: str | None, weight: int | None = None, host: str = "reviews") -> dict[str, Any]:
    dest: dict[str, Any] = {"host": host}
    if subset_name:
        dest["subset"] = subset_name
    entry: dict[str, Any] = {"destination": dest}
    if weight is not None:
        entry["weight"] = weight
    return entry


DEFAULT = {"name": "default", "route": [to("v1")]}
DR = dr([subset("v1"), subset("v2"), subset("v3")])


def only(refusals: list[Refusal]) -> Refusal:
    assert len(refusals) == 1, refusals
    return refusals[0]


def test_the_tidy_world_passes_every_check() -> None:
    release = vs([copy.deepcopy(DEFAULT)])
    assert virtual_service_refusals(release, DR, request()) == []
    assert other_virtual_service_refusals(release, [release], request()) == []
    assert other_destination_rule_refusals(release, DR, [DR], request()) == []
    assert destination_rule_refusals(DR, request()) == []


def test_a_users_route_named_like_the_canary_match_route_is_refused() -> None:
    users = {"name": "reviews-canary", "match": [{"headers": {"x-beta": {"exact": "1"}}}], "route": [to("v2")]}
    refusal = only(virtual_service_refusals(vs([users, DEFAULT]), DR, request()))
    assert (refusal.object, refusal.field) == ("VirtualService bookinfo/reviews", "spec.http[0].name")
    assert "canary_route_name" in refusal.fix
    mine = only(virtual_service_refusals(vs([dict(users, name="beta"), DEFAULT]), DR,
                                         request(canary_route_name="beta")))
    assert mine.field == "spec.http[0].name"
    assert virtual_service_refusals(vs([users, DEFAULT]), DR, request(canary_route_name="reviews-x")) == []


def test_destinations_of_the_host_without_a_subset_are_refused_in_every_section() -> None:
    release = vs([{"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}], "route": [to(None)]},
                  DEFAULT], tcp=[{"route": [to(None)]}])
    refusals = virtual_service_refusals(release, DR, request())
    assert [r.field for r in refusals] == ["spec.http[0].route[0].destination", "spec.tcp[0].route[0].destination"]
    assert "canary's pods (version=v2) already get traffic" in refusals[0].problem
    assert "subset: v1" in refusals[0].fix


def test_live_traffic_must_be_on_the_stable_subset() -> None:
    on_v3 = vs([{"name": "default", "route": [to("v3")]}])
    refusal = only(virtual_service_refusals(on_v3, DR, request()))
    assert refusal.field == "spec.http[0].route"
    assert "subset 'v3' (version=v3) 100%" in refusal.problem and "stable_version" in refusal.fix

    started = vs([{"name": "default", "route": [to("v1", 70), to("v2", 30)]}])
    refusal = only(virtual_service_refusals(started, DR, request()))
    assert "canary subset 'v2' already gets 30%" in refusal.problem

    # Another version beside the stable one is fine: only v1's share will move.
    shared = vs([{"name": "default", "route": [to("v1", 80), to("v3", 20)]}])
    assert virtual_service_refusals(shared, DR, request()) == []


def test_no_owned_route_is_refused_with_the_fix() -> None:
    matched_only = vs([{"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}],
                        "route": [to("v1")]}])
    refusal = only(virtual_service_refusals(matched_only, DR, request()))
    assert refusal.field == "spec.http" and "route_name" in refusal.fix


def test_another_virtual_service_routing_to_the_service_is_refused() -> None:
    release = vs([DEFAULT])
    gateway = vs([{"route": [to("v1", host=FQDN)]}], name="reviews-ingress", hosts=["reviews.example.com"],
                 gateways=["bookinfo/bookinfo-gateway"])
    refusal = only(other_virtual_service_refusals(release, [release, gateway], request()))
    assert (refusal.object, refusal.field) == ("VirtualService bookinfo/reviews-ingress",
                                              "spec.http[0].route[0].destination")
    assert "old version after promotion" in refusal.problem


def test_a_second_mesh_virtual_service_for_the_host_is_refused_but_a_gateway_only_one_is_not() -> None:
    release = vs([DEFAULT])
    second = vs([{"route": [to("v1", host="ratings")]}], name="reviews-extra", hosts=[FQDN])
    refusal = only(other_virtual_service_refusals(release, [second], request()))
    assert refusal.field == "spec.hosts[0]" and "IST0109" in refusal.problem
    edge = copy.deepcopy(second)
    edge["spec"]["gateways"] = ["bookinfo/edge"]
    assert other_virtual_service_refusals(release, [edge], request()) == []
    # Two labels are not a short name in Istio: `reviews.bookinfo` is another host.
    other_host = vs([{"route": [to("v1", host="ratings")]}], name="x", hosts=["reviews.bookinfo"])
    assert other_virtual_service_refusals(release, [other_host], request()) == []


def test_a_root_virtual_service_that_only_delegates_is_fine() -> None:
    delegate = vs([DEFAULT])
    delegate["spec"].pop("hosts")
    root = vs([{"match": [{"uri": {"prefix": "/reviews"}}], "delegate": {"name": "reviews", "namespace": NS}}],
              name="root", hosts=["bookinfo.example.com"], gateways=["bookinfo/edge"])
    assert other_virtual_service_refusals(delegate, [root, delegate], request()) == []


def test_a_destination_rule_exported_to_fewer_namespaces_than_the_virtual_service_is_refused() -> None:
    private = dr([subset("v1")], exportTo=["."])
    refusal = only(other_destination_rule_refusals(vs([DEFAULT]), private, [private], request()))
    assert (refusal.object, refusal.field) == ("DestinationRule bookinfo/reviews", "spec.exportTo")
    assert other_destination_rule_refusals(vs([DEFAULT], exportTo=["."]), private, [private], request()) == []


def test_other_destination_rules_for_the_host() -> None:
    release = vs([DEFAULT])
    twin = dr([subset("v1")], name="reviews-tuning", host=FQDN)
    refusal = only(other_destination_rule_refusals(release, DR, [DR, twin], request()))
    assert (refusal.object, refusal.field) == ("DestinationRule bookinfo/reviews-tuning", "spec.host")

    client_rule = dr([subset("v1")], name="reviews-from-shop", namespace="shop", host=FQDN)
    refusal = only(other_destination_rule_refusals(release, DR, [DR, client_rule], request()))
    assert (refusal.object, refusal.field) == ("DestinationRule shop/reviews-from-shop", "spec.subsets")
    assert "503" in refusal.problem and "'v2'" in refusal.fix
    ready = dr([subset("v1"), subset("v2")], name="reviews-from-shop", namespace="shop", host=FQDN)
    assert other_destination_rule_refusals(release, DR, [ready], request()) == []
    # A short host in another namespace is that namespace's own service, not ours.
    elsewhere = dr([subset("v1")], name="reviews", namespace="shop", host="reviews")
    assert other_destination_rule_refusals(release, DR, [elsewhere], request()) == []


def test_a_subset_of_the_canarys_name_with_other_labels_is_refused_naming_it() -> None:
    taken = dr([subset("v1"), {"name": "v2", "labels": {"version": "v2-beta"}}])
    refusal = only(destination_rule_refusals(taken, request()))
    assert (refusal.object, refusal.field) == ("DestinationRule bookinfo/reviews", "spec.subsets[1]")
    assert "canary_subset" in refusal.fix


def test_service_selector_checks() -> None:
    service = {"metadata": meta("reviews"), "spec": {"selector": {"app.kubernetes.io/name": "reviews"}}}
    assert service_refusals(service, request()) == []
    assert pod_selector(service, "version", "v2") == {"app.kubernetes.io/name": "reviews", "version": "v2"}
    bare = {"metadata": meta("reviews"), "spec": {}}
    assert only(service_refusals(bare, request())).field == "spec.selector"
    pinned = {"metadata": meta("reviews"), "spec": {"selector": {"app": "reviews", "version": "v1"}}}
    assert only(service_refusals(pinned, request())).field == "spec.selector.version"
    stray = [{"metadata": {"name": "reviews-v2-abc", "labels": {"version": "v2"}}}]
    refusal = unselected_pods_refusal(service, "v2", stray, request())
    assert (refusal.object, refusal.field) == ("Service bookinfo/reviews", "spec.selector")
    assert "reviews-v2-abc" in refusal.problem and "503" in refusal.problem


def test_the_error_lists_every_refusal() -> None:
    error = ReleaseRefusedError([Refusal("VirtualService a/b", "spec.http[0].name", "taken", "rename it"),
                                 Refusal("Service a/b", "spec.selector", "empty", "add one")])
    assert str(error).splitlines()[1:] == ["- VirtualService a/b spec.http[0].name: taken. Fix: rename it",
                                          "- Service a/b spec.selector: empty. Fix: add one"]
    with pytest.raises(ValueError):  # a RoutingError: callers catching those see it too
        raise error


def test_a_stable_subset_the_destination_rule_does_not_define_is_refused() -> None:
    refusal = only(destination_rule_refusals(dr(None, trafficPolicy={"tls": {"mode": "ISTIO_MUTUAL"}}), request()))
    assert (refusal.object, refusal.field) == ("DestinationRule bookinfo/reviews", "spec.subsets")
    assert "503 today" in refusal.problem and "add subset 'v1'" in refusal.fix


def test_a_delegate_no_virtual_service_delegates_to_is_refused() -> None:
    delegate = vs([DEFAULT])
    delegate["spec"].pop("hosts")
    refusal = only(other_virtual_service_refusals(delegate, [], request()))
    assert refusal.field == "spec.hosts" and "not in force" in refusal.problem


def test_a_two_label_host_gets_the_spelling_fix() -> None:
    refusal = only(virtual_service_refusals(vs([DEFAULT]), DR, request(host="reviews.bookinfo")))
    assert refusal.field == "spec.http"
    assert "set host to 'reviews' or to its FQDN 'reviews.bookinfo.svc.cluster.local'" in refusal.fix


def test_a_gateway_virtual_service_moved_with_the_release_is_not_refused() -> None:
    release = vs([DEFAULT])
    gateway = vs([{"route": [to("v1", host=FQDN)]}], name="reviews-ingress", hosts=["reviews.example.com"],
                 gateways=["bookinfo/bookinfo-gateway"])
    refusal = only(other_virtual_service_refusals(release, [gateway], request()))
    assert "add 'reviews-ingress' to virtual_services" in refusal.fix
    assert other_virtual_service_refusals(release, [gateway], request(virtual_services=["reviews-ingress"])) == []
    # Moving a second mesh VirtualService for the host does not end Istio's conflict between the two.
    second = vs([{"route": [to("v1")]}], name="reviews-2")
    assert only(other_virtual_service_refusals(release, [second], request(virtual_services=["reviews-2"]))).field \
        == "spec.hosts[0]"


def test_sticky_sessions_refuse_what_would_lose_the_users_config_before_any_write() -> None:
    sticky = request(sticky_sessions=True)
    users = {"name": "reviews-canary-sticky", "match": [{"headers": {"x-beta": {"exact": "1"}}}], "route": [to("v1")]}
    taken = only(virtual_service_refusals(vs([users, DEFAULT]), DR, sticky))
    assert taken.field == "spec.http[0].name" and "reviews-canary-sticky" in taken.problem
    assert "canary_route_name" in taken.fix
    assert virtual_service_refusals(vs([users, DEFAULT]), DR, request()) == []  # not sticky: not ours
    on_cookie = {"name": "api", "match": [{"headers": {"cookie": {"regex": ".*beta.*"}}}], "route": [to("v1")]}
    refusal = only(virtual_service_refusals(vs([on_cookie]), DR, request(sticky_sessions=True, route_name="api")))
    assert refusal.field == "spec.http[0].match" and "sticky_sessions" in refusal.fix
    cookie_set = dict(copy.deepcopy(DEFAULT))
    cookie_set["route"][0]["headers"] = {"response": {"add": {"set-cookie": "lang=en"}}}
    refusal = only(virtual_service_refusals(vs([cookie_set]), DR, sticky))
    assert refusal.field == "spec.http[0].route[0].headers.response.add"
    assert virtual_service_refusals(vs([copy.deepcopy(DEFAULT)]), DR, sticky) == []
