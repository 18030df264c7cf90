"""Operators that change routing. Each writes an absolute desired state, so re-running is harmless."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from istio_canary.core.destination_rule import ensure_subsets, restore_subsets
from istio_canary.core.events import (
    ReleaseEvent,
    promoted_event,
    rollback_failed_event,
    rolled_back_event,
    step_event,
)
from istio_canary.core.istio_rules import validate_destination_rule, validate_virtual_service
from istio_canary.core.lock import NotLockHolderError, finished, outcome_of, snapshot_of
from istio_canary.core.routing import (
    RoutingPlan,
    apply_plan,
    plan_for_step,
    promote,
    request_for,
    restore_owned,
    routing_state,
    written_routes,
)
from istio_canary.hooks.istio import WriteResult
from istio_canary.operators.base import Edit, IstioReleaseOperator, NoReleaseError, release_holder

# Pushed by a rollback whose last try failed: where traffic was left ({canary_weight, ...}).
ROLLBACK_FAILED_XCOM = "rollback_failed"


def _summary(result: WriteResult | None, request: Any) -> dict[str, Any]:
    if result is None:
        return {"changed": False, "skipped": "release not held by this run"}
    state = routing_state(result.after, request)
    return {
        "changed": result.changed,
        "written": result.written,
        "resource_version": result.resource_version,
        "canary_weight": state.canary_weight,
        "match_route": state.match_route_present,
    }


class IstioDestinationRuleOperator(IstioReleaseOperator):
    """Ensure the DestinationRule has subsets for the stable and canary versions.

    Keeps trafficPolicy (mTLS included), every other subset and field as they were.
    """

    def execute(self, context: Mapping[str, Any]) -> dict[str, Any]:
        req = self.request
        try:
            self.check_still_holding(context)
        except NotLockHolderError as exc:
            self.log.info("ensure subsets: no change: %s", exc)
            return {"changed": False, "skipped": str(exc)}

        def edit(dr: dict[str, Any]) -> dict[str, Any]:
            desired = ensure_subsets(dr, req)
            validate_destination_rule(desired)
            return desired

        result = self.hook.update(
            "DestinationRule", req.namespace, req.destination_rule, edit, dry_run=self.is_dry_run
        )
        self.log_write(result, f"ensure subsets {req.stable_subset}, {req.canary_subset}")
        return {"changed": result.changed, "resource_version": result.resource_version}


class _VirtualServiceRoutingOperator(IstioReleaseOperator):
    """Shared by the operators that write one routing plan to the VirtualService."""

    def desired_plan(self) -> RoutingPlan:
        raise NotImplementedError

    def routing_edit(self) -> Edit:
        req = self.request
        plan = self.desired_plan()
        dr = self.destination_rule_for_checks()

        def edit(vs: dict[str, Any]) -> dict[str, Any]:
            own = request_for(vs, req)
            desired = apply_plan(vs, own, plan)
            validate_virtual_service(desired, dr, written_routes=written_routes(desired, own),
                                     mesh_domain=req.mesh_domain)
            return desired

        return edit

    def execute(self, context: Mapping[str, Any]) -> dict[str, Any]:
        plan = self.desired_plan()
        edit = self.routing_edit()
        results = [self.update_virtual_service(context, edit, plan.describe(), name)
                   for name in self.request.all_virtual_services]
        for result in results:
            if result is not None and result.written:
                self.emit_event(context, lambda r=result: self._step_event(r), result.after, result.name)
        return _summary(results[0], self.request)

    def _step_event(self, result: WriteResult) -> ReleaseEvent:
        """The step as written: the owned route's shares as read back, and who the match route takes."""
        req = self.request
        state = routing_state(result.after, request_for(result.after, req))
        match = None
        if state.match_route_present:
            match = (f"header {req.header_name}: {req.header_value}" if req.strategy == "header"
                     else f"cookie {req.cookie_regex}")
        return step_event(self.release_versions(), state.canary_weight, state.stable_weight,
                          state.other_weight, match)


class IstioTrafficShiftOperator(_VirtualServiceRoutingOperator):
    """Set the owned route to `canary_weight`% canary, the rest stable (absolute, not a delta).

    :param canary_weight: 0..100.
    :param match_route: keep (True) or remove (False) the header/cookie canary match route;
        None (default): as the release's strategy wants at this weight (`plan_for_step`:
        header/cookie releases keep it until 100%).
    """

    template_fields: Sequence[str] = (*IstioReleaseOperator.template_fields, "canary_weight")

    def __init__(
        self, *, canary_weight: int | str, match_route: bool | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.canary_weight = canary_weight
        self.match_route = match_route

    def desired_plan(self) -> RoutingPlan:
        weight = int(self.canary_weight)
        if self.match_route is None:
            return plan_for_step(self.request, weight)
        # The release's sticky sessions still follow the weight (plan_for_step).
        return RoutingPlan(canary_weight=weight, match_route=self.match_route,
                           sticky=plan_for_step(self.request, weight).sticky)


class IstioMatchRouteOperator(_VirtualServiceRoutingOperator):
    """Turn the header (`user-agent: canary`) or cookie (`canary=true`) canary route on or off.

    With it on, only matching requests reach the canary; the owned route stays 100% stable.
    """

    def __init__(self, *, enabled: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.enabled = enabled

    def desired_plan(self) -> RoutingPlan:
        return RoutingPlan(canary_weight=0, match_route=self.enabled)


class IstioPromoteOperator(IstioReleaseOperator):
    """All traffic to the canary, canary match route removed, release lock released."""

    def execute(self, context: Mapping[str, Any]) -> dict[str, Any]:
        req, holder = self.request, release_holder(context)
        dr = self.destination_rule_for_checks()

        def edit(vs: dict[str, Any]) -> dict[str, Any]:
            own = request_for(vs, req)
            desired = promote(vs, own)
            validate_virtual_service(desired, dr, written_routes=written_routes(desired, own),
                                     mesh_domain=req.mesh_domain)
            return desired if self.is_dry_run or not self.require_lock else finished(desired, holder, "promoted")

        # The VirtualServices moved with it first: the release's own lock goes last.
        results = [self.update_virtual_service(context, edit, f"promote {req.canary_version}", name)
                   for name in (*req.virtual_services, req.virtual_service)]
        for done in results:
            if done is not None and done.written:
                self.emit_event(context, promoted_event(self.release_versions()), done.after, done.name)
        return _summary(results[-1], req)


class IstioRollbackOperator(IstioReleaseOperator):
    """Put the owned route back as the snapshot had it, remove the canary route, release the lock,
    then remove from the DestinationRule the subsets the release added (both objects end as
    the snapshot had them, but for edits others made meanwhile).

    Edits other people made to other routes during the release stay. A rollback re-run, or a
    rollback after the release was promoted, changes nothing and says so.

    :param snapshot: the preflight snapshot (XCom); the copy recorded on the VirtualService
        beside the lock is preferred, since it survives a cleared preflight task.
    :param reason: why the release is rolled back, for the log and the recorded outcome.
    """

    template_fields: Sequence[str] = (*IstioReleaseOperator.template_fields, "snapshot", "reason")

    def __init__(self, *, snapshot: Mapping[str, Any] | None = None, reason: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.snapshot = snapshot
        self.reason = reason

    def execute(self, context: Mapping[str, Any]) -> dict[str, Any]:
        try:
            req = self.request
        except NoReleaseError as exc:
            self.log.info("rollback: nothing to do: %s", exc)
            return {"changed": False, "skipped": str(exc)}
        holder = release_holder(context)
        self.log.info("rolling back %s/%s: %s", req.namespace, req.virtual_service, self.reason or "(no reason)")

        used: dict[str, Any] = {}

        def edit(vs: dict[str, Any]) -> dict[str, Any]:
            name = (vs.get("metadata") or {}).get("name")
            recorded = snapshot_of(vs) or self._xcom_snapshot_of(name)
            if not recorded or not recorded.get("virtualService"):
                raise NotLockHolderError("no snapshot recorded: routing was never changed by this release")
            if name == req.virtual_service:
                used["snapshot"] = recorded
            restored = restore_owned(vs, recorded["virtualService"], request_for(vs, req))
            return restored if self.is_dry_run or not self.require_lock else finished(restored, holder, "rolled_back")

        try:
            # The VirtualServices moved with it first: the release's own lock goes last.
            results = [self.update_virtual_service(context, edit, "rollback", name)
                       for name in (*req.virtual_services, req.virtual_service)]
        except Exception as exc:
            self._say_where_traffic_is(context, exc)
            raise
        result = results[-1]
        for done in results:
            if done is not None and done.written:
                self.emit_event(context, lambda d=done: rolled_back_event(
                    self.release_versions(), routing_state(d.before, request_for(d.before, req)).canary_weight,
                    self.reason,
                ), done.after, done.name)
        if result is not None or self._rolled_back_by(holder):
            # Routing first, subsets after: a subset removed while a route still used it would 503.
            self._restore_destination_rule(used.get("snapshot") or self.snapshot, result)
        return _summary(result, req)

    def _xcom_snapshot_of(self, name: str | None) -> dict[str, Any] | None:
        """The preflight XCom's snapshot for VirtualService `name` (used when its annotation is gone)."""
        if not self.snapshot:
            return None
        if name == self.request.virtual_service:
            return dict(self.snapshot)
        included = (self.snapshot.get("virtualServices") or {}).get(name)
        return {"virtualService": included} if included else None

    def _rolled_back_by(self, holder: str) -> bool:
        """This run's rollback already restored routing (a re-run): finish the DestinationRule too."""
        req = self.request
        done = outcome_of(self.hook.get_virtual_service(req.namespace, req.virtual_service))
        return done is not None and done.holder == holder and done.outcome == "rolled_back"

    def _restore_destination_rule(self, snapshot: Mapping[str, Any] | None, result: WriteResult | None) -> None:
        """Remove the subsets this release added (kept: any the VirtualService still routes to)."""
        req = self.request
        if not snapshot or not snapshot.get("destinationRule"):
            self.log.info("rollback: no DestinationRule snapshot: subsets left as they are")
            return
        routing = result.after if result is not None else self.hook.get_virtual_service(
            req.namespace, req.virtual_service)
        dr_result = self.hook.update(
            "DestinationRule", req.namespace, req.destination_rule,
            lambda dr: restore_subsets(dr, snapshot["destinationRule"], req, keep_referenced_by=routing),
            dry_run=self.is_dry_run,
        )
        self.log_write(dr_result, "rollback: remove the subsets the release added")

    def _say_where_traffic_is(self, context: Mapping[str, Any], error: Exception) -> None:
        """After a failed try: where traffic goes now, read back from the cluster. Before the
        last try a warning (Airflow tries again); on the last an ERROR, and the XCom
        `rollback_failed` the release report shows."""
        req = self.request
        where: dict[str, Any] = {
            "namespace": req.namespace, "virtual_service": req.virtual_service,
            "canary_version": req.canary_version, "canary_weight": None, "match_route": None,
            "error": str(error),
        }
        vs: dict[str, Any] | None = None
        try:
            vs = self.hook.get_virtual_service(req.namespace, req.virtual_service)
            state = routing_state(vs, req)
            where.update(canary_weight=state.canary_weight, match_route=state.match_route_present)
            now = f"canary weight {state.canary_weight}%" + (
                f", and the canary match route still sends matching requests to {req.canary_version}"
                if state.match_route_present else "")
        except Exception as exc:  # the API may be what failed; still say what we know
            now = f"weight unknown (could not read the VirtualService back: {exc})"
        ti = context.get("ti")
        try_number = getattr(ti, "try_number", None)
        if isinstance(try_number, int) and try_number <= self.retries:
            self.log.warning("rollback try %d of %d failed: %s. Traffic now: %s. Airflow will retry it.",
                             try_number, self.retries + 1, error, now)
            return
        self.log.error(
            "ROLLBACK FAILED: traffic may still reach canary %s of %s/%s: %s. Fix routing by hand or "
            "clear this task to retry. Last error: %s", req.canary_version, req.namespace, req.virtual_service,
            now, error,
        )
        if ti is not None:
            ti.xcom_push(key=ROLLBACK_FAILED_XCOM, value=where)
        self.emit_event(context, rollback_failed_event(self.release_versions(), now, str(error)), vs)
