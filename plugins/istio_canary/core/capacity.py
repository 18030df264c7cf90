"""Can the canary carry the next step's traffic? (pure: no network)

Before each weight increase the release compares what the canary can serve with what it is
about to receive:

- **Load per replica.** The stable's Ready replicas carried the whole route before the release;
  now they carry `stable_rps`, their share of it. Its load per replica *at full traffic* is
  `stable_rps / stable_share / stable_ready`, with `stable_share = stable_rps / (stable_rps +
  canary_rps)`, i.e. `(stable_rps + canary_rps) / stable_ready`. Not the stable's current load
  per replica: that falls as the canary takes traffic (a stable of 4 replicas at 50% carries
  half its usual load per replica), and sizing the canary by it would ask for twice the
  stable's replicas at 100%. If the stable was scaled down during the release (its HPA
  following its falling share), the replica count from the release's first check is used.
- **Needed.** At weight `w` the canary receives `w% x (stable_rps + canary_rps)`, which at that
  load per replica needs `ceil(w% x total / per_replica x headroom)` replicas.
- **Decision.** Enough Ready canary replicas: ok. Fewer, but its Deployment asks for enough
  (`spec.replicas`) or its HorizontalPodAutoscaler may scale to enough (`maxReplicas`): hold
  (wait for them to be Ready), up to a timeout. Fewer even at that ceiling: refuse, naming the
  Deployment or HPA and the number to set.

Nothing to check (pass, saying why): no traffic on the route, a step that does not increase the
weight, a stable without Ready replicas or without a Deployment (pods made by something else),
a canary without a Deployment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from istio_canary.core.promql import request_count_query
from istio_canary.core.samples import values_by_version
from istio_canary.core.validation import ValidationError

Action = Literal["ok", "hold", "refuse"]
# The capacity keys of a release's params (form rows in core/fields.py) and their defaults.
CAPACITY_DEFAULTS: dict[str, Any] = {
    "capacity_check": True,
    "capacity_timeout_minutes": 10,
    "capacity_headroom": 1.0,
}
# The route's request rate is read over this recent window (as the bake plan reads it).
RATE_WINDOW_SECONDS = 120
# Capacity within this fraction of a replica above a whole number rounds down: float noise
# in shares and headroom must not ask for one replica more (1.0000000001 -> 1).
_ROUNDING_SLACK = 1e-9


@dataclass(frozen=True)
class CapacityConfig:
    """The release's capacity settings. Build it with `from_params` (names the bad field)."""

    capacity_check: bool = CAPACITY_DEFAULTS["capacity_check"]
    capacity_timeout_minutes: int = CAPACITY_DEFAULTS["capacity_timeout_minutes"]
    capacity_headroom: float = CAPACITY_DEFAULTS["capacity_headroom"]

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> CapacityConfig:
        check = params.get("capacity_check", CAPACITY_DEFAULTS["capacity_check"])
        if isinstance(check, str) and check.strip().lower() in ("true", "false"):
            check = check.strip().lower() == "true"
        if not isinstance(check, bool):
            raise ValidationError("capacity_check", check, "must be true or false")
        timeout = params.get("capacity_timeout_minutes", CAPACITY_DEFAULTS["capacity_timeout_minutes"])
        if isinstance(timeout, float) and timeout.is_integer():
            timeout = int(timeout)
        if isinstance(timeout, str) and timeout.strip().isdigit():
            timeout = int(timeout)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not 0 <= timeout <= 24 * 60:
            raise ValidationError("capacity_timeout_minutes", timeout, "must be a whole number of minutes in 0..1440")
        headroom = params.get("capacity_headroom", CAPACITY_DEFAULTS["capacity_headroom"])
        try:
            headroom_value = float(headroom) if not isinstance(headroom, bool) else math.nan
        except (TypeError, ValueError):
            headroom_value = math.nan
        if not 1.0 <= headroom_value <= 10.0:
            raise ValidationError("capacity_headroom", headroom, "must be a number in 1..10 (1.0: no spare capacity)")
        return cls(check, timeout, headroom_value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Workload:
    """The Deployments of one version, summed: their Ready replicas, the replicas they ask for,
    and the HPAs that scale them (`hpa_max`: the sum of their maxReplicas, None when none)."""

    version: str
    deployments: tuple[str, ...]
    ready: int
    desired: int
    hpas: tuple[str, ...] = ()
    hpa_max: int | None = None

    @property
    def ceiling(self) -> int:
        """The most Ready replicas this version may get without anyone changing an object: its
        HPAs' maxReplicas where an HPA scales it, else what its Deployments ask for."""
        return self.hpa_max if self.hpa_max is not None else self.desired

    def describe(self) -> str:
        if not self.deployments:
            return f"version {self.version}: no Deployment"
        hpa = f", HPA {', '.join(self.hpas)} maxReplicas {self.hpa_max}" if self.hpas else ", no HPA"
        return f"Deployment {', '.join(self.deployments)} ({self.version}): {self.ready}/{self.desired} Ready{hpa}"


@dataclass(frozen=True)
class CapacityInput:
    """What one check reads. Rates are requests/s of the route's two versions, None when
    Prometheus could not be read."""

    namespace: str
    stable: Workload
    canary: Workload
    current_weight: int
    next_weight: int
    stable_rps: float | None
    canary_rps: float | None
    headroom: float = 1.0
    # The stable's Ready replicas at the release's first check (None: this is the first).
    stable_reference_replicas: int | None = None


@dataclass(frozen=True)
class CapacityDecision:
    action: Action
    message: str
    needed: int = 0
    stable_reference_replicas: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _whole_replicas(value: float) -> int:
    return max(1, math.ceil(value - _ROUNDING_SLACK))


def _nothing_to_check(data: CapacityInput) -> str | None:
    """Why this check passes without sizing anything, or None when it must size the canary."""
    if data.next_weight <= data.current_weight:
        return f"the step does not raise the canary's weight ({data.current_weight}% -> {data.next_weight}%)"
    if not data.canary.deployments:
        return (f"no Deployment makes the {data.canary.version} pods (made by something else): "
                "their capacity is not checked")
    if not data.stable.deployments:
        return (f"no Deployment makes the {data.stable.version} pods (made by something else): "
                "no load per replica to size the canary by")
    if data.stable_rps is None or data.canary_rps is None:
        return None  # sized by replicas alone, see needed_replicas
    if data.stable_rps + data.canary_rps <= 0:
        return "no traffic on the route (0 requests/s): nothing to carry"
    if data.stable_rps <= 0:
        return "the stable carries no traffic now: no load per replica to size the canary by"
    return None


def needed_replicas(data: CapacityInput, reference: int) -> tuple[int, str]:
    """(canary replicas the next weight needs, how that was worked out) for a stable of
    `reference` Ready replicas. Without traffic figures, `w% x reference x headroom`: the same
    number the traffic gives when the stable carried the route with those replicas."""
    share = data.next_weight / 100
    if data.stable_rps is None or data.canary_rps is None:
        needed = _whole_replicas(share * reference * data.headroom)
        return needed, (f"traffic unreadable: sized by replicas, {data.next_weight}% of the stable's {reference} "
                        f"x headroom {data.headroom:g} = {needed}")
    total = data.stable_rps + data.canary_rps
    per_replica = total / reference
    canary_load = share * total
    needed = _whole_replicas(canary_load / per_replica * data.headroom)
    stable_share = data.stable_rps / total
    return needed, (
        f"the stable serves {data.stable_rps:.1f} of {total:.1f} requests/s ({stable_share:.0%}) on "
        f"{data.stable.ready} Ready replicas: {per_replica:.1f} requests/s per replica at full traffic "
        f"(by {reference} replicas); at {data.next_weight}% the canary takes {canary_load:.1f} requests/s, "
        f"{needed} replicas at that load (headroom {data.headroom:g})"
    )


def _fix(data: CapacityInput, needed: int) -> str:
    canary, ns = data.canary, data.namespace
    if canary.hpas:
        names = ", ".join(f"{ns}/{h}" for h in canary.hpas)
        return (f"raise maxReplicas of HorizontalPodAutoscaler {names} to at least {needed} (and minReplicas to "
                f"{needed} for the release: an HPA scales on load the canary only gets after the step)")
    if len(canary.deployments) == 1:
        name = canary.deployments[0]
        return (f"scale Deployment {ns}/{name} to {needed} replicas "
                f"(kubectl -n {ns} scale deployment {name} --replicas={needed})")
    return f"scale Deployments {', '.join(canary.deployments)} so their replicas add up to {needed}"


def decide_capacity(data: CapacityInput) -> CapacityDecision:
    """ok / hold / refuse for raising the canary from `current_weight` to `next_weight`."""
    reference = max(data.stable.ready, data.stable_reference_replicas or 0)
    step = f"{data.current_weight}% -> {data.next_weight}%"
    why_not = _nothing_to_check(data)
    if why_not is None and reference <= 0:
        why_not = f"the stable {data.stable.version} has no Ready replicas: no load per replica to size the canary by"
    if why_not is not None:
        return CapacityDecision("ok", f"capacity for {step}: not checked: {why_not}",
                                stable_reference_replicas=reference)
    needed, reasoning = needed_replicas(data, reference)
    canary = data.canary
    have = f"{canary.describe()}; needs {needed}"
    if canary.ready >= needed:
        return CapacityDecision("ok", f"capacity for {step}: ok: {reasoning}. {have}", needed, reference)
    if canary.ceiling >= needed:
        by = (f"its HPA may scale it to {canary.hpa_max}" if canary.hpas
              else f"it asks for {canary.desired}")
        return CapacityDecision("hold", f"capacity for {step}: waiting for Ready canary replicas ({by}): "
                                f"{reasoning}. {have}", needed, reference)
    return CapacityDecision("refuse", f"capacity for {step}: refused, the canary cannot carry the step: "
                            f"{reasoning}. {have}; fix: {_fix(data, needed)}", needed, reference)


def hold_timed_out(decision: CapacityDecision, data: CapacityInput, minutes: int) -> CapacityDecision:
    """A hold that lasted `minutes`: a refusal saying what did not happen and the fix."""
    canary, ns = data.canary, data.namespace
    waited = f"after waiting {minutes} min the canary still has {canary.ready} Ready of the {decision.needed} needed"
    if not canary.hpas and canary.desired >= decision.needed:
        # It asks for enough: its pods do not get Ready (image, probes, quota, scheduling).
        fix = (f"find why the pods of Deployment {', '.join(canary.deployments)} are not Ready "
               f"(kubectl -n {ns} describe deployment {canary.deployments[0]})")
    else:
        fix = _fix(data, decision.needed)
    return CapacityDecision("refuse", f"{decision.message}; {waited}; fix: {fix}",
                            decision.needed, decision.stable_reference_replicas)


# --------------------------------------------------------------------------- reading objects


def _labels_match(selector: Mapping[str, str], labels: Mapping[str, Any]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def version_workload(
    version: str, pod_selector: Mapping[str, str], deployments: Sequence[Mapping[str, Any]],
    hpas: Sequence[Mapping[str, Any]],
) -> Workload:
    """The Deployments whose pod template carries every label of `pod_selector` (the labels
    the release finds the version's pods by), and the autoscaling/v2 HPAs targeting them."""
    mine = [d for d in deployments
            if _labels_match(pod_selector, (((d.get("spec") or {}).get("template") or {}).get("metadata") or {})
                             .get("labels") or {})]
    names = tuple(sorted(str(d["metadata"]["name"]) for d in mine))
    ready = sum(int((d.get("status") or {}).get("readyReplicas") or 0) for d in mine)
    # spec.replicas defaults to 1 on the server; a missing one here means the same.
    desired = sum(int((d.get("spec") or {}).get("replicas", 1) or 0) for d in mine)
    scaling = [h for h in hpas
               if ((h.get("spec") or {}).get("scaleTargetRef") or {}).get("kind") == "Deployment"
               and ((h.get("spec") or {}).get("scaleTargetRef") or {}).get("name") in names]
    hpa_names = tuple(sorted(str(h["metadata"]["name"]) for h in scaling))
    if not scaling:
        return Workload(version, names, ready, desired)
    scaled = {h["spec"]["scaleTargetRef"]["name"] for h in scaling}
    # A Deployment without an HPA keeps its own replicas; one with an HPA may reach maxReplicas.
    unscaled = sum(int((d.get("spec") or {}).get("replicas", 1) or 0) for d in mine
                   if d["metadata"]["name"] not in scaled)
    hpa_max = unscaled + sum(int(h["spec"].get("maxReplicas") or 0) for h in scaling)
    return Workload(version, names, ready, desired, hpa_names, hpa_max)


# --------------------------------------------------------------------------- reading traffic


def rate_query(service: str, namespace: str, stable: str, canary: str, label: str) -> str:
    """Requests per version over the last RATE_WINDOW_SECONDS (divide by it for requests/s)."""
    return request_count_query(service, namespace, (stable, canary), RATE_WINDOW_SECONDS, label=label)


def rates_from_result(
    result: Sequence[Mapping[str, Any]], stable: str, canary: str, label: str
) -> tuple[float, float]:
    """(stable, canary) requests/s from `rate_query`'s result; a version without series had none."""
    values = values_by_version(result, label=label)

    def rate(version: str) -> float:
        value = values.get(version)
        return value / RATE_WINDOW_SECONDS if value is not None and math.isfinite(value) and value > 0 else 0.0

    return rate(stable), rate(canary)
