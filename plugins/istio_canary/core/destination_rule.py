"""Edits a release makes to its DestinationRule: the stable and canary subsets, added and removed.

Like `core.routing`, every function is pure and returns a new dict. A subset the release
needs that exists with other labels is someone else's (`SubsetConflictError`); rollback
removes only subsets the release added and no route still uses.
"""

from __future__ import annotations

import copy
from typing import Any

from istio_canary.core.objects import qualified_name, spec_of
from istio_canary.core.request import ReleaseRequest
from istio_canary.core.routing import RoutingError, destination_of, route_entries


class SubsetConflictError(RoutingError):
    """A subset with the release's name exists with other labels: someone else's subset."""


def _check_dr_host(dr: dict[str, Any], request: ReleaseRequest) -> None:
    host = spec_of(dr).get("host")
    if not request.refers_to_host(host):
        raise RoutingError(
            f"DestinationRule {qualified_name(dr)} is for host {host!r}, "
            f"not for the release's host {request.host!r}"
        )


def ensure_subsets(dr: dict[str, Any], request: ReleaseRequest) -> dict[str, Any]:
    """Stable and canary subsets exist (appended if missing); every other field kept as is."""
    _check_dr_host(dr, request)
    out = copy.deepcopy(dr)
    spec = out["spec"]
    subsets = spec.get("subsets")
    if subsets is None:
        subsets = []
    if not isinstance(subsets, list):
        raise RoutingError(f"DestinationRule {qualified_name(dr)}: spec.subsets is not a list")
    for name, labels in (
        (request.stable_subset, request.stable_labels),
        (request.canary_subset, request.canary_labels),
    ):
        existing = [(i, s) for i, s in enumerate(subsets) if isinstance(s, dict) and s.get("name") == name]
        if existing:
            index, subset = existing[0]
            if subset.get("labels") != labels:
                raise SubsetConflictError(
                    f"DestinationRule {qualified_name(dr)} spec.subsets[{index}]: subset {name!r} already exists "
                    f"with labels {subset.get('labels')!r}, but the release needs {labels!r}; fix the subset "
                    f"or choose another name (stable_subset/canary_subset)"
                )
            continue
        added: dict[str, Any] = {"name": name, "labels": dict(labels)}
        stable = next((s for s in subsets if isinstance(s, dict) and s.get("name") == request.stable_subset), None)
        if name == request.canary_subset and stable is not None and "trafficPolicy" in stable:
            # Judged under the same policy as stable (outlier detection, pools, TLS), and still
            # under it once promoted: the subset stays after the release.
            added["trafficPolicy"] = copy.deepcopy(stable["trafficPolicy"])
        subsets.append(added)
    if subsets or "subsets" in spec:
        spec["subsets"] = subsets
    return out


def referenced_subsets(vs: dict[str, Any], request: ReleaseRequest) -> set[str]:
    """Subsets of the release's host that any http/tcp/tls route or mirror of `vs` points at."""
    found: set[str] = set()
    spec = spec_of(vs)
    for kind in ("http", "tcp", "tls"):
        for route in spec.get(kind) or []:
            if not isinstance(route, dict):
                continue
            dests = [destination_of(e) for e in route_entries(route)]
            if isinstance(route.get("mirror"), dict):
                dests.append(route["mirror"])
            for mirror in route.get("mirrors") or []:
                if isinstance(mirror, dict):
                    dests.append(destination_of(mirror))
            for dest in dests:
                if request.refers_to_host(dest.get("host")) and dest.get("subset"):
                    found.add(dest["subset"])
    return found


def restore_subsets(
    current_dr: dict[str, Any],
    snapshot_dr: dict[str, Any] | None,
    request: ReleaseRequest,
    *,
    keep_referenced_by: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Remove the subsets the release added (absent from the snapshot), keeping everything else.

    A subset still referenced by `keep_referenced_by` (the VirtualService as it is after the
    route was restored) stays: removing it first would make Envoy return 503s for that route.
    A subset the release did not write (other labels) is never removed.
    """
    out = copy.deepcopy(current_dr)
    spec = out.get("spec") or {}
    subsets = spec.get("subsets")
    if not isinstance(subsets, list):
        return out
    before = {s.get("name") for s in (spec_of(snapshot_dr or {}).get("subsets") or []) if isinstance(s, dict)}
    keep = referenced_subsets(keep_referenced_by, request) if keep_referenced_by else set()
    written = {request.stable_subset: request.stable_labels, request.canary_subset: request.canary_labels}

    def release_added(subset: Any) -> bool:
        if not isinstance(subset, dict):
            return False
        name = subset.get("name")
        return (
            name in written
            and name not in before
            and name not in keep
            and subset.get("labels") == written[name]
        )

    remaining = [s for s in subsets if not release_added(s)]
    if remaining or (snapshot_dr is not None and "subsets" in spec_of(snapshot_dr)):
        spec["subsets"] = remaining
    else:
        spec.pop("subsets", None)
    return out
