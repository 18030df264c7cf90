"""The mirror phase's operators: write the mirror, and bake it with a plan that knows its share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

from istio_canary.core.mirror import MirrorConfig
from istio_canary.core.routing import RoutingPlan
from istio_canary.operators.analysis import CanaryWatchOperator
from istio_canary.operators.base import parse_release
from istio_canary.operators.routing import _VirtualServiceRoutingOperator


def _mirror_of(release: Any) -> MirrorConfig:
    return MirrorConfig.from_params(parse_release(release))


class IstioMirrorRouteOperator(_VirtualServiceRoutingOperator):
    """The owned route sends every request to stable and a copy of `mirror_percent`% of them to
    the canary subset (Istio `mirror` + `mirrorPercentage`); clients get only stable's answers.
    The next step's route removes the mirror (every plan without one does), as do promotion
    and rollback. The release's params must carry `mirror_percent` > 0."""

    @cached_property
    def mirror(self) -> MirrorConfig:
        return _mirror_of(self.release)

    def desired_plan(self) -> RoutingPlan:
        if not self.mirror.enabled:
            raise ValueError("mirror_percent is 0: the release has no mirror phase to route")
        return RoutingPlan(canary_weight=0, match_route=False, mirror_percent=self.mirror.percent)

    def execute(self, context: Mapping[str, Any]) -> dict[str, Any]:
        self.log.info("%s: the canary serves copies only (its responses are discarded), so it is judged on "
                      "real requests before any client depends on it", self.mirror.describe())
        return {**super().execute(context), "mirror_percent": self.mirror.percent}


class CanaryMirrorWatchOperator(CanaryWatchOperator):
    """The mirror phase's bake: the canary's share of the owned route's traffic is the release's
    `mirror_percent`, known only when the run starts, so the traffic plan's weights are
    (mirror_percent, *steps) then.

    :param steps: the pipeline's step weights, which follow the mirror phase.
    """

    def __init__(self, *, steps: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.steps = list(steps)

    def execute(self, context: Mapping[str, Any]) -> dict[str, Any] | None:
        percent = _mirror_of(self.release).percent
        self.plan_weights = [int(percent) if float(percent).is_integer() else percent, *self.steps]
        return super().execute(context)
