"""The shell every Istio operator shares: inputs, the lazy hook, guarded writes, diffs in the log."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator

from istio_canary.core.destination_rule import ensure_subsets
from istio_canary.core.diff import yaml_diff
from istio_canary.core.events import EventOrigin, ReleaseEvent, Versions, event_body, involved_object
from istio_canary.core.lock import NotLockHolderError, require_holder, without_own_annotations
from istio_canary.core.request import ReleaseRequest
from istio_canary.hooks.istio import IstioHook, WriteResult

Edit = Callable[[dict[str, Any]], dict[str, Any]]


def as_bool(value: bool | str) -> bool:
    """Templated booleans arrive as strings ("True"/"False") unless the DAG renders natively.

    The release DAG keeps Airflow's default string rendering rather than
    `render_template_as_native_obj=True`, which would remove this and `parse_release`: native
    rendering passes every rendered string through `ast.literal_eval`, so a namespace `2024`
    or a connection id `1` reaches the operators as an int (seen in an `airflow dags test`
    run), and it swaps Airflow's sandboxed Jinja environment for an unsandboxed one. These
    operators also serve DAGs that render as strings, the default.
    """
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


def parse_release(release: Mapping[str, Any] | str | None) -> dict[str, Any]:
    """The release's params as a dict: a mapping, or JSON text from a rendered template."""
    if isinstance(release, str):
        release = json.loads(release) if release.strip() not in ("", "None", "null") else None
    if release is None:
        raise NoReleaseError("no validated release parameters (did the validate task fail?)")
    return dict(release)


class NoReleaseError(ValueError):
    """The release parameters never got validated: nothing was changed by this run."""


def release_holder(context: Mapping[str, Any]) -> str:
    """The lock holder id of this release: the DAG run, so a person can find it in the UI."""
    return f"{context['dag'].dag_id}/{context['run_id']}"


def run_ids(context: Mapping[str, Any]) -> tuple[str, str]:
    """(dag_id, run_id) of the running task, from whichever of Airflow's keys the context has."""
    dag_run = context.get("dag_run")
    dag = context.get("dag")
    dag_id = getattr(dag, "dag_id", None) or getattr(dag_run, "dag_id", None) or ""
    run_id = context.get("run_id") or getattr(dag_run, "run_id", None) or ""
    return str(dag_id), str(run_id)


class IstioReleaseOperator(BaseOperator):
    """Base for operators that act on one release's VirtualService and DestinationRule.

    :param release: the release parameters (a dict, usually the validated output of the
        DAG's `validate` task); read with `ReleaseRequest.from_params`.
    :param kubernetes_conn_id: the cncf-kubernetes connection to the cluster.
    :param dry_run: compute and log every diff, write nothing.
    :param require_lock: refuse to write unless this DAG run holds the service's release
        lock (taken by the preflight operator). Off only for one-off manual use.
    """

    template_fields: Sequence[str] = ("release", "kubernetes_conn_id", "dry_run")
    ui_color = "#d6ecf3"

    def __init__(
        self,
        *,
        release: Mapping[str, Any] | Any,
        kubernetes_conn_id: str = "kubernetes_default",
        dry_run: bool | str = False,
        require_lock: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.release = release
        self.kubernetes_conn_id = kubernetes_conn_id
        self.dry_run = dry_run
        self.require_lock = require_lock

    @cached_property
    def request(self) -> ReleaseRequest:
        return ReleaseRequest.from_params(parse_release(self.release))

    @cached_property
    def hook(self) -> IstioHook:
        return IstioHook(self.kubernetes_conn_id, api_version=self.request.istio_api_version)

    @property
    def is_dry_run(self) -> bool:
        return as_bool(self.dry_run)

    def guarded(self, context: Mapping[str, Any], edit: Edit) -> Edit:
        """`edit` that first checks (on the object as read) that this run holds the lock."""
        if not self.require_lock or self.is_dry_run:
            return edit
        holder = release_holder(context)

        def checked(vs: dict[str, Any]) -> dict[str, Any]:
            require_holder(vs, holder)
            return edit(vs)

        return checked

    def check_still_holding(self, context: Mapping[str, Any]) -> None:
        """For writes to objects other than the VirtualService (which carries the lock)."""
        if self.require_lock and not self.is_dry_run:
            vs = self.hook.get_virtual_service(self.request.namespace, self.request.virtual_service)
            require_holder(vs, release_holder(context))

    def destination_rule_for_checks(self) -> dict[str, Any]:
        """The DestinationRule a VirtualService edit is validated against (subsets must exist).

        In a dry run nothing was written by earlier steps, so check against the rule as the
        release would have left it.
        """
        req = self.request
        dr = self.hook.get_destination_rule(req.namespace, req.destination_rule)
        return ensure_subsets(dr, req) if self.is_dry_run else dr

    def update_virtual_service(
        self, context: Mapping[str, Any], edit: Edit, what: str, name: str | None = None
    ) -> WriteResult | None:
        """Write `edit` to the release's VirtualService (or `name`, one moved with it, which
        carries this run's lock too); None when this run no longer holds it."""
        req = self.request
        try:
            result = self.hook.update(
                "VirtualService", req.namespace, name or req.virtual_service,
                self.guarded(context, edit), dry_run=self.is_dry_run,
            )
        except NotLockHolderError as exc:
            self.log.info("%s: no change: %s", what, exc)
            return None
        self.log_write(result, what)
        return result

    def emit_event(self, context: Mapping[str, Any], event: ReleaseEvent | Callable[[], ReleaseEvent],
                   vs: Mapping[str, Any] | None = None, name: str | None = None) -> None:
        """Record `event` (or what the callable builds) on the VirtualService `name` (the
        release's own by default; `vs`: the object as just written, for its uid). Best effort:
        a refusal (403 without `create` on events), a missing object, a network error, even a
        failure to describe the step, is a warning, never a failed or changed release."""
        if self.is_dry_run:
            return
        req = self.request
        name = name or req.virtual_service
        dag_id, run_id = run_ids(context)
        origin = EventOrigin(dag_id, run_id, self.task_id, socket.gethostname())
        reason = getattr(event, "reason", "release event")
        try:
            built = event if isinstance(event, ReleaseEvent) else event()
            reason = built.reason
            body = event_body(built, involved_object(vs or {}, req.namespace, name), origin, datetime.now(UTC))
            self.hook.create_event(req.namespace, body)
        except Exception as exc:
            self.log.warning("could not record the Kubernetes Event %s on VirtualService %s/%s "
                             "(the release goes on without it): %s", reason, req.namespace, name, exc)
            return
        self.log.info("Kubernetes Event %s %s on VirtualService %s/%s: %s",
                      body["type"], body["reason"], req.namespace, name, body["message"])

    def release_versions(self) -> Versions:
        req = self.request
        return Versions(req.namespace, req.service, req.stable_version, req.canary_version)

    def log_write(self, result: WriteResult, what: str) -> None:
        name = f"{result.kind} {result.namespace}/{result.name}"
        if not result.changed:
            self.log.info("%s: no change to %s (resourceVersion %s)", what, name, result.resource_version)
            return
        diff = yaml_diff(without_own_annotations(result.before), without_own_annotations(result.after), name)
        if result.written:
            self.log.info(
                "%s: wrote %s, resourceVersion %s -> %s (attempt %d)\n%s",
                what, name, result.before["metadata"]["resourceVersion"], result.resource_version,
                result.attempts, diff or "(only release bookkeeping annotations changed)",
            )
        else:
            self.log.info("%s: DRY RUN, would write %s:\n%s", what, name, diff or "(bookkeeping only)")
