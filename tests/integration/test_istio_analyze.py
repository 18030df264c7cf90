"""Istio's own analyzer (`istioctl analyze`) on what a release writes.

The objects are the sandbox's seeded world (sandbox/config.py) and, at each step, what the
release's pure routing code (core/routing.py, core/lock.py) makes of them: the same functions
the operators call. Istio must find no Error-level message in any of those states, and must
find the two mistakes the release guards against (a second mesh VirtualService for the host,
IST0109; a route to a subset the DestinationRule lacks, IST0101): the oracle catches what
matters, so its silence means something.

Offline analysis (`--use-kube=false`) first; then the same against the session sandbox while
objects change (StepAnalyzer, as the end-to-end tests use it) and against a real
kube-apiserver, where istioctl also analyzes live.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from istio_canary.core.destination_rule import ensure_subsets, restore_subsets
from istio_canary.core.istio_rules import IstioValidationError, validate_virtual_service
from istio_canary.core.lock import finished, outcome_of, with_lock, without_own_annotations
from istio_canary.core.preflight import other_virtual_service_refusals
from istio_canary.core.request import ReleaseRequest
from istio_canary.core.routing import (
    RoutingPlan,
    apply_plan,
    plan_for_step,
    promote,
    restore_owned,
    routing_state,
    written_routes,
)
from sandbox.config import load_config, seed_world
from sandbox.store import Store
from tests.istio_analyzer import (
    Message,
    StepAnalyzer,
    analyze,
    analyze_live,
    errors,
    fetch_mesh_objects,
    is_real_apiserver,
)

pytestmark = pytest.mark.integration

NS = "bookinfo"
RELEASE = {"service": "reviews", "namespace": NS, "stable_version": "v1", "canary_version": "v2"}
HOLDER = "istio_canary_release/manual__istio-analyze"
ISTIO = ("networking.istio.io", "v1")

State = tuple[str, dict[str, Any], dict[str, Any]]  # (what was written, VirtualService, DestinationRule)


def seeded_world() -> list[dict[str, Any]]:
    """The sandbox's default world as its API serves it (the store stamps resourceVersions)."""
    store = Store()
    seed_world(store, load_config())
    return [obj for resource in ("namespaces", "services", "pods", "destinationrules", "virtualservices")
            for obj in store.list(resource)]


def find(objects: list[dict[str, Any]], kind: str, name: str = "reviews") -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def with_objects(world: list[dict[str, Any]], *replacements: dict[str, Any]) -> list[dict[str, Any]]:
    """`world` with each replacement in place of the object of its kind and name (or added)."""
    def key(obj: dict[str, Any]) -> tuple[str, str | None, str]:
        return obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"]

    replaced = {key(r): r for r in replacements}
    kept = [o for o in world if key(o) not in replaced]
    return kept + list(replaced.values())


def renamed(obj: dict[str, Any], name: str) -> dict[str, Any]:
    """A new object like `obj` under another name (nothing server-set carried over)."""
    out = copy.deepcopy(obj)
    meta = out["metadata"]
    out["metadata"] = {"name": name, **{k: meta[k] for k in ("namespace", "labels") if k in meta}}
    return out


def release_states(vs: dict[str, Any], dr: dict[str, Any], request: ReleaseRequest,
                   outcome: str) -> Iterator[State]:
    """Every (VirtualService, DestinationRule) state a release leaves behind, write by write, in
    the DAG's order: preflight's lock, destination_rule, [targeted,] each step's set_route, then
    promote, or rollback (route restored, then the subsets it added removed) during the first
    weighted step, as a canary failing in step 10 is."""
    snapshot = {"virtualService": without_own_annotations(vs), "destinationRule": dr}
    vs = with_lock(vs, HOLDER, snapshot)
    yield "preflight: lock taken", vs, dr
    dr = ensure_subsets(dr, request)
    yield "destination_rule: subsets ensured", vs, dr
    plans = [("targeted", RoutingPlan(canary_weight=0, match_route=True))] if request.uses_match_route else []
    plans += [(f"step_{w}", plan_for_step(request, w)) for w in request.steps]
    if outcome == "rolled_back":
        plans = plans[: len(plans) - len(request.steps) + 1]  # up to and including the first step
    for label, plan in plans:
        vs = apply_plan(vs, request, plan)
        yield f"{label}: {plan.describe()}", vs, dr
    if outcome == "promoted":
        vs = finished(promote(vs, request), HOLDER, "promoted")
        yield "promote", vs, dr
        return
    vs = finished(restore_owned(vs, snapshot["virtualService"], request), HOLDER, "rolled_back")
    yield "rollback: route restored", vs, dr
    dr = restore_subsets(dr, snapshot["destinationRule"], request, keep_referenced_by=vs)
    yield "rollback: subsets removed", vs, dr


def describe(messages: list[Message]) -> str:
    return "\n".join(f"  {m}" for m in messages) or "  (none)"


# --------------------------------------------------------------------------- offline, pure states


def test_the_seeded_world_has_no_messages_at_all() -> None:
    # Not even Info: offline, istioctl drops Pods/Services/Namespaces, so no injection notes.
    assert analyze(seeded_world()) == []


@pytest.mark.parametrize("outcome", ["promoted", "rolled_back"])
@pytest.mark.parametrize("strategy", ["weighted", "header", "cookie"])
def test_no_error_after_any_write_of_a_release(strategy: str, outcome: str) -> None:
    world = seeded_world()
    request = ReleaseRequest.from_params({**RELEASE, "strategy": strategy})
    states = list(release_states(find(world, "VirtualService"), find(world, "DestinationRule"), request, outcome))
    seen_weights = set()
    for label, vs, dr in states:
        messages = analyze(with_objects(world, vs, dr))
        assert not errors(messages), f"{strategy}, {label}:\n{describe(messages)}"
        seen_weights.add(routing_state(vs, request).canary_weight)
    # The states were the release's: every step's weight was analyzed, and it ended as it should.
    expected = {0, 10} if outcome == "rolled_back" else {0, 10, 50, 100}
    assert seen_weights == expected
    final_vs, final_dr = states[-1][1], states[-1][2]
    assert outcome_of(final_vs).outcome == outcome
    if outcome == "rolled_back":
        assert final_vs["spec"] == find(world, "VirtualService")["spec"]
        assert final_dr["spec"] == find(world, "DestinationRule")["spec"]


def test_two_mesh_virtual_services_for_one_host_are_ist0109_naming_both() -> None:
    world = seeded_world()
    request = ReleaseRequest.from_params(RELEASE)
    vs, dr = find(world, "VirtualService"), ensure_subsets(find(world, "DestinationRule"), request)
    # Someone's own canary VirtualService for the same host, beside the release's.
    other = apply_plan(renamed(vs, "reviews-canary"), request, plan_for_step(request, 10))
    messages = analyze(with_objects(world, dr, other))
    conflicts = [m for m in messages if m.code == "IST0109"]
    assert conflicts, describe(messages)
    assert {m.origin for m in conflicts} == {"VirtualService bookinfo/reviews", "VirtualService bookinfo/reviews-canary"}
    assert all(m.is_error and "bookinfo/reviews,bookinfo/reviews-canary" in m.text for m in conflicts), describe(conflicts)
    # The release's preflight refuses that world before any write (its rule, Istio's finding).
    refusals = other_virtual_service_refusals(vs, [vs, other], request)
    assert [r.object for r in refusals] == ["VirtualService bookinfo/reviews-canary"], refusals


def test_a_route_to_a_subset_the_destination_rule_lacks_is_ist0101() -> None:
    # The canary route written before the destination_rule step added subset v2.
    world = seeded_world()
    request = ReleaseRequest.from_params(RELEASE)
    vs, dr = find(world, "VirtualService"), find(world, "DestinationRule")
    early = apply_plan(vs, request, plan_for_step(request, 10))
    messages = analyze(with_objects(world, early))
    assert [(m.code, m.level, m.origin) for m in messages] == [("IST0101", "Error", "VirtualService bookinfo/reviews")]
    assert '"reviews+v2"' in messages[0].text
    # The operators' own check refuses to write it, for the same reason.
    with pytest.raises(IstioValidationError, match="v2"):
        validate_virtual_service(early, dr, written_routes=written_routes(early, request))
    # In the DAG's order (subsets first) the same route is clean.
    assert not errors(analyze(with_objects(world, early, ensure_subsets(dr, request))))


# --------------------------------------------------------------------------- through an API


def _custom(kubeconfig: Path) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(config.new_client_from_config(config_file=str(kubeconfig)))


def _write(api: client.CustomObjectsApi, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
    return api.replace_namespaced_custom_object(*ISTIO, NS, plural, obj["metadata"]["name"], obj)


def _apply_release(api: client.CustomObjectsApi, request: ReleaseRequest, pause: float) -> None:
    """Write each state of a promoted release through the API, `pause` seconds apart."""
    vs = api.get_namespaced_custom_object(*ISTIO, NS, "virtualservices", "reviews")
    dr = api.get_namespaced_custom_object(*ISTIO, NS, "destinationrules", "reviews")
    last_vs, last_dr = vs, dr
    for _label, want_vs, want_dr in release_states(vs, dr, request, "promoted"):
        # Only what the step changed is written, with the resourceVersion last read, as the hook does.
        if want_dr != last_dr:
            dr = _write(api, "destinationrules", {**want_dr, "metadata": {
                **want_dr["metadata"], "resourceVersion": dr["metadata"]["resourceVersion"]}})
        if want_vs != last_vs:
            vs = _write(api, "virtualservices", {**want_vs, "metadata": {
                **want_vs["metadata"], "resourceVersion": vs["metadata"]["resourceVersion"]}})
        last_vs, last_dr = want_vs, want_dr
        time.sleep(pause)


def test_step_analyzer_sees_every_step_and_catches_a_conflict(sandbox: Any) -> None:
    sandbox.reset()
    api = _custom(sandbox.kubeconfig)
    request = ReleaseRequest.from_params(RELEASE)
    try:
        analyzer = StepAnalyzer(sandbox.kubeconfig, NS, "reviews", live=is_real_apiserver(sandbox.kubeconfig))
        with analyzer:
            _apply_release(api, request, pause=1.2)
        analyzer.check()
        assert analyzer.observed_weights("v2") >= {10, 50, 100}, analyzer.describe()
        assert len(analyzer.records) >= 6, analyzer.describe()  # seeded, lock, subsets, 10, 50, 100 (+ promote)

        # A second mesh VirtualService for the host appears during a "release": check() fails on it.
        vs = api.get_namespaced_custom_object(*ISTIO, NS, "virtualservices", "reviews")
        with StepAnalyzer(sandbox.kubeconfig, NS, "reviews") as caught:
            api.create_namespaced_custom_object(*ISTIO, NS, "virtualservices", renamed(vs, "reviews-shadow"))
            time.sleep(0.5)
            vs = api.get_namespaced_custom_object(*ISTIO, NS, "virtualservices", "reviews")
            _write(api, "virtualservices", apply_plan(vs, request, plan_for_step(request, 50)))
            time.sleep(1.5)
        with pytest.raises(AssertionError, match="IST0109"):
            caught.check()
        assert {m.origin for _, m in caught.release_errors()} >= {"VirtualService bookinfo/reviews-shadow"}
    finally:
        sandbox.reset()


@pytest.fixture
def real_apiserver(real_sandbox: Any) -> Iterator[Path]:
    """The session's real kube-apiserver (sandbox up --real-apiserver) at its seeded world;
    yields the admin kubeconfig."""
    real_sandbox.reset()
    try:
        yield real_sandbox.kubeconfig
    finally:
        real_sandbox.reset()


def test_against_a_real_kube_apiserver_offline_and_live(real_apiserver: Path) -> None:
    assert is_real_apiserver(real_apiserver)
    objects = fetch_mesh_objects(real_apiserver)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert {("Namespace", NS), ("Service", "reviews"), ("DestinationRule", "reviews"),
            ("VirtualService", "reviews")} <= kinds
    assert sum(kind == "Pod" for kind, _ in kinds) == 2
    assert not errors(analyze(objects))
    # Live, every analyzer runs (injection, destination hosts, pods of subsets): still no error.
    live = analyze_live(real_apiserver)
    assert not errors(live), describe(live)

    api = _custom(real_apiserver)
    request = ReleaseRequest.from_params({**RELEASE, "strategy": "header"})
    with StepAnalyzer(real_apiserver, NS, "reviews", live=True) as analyzer:
        _apply_release(api, request, pause=1.0)
    analyzer.check()
    assert analyzer.observed_weights("v2") >= {10, 50, 100}, analyzer.describe()

    vs = api.get_namespaced_custom_object(*ISTIO, NS, "virtualservices", "reviews")
    api.create_namespaced_custom_object(*ISTIO, NS, "virtualservices", renamed(vs, "reviews-shadow"))
    try:
        live = analyze_live(real_apiserver)
        assert {m.origin for m in live if m.code == "IST0109"} == {
            "VirtualService bookinfo/reviews", "VirtualService bookinfo/reviews-shadow"}, describe(live)
    finally:
        api.delete_namespaced_custom_object(*ISTIO, NS, "virtualservices", "reviews-shadow")
