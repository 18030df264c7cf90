"""The sandbox world config: defaults, checks that name the field, and the seeded objects."""

from __future__ import annotations

from pathlib import Path

import pytest

from istio_canary.core.pods import metric_label_problems
from sandbox.config import load_config, parse_config, reseed_world, seed_world, service_objects
from sandbox.errors import SandboxInputError
from sandbox.hosts import MESH_DOMAIN
from sandbox.store import Store


def test_default_world_is_reviews_v1_v2_in_bookinfo() -> None:
    world = load_config()
    assert [(s.namespace, s.name) for s in world.services] == [("bookinfo", "reviews")]
    svc = world.services[0]
    assert (svc.rps, svc.header_fraction, svc.cookie_fraction, svc.port, svc.stable) == (
        50,
        0.1,
        0.1,
        9080,
        "v1",
    )
    for version in ("v1", "v2"):
        v = svc.versions[version]
        assert (v.error_rate, v.latency_ms_p50, v.latency_ms_p99, v.replicas) == (0.0, 20, 80, 1)
        assert v.sidecar and v.ready


def test_left_out_fields_take_defaults_so_big_worlds_stay_short() -> None:
    world = parse_config({"services": [{"name": f"svc-{i}", "namespace": f"ns-{i % 3}"} for i in range(50)]})
    assert len(world.services) == 50
    assert all(list(s.versions) == ["v1", "v2"] and s.rps == 50 for s in world.services)


@pytest.mark.parametrize(
    ("raw", "field", "value"),
    [
        (
            {"services": [{"name": "reviews", "versions": {"v2": {"error_rate": 1.5}}}]},
            "services[0].versions.v2.error_rate",
            1.5,
        ),
        (
            {
                "services": [
                    {"name": "reviews", "versions": {"v1": {"latency_ms_p50": 100, "latency_ms_p99": 50}}}
                ]
            },
            "services[0].versions.v1.latency_ms_p99",
            50,
        ),
        ({"services": [{"name": "reviews", "rsp": 10}]}, "services[0].rsp", 10),
        ({"services": [{"name": "reviews", "rps": -5}]}, "services[0].rps", -5),
        ({"services": [{"name": "reviews", "rps": True}]}, "services[0].rps", True),
        ({"services": [{"name": "reviews", "header_fraction": 1.2}]}, "services[0].header_fraction", 1.2),
        ({"services": [{"name": "Reviews"}]}, "services[0].name", "Reviews"),
        ({"services": [{"name": "reviews", "namespace": "book_info"}]}, "services[0].namespace", "book_info"),
        ({"services": [{"name": "reviews", "versions": {"v1.2": {}}}]}, "services[0].versions.v1.2", "v1.2"),
        ({"services": [{"name": "reviews", "stable": "v9"}]}, "services[0].stable", "v9"),
        (
            {"services": [{"name": "reviews", "versions": {"v1": {"sidecar": "no"}}}]},
            "services[0].versions.v1.sidecar",
            "no",
        ),
        ({"services": [{"name": "a"}, {"name": "a"}]}, "services[1].name", "a"),
        ({"services": []}, "services", []),
        ({"tick_ms": 5, "services": [{"name": "a"}]}, "tick_ms", 5),
        ({"servics": []}, "servics", []),
    ],
)
def test_bad_config_names_field_and_value(raw: dict, field: str, value: object) -> None:
    with pytest.raises(SandboxInputError) as info:
        parse_config(raw)
    assert info.value.field == field
    assert info.value.value == value
    assert field in str(info.value)


def test_unreadable_or_invalid_yaml_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SandboxInputError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("services: [name: a\n")
    with pytest.raises(SandboxInputError, match="not valid YAML"):
        load_config(bad)


def test_seeded_objects_are_what_the_release_pipeline_expects() -> None:
    store = Store()
    seed_world(store, load_config())
    vs = store.get("virtualservices", "bookinfo", "reviews")
    assert vs["apiVersion"] == "networking.istio.io/v1"
    assert vs["spec"] == {
        "hosts": ["reviews"],
        "http": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}],
    }
    dr = store.get("destinationrules", "bookinfo", "reviews")
    assert dr["spec"] == {
        "host": "reviews",
        "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}},
        "subsets": [{"name": "v1", "labels": {"version": "v1"}}],
    }
    service = store.get("services", "bookinfo", "reviews")
    assert service["spec"]["selector"] == {"app": "reviews"}
    assert service["spec"]["ports"][0]["port"] == 9080
    pods = store.list("pods", "bookinfo")
    assert sorted(p["metadata"]["labels"]["version"] for p in pods) == ["v1", "v2"]
    for pod in pods:
        version = pod["metadata"]["labels"]["version"]
        assert pod["metadata"]["name"].startswith(f"reviews-{version}-")
        assert pod["metadata"]["labels"]["app"] == "reviews"
        assert [c["name"] for c in pod["spec"]["containers"]] == ["reviews", "istio-proxy"]
        assert pod["status"]["phase"] == "Running"
        assert {"type": "Ready", "status": "True"} in pod["status"]["conditions"]
        assert all(cs["ready"] for cs in pod["status"]["containerStatuses"])


def test_seeded_pods_name_their_version_in_both_istio_metric_labels() -> None:
    store = Store()
    world = load_config()
    seed_world(store, world)
    assert MESH_DOMAIN == "cluster.local"
    assert world.services[0].fqdn == "reviews.bookinfo.svc.cluster.local"
    for version in ("v1", "v2"):
        pods = [p for p in store.list("pods", "bookinfo") if p["metadata"]["labels"]["version"] == version]
        for label in ("version", "service.istio.io/canonical-revision"):
            assert metric_label_problems(pods, version, label) == [], (version, label)


def test_canary_without_sidecar_or_readiness_can_be_seeded() -> None:
    world = parse_config(
        {
            "services": [
                {
                    "name": "reviews",
                    "versions": {"v1": {"replicas": 2}, "v2": {"sidecar": False, "ready": False}},
                }
            ]
        }
    )
    pods = [obj for resource, obj in service_objects(world.services[0]) if resource == "pods"]
    v1 = [p for p in pods if p["metadata"]["labels"]["version"] == "v1"]
    (v2,) = [p for p in pods if p["metadata"]["labels"]["version"] == "v2"]
    assert len({p["metadata"]["name"] for p in v1}) == 2
    assert [c["name"] for c in v2["spec"]["containers"]] == ["reviews"]
    assert {"type": "Ready", "status": "False"} in v2["status"]["conditions"]
    assert not any(cs["ready"] for cs in v2["status"]["containerStatuses"])


def test_reseed_removes_added_objects_and_restores_seeded_ones() -> None:
    store = Store()
    world = load_config()
    seed_world(store, world)
    vs = store.get("virtualservices", "bookinfo", "reviews")
    vs["spec"]["http"][0]["route"][0]["destination"]["subset"] = "v2"
    store.put("virtualservices", vs)
    store.put("virtualservices", {"metadata": {"name": "extra", "namespace": "bookinfo"}, "spec": {}})
    reseed_world(store, world)
    assert [o["metadata"]["name"] for o in store.list("virtualservices")] == ["reviews"]
    restored = store.get("virtualservices", "bookinfo", "reviews")
    assert restored["spec"]["http"][0]["route"][0]["destination"]["subset"] == "v1"


def test_each_version_has_a_deployment_of_its_pods_and_an_hpa_when_asked() -> None:
    from istio_canary.core.capacity import version_workload

    world = parse_config({"services": [{"name": "reviews", "versions": {
        "v1": {"replicas": 3}, "v2": {"replicas": 1, "hpa_max_replicas": 5}, "v3": {"replicas": 2, "ready": False},
    }}]})
    objects = service_objects(world.services[0])
    deployments = [o for r, o in objects if r == "deployments"]
    hpas = [o for r, o in objects if r == "horizontalpodautoscalers"]
    pods = [o for r, o in objects if r == "pods"]
    assert [d["metadata"]["name"] for d in deployments] == ["reviews-v1", "reviews-v2", "reviews-v3"]
    for deployment in deployments:
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        mine = [p for p in pods if labels.items() <= p["metadata"]["labels"].items()]
        assert len(mine) == deployment["spec"]["replicas"] == deployment["status"]["replicas"]
    assert [h["spec"]["scaleTargetRef"]["name"] for h in hpas] == ["reviews-v2"]
    assert (hpas[0]["spec"]["minReplicas"], hpas[0]["spec"]["maxReplicas"]) == (1, 5)
    # What the release reads from them (core/capacity.py), through the Service's selector.
    assert version_workload("v2", {"app": "reviews", "version": "v2"}, deployments, hpas).ceiling == 5
    v3 = version_workload("v3", {"app": "reviews", "version": "v3"}, deployments, hpas)
    assert (v3.ready, v3.desired, v3.hpas) == (0, 2, ())


def test_hpa_max_replicas_is_checked_naming_the_field() -> None:
    with pytest.raises(SandboxInputError, match=r"services\[0\]\.versions\.v2\.hpa_max_replicas"):
        parse_config({"services": [{"name": "reviews", "versions": {"v2": {"hpa_max_replicas": 0}}}]})
