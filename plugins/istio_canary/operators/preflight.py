"""Preflight and snapshot: check the world, take the release lock, record what to restore."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from istio_canary.core.lock import (
    LOCK_ANNOTATION,
    lock_of,
    outcome_of,
    snapshot_of,
    with_lock,
    without_own_annotations,
)
from istio_canary.core.mirror import MirrorConfig
from istio_canary.core.pods import metric_label_problems, summarize_version_pods
from istio_canary.core.preflight import (
    Refusal,
    ReleaseRefusedError,
    destination_rule_refusals,
    other_destination_rule_refusals,
    other_virtual_service_refusals,
    pod_selector,
    service_refusals,
    unselected_pods_refusal,
    virtual_service_refusals,
)
from istio_canary.core.routing import find_owned_route, request_for
from istio_canary.hooks.istio import IstioApiError, ObjectNotFoundError, WriteResult
from istio_canary.operators.base import Edit, IstioReleaseOperator, as_bool, parse_release, release_holder


class PreflightError(RuntimeError):
    """The cluster is not ready for this release; nothing was written."""


def _with_moved(snapshot: dict[str, Any] | None, moved: dict[str, Any]) -> dict[str, Any] | None:
    """The snapshot with those of the VirtualServices moved with the release, if any."""
    if snapshot is not None and moved:
        return {**snapshot, "virtualServices": moved}
    return snapshot


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

    Checks, all before any write (core/preflight.py: each configuration is handled or refused
    naming the object, the field and the fix): the VirtualService, DestinationRule and Service
    exist; the VirtualService has exactly one route this release owns, whose live traffic is on
    the stable subset, with no destination of the host lacking a subset and no route already
    named like the canary match route (each VirtualService listed in `virtual_services` is
    checked the same way and locked with its own snapshot); no other VirtualService of the
    namespace routes to the service or claims its host; the DestinationRule can take the
    subsets, is exported wherever the VirtualService is, and no other rule for the host would
    hide the canary subset; the Service selects pods of both versions, which are Ready with
    the istio-proxy sidecar and labelled as Istio's metrics report them; no other release
    holds the service. Then takes the lock with the snapshot beside it in one
    read-modify-write, checking the VirtualService again as read there, so the snapshot is
    exactly the routing the lock was taken on.
    Returns the snapshot (also logged as YAML), so rollback and people can see it.

    :param break_stale_lock: take the lock even if another run holds it (for a holder a
        person has checked is no longer running). Logged loudly.
    """

    template_fields: Sequence[str] = (*IstioReleaseOperator.template_fields, "break_stale_lock")

    def __init__(self, *, break_stale_lock: bool | str = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.break_stale_lock = break_stale_lock

    def execute(self, context: Mapping[str, Any]) -> dict[str, Any]:
        holder = release_holder(context)
        vs = self._read_virtual_service()
        finished = outcome_of(vs)
        if finished is not None and finished.holder == holder and lock_of(vs) is None:
            # A re-run after the release finished: taking the lock again would restart it.
            self.log.info("no change: release %s already finished (%s at %s)", holder, finished.outcome,
                          finished.at)
            return {"holder": holder, "finished": finished.outcome, "snapshot": None}
        dr, service, included = self._read_release_objects()
        self._refuse_unless_releasable(vs, dr, service, included, holder)
        owned = find_owned_route(vs, self.request)
        self.log.info("owned route: http[%d] %s", owned, vs["spec"]["http"][owned].get("name", "(unnamed)"))
        self._announce_lock_break(context, vs, holder)
        if self.is_dry_run:
            snapshot, result = self._pretend_to_lock(vs, dr, included, holder), None
        else:
            snapshot, result = self._take_locks(context, dr, included, holder)
        self.log.info("snapshot (restored on rollback):\n%s", yaml.safe_dump(snapshot, sort_keys=False))
        return {"holder": holder, "snapshot": snapshot,
                "resource_version": result.resource_version if result else vs["metadata"]["resourceVersion"]}

    @property
    def _mirror(self) -> MirrorConfig:
        """The release's mirror phase: the owned route must be fit for it (core/mirror.py)."""
        return MirrorConfig.from_params(parse_release(self.release))

    def _read_virtual_service(self) -> dict[str, Any]:
        req = self.request
        try:
            return self.hook.get_virtual_service(req.namespace, req.virtual_service)
        except ObjectNotFoundError as exc:
            raise PreflightError(f"VirtualService {req.namespace}/{req.virtual_service} not found") from exc

    def _read_release_objects(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, Any]]]:
        """The DestinationRule, the Service and the VirtualServices moved with the release (by name)."""
        req, hook = self.request, self.hook
        dr = hook.find("DestinationRule", req.namespace, req.destination_rule)
        if dr is None:
            raise PreflightError(
                f"DestinationRule {req.namespace}/{req.destination_rule} not found: create it first "
                "(see include/manifests/reviews-destinationrule.yaml)"
            )
        service = hook.find_service(req.namespace, req.service)
        if service is None:
            raise PreflightError(f"Service {req.namespace}/{req.service} not found")
        included = {}
        for name in req.virtual_services:
            try:
                included[name] = hook.get_virtual_service(req.namespace, name)
            except ObjectNotFoundError as exc:
                raise PreflightError(f"VirtualService {req.namespace}/{name} (virtual_services) not found") from exc
        return dr, service, included

    def _refuse_unless_releasable(
        self, vs: dict[str, Any], dr: dict[str, Any], service: dict[str, Any],
        included: dict[str, dict[str, Any]], holder: str,
    ) -> None:
        """Every check of the class docstring, on the objects as first read; all refusals at once."""
        req = self.request
        service_problems = service_refusals(service, req)
        refusals = [*service_problems, *destination_rule_refusals(dr, req), *self._held_elsewhere(included, holder)]
        for each in (vs, *included.values()):
            basis = self._routing_basis(each, holder)
            if basis is not None:
                refusals += virtual_service_refusals(basis, dr, request_for(each, req), self._mirror)
        refusals += other_virtual_service_refusals(vs, self.hook.list("VirtualService", req.namespace), req)
        refusals += other_destination_rule_refusals(vs, dr, self._rules_of_host(), req)
        problems: list[str] = []
        if not service_problems:  # pods are found through the Service's selector
            refusals += self._check_pods(service, problems)
        if refusals:
            raise ReleaseRefusedError(refusals)
        if problems:
            raise PreflightError("pods not ready for the release: " + "; ".join(problems))

    def _held_elsewhere(self, included: dict[str, dict[str, Any]], holder: str) -> list[Refusal]:
        """VirtualServices moved with the release that another release holds."""
        refusals = []
        for name, each in included.items():
            taken = lock_of(each)
            if taken is not None and taken.holder != holder and not self._break_stale():
                refusals.append(Refusal(
                    f"VirtualService {self.request.namespace}/{name}", f"metadata.annotations[{LOCK_ANNOTATION}]",
                    f"held by release {taken.describe()}", "wait for that release to finish, or leave "
                    f"{name!r} out of virtual_services"))
        return refusals

    def _announce_lock_break(self, context: Mapping[str, Any], vs: dict[str, Any], holder: str) -> None:
        current_lock = lock_of(vs)
        if current_lock is not None and current_lock.holder != holder and self._break_stale():
            self._refuse_if_holder_active(context, current_lock.holder)
            self.log.warning("BREAKING the release lock held by %s, as asked (break_stale_lock)",
                             current_lock.describe())

    def _lock_edit(self, dr: dict[str, Any], holder: str) -> Edit:
        """The write that takes the lock on a VirtualService, with its snapshot beside it."""
        req = self.request

        def take_lock(live: dict[str, Any]) -> dict[str, Any]:
            # The snapshot and the checks come from the object this write is based on: an
            # edit or another release finishing since the first read cannot make it stale.
            basis = self._routing_basis(live, holder)
            if basis is not None:
                found = virtual_service_refusals(basis, dr, request_for(live, req), self._mirror)
                if found:
                    raise ReleaseRefusedError(found)
            primary = live["metadata"]["name"] == req.virtual_service
            snapshot = {"virtualService": _snapshot_copy(live), "destinationRule": _snapshot_copy(dr) if primary else None}
            return with_lock(live, holder, snapshot, break_stale=self._break_stale())

        return take_lock

    def _pretend_to_lock(
        self, vs: dict[str, Any], dr: dict[str, Any], included: dict[str, dict[str, Any]], holder: str
    ) -> dict[str, Any]:
        """Dry run: check the lock edits on the objects as read; the snapshot they would record."""
        take_lock = self._lock_edit(dr, holder)
        for each in (vs, *included.values()):
            take_lock(each)
        self.log.info("DRY RUN: would take the release lock for %s", holder)
        snapshot = {"virtualService": _snapshot_copy(vs), "destinationRule": _snapshot_copy(dr)}
        moved = {name: _snapshot_copy(each) for name, each in included.items()}
        return _with_moved(snapshot, moved)

    def _take_locks(
        self, context: Mapping[str, Any], dr: dict[str, Any], included: dict[str, dict[str, Any]], holder: str
    ) -> tuple[dict[str, Any] | None, WriteResult | None]:
        """(the recorded snapshot, the primary write); None when this run no longer holds it."""
        take_lock = self._lock_edit(dr, holder)
        # The release's own VirtualService first: it is the one-release-per-service lock. Each
        # one moved with it carries the same holder's lock and its own snapshot.
        result = self.update_virtual_service(context, take_lock, "take release lock")
        snapshot = snapshot_of(result.after) if result is not None else None
        moved = {}
        for name in included:
            taken = self.update_virtual_service(context, take_lock, "take release lock", name)
            recorded = snapshot_of(taken.after) if taken is not None else None
            moved[name] = (recorded or {}).get("virtualService")
        return _with_moved(snapshot, moved), result

    def _routing_basis(self, vs: dict[str, Any], holder: str) -> dict[str, Any] | None:
        """The VirtualService whose routing the release starts from, to check; None: nothing to check.

        Held by this run: the checks passed when it took the lock (traffic has moved since).
        Held by another release: the lock refuses (unless broken: then the stale release's
        snapshot, the routing from before it touched anything, is what this release starts from).
        """
        current = lock_of(vs)
        if current is None:
            return vs
        if current.holder == holder or not self._break_stale():
            return None
        recorded = snapshot_of(vs)
        return (recorded or {}).get("virtualService") or vs

    def _rules_of_host(self) -> list[dict[str, Any]]:
        """DestinationRules in every namespace (clients' own rules for the host take precedence)."""
        req = self.request
        try:
            return self.hook.list("DestinationRule", None)
        except IstioApiError as exc:
            if exc.status != 403:
                raise
            raise ReleaseRefusedError([Refusal(
                "DestinationRule */*", "(list in all namespaces)",
                f"the pipeline may not list DestinationRules in all namespaces ({exc}), so it cannot see a "
                f"client namespace's rule for {req.fqdn} that would hide the canary subset",
                "grant the cluster-wide read in include/manifests/rbac.yaml (ClusterRole "
                "istio-canary-read-destinationrules)",
            )]) from exc

    def _check_pods(self, service: dict[str, Any], problems: list[str]) -> list[Refusal]:
        """Pods of both versions among the Service's endpoints, Ready with the sidecar, and
        labelled so Istio's metrics report their version."""
        req, hook = self.request, self.hook
        refusals = []
        for version in (req.stable_version, req.canary_version):
            pods = hook.list_pods(req.namespace, pod_selector(service, req.version_label, version))
            if not pods:
                labelled = hook.list_pods(req.namespace, {req.version_label: version})
                refusals.append(unselected_pods_refusal(service, version, labelled, req))
                continue
            summary = summarize_version_pods(version, pods)
            self.log.info("pods: %s", summary.describe())
            if not summary.ok:
                problems.append(summary.describe())
            for problem in metric_label_problems(pods, version, req.version_label):
                refusals.append(Refusal(f"Pod {req.namespace}/*", f"metadata.labels ({version})", problem,
                                        "label the pods as the problem says"))
        return refusals

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
