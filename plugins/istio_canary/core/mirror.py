"""The traffic mirroring phase (pure): the owned route copies a share of its requests to the canary.

Before the first step a release may mirror (`mirror_percent` > 0): the owned route keeps
sending every request to stable and also sends a copy of `mirror_percent`% of them to the
canary subset (Istio's `mirror` + `mirrorPercentage`, Envoy's request shadowing). The client
only ever gets stable's response; the copy's response is thrown away. Istio reports the copies
only at the canary's sidecar (`reporter="destination"`), which is what the judge's queries
read, so the canary's series in this phase are exactly the mirrored requests and the judge
compares them with stable's as in any step.

Choices:
- A copy runs the request twice: a POST that charges a card charges it twice, once by the
  canary (which usually shares stable's database). So mirroring is refused unless every match
  of the owned route restricts `method` to a safe method (GET, HEAD, OPTIONS: exact, or a
  regex that is only an alternation of those names), or the user says duplicate writes are
  fine (`mirror_duplicate_writes_ok`). Anything we cannot read for sure counts as unsafe.
- An owned route that already mirrors (`mirror` or `mirrors`) is refused when the release
  would mirror: writing the release's mirror would replace the user's. One that mirrors to the
  canary subset is refused even with mirroring off: every step removes the release's mirror
  (a mirror to the canary subset), which would take the user's away. Any other mirror of a
  release without a mirror phase is left exactly as it is.
- The release's mirror names the host as the owned route's stable destination spells it, the
  canary subset, and that destination's `port`: the copy goes where stable's requests go, to
  the canary's pods.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from istio_canary.core.fields import FORM_DEFAULTS
from istio_canary.core.request import ReleaseRequest
from istio_canary.core.validation import ValidationError

PERCENT_FIELD = "mirror_percent"
WRITES_OK_FIELD = "mirror_duplicate_writes_ok"
# RFC 9110's safe methods a mirror may copy without doubling a side effect (TRACE left out:
# servers disable it, and a route naming it is not one anybody mirrors on purpose).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MIRROR_KEYS = ("mirror", "mirrors", "mirrorPercentage", "mirrorPercent")
# A regex we can read for sure: optional anchors, optional group, method names separated by |.
_METHOD_ALTERNATION = re.compile(r"\^?\(?(?:\?:)?([A-Z]+(?:\|[A-Z]+)*)\)?\$?")


@dataclass(frozen=True)
class MirrorConfig:
    """The release's mirroring: `percent` of the owned route's requests copied to the canary
    (0: no mirror phase), and whether duplicated writes are acceptable."""

    percent: float = FORM_DEFAULTS[PERCENT_FIELD]
    duplicate_writes_ok: bool = FORM_DEFAULTS[WRITES_OK_FIELD]

    def __post_init__(self) -> None:
        value = self.percent
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                or not 0 <= value <= 100:
            raise ValidationError(PERCENT_FIELD, value, "must be a number in 0..100 (0: no mirror phase)")
        if not isinstance(self.duplicate_writes_ok, bool):
            raise ValidationError(WRITES_OK_FIELD, self.duplicate_writes_ok, "must be true or false")

    @property
    def enabled(self) -> bool:
        return self.percent > 0

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> MirrorConfig:
        """From a DAG run's params (numbers or strings from the UI/CLI); other keys ignored."""
        return cls(percent=_number(params.get(PERCENT_FIELD)),
                   duplicate_writes_ok=_flag(params.get(WRITES_OK_FIELD)))

    def to_params(self) -> dict[str, Any]:
        return {PERCENT_FIELD: self.percent, WRITES_OK_FIELD: self.duplicate_writes_ok}

    def describe(self) -> str:
        return f"mirror {self.percent:g}% of the owned route's requests to the canary"


def _number(value: Any) -> Any:
    if value is None or value == "":
        return 0
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise ValidationError(PERCENT_FIELD, value, "must be a number in 0..100 (0: no mirror phase)") from None
    return value


def _flag(value: Any) -> Any:
    if value is None or value == "":
        return False
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "false"):
            return text == "true"
    return value


# --------------------------------------------------------------------------- what may be mirrored


def _method_names(method: Any) -> frozenset[str] | None:
    """The methods a StringMatch on `method` can match, when we can tell for sure; else None."""
    if not isinstance(method, Mapping) or len(method) != 1:
        return None
    (kind, value), = method.items()
    if not isinstance(value, str):
        return None
    if kind == "exact":
        return frozenset({value})
    if kind == "regex":
        found = _METHOD_ALTERNATION.fullmatch(value)
        return frozenset(found.group(1).split("|")) if found else None
    return None


def only_safe_methods(route: Mapping[str, Any]) -> bool:
    """True when every match of `route` restricts `method` to GET/HEAD/OPTIONS (a route with
    no match takes every method)."""
    matches = route.get("match")
    if not isinstance(matches, list) or not matches:
        return False
    for match in matches:
        names = _method_names(match.get("method")) if isinstance(match, Mapping) else None
        if names is None or not names <= SAFE_METHODS:
            return False
    return True


def has_mirror(route: Mapping[str, Any]) -> bool:
    return any(route.get(key) not in (None, [], {}) for key in ("mirror", "mirrors"))


def mirror_problems(
    route: Mapping[str, Any], request: ReleaseRequest, config: MirrorConfig
) -> list[tuple[str, str, str]]:
    """(field, problem, fix) for each reason the release cannot start on this owned route; []
    when it can. A mirror to the canary subset is refused even without a mirror phase: the
    release removes its own mirror at the first step and could not tell the user's from it."""
    problems = []
    if is_release_mirror(route, request):
        problems.append((
            "mirror",
            f"the owned route already mirrors to the canary subset {request.canary_subset!r}; the release "
            "writes and removes that mirror itself, so it would take this one away",
            f"remove the route's mirror first (set {PERCENT_FIELD} for a mirror phase the release manages)",
        ))
    if not config.enabled:
        return problems
    if has_mirror(route) and not is_release_mirror(route, request):
        problems.append((
            "mirror" if route.get("mirror") else "mirrors",
            "the owned route already mirrors its requests; the release's mirror phase would replace this "
            "mirror, and it is the route owner's configuration",
            f"set {PERCENT_FIELD} to 0 (no mirror phase), or remove the route's mirror first",
        ))
    if not only_safe_methods(route) and not config.duplicate_writes_ok:
        problems.append((
            "match",
            f"{PERCENT_FIELD}={config.percent:g} would copy requests of any method to the canary, and a "
            "mirrored POST/PUT/DELETE runs twice (once on stable, once on the canary, which usually share "
            "their database); the owned route does not restrict `method` to GET, HEAD or OPTIONS",
            f"set {WRITES_OK_FIELD} to true if the service's requests are safe to run twice, or own a route "
            f"that matches only safe methods (route_name), or set {PERCENT_FIELD} to 0",
        ))
    return problems


# --------------------------------------------------------------------------- route edits


def is_release_mirror(route: Mapping[str, Any], request: ReleaseRequest) -> bool:
    """The route's `mirror` sends copies to the release's canary subset of its host."""
    mirror = route.get("mirror")
    return isinstance(mirror, Mapping) and request.refers_to_host(mirror.get("host")) \
        and mirror.get("subset") == request.canary_subset


def mirrored_percent(route: Mapping[str, Any], request: ReleaseRequest) -> float:
    """Share of the route's requests copied to the canary subset (Istio's default: 100)."""
    if not is_release_mirror(route, request):
        return 0.0
    percentage = route.get("mirrorPercentage")
    if isinstance(percentage, Mapping) and isinstance(percentage.get("value"), int | float):
        return float(percentage["value"])
    legacy = route.get("mirrorPercent")
    return float(legacy) if isinstance(legacy, int) and not isinstance(legacy, bool) else 100.0


def with_mirror(route: Mapping[str, Any], request: ReleaseRequest, percent: float,
                stable_destination: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `route` mirroring `percent`% of its requests to the canary subset, host and port
    as `stable_destination` has them."""
    if not 0 < percent <= 100:
        raise ValidationError(PERCENT_FIELD, percent, "must be above 0 and at most 100 to mirror")
    out = without_release_mirror(route, request)
    mirror: dict[str, Any] = {"host": stable_destination.get("host") or request.host,
                              "subset": request.canary_subset}
    if "port" in stable_destination:
        mirror["port"] = copy.deepcopy(stable_destination["port"])
    out["mirror"] = mirror
    out["mirrorPercentage"] = {"value": float(percent)}
    return out


def without_release_mirror(route: Mapping[str, Any], request: ReleaseRequest) -> dict[str, Any]:
    """A copy of `route` without the release's mirror; any other mirror stays as it is."""
    out = copy.deepcopy(dict(route))
    if is_release_mirror(out, request):
        for key in ("mirror", "mirrorPercentage", "mirrorPercent"):
            out.pop(key, None)
    return out


def mirrored_route(route: Mapping[str, Any], request: ReleaseRequest, percent: float,
                   stable_destination: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `route` with the release's mirror at `percent`% (0: without it)."""
    if percent:
        return with_mirror(route, request, percent, stable_destination)
    return without_release_mirror(route, request)
