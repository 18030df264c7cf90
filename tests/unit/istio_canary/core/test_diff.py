"""YAML diffs that task logs show to the people running a release."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from istio_canary.core.diff import strip_volatile, yaml_diff
from istio_canary.core.request import ReleaseRequest
from istio_canary.core.routing import set_weights

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def load(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    vs, dr = yaml.safe_load_all((FIXTURES / name).read_text())
    return vs, dr


REQUEST = ReleaseRequest.from_params(
    {
        "service": "reviews",
        "namespace": "bookinfo",
        "stable_version": "v1",
        "canary_version": "v3",
        "strategy": "header",
        "header_name": "x-canary",
    }
)


def test_equal_objects_have_no_diff() -> None:
    vs, _ = load("reviews_bookinfo.yaml")
    assert yaml_diff(vs, copy.deepcopy(vs), "reviews") == ""


def test_server_bookkeeping_is_not_a_change() -> None:
    vs, _ = load("reviews_bookinfo.yaml")
    written = copy.deepcopy(vs)
    written["metadata"].update(
        resourceVersion="48212",
        generation=5,
        uid="00000000-0000-0000-0000-000000000000",
        creationTimestamp="2026-01-01T00:00:00Z",
        managedFields=[{"manager": "kubectl", "operation": "Update"}],
    )
    assert yaml_diff(vs, written, "reviews") == ""
    assert strip_volatile(written)["metadata"] == {
        "name": "reviews",
        "namespace": "bookinfo",
        "labels": {"app": "reviews"},
        "annotations": {"owner": "team-books"},
    }
    assert "resourceVersion" in written["metadata"]  # strip_volatile copies


def test_weight_change_shows_as_a_unified_diff_in_field_order() -> None:
    vs, _ = load("reviews_bookinfo.yaml")
    after = set_weights(vs, REQUEST, 10)

    diff = yaml_diff(vs, after, "virtualservice bookinfo/reviews")

    lines = diff.splitlines()
    assert lines[0] == "--- virtualservice bookinfo/reviews (before)"
    assert lines[1] == "+++ virtualservice bookinfo/reviews (after)"
    added = [line for line in lines if line.startswith("+") and not line.startswith("+++")]
    assert added == [
        "+      weight: 90",
        "+    - destination:",
        "+        host: reviews",
        "+        subset: v3",
        "+      weight: 10",
    ]
    assert not [line for line in lines if line.startswith("-") and not line.startswith("---")]
    assert lines[2] == "@@ -24,3 +24,8 @@"


def test_creation_and_deletion_diff_against_nothing() -> None:
    _, dr = load("reviews_bookinfo.yaml")
    created = yaml_diff(None, dr, "destinationrule bookinfo/reviews")
    assert created.startswith("--- /dev/null\n+++ destinationrule bookinfo/reviews (after)\n")
    assert "+      mode: ISTIO_MUTUAL\n" in created
    assert "resourceVersion" not in created
    # sort_keys=False: fields keep the object's order (trafficPolicy before subsets), as written.
    top_level = [line for line in created.splitlines() if line[:1] == "+" and line[1:2].isalpha()]
    assert top_level == [
        "+apiVersion: networking.istio.io/v1",
        "+kind: DestinationRule",
        "+metadata:",
        "+spec:",
    ]
    assert created.index("+  trafficPolicy:") < created.index("+  subsets:")
    deleted = yaml_diff(dr, None, "destinationrule bookinfo/reviews")
    assert deleted.splitlines()[1] == "+++ /dev/null"
    assert yaml_diff(None, None, "x") == ""
