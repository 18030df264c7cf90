"""Preflight and snapshot: check the world, take the release lock, record what to restore."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from istio_canary.core.lock import (
    lock_of,
    outcome_of,
    snapshot_of,
    with_lock,
    without_own_annotations,
)
from istio_canary.core.routing import find_owned_route
from istio_canary.hooks.istio import ObjectNotFoundError
from istio_canary.operators.base import IstioReleaseOperator, as_bool, release_holder


class PreflightError(RuntimeError):
    """The cluster is not ready for this release; nothing was written."""


def _snapshot_copy(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a rollback restores: the object without server-set and release metadata."""
    if obj is None:
        return None
    clean = without_own_annotations(obj)
    meta = clean.get("metadata", {})
    keep = {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta}
    return {"apiVersion": clean.get("apiVersion"), "kind": clean.get("kind"), "metadata": keep,
            "spec": clean.get("spec")}


class IstioPreflightOperator(IstioReleaseOperator):
    """Check that the release can start, take the service's release lock, snapshot routing.

    Checks, all before any write: the VirtualService exists and has exactly one route this
    release owns; the DestinationRule and the Service exist; pods of both versions are
    Ready with the istio-proxy sidecar; no other release holds the service. Then takes the
    lock (one atomic write of the VirtualService's annotations) with the snapshot beside it.
    Returns the snapshot (also logged as YAML), so rollback and people can see it.

    :param break_stale_lock: take the lock even if another run holds it (for a holder a
        person has checked is no longer running). Logged loudly.
    """

    template_fields: Sequence[str] = (*IstioReleaseOperator.template_fields, "break_stale_lock")

    def __init__(self, *, break_stale_lock: bool | str = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.break_stale_lock = break_stale_lock

    def execute(self, context: Mapping[str, Any]) -> dict[str, Any]:
        req, hook = self.request, self.hook
        holder = release_holder(context)
        try:
            vs = hook.get_virtual_service(req.namespace, req.virtual_service)
        except ObjectNotFoundError as exc:
            raise PreflightError(f"VirtualService {req.namespace}/{req.virtual_service} not found") from exc

        finished = outcome_of(vs)
        if finished is not None and finished.holder == holder and lock_of(vs) is None:
            # A re-run after the release finished: taking the lock again would restart it.
            self.log.info("no change: release %s already finished (%s at %s)", holder, finished.outcome,
                          finished.at)
            return {"holder": holder, "finished": finished.outcome, "snapshot": None}

        owned = find_owned_route(vs, req)
        self.log.info("owned route: http[%d] %s", owned, vs["spec"]["http"][owned].get("name", "(unnamed)"))

        dr = hook.find("DestinationRule", req.namespace, req.destination_rule)
        if dr is None:
            raise PreflightError(
                f"DestinationRule {req.namespace}/{req.destination_rule} not found: create it first "
                "(see include/manifests/reviews-destinationrule.yaml)"
            )
        if not hook.service_exists(req.namespace, req.service):
            raise PreflightError(f"Service {req.namespace}/{req.service} not found")

        problems = []
        for version in (req.stable_version, req.canary_version):
            pods = hook.version_pods(req.namespace, {"app": req.service, req.version_label: version}, version)
            self.log.info("pods: %s", pods.describe())
            if not pods.ok:
                problems.append(pods.describe())
        if problems:
            raise PreflightError("pods not ready for the release: " + "; ".join(problems))

        snapshot = {"virtualService": _snapshot_copy(vs), "destinationRule": _snapshot_copy(dr)}
        current_lock = lock_of(vs)
        if current_lock is not None and current_lock.holder != holder and self._break_stale():
            self._refuse_if_holder_active(context, current_lock.holder)
            self.log.warning("BREAKING the release lock held by %s, as asked (break_stale_lock)",
                             current_lock.describe())
        result = self.update_virtual_service(
            context,
            lambda live: with_lock(live, holder, snapshot, break_stale=self._break_stale()),
            "take release lock",
        ) if not self.is_dry_run else None
        if self.is_dry_run:
            self.log.info("DRY RUN: would take the release lock for %s", holder)
        recorded = snapshot_of(result.after) if result is not None else None
        snapshot = recorded or snapshot
        self.log.info("snapshot (restored on rollback):\n%s", yaml.safe_dump(snapshot, sort_keys=False))
        return {"holder": holder, "snapshot": snapshot,
                "resource_version": result.resource_version if result else vs["metadata"]["resourceVersion"]}

    def guarded(self, context: Mapping[str, Any], edit: Any) -> Any:
        # Taking the lock is this operator's own write: no holder check before it.
        return edit

    def _break_stale(self) -> bool:
        return as_bool(self.break_stale_lock)

    def _refuse_if_holder_active(self, context: Mapping[str, Any], holder: str) -> None:
        """break_stale_lock is for a holder that stopped; breaking a live run's lock would let two
        releases fight over one VirtualService. The holder names "<dag_id>/<run_id>"."""
        dag_id, _, run_id = holder.partition("/")
        ti = context.get("ti")
        if ti is None or not run_id:
            self.log.warning("cannot look up the lock holder %r's run state: breaking on your word", holder)
            return
        try:
            reported = ti.get_dagrun_state(dag_id=dag_id, run_id=run_id)
            # An enum in the task runner (str() of it reads "DagRunState.RUNNING"): take its value.
            state = str(getattr(reported, "value", reported)).lower()
        except Exception as exc:  # not a run of this Airflow (another deployment, or deleted)
            self.log.warning("lock holder %r is not a run this Airflow knows (%s): treating it as stale",
                             holder, exc)
            return
        if state in ("running", "queued"):
            raise PreflightError(
                f"break_stale_lock refused: the lock holder {holder} is still {state}; mark that run "
                "failed (or let it finish) first, then break its lock"
            )
        self.log.info("lock holder %s is %s: its lock is stale", holder, state)
