"""Istio's rules (what its CRD schema and webhook reject) and ours (what would break the
release's own routes), with field paths. Ours reach only the routes the release writes."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from istio_canary.core.hosts import canonical_host
from istio_canary.core.istio_rules import (
    IstioValidationError,
    validate_destination_rule,
    validate_virtual_service,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
FIXTURE_FILES = sorted(p.name for p in FIXTURES.glob("*.yaml") if p.name != "scenarios.yaml")
FOREIGN, OWNED = 0, 1  # reviews: http[0] is someone else's `jason` route, http[1] the release's


def load(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    vs, dr = yaml.safe_load_all((FIXTURES / name).read_text())
    return vs, dr


def reviews() -> tuple[dict[str, Any], dict[str, Any]]:
    return load("reviews_bookinfo.yaml")


def problems_of(vs: dict[str, Any], drs: Any, **kwargs: Any) -> list[str]:
    with pytest.raises(IstioValidationError) as err:
        validate_virtual_service(vs, drs, **kwargs)
    assert "bookinfo/reviews" in str(err.value)
    return err.value.problems


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_fixtures_are_valid_istio_config(name: str) -> None:
    # A fixture is what a cluster holds: Istio accepted it, whatever our rules say.
    vs, dr = load(name)
    validate_destination_rule(dr)
    validate_virtual_service(vs, [dr], written_routes=())
    validate_virtual_service(vs, dr, written_routes=())


# --------------------------------------------------------------------------- ours: only written routes


def test_a_foreign_route_with_a_subset_missing_from_the_rule_is_left_alone() -> None:
    vs, dr = reviews()
    vs["spec"]["http"][FOREIGN]["route"][0]["destination"]["subset"] = "v9"
    validate_virtual_service(vs, dr, written_routes={OWNED})
    validate_virtual_service(vs, dr, written_routes=())
    [problem] = problems_of(vs, dr, written_routes={FOREIGN, OWNED})
    assert problem.startswith("spec.http[0].route[0].destination.subset: subset 'v9' of host 'reviews'")
    # None (the default) checks every route, as before.
    assert problems_of(vs, dr) == [problem]


def test_a_written_route_with_a_subset_missing_from_the_rule_fails() -> None:
    vs, dr = reviews()
    vs["spec"]["http"][OWNED]["route"] = [
        {"destination": {"host": "reviews.bookinfo.svc.cluster.local", "subset": "v1"}, "weight": 90},
        {"destination": {"host": "reviews", "subset": "v3"}, "weight": 10},
    ]
    [problem] = problems_of(vs, [dr], written_routes={OWNED})
    assert problem.startswith("spec.http[1].route[1].destination.subset: subset 'v3' of host 'reviews'")
    assert "bookinfo/reviews (subsets: ['v1', 'v2'])" in problem


def test_a_foreign_mirror_to_a_missing_subset_is_left_alone() -> None:
    vs, dr = load("frontend_gateways.yaml")
    vs["spec"]["http"][0] = {
        "name": "shadow",
        "match": [{"uri": {"prefix": "/beta"}}],
        "route": [{"destination": {"host": "frontend", "subset": "stable"}}],
        "mirror": {"host": "frontend", "subset": "shadow"},
    }
    validate_virtual_service(vs, dr, written_routes={1})
    with pytest.raises(IstioValidationError, match=r"spec.http\[0\].mirror.subset: subset 'shadow'"):
        validate_virtual_service(vs, dr, written_routes={0, 1})


def test_an_empty_rule_covers_its_host_with_no_subsets() -> None:
    vs, _ = load("ratings_resilience.yaml")
    _, dr = load("ratings_resilience.yaml")
    dr["spec"].pop("subsets", None)
    vs["spec"]["http"][1]["route"][0]["destination"]["subset"] = "v1"
    with pytest.raises(IstioValidationError, match=r"subset 'v1' .* \(subsets: none\)"):
        validate_virtual_service(vs, dr, written_routes={1})
    validate_virtual_service(vs, dr, written_routes={0})


def test_a_catch_all_before_other_routes_is_refused_only_when_written() -> None:
    # Istio's webhook only warns about it (VirtualServiceUnreachableRule); it accepts the object.
    vs, dr = reviews()
    vs["spec"]["http"].reverse()  # catch-all first, then the jason route
    validate_virtual_service(vs, dr, written_routes=())
    [problem] = problems_of(vs, dr, written_routes={0})
    assert (
        problem == "spec.http[0]: only the last http route may have no match (this one hides routes after it)"
    )
    assert problems_of(vs, dr) == [problem]


def test_a_written_route_behind_a_foreign_catch_all_never_matches() -> None:
    vs, dr = reviews()
    vs["spec"]["http"].reverse()
    [problem] = problems_of(vs, dr, written_routes={1})
    assert problem.startswith("spec.http[1]: never matches: spec.http[0] before it has no match")


def test_foreign_tcp_routes_are_not_judged_by_our_rules() -> None:
    vs, dr = reviews()
    vs["spec"]["tcp"] = [{"route": [{"destination": {"host": "reviews", "subset": "v9"}}]}]
    validate_virtual_service(vs, dr, written_routes={OWNED})
    assert problems_of(vs, dr)[0].startswith("spec.tcp[0].route[0].destination.subset: subset 'v9'")


def test_written_route_indices_outside_the_list_are_ignored() -> None:
    vs, dr = reviews()
    validate_virtual_service(vs, dr, written_routes={OWNED, 7, -1})


# --------------------------------------------------------------------------- hosts, as Istio resolves them


@pytest.mark.parametrize(
    "host, expected",
    [
        ("reviews", "reviews.bookinfo.svc.cluster.local"),
        ("reviews.bookinfo", "reviews.bookinfo"),  # has a dot: taken as written
        ("reviews.bookinfo.svc", "reviews.bookinfo.svc"),
        ("reviews.bookinfo.svc.cluster.local", "reviews.bookinfo.svc.cluster.local"),
        ("*", "*"),
        ("10.0.0.1", "10.0.0.1"),
    ],
)
def test_only_dot_free_short_names_are_expanded(host: str, expected: str) -> None:
    assert canonical_host(host, "bookinfo") == expected


def test_reviews_dot_namespace_is_not_the_reviews_service() -> None:
    vs, dr = reviews()
    dest = vs["spec"]["http"][OWNED]["route"][0]["destination"]
    dest.update(host="reviews.bookinfo", subset="v9")
    validate_virtual_service(vs, dr)  # another host: the rule for `reviews` says nothing about it
    dest["host"] = "reviews.bookinfo.svc.cluster.local"
    assert problems_of(vs, dr)[0].startswith("spec.http[1].route[0].destination.subset: subset 'v9'")


def test_rule_in_another_namespace_does_not_cover_a_short_host() -> None:
    vs, dr = reviews()
    dr["metadata"]["namespace"] = "other"
    vs["spec"]["http"][OWNED]["route"][0]["destination"]["subset"] = "v9"
    validate_virtual_service(vs, [dr])  # reviews.other is a different service


def test_the_mesh_domain_is_threaded_through() -> None:
    vs, dr = reviews()
    dr["spec"]["host"] = "reviews.bookinfo.svc.corp.internal"
    vs["spec"]["http"][OWNED]["route"][0]["destination"]["subset"] = "v9"
    validate_virtual_service(vs, dr)  # under cluster.local, `reviews` is another host
    with pytest.raises(IstioValidationError, match="subset 'v9'"):
        validate_virtual_service(vs, dr, mesh_domain="corp.internal")


def test_subsets_of_hosts_without_a_known_rule_are_not_judged() -> None:
    vs, dr = reviews()
    vs["spec"]["http"][0]["route"][0]["destination"] = {"host": "reviews-legacy", "subset": "old"}
    validate_virtual_service(vs, [dr])


# --------------------------------------------------------------------------- accepted by Istio


def _set_match(match: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def edit(vs: dict[str, Any]) -> None:
        vs["spec"]["http"][FOREIGN]["match"] = [match]

    return edit


def _set_owned_route(entries: list[dict[str, Any]]) -> Callable[[dict[str, Any]], None]:
    def edit(vs: dict[str, Any]) -> None:
        vs["spec"]["http"][OWNED]["route"] = entries

    return edit


def _v(subset: str, **extra: Any) -> dict[str, Any]:
    return {"destination": {"host": "reviews", "subset": subset}, **extra}


ACCEPTED: dict[str, Callable[[dict[str, Any]], None]] = {
    # validateHTTPRouteMatchRequest checks names against RFC 7230 tokens, upper case included.
    "upper-case header name": _set_match({"headers": {"End-User": {"exact": "jason"}}}),
    "pseudo-header name": _set_match({"headers": {":authority": {"prefix": "reviews"}}}),
    # validateStringMatch has nothing to say about a StringMatch with no kind set.
    "empty uri match": _set_match({"uri": {}}),
    "empty method match": _set_match({"method": {}}),
    "header presence": _set_match(
        {"headers": {"end-user": {}}, "withoutHeaders": {"x-bot": {"prefix": "y"}}}
    ),
    # uri goes through validateStringMatchRegexp only: Envoy allows an empty path prefix.
    "empty uri prefix": _set_match({"uri": {"prefix": ""}}),
    # withoutHeaders skips `regex: "*"` (it means "header absent").
    "withoutHeaders regex star": _set_match({"withoutHeaders": {"x-bot": {"regex": "*"}}}),
    "withoutHeaders null": _set_match({"withoutHeaders": {"x-bot": None}}),
    "queryParams null": _set_match({"queryParams": {"debug": None}}),
    "query param name is free": _set_match({"queryParams": {"Debug Mode": {"exact": "1"}}}),
    # validateSubsetName uses Istio's IsDNS1123Label, which allows upper case.
    "upper-case subset": _set_owned_route([{"destination": {"host": "reviews-legacy", "subset": "V1"}}]),
    "empty subset": _set_owned_route([_v("")]),
    # validateHTTPRouteDestinations only refuses negative weights and an all-zero total.
    "weights not summing to 100": _set_owned_route([_v("v1", weight=3), _v("v2", weight=1)]),
    "a lone zero weight": _set_owned_route([_v("v1", weight=0)]),
    "null weight": _set_owned_route([_v("v1", weight=None)]),
    "wildcard destination host": _set_owned_route(
        [{"destination": {"host": "*.bookinfo.svc.cluster.local"}}]
    ),
    "route with delegate only": lambda vs: vs["spec"]["http"][FOREIGN].update(
        route=None, delegate={"name": "reviews-jason", "namespace": "bookinfo"}
    ),
    "redirect without route": lambda vs: vs["spec"]["http"][FOREIGN].update(
        route=None, redirect={"uri": "/v2"}
    ),
    "IP address host": lambda vs: vs["spec"]["hosts"].append("10.96.0.12"),
    "host with trailing dot": lambda vs: vs["spec"]["hosts"].append("reviews.example.com."),
}


@pytest.mark.parametrize("edit", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_configurations_istio_accepts_are_accepted(edit: Callable[[dict[str, Any]], None]) -> None:
    vs, dr = reviews()
    edit(vs)
    validate_virtual_service(vs, dr)


def test_a_delegate_virtual_service_has_no_hosts() -> None:
    vs, dr = reviews()
    vs["spec"]["hosts"] = []
    validate_virtual_service(vs, dr)
    vs["spec"]["tcp"] = [{"route": [{"destination": {"host": "reviews"}}]}]
    assert problems_of(vs, dr) == ["spec.tcp: a delegate VirtualService (no hosts) must have no tcp"]


def test_jwt_claim_routing_only_on_gateways() -> None:
    vs, dr = load("frontend_gateways.yaml")
    vs["spec"]["http"][0]["match"][0]["headers"] = {"@request.auth.claims.group": {"exact": "beta"}}
    with pytest.raises(IstioValidationError, match=r"headers.@request.auth.claims.group: JWT claim"):
        validate_virtual_service(vs, dr)  # bound to `mesh` too
    vs["spec"]["gateways"] = ["istio-ingress/public-gateway"]
    validate_virtual_service(vs, dr)


# --------------------------------------------------------------------------- rejected by Istio, on any route


REJECTED: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "mis-indented destination (CRD: destination required)",
        _set_owned_route([{"destination": None, "host": "reviews", "subset": "v1"}]),
        "spec.http[1].route[0].destination: Required value (host/subset are nested one level too high",
    ),
    (
        "destination without host (CRD: host required)",
        _set_owned_route([{"destination": {"subset": "v2"}}]),
        "spec.http[1].route[0].destination.host: Required value",
    ),
    (
        "destination host * (validateDestination)",
        _set_owned_route([{"destination": {"host": "*"}}]),
        "spec.http[1].route[0].destination.host: invalid destination host *",
    ),
    (
        "destination host not a domain (ValidateWildcardDomain)",
        _set_owned_route([{"destination": {"host": "reviews_v1"}}]),
        "spec.http[1].route[0].destination.host: domain name 'reviews_v1' invalid",
    ),
    (
        "destination port 0 (validatePortSelector)",
        _set_owned_route([{"destination": {"host": "reviews", "port": {}}}]),
        "spec.http[1].route[0].destination.port.number: port number 0 must be in the range 1..65535",
    ),
    (
        "subset not a DNS-1123 label (validateSubsetName)",
        _set_owned_route([_v("v1.2")]),
        "spec.http[1].route[0].destination.subset: subset name is invalid: 'v1.2'",
    ),
    (
        "negative weight (validateWeight)",
        _set_owned_route([_v("v1", weight=-10), _v("v2", weight=110)]),
        "spec.http[1].route[0].weight: must be a non-negative int32, got -10",
    ),
    (
        "all-zero weights (validateHTTPRouteDestinations)",
        _set_owned_route([_v("v1", weight=0), _v("v2")]),
        "spec.http[1].route: weights of several destinations must not all be zero",
    ),
    (
        "weight not an integer (CRD: int32)",
        _set_owned_route([_v("v1", weight="50"), _v("v2", weight=50)]),
        "spec.http[1].route[0].weight: must be an integer, got '50'",
    ),
    (
        "weight beyond int32 (CRD: int32)",
        _set_owned_route([_v("v1", weight=2**31), _v("v2", weight=0)]),
        "spec.http[1].route[0].weight: must be a non-negative int32, got 2147483648",
    ),
    (
        "regex RE2 refuses (validateStringRegexp)",
        _set_match({"headers": {"cookie": {"regex": "(?!x).*"}}}),
        "spec.http[0].match[0].headers.cookie.regex: regex '(?!x).*' is not valid RE2",
    ),
    (
        "regex over 1024 bytes (validateStringRegexp)",
        _set_match({"headers": {"cookie": {"regex": "é" * 513}}}),
        "spec.http[0].match[0].headers.cookie.regex: regex '"
        + "é" * 80
        + "' is 1026 bytes, Istio allows at most 1024",
    ),
    (
        "empty regex (validateStringMatchRegexp)",
        _set_match({"uri": {"regex": ""}}),
        "spec.http[0].match[0].uri.regex: regex string match should not be empty",
    ),
    (
        "regex * under headers (validateStringMatch)",
        _set_match({"headers": {"x-bot": {"regex": "*"}}}),
        "spec.http[0].match[0].headers.x-bot.regex: regex '*' is not valid RE2",
    ),
    (
        "empty header prefix (validateStringMatch)",
        _set_match({"headers": {"end-user": {"prefix": ""}}}),
        "spec.http[0].match[0].headers.end-user.prefix: prefix string match should not be empty",
    ),
    (
        "empty method prefix (validateStringMatch)",
        _set_match({"method": {"prefix": ""}}),
        "spec.http[0].match[0].method.prefix: prefix string match should not be empty",
    ),
    (
        "two kinds in one StringMatch (CRD: oneOf)",
        _set_match({"headers": {"end-user": {"exact": "a", "prefix": "b"}}}),
        "spec.http[0].match[0].headers.end-user: exactly one of exact/prefix/regex allowed",
    ),
    (
        "StringMatch written as a string (CRD: object)",
        _set_match({"uri": "/exact"}),
        "spec.http[0].match[0].uri: must be a StringMatch object",
    ),
    (
        "header name with a space (ValidateHTTPHeaderNameOrJwtClaimRoute)",
        _set_match({"headers": {"end user": {"exact": "jason"}}}),
        "spec.http[0].match[0].headers.end user: header name end user is not a valid header name",
    ),
    (
        "unknown pseudo-header (ValidateHTTPHeaderNameOrJwtClaimRoute)",
        _set_match({"withoutHeaders": {":foo": {"exact": "x"}}}),
        "spec.http[0].match[0].withoutHeaders.:foo: header name :foo is not a valid header name",
    ),
    (
        "null header match (validateHTTPRouteMatchRequest)",
        _set_match({"headers": {"end-user": None}}),
        "spec.http[0].match[0].headers.end-user: cannot be null",
    ),
    (
        "query param regex (validateStringMatch)",
        _set_match({"queryParams": {"debug": {"regex": "[a-"}}}),
        "spec.http[0].match[0].queryParams.debug.regex: regex '[a-' is not valid RE2",
    ),
    (
        "no route, redirect or directResponse (validateHTTPRouteConflict)",
        lambda vs: vs["spec"]["http"][FOREIGN].pop("route"),
        "spec.http[0]: one of route, redirect, directResponse or delegate is required",
    ),
    (
        "empty route list (validateHTTPRouteConflict)",
        lambda vs: vs["spec"]["http"][FOREIGN].update(route=[]),
        "spec.http[0]: one of route, redirect, directResponse or delegate is required",
    ),
    (
        "route and redirect (validateHTTPRouteConflict)",
        lambda vs: vs["spec"]["http"][FOREIGN].update(redirect={"uri": "/v2"}),
        "spec.http[0]: cannot contain both redirect and route",
    ),
    (
        "route and delegate (validateHTTPRouteConflict)",
        lambda vs: vs["spec"]["http"][FOREIGN].update(delegate={"name": "reviews-jason"}),
        "spec.http[0].route: a route with delegate must not specify route",
    ),
    (
        "mirror and mirrors (validateHTTPRouteConflict)",
        lambda vs: vs["spec"]["http"][FOREIGN].update(
            mirror={"host": "reviews"}, mirrors=[{"destination": {"host": "reviews"}}]
        ),
        "spec.http[0]: cannot contain both mirror and mirrors",
    ),
    (
        "mirror without host (validateDestination)",
        lambda vs: vs["spec"]["http"][FOREIGN].update(mirrors=[{"destination": {"host": ""}}]),
        "spec.http[0].mirrors[0].destination.host: Required value",
    ),
    (
        "tcp route without destinations (validateTCPRoute)",
        lambda vs: vs["spec"].update(tcp=[{"match": [{"port": 9000}]}]),
        "spec.tcp[0].route: Required value (TCP route is required)",
    ),
    (
        "tcp destination without host (CRD: host required)",
        lambda vs: vs["spec"].update(tcp=[{"route": [{"destination": {"port": {"number": 9000}}}]}]),
        "spec.tcp[0].route[0].destination.host: Required value",
    ),
    (
        "tls route without sniHosts (validateTLSMatch)",
        lambda vs: vs["spec"].update(
            tls=[{"match": [{"port": 443}], "route": [{"destination": {"host": "reviews"}}]}]
        ),
        "spec.tls[0].match[0].sniHosts: Required value",
    ),
    (
        "wildcard host on the mesh (ValidateVirtualService)",
        lambda vs: vs["spec"].update(hosts=["*"]),
        "spec.hosts[0]: wildcard host * is not allowed for virtual services bound to the mesh gateway",
    ),
    (
        "duplicate hosts (ValidateVirtualService)",
        lambda vs: vs["spec"].update(hosts=["*.example.com", "reviews.example.com"]),
        "spec.hosts[0]: duplicate hosts in virtual service: *.example.com & reviews.example.com",
    ),
    (
        "invalid host (ValidateWildcardDomain)",
        lambda vs: vs["spec"].update(hosts=["reviews", ""]),
        "spec.hosts[1]: empty domain name not allowed",
    ),
    (
        "no http, tcp or tls (ValidateVirtualService)",
        lambda vs: vs["spec"].update(http=[]),
        "spec: http, tcp or tls must be provided in virtual service",
    ),
]


@pytest.mark.parametrize(
    "edit, expected",
    [(edit, expected) for _, edit, expected in REJECTED],
    ids=[name for name, _, _ in REJECTED],
)
def test_what_istio_rejects_fails_on_any_route(edit: Callable[[dict[str, Any]], None], expected: str) -> None:
    vs, dr = reviews()
    edit(vs)
    # Written or not: the whole object goes back to the API server.
    for written in ((), None):
        [problem] = problems_of(vs, dr, written_routes=written)
        assert problem.startswith(expected)


# --------------------------------------------------------------------------- DestinationRule


def dr_problems(dr: dict[str, Any]) -> list[str]:
    with pytest.raises(IstioValidationError) as err:
        validate_destination_rule(dr)
    return err.value.problems


def test_destination_rule_subset_rules() -> None:
    _, dr = reviews()
    bad = copy.deepcopy(dr)
    bad["spec"]["subsets"] = [
        {"name": "v1", "labels": {"version": "v1"}},
        {"name": "v1", "labels": {"version": "v1-hotfix"}},
        {"name": "v1_2", "labels": {"version": "v2"}},
        {"labels": {"version": "v3"}},
        {"name": "v4", "labels": {"version": 4}},
        {"name": "v5", "labels": {"-version": "v5", "version": "v5-"}},
        None,
    ]
    assert dr_problems(bad) == [
        "spec.subsets[1].name: duplicate subset 'v1' (also spec.subsets[0])",
        "spec.subsets[2].name: subset name is invalid: 'v1_2' (a DNS-1123 label: at most 63 letters, "
        "digits or '-', starting and ending with a letter or digit)",
        "spec.subsets[3].name: Required value (subset name cannot be empty)",
        "spec.subsets[4].labels: keys and values must be strings",
        "spec.subsets[5].labels: invalid label key '-version'",
        "spec.subsets[5].labels.version: invalid label value 'v5-'",
        "spec.subsets[6]: subset may not be null",
    ]


def test_destination_rule_subsets_istio_accepts() -> None:
    # validateSubset: labels are optional; upper-case names and empty label values are valid.
    _, dr = reviews()
    dr["spec"]["subsets"] = [
        {"name": "all"},
        {"name": "V2", "labels": {"version": "v2"}},
        {"name": "unlabelled", "labels": {"app.kubernetes.io/version": ""}},
    ]
    validate_destination_rule(dr)


@pytest.mark.parametrize(
    "path",
    [
        ("trafficPolicy",),
        ("subsets", 0, "trafficPolicy"),
        ("trafficPolicy", "portLevelSettings", 0),
    ],
)
def test_tls_mode_must_be_one_istio_knows(path: tuple[Any, ...]) -> None:
    _, dr = reviews()
    node: Any = dr["spec"]
    for key in path:
        if isinstance(key, str) and key not in node:
            node[key] = [{"port": {"number": 9080}}] if key == "portLevelSettings" else {}
        node = node[key]
    node["tls"] = {"mode": "STRICT"}  # a PeerAuthentication mode, a common mix-up
    [problem] = dr_problems(dr)
    assert "tls.mode: 'STRICT' is not one of DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL" in problem


def test_traffic_policies_istio_refuses() -> None:
    _, dr = reviews()
    dr["spec"]["subsets"][0]["trafficPolicy"] = {}
    dr["spec"]["trafficPolicy"]["portLevelSettings"] = [
        {"tls": {"mode": "DISABLE"}},
        {"port": {"number": 9080}},
    ]
    assert dr_problems(dr) == [
        "spec.trafficPolicy.portLevelSettings[0].port: Required value (portTrafficPolicy must have valid port)",
        "spec.trafficPolicy.portLevelSettings[1]: port traffic policy must have at least one field",
        "spec.subsets[0].trafficPolicy: traffic policy must have at least one field",
    ]


@pytest.mark.parametrize(
    "host, expected",
    [
        (None, "spec.host: Required value"),
        ("reviews..bookinfo", "spec.host: domain name 'reviews..bookinfo' invalid (label '' invalid)"),
        (
            "reviews.123",
            "spec.host: domain name 'reviews.123' invalid (top level domain '123' cannot be all-numeric)",
        ),
    ],
)
def test_destination_rule_host(host: str | None, expected: str) -> None:
    _, dr = reviews()
    dr["spec"]["host"] = host
    assert dr_problems(dr) == [expected]


def test_destination_rule_wildcard_host_is_accepted() -> None:
    _, dr = reviews()
    dr["spec"]["host"] = "*.bookinfo.svc.cluster.local"
    validate_destination_rule(dr)
