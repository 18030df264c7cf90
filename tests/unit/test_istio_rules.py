"""Istio's semantic rules: what the webhook (or Envoy at runtime) would refuse, with field paths."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from istio_canary.core.istio_rules import (
    IstioValidationError,
    validate_destination_rule,
    validate_virtual_service,
)

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_FILES = sorted(p.name for p in FIXTURES.glob("*.yaml") if p.name != "scenarios.yaml")


def load(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    vs, dr = yaml.safe_load_all((FIXTURES / name).read_text())
    return vs, dr


def reviews() -> tuple[dict[str, Any], dict[str, Any]]:
    return load("reviews_bookinfo.yaml")


def problems_of(vs: dict[str, Any], drs: Any) -> list[str]:
    with pytest.raises(IstioValidationError) as err:
        validate_virtual_service(vs, drs)
    assert "bookinfo/reviews" in str(err.value)
    return err.value.problems


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_fixtures_are_valid(name: str) -> None:
    vs, dr = load(name)
    validate_destination_rule(dr)
    validate_virtual_service(vs, [dr])
    validate_virtual_service(vs, dr)


def test_mis_indented_destination_is_reported_like_the_api_server() -> None:
    vs, dr = reviews()
    vs["spec"]["http"][1]["route"] = [{"destination": None, "host": "reviews", "subset": "v1"}]
    [problem] = problems_of(vs, dr)
    assert problem.startswith("spec.http[1].route[0].destination: Required value")


def test_destination_without_host() -> None:
    vs, dr = reviews()
    vs["spec"]["http"][0]["route"][0]["destination"] = {"subset": "v2"}
    assert problems_of(vs, dr) == ["spec.http[0].route[0].destination.host: Required value"]


def test_subset_missing_from_the_destination_rule() -> None:
    vs, dr = reviews()
    vs["spec"]["http"][1]["route"] = [
        {"destination": {"host": "reviews.bookinfo.svc.cluster.local", "subset": "v1"}, "weight": 90},
        {"destination": {"host": "reviews", "subset": "v3"}, "weight": 10},
    ]
    [problem] = problems_of(vs, [dr])
    assert problem.startswith("spec.http[1].route[1].destination.subset: subset 'v3' of host 'reviews'")
    assert "bookinfo/reviews (subsets: ['v1', 'v2'])" in problem


def test_subsets_of_hosts_without_a_known_rule_are_not_judged() -> None:
    vs, dr = reviews()
    vs["spec"]["http"][0]["route"][0]["destination"] = {"host": "reviews-legacy", "subset": "old"}
    validate_virtual_service(vs, [dr])


def test_rule_in_another_namespace_does_not_cover_a_short_host() -> None:
    vs, dr = reviews()
    dr["metadata"]["namespace"] = "other"
    vs["spec"]["http"][1]["route"][0]["destination"]["subset"] = "v9"
    validate_virtual_service(vs, [dr])  # reviews.other is a different service


@pytest.mark.parametrize(
    "weights, expected",
    [
        ((-10, 110), "spec.http[1].route[0].weight: must be a non-negative int32, got -10"),
        ((0, 0), "spec.http[1].route: weights of several destinations must not all be zero"),
        (("50", 50), "spec.http[1].route[0].weight: must be an integer, got '50'"),
        ((2**31, 0), "spec.http[1].route[0].weight: must be a non-negative int32, got 2147483648"),
    ],
)
def test_weights(weights: tuple[Any, Any], expected: str) -> None:
    vs, dr = reviews()
    vs["spec"]["http"][1]["route"] = [
        {"destination": {"host": "reviews", "subset": "v1"}, "weight": weights[0]},
        {"destination": {"host": "reviews", "subset": "v2"}, "weight": weights[1]},
    ]
    assert problems_of(vs, dr) == [expected]


def test_weights_need_not_sum_to_100_and_a_lone_zero_weight_is_fine() -> None:
    vs, dr = reviews()
    vs["spec"]["http"][1]["route"] = [
        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 3},
        {"destination": {"host": "reviews", "subset": "v2"}, "weight": 1},
    ]
    validate_virtual_service(vs, dr)
    vs["spec"]["http"][1]["route"] = [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 0}]
    validate_virtual_service(vs, dr)


def test_subset_name_must_be_dns1123_label() -> None:
    vs, dr = reviews()
    vs["spec"]["http"][1]["route"][0]["destination"]["subset"] = "v1.2"
    [problem] = problems_of(vs, dr)
    assert problem.startswith("spec.http[1].route[0].destination.subset='v1.2': must be a DNS-1123 label")


def test_only_the_last_http_route_may_lack_a_match() -> None:
    vs, dr = reviews()
    vs["spec"]["http"].reverse()
    [problem] = problems_of(vs, dr)
    assert problem.startswith("spec.http[0]: only the last http route may have no match")


@pytest.mark.parametrize(
    "match, expected",
    [
        ({"headers": {"cookie": {"regex": "(?!x).*"}}}, "spec.http[0].match[0].headers.cookie.regex: regex"),
        ({"headers": {"cookie": {"regex": "a" * 1025}}}, "is 1025 characters, Istio allows at most 1024"),
        (
            {"headers": {"end-user": {"exact": "a", "prefix": "b"}}},
            "exactly one of exact/prefix/regex allowed",
        ),
        ({"uri": {}}, "spec.http[0].match[0].uri: one of exact/prefix/regex is required"),
        ({"headers": {"End-User": {"exact": "jason"}}}, "headers.End-User: header names must be lower-case"),
        ({"headers": {"end-user": None}}, "spec.http[0].match[0].headers.end-user: cannot be null"),
        (
            {"queryParams": {"debug": {"regex": "[a-"}}},
            "queryParams.debug.regex: regex '[a-' is not valid RE2",
        ),
        ({"uri": "/exact"}, "spec.http[0].match[0].uri: must be a StringMatch object"),
    ],
)
def test_string_matches(match: dict[str, Any], expected: str) -> None:
    vs, dr = reviews()
    vs["spec"]["http"][0]["match"] = [match]
    [problem] = problems_of(vs, dr)
    assert expected in problem


def test_header_presence_match_and_without_headers_are_accepted() -> None:
    vs, dr = reviews()
    vs["spec"]["http"][0]["match"] = [
        {"headers": {"end-user": {}}, "withoutHeaders": {"x-bot": {"prefix": "y"}}}
    ]
    validate_virtual_service(vs, dr)


def test_route_needs_a_target_and_tcp_routes_need_hosts() -> None:
    vs, dr = reviews()
    del vs["spec"]["http"][0]["route"]
    vs["spec"]["tcp"] = [{"route": [{"destination": {"port": {"number": 9000}}}]}]
    vs["spec"]["hosts"] = []
    problems = problems_of(vs, dr)
    assert problems == [
        "spec.hosts: must be a non-empty list of host names",
        "spec.http[0]: one of route, redirect, directResponse or delegate is required",
        "spec.tcp[0].route[0].destination.host: Required value",
    ]


def test_redirect_route_and_mirror_checked() -> None:
    vs, _ = load("frontend_gateways.yaml")
    _, dr = load("frontend_gateways.yaml")
    validate_virtual_service(vs, dr)  # the redirect route needs no destination
    vs["spec"]["http"][1]["mirror"] = {"host": "frontend", "subset": "shadow"}
    with pytest.raises(IstioValidationError, match=r"spec.http\[1\].mirror.subset: subset 'shadow'"):
        validate_virtual_service(vs, dr)


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
        {"name": "V2", "labels": {"version": "v2"}},
        {"name": "v3"},
        {"name": "v4", "labels": {"version": 4}},
    ]
    problems = dr_problems(bad)
    assert problems[0] == "spec.subsets[1].name: duplicate subset 'v1' (also spec.subsets[0])"
    assert problems[1].startswith("spec.subsets[2].name='V2': must be a DNS-1123 label")
    assert problems[2] == "spec.subsets[3].labels: Required value (a subset selects pods by labels)"
    assert problems[3] == "spec.subsets[4].labels: keys and values must be strings"
    assert len(problems) == 4


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


def test_destination_rule_needs_host() -> None:
    _, dr = reviews()
    del dr["spec"]["host"]
    assert dr_problems(dr) == ["spec.host: Required value"]
