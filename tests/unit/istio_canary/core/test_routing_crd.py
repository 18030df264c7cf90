"""Everything the routing core writes passes Istio's real CRD schema (as an API server checks it).

Schemas come from the directory in $SANDBOX_CRDS, else /work/shared/istio when present (Istio's
own CRD files), else the sandbox's built-in compact schema.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from istio_canary.core.destination_rule import ensure_subsets, restore_subsets
from istio_canary.core.istio_rules import validate_destination_rule, validate_virtual_service
from istio_canary.core.request import ReleaseRequest
from istio_canary.core.routing import RoutingPlan, apply_plan, find_owned_route, promote, restore_owned

schema = pytest.importorskip("sandbox.schema", reason="sandbox.schema (CRD validation) not available yet")

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
SCENARIOS = yaml.safe_load((FIXTURES / "scenarios.yaml").read_text())
API_VERSIONS = ("v1", "v1beta1")


def crd_dir() -> str | None:
    configured = os.environ.get("SANDBOX_CRDS")
    if configured:
        return configured
    return "/work/shared/istio" if Path("/work/shared/istio/virtualservices.crd.yaml").exists() else None


@pytest.fixture(scope="module")
def crds() -> Any:
    return schema.load_schemas(crd_dir())


def assert_valid(crds: Any, plural: str, obj: dict[str, Any], what: str) -> None:
    for version in API_VERSIONS:
        written = dict(obj, apiVersion=f"networking.istio.io/{version}")
        errors = crds.validate(plural, version, written)
        assert errors == [], f"{what} ({version}) rejected by {crds.source}: " + "; ".join(map(str, errors))


def produced_objects(scenario: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every VirtualService/DestinationRule a release of this scenario can write."""
    vs, dr = yaml.safe_load_all((FIXTURES / scenario["fixture"]).read_text())
    req = ReleaseRequest.from_params(scenario["params"])
    out: list[tuple[str, str, dict[str, Any]]] = []
    ensured = ensure_subsets(dr, req)
    out.append(("destinationrules", "ensure_subsets", ensured))
    out.append(
        ("destinationrules", "restore_subsets", restore_subsets(ensured, dr, req, keep_referenced_by=vs))
    )
    for weight in (0, *req.steps):
        for match_route in (False, True) if req.uses_match_route else (False,):
            plan = RoutingPlan(weight, match_route)
            during = apply_plan(vs, req, plan)
            out.append(("virtualservices", f"apply_plan {plan}", during))
            out.append(("virtualservices", f"restore_owned after {plan}", restore_owned(during, vs, req)))
            out.append(("virtualservices", f"promote after {plan}", promote(during, req)))
    return out


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s["fixture"])
def test_every_written_object_passes_the_crd_schema(crds: Any, scenario: dict[str, Any]) -> None:
    objects = produced_objects(scenario)
    assert len(objects) >= 9
    for plural, what, obj in objects:
        assert_valid(crds, plural, obj, f"{scenario['fixture']}: {what}")


def written_routes(vs: dict[str, Any], req: ReleaseRequest) -> set[int]:
    """The http routes a release writes: its owned route and, when present, its canary match route."""
    routes = vs["spec"].get("http") or []
    canary = {i for i, r in enumerate(routes) if r.get("name") == req.canary_route_name}
    return {find_owned_route(vs, req)} | canary


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s["fixture"])
def test_every_written_object_passes_istios_rules_and_ours(scenario: dict[str, Any]) -> None:
    # Istio's rules on the whole object; ours (subsets exist, route order) on the routes written,
    # against the DestinationRule as the release leaves it before routing.
    _, dr = yaml.safe_load_all((FIXTURES / scenario["fixture"]).read_text())
    req = ReleaseRequest.from_params(scenario["params"])
    ensured = ensure_subsets(dr, req)
    for plural, what, obj in produced_objects(scenario):
        if plural == "destinationrules":
            validate_destination_rule(obj)
            continue
        try:
            validate_virtual_service(
                obj, ensured, written_routes=written_routes(obj, req), mesh_domain=req.mesh_domain
            )
        except ValueError as exc:
            raise AssertionError(f"{scenario['fixture']}: {what}: {exc}") from exc


def test_the_schema_check_catches_a_mis_indented_destination(crds: Any) -> None:
    # Control: the validator above is really looking (the seed article's YAML shape fails).
    vs, _ = yaml.safe_load_all((FIXTURES / "reviews_bookinfo.yaml").read_text())
    vs["spec"]["http"][1]["route"] = [{"destination": None, "host": "reviews", "subset": "v1"}]
    errors = crds.validate("virtualservices", "v1", vs)
    assert any(e.field.startswith("spec.http[1].route[0]") for e in errors), errors
