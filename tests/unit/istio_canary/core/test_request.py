"""ReleaseRequest: params from the UI/REST/CLI become a checked, typed request or a clear error."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
import re2

from istio_canary.core.fields import DEFAULT_COOKIE_REGEX
from istio_canary.core.request import ReleaseRequest, known_release_keys
from istio_canary.core.validation import ValidationError

BASE: dict[str, Any] = {
    "service": "reviews",
    "namespace": "bookinfo",
    "stable_version": "v1",
    "canary_version": "v2",
}


def make(**overrides: Any) -> ReleaseRequest:
    params = {**BASE, **overrides}
    return ReleaseRequest.from_params({k: v for k, v in params.items() if v is not ...})


def test_defaults() -> None:
    req = make()
    assert req == ReleaseRequest(
        service="reviews",
        namespace="bookinfo",
        stable_version="v1",
        canary_version="v2",
        host="reviews",
        version_label="version",
        steps=(10, 50, 100),
        strategy="weighted",
        header_name="user-agent",
        header_value="canary",
        cookie_regex="^(.*;\\s*)?canary=true(;.*)?$",
        route_name=None,
        istio_api_version="v1",
        stable_subset="v1",
        canary_subset="v2",
        canary_route_name="reviews-canary",
        mesh_domain="cluster.local",
    )
    assert req.stable_labels == {"version": "v1"} and req.canary_labels == {"version": "v2"}
    assert req.metric_version_label == "destination_version"
    assert req.fqdn == "reviews.bookinfo.svc.cluster.local"
    assert not req.uses_match_route


@pytest.mark.parametrize(
    "steps, expected",
    [
        ("10,50,100", (10, 50, 100)),
        (" 5, 25 ,100 ", (5, 25, 100)),
        ("[1, 2, 100]", (1, 2, 100)),
        ("20 60 100", (20, 60, 100)),
        ([10, "50", 100], (10, 50, 100)),
        ((100,), (100,)),
        (None, (10, 50, 100)),
        ("", (10, 50, 100)),
    ],
)
def test_steps_are_coerced(steps: Any, expected: tuple[int, ...]) -> None:
    assert make(steps=steps).steps == expected


def test_reads_only_its_own_keys_and_round_trips() -> None:
    params = {
        **BASE,
        "max_error_rate": 0.01,
        "window": "mon-fri 09:00-17:00",
        "steps": "10,100",
        "strategy": " Cookie ",
        "route_name": "",
        "mesh_domain": "corp.example",
        "version_label": "app.kubernetes.io/version",
    }
    req = ReleaseRequest.from_params(params)
    assert req.strategy == "cookie" and req.route_name is None and req.uses_match_route
    assert ReleaseRequest.from_params(req.to_params()) == req
    assert req.to_params()["steps"] == [10, 100]
    assert req.to_params()["mesh_domain"] == "corp.example"
    assert "mesh_domain" in ReleaseRequest.PARAM_KEYS
    # The form's keys and the analysis's are a release's too (a misspelt one is refused).
    assert {"mesh_domain", "canary_subset", "alpha", "dry_run", "window_mode"} <= known_release_keys()


def test_is_frozen() -> None:
    req = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.canary_version = "v3"  # type: ignore[misc]


def test_dotted_versions_need_explicit_subsets() -> None:
    with pytest.raises(ValidationError) as err:
        make(stable_version="1.2.0", canary_version="1.3.0")
    assert err.value.field == "stable_version"
    assert "stable_subset='1-2-0'" in str(err.value)

    req = make(
        stable_version="1.2.0",
        canary_version="1.3.0",
        stable_subset="stable",
        canary_subset="canary",
        version_label="app.kubernetes.io/version",
    )
    assert req.canary_labels == {"app.kubernetes.io/version": "1.3.0"}
    assert (req.stable_subset, req.canary_subset) == ("stable", "canary")


@pytest.mark.parametrize(
    ("version_label", "metric_label"),
    [
        ("version", "destination_version"),
        ("app.kubernetes.io/version", "destination_canonical_revision"),
        ("service.istio.io/canonical-revision", "destination_canonical_revision"),
    ],
)
def test_version_label_names_the_istio_metric_label(version_label: str, metric_label: str) -> None:
    req = make(version_label=version_label)
    assert req.metric_version_label == metric_label
    assert req.canary_labels == {version_label: "v2"}


@pytest.mark.parametrize("label", ["app", "track", "example.com/version", "Version", "-version"])
def test_a_version_label_istio_does_not_report_is_refused_saying_why(label: str) -> None:
    with pytest.raises(ValidationError) as err:
        make(version_label=label)
    assert err.value.field == "version_label" and err.value.value == label
    message = str(err.value)
    assert message.startswith(f"version_label={label!r}: Istio's metrics cannot tell versions apart")
    assert "use one of: version, app.kubernetes.io/version, service.istio.io/canonical-revision" in message


def test_host_aliases_are_the_short_name_and_the_fqdn_only() -> None:
    # Istio expands only a dot-free name: `reviews.bookinfo` and `reviews.bookinfo.svc` name other hosts.
    for host in ("reviews", "reviews.bookinfo.svc.cluster.local"):
        req = make(host=host)
        assert req.host_aliases == {"reviews", "reviews.bookinfo.svc.cluster.local"}, host
        assert not req.refers_to_host("reviews.bookinfo")
        assert not req.refers_to_host("reviews.bookinfo.svc")
        assert not req.refers_to_host("reviews.other.svc.cluster.local")
    assert make(host="reviews.bookinfo").host_aliases == {"reviews.bookinfo"}
    external = make(host="reviews.example.com")
    assert external.host_aliases == {"reviews.example.com"}


def test_mesh_domain_makes_the_fqdn() -> None:
    req = make(mesh_domain="corp.example")
    assert req.fqdn == "reviews.bookinfo.svc.corp.example"
    assert req.host_aliases == {"reviews", "reviews.bookinfo.svc.corp.example"}
    # cluster.local is another domain here: a host spelt with it is not the service.
    other = make(mesh_domain="corp.example", host="reviews.bookinfo.svc.cluster.local")
    assert other.host_aliases == {"reviews.bookinfo.svc.cluster.local"}
    assert not other.refers_to_host("reviews")


@pytest.mark.parametrize(
    "cookie", ["canary=true", "a=1; canary=true", "canary=true; b=2", "a=1;canary=true;b=2",
               "session=abc123; canary=true; theme=dark"],
)
def test_default_cookie_regex_matches_the_canary_cookie(cookie: str) -> None:
    assert make().cookie_regex == DEFAULT_COOKIE_REGEX
    assert re2.compile(DEFAULT_COOKIE_REGEX).fullmatch(cookie) is not None


@pytest.mark.parametrize(
    "cookie", ["notcanary=true", "canary=true2", "xcanary=true; y=1", "canary=false", "session=abc123", ""],
)
def test_default_cookie_regex_refuses_other_cookies(cookie: str) -> None:
    assert re2.compile(DEFAULT_COOKIE_REGEX).fullmatch(cookie) is None


def test_python_re_accepts_what_re2_rejects() -> None:
    # Why the check uses RE2: Envoy would refuse this regex although Python compiles it.
    lookahead = "^(?=.*canary=true).*$"
    re.compile(lookahead)
    with pytest.raises(ValidationError) as err:
        make(strategy="cookie", cookie_regex=lookahead)
    assert err.value.field == "cookie_regex" and "RE2" in str(err.value)


BAD_INPUTS: list[tuple[dict[str, Any], str]] = [
    ({"service": ...}, "service"),
    ({"service": "Reviews"}, "service"),
    ({"service": 123}, "service"),
    ({"namespace": "book_info"}, "namespace"),
    ({"host": "reviews..bookinfo"}, "host"),
    ({"canary_version": "v1"}, "canary_version"),
    ({"canary_version": ""}, "canary_version"),
    ({"stable_version": "v1 "}, "stable_version"),
    ({"stable_version": "v1.2"}, "stable_version"),
    ({"version_label": "-version"}, "version_label"),
    ({"version_label": "Example.com/version"}, "version_label"),
    ({"version_label": "app"}, "version_label"),
    ({"mesh_domain": "Cluster.Local"}, "mesh_domain"),
    ({"mesh_domain": "cluster..local"}, "mesh_domain"),
    ({"mesh_domain": "cluster.local."}, "mesh_domain"),
    ({"mesh_domain": 5}, "mesh_domain"),
    ({"steps": "10,5,100"}, "steps"),
    ({"steps": "10,50"}, "steps"),
    ({"steps": "0,100"}, "steps"),
    ({"steps": "10,150"}, "steps"),
    ({"steps": "ten,100"}, "steps"),
    ({"steps": [True, 100]}, "steps"),
    ({"steps": [10, 10, 100]}, "steps"),
    ({"steps": [10.5, 100]}, "steps"),
    ({"steps": 100}, "steps"),
    ({"steps": ","}, "steps"),
    ({"strategy": "blue-green"}, "strategy"),
    ({"header_name": "X-Canary"}, "header_name"),
    ({"header_name": "x canary"}, "header_name"),
    ({"header_value": "a\nb"}, "header_value"),
    ({"cookie_regex": "(canary"}, "cookie_regex"),
    ({"cookie_regex": "a" * 1025}, "cookie_regex"),
    ({"istio_api_version": "v1alpha3"}, "istio_api_version"),
    ({"stable_subset": "V1"}, "stable_subset"),
    ({"canary_subset": "v1"}, "canary_subset"),
    ({"route_name": "default", "canary_route_name": "default"}, "canary_route_name"),
    ({"route_name": 7}, "route_name"),
]


@pytest.mark.parametrize("overrides, field", BAD_INPUTS, ids=[f"{f}:{o}"[:60] for o, f in BAD_INPUTS])
def test_bad_input_names_the_field_and_value(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        make(**overrides)
    assert err.value.field == field
    message = str(err.value)
    assert message.startswith(f"{field}=")
    value = overrides.get(field, BASE.get(field))
    if value is not ...:
        assert repr(value)[:40].rstrip("'") in message


def test_virtual_services_moved_with_the_release_are_parsed_and_checked() -> None:
    base = {"service": "reviews", "namespace": "bookinfo", "stable_version": "v1", "canary_version": "v2"}
    req = ReleaseRequest.from_params({**base, "virtual_services": "reviews-ingress, reviews-edge"})
    assert req.virtual_services == ("reviews-ingress", "reviews-edge")
    assert req.all_virtual_services == ("reviews", "reviews-ingress", "reviews-edge")
    assert ReleaseRequest.from_params(req.to_params()) == req
    assert ReleaseRequest.from_params({**base, "virtual_services": []}).virtual_services == ()
    for bad, says in ((["Reviews_Ingress"], "DNS-1123"), (["a", "a"], "names a more than once"),
                      (["reviews"], "the release's own VirtualService"), (7, "list of names")):
        with pytest.raises(ValidationError) as err:
            ReleaseRequest.from_params({**base, "virtual_services": bad})
        assert err.value.field == "virtual_services" and says in str(err.value)


def test_sticky_sessions_defaults_and_coercion() -> None:
    req = make()
    assert (req.sticky_sessions, req.sticky_cookie_name, req.sticky_max_age_seconds) == (
        False, "istio-canary-reviews", 86400)
    sticky = make(sticky_sessions="true", sticky_cookie_name="app_sticky", sticky_max_age_seconds="600")
    assert (sticky.sticky_sessions, sticky.sticky_cookie_name, sticky.sticky_max_age_seconds) == (
        True, "app_sticky", 600)
    assert sticky.sticky_route_name == "reviews-canary-sticky"
    assert ReleaseRequest.from_params(sticky.to_params()) == sticky
    assert make(sticky_cookie_name=None, sticky_max_age_seconds=None, sticky_sessions=None) == make()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"sticky_sessions": "yes"}, "sticky_sessions"),
        ({"sticky_sessions": 1}, "sticky_sessions"),
        ({"sticky_cookie_name": "my cookie"}, "sticky_cookie_name"),
        ({"sticky_cookie_name": "a=b"}, "sticky_cookie_name"),
        ({"sticky_cookie_name": "a;b"}, "sticky_cookie_name"),
        ({"sticky_cookie_name": "x" * 257}, "sticky_cookie_name"),
        ({"sticky_cookie_name": 5}, "sticky_cookie_name"),
        ({"sticky_max_age_seconds": 0}, "sticky_max_age_seconds"),
        ({"sticky_max_age_seconds": -5}, "sticky_max_age_seconds"),
        ({"sticky_max_age_seconds": 400 * 86400 + 1}, "sticky_max_age_seconds"),
        ({"sticky_max_age_seconds": 1.5}, "sticky_max_age_seconds"),
        ({"sticky_max_age_seconds": True}, "sticky_max_age_seconds"),
        ({"sticky_sessions": True, "steps": [100]}, "sticky_sessions"),
        ({"sticky_sessions": True, "route_name": "reviews-canary-sticky"}, "canary_route_name"),
    ],
)
def test_bad_sticky_settings_name_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        make(**overrides)
    assert caught.value.field == field, caught.value


def test_a_route_named_like_the_sticky_route_is_ownable_without_sticky_sessions() -> None:
    assert make(route_name="reviews-canary-sticky").route_name == "reviews-canary-sticky"
