"""ReleaseRequest: params from the UI/REST/CLI become a checked, typed request or a clear error."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from istio_canary.core.request import ReleaseRequest
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
        cookie_regex=".*canary=true.*",
        route_name=None,
        istio_api_version="v1",
        stable_subset="v1",
        canary_subset="v2",
        canary_route_name="reviews-canary",
    )
    assert req.stable_labels == {"version": "v1"} and req.canary_labels == {"version": "v2"}
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
    }
    req = ReleaseRequest.from_params(params)
    assert req.strategy == "cookie" and req.route_name is None and req.uses_match_route
    assert ReleaseRequest.from_params(req.to_params()) == req
    assert req.to_params()["steps"] == [10, 100]


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


def test_host_aliases_cover_short_and_fully_qualified_names() -> None:
    req = make(host="reviews.bookinfo.svc.cluster.local")
    assert req.refers_to_host("reviews") and req.refers_to_host("reviews.bookinfo.svc")
    assert not req.refers_to_host("reviews.other.svc.cluster.local")
    external = make(host="reviews.example.com")
    assert external.host_aliases == {"reviews.example.com"}


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
