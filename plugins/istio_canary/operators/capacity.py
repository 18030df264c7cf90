"""The capacity check before a weight increase: can the canary carry the next step?

A sensor in reschedule mode (no worker slot between checks): each check reads the Deployments
and HPAs of both versions and the route's request rate, and `core.capacity` decides. `ok`
lets the step's set_route run; `hold` checks again in `poke_interval` seconds, up to the
release's `capacity_timeout_minutes` from the first check (Airflow keeps that date across
reschedules), then refuses; `refuse` fails the task without retries, which rolls the
release back. Dry run: reads and logs, never holds or fails. Every check logs its numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from airflow.sdk.bases.sensor import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException

from istio_canary.core.capacity import (
    CapacityConfig,
    CapacityDecision,
    CapacityInput,
    decide_capacity,
    hold_timed_out,
    rate_query,
    rates_from_result,
    version_workload,
)
from istio_canary.core.preflight import pod_selector
from istio_canary.core.request import ReleaseRequest
from istio_canary.operators.base import as_bool, parse_release

# The sensor's own timeout only backs up the release's capacity_timeout_minutes (at most a day).
SENSOR_TIMEOUT = timedelta(hours=25)


class CanaryCapacityOperator(BaseSensorOperator):
    """Hold or refuse a weight increase the canary's replicas cannot carry.

    :param release: the validated release parameters (with the capacity settings).
    :param current_weight: the canary's weight before this step (0 before the first).
    :param next_weight: the weight this step sets.
    :param reference_task_id: the release's first capacity check, whose count of stable
        replicas sizes later steps if the stable was scaled down since (None: this is it).
    """

    template_fields: Sequence[str] = ("release", "kubernetes_conn_id", "prometheus_conn_id", "dry_run")
    ui_color = "#e3f2e1"

    def __init__(
        self,
        *,
        release: Mapping[str, Any] | Any,
        current_weight: int,
        next_weight: int,
        reference_task_id: str | None = None,
        kubernetes_conn_id: str = "kubernetes_default",
        prometheus_conn_id: str = "prometheus_default",
        dry_run: bool | str = False,
        poke_interval: float = 20,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("timeout", SENSOR_TIMEOUT)
        super().__init__(mode="reschedule", poke_interval=poke_interval, **kwargs)
        self.release = release
        self.current_weight = current_weight
        self.next_weight = next_weight
        self.reference_task_id = reference_task_id
        self.kubernetes_conn_id = kubernetes_conn_id
        self.prometheus_conn_id = prometheus_conn_id
        self.dry_run = dry_run

    @cached_property
    def params_dict(self) -> dict[str, Any]:
        return parse_release(self.release)

    @cached_property
    def request(self) -> ReleaseRequest:
        return ReleaseRequest.from_params(self.params_dict)

    @cached_property
    def istio(self) -> Any:
        from istio_canary.hooks.istio import IstioHook

        return IstioHook(self.kubernetes_conn_id, api_version=self.request.istio_api_version)

    @cached_property
    def prometheus(self) -> Any:
        from istio_canary.hooks.prometheus import PrometheusHook

        return PrometheusHook(self.prometheus_conn_id)

    def poke(self, context: Mapping[str, Any]) -> bool | PokeReturnValue:
        config = CapacityConfig.from_params(self.params_dict)
        if not config.capacity_check:
            self.log.info("capacity_check is off: the canary's replicas are not compared with the next step")
            return PokeReturnValue(True, {"action": "ok", "message": "capacity_check off"})
        data = self._read(context, config)
        decision = decide_capacity(data)
        if decision.action == "hold":
            decision = self._unless_timed_out(context, decision, data, config)
        return self._act(decision)

    def _read(self, context: Mapping[str, Any], config: CapacityConfig) -> CapacityInput:
        req, hook = self.request, self.istio
        service = hook.find_service(req.namespace, req.service) or {}
        deployments = hook.list_deployments(req.namespace)
        hpas = hook.list_horizontal_pod_autoscalers(req.namespace)
        workloads = [
            version_workload(version, pod_selector(service, req.version_label, version), deployments, hpas)
            for version in (req.stable_version, req.canary_version)
        ]
        for workload in workloads:
            self.log.info("capacity: %s", workload.describe())
        stable_rps, canary_rps = self._rates()
        return CapacityInput(
            req.namespace, workloads[0], workloads[1], self.current_weight, self.next_weight,
            stable_rps, canary_rps, config.capacity_headroom, self._reference_replicas(context),
        )

    def _rates(self) -> tuple[float | None, float | None]:
        from istio_canary.hooks.prometheus import PrometheusQueryError

        req = self.request
        query = rate_query(req.service, req.namespace, req.stable_version, req.canary_version,
                           req.metric_version_label)
        self.log.info("PromQL (the route's request rate per version): %s", query)
        try:
            stable, canary = rates_from_result(self.prometheus.query(query), req.stable_version,
                                               req.canary_version, req.metric_version_label)
        except PrometheusQueryError as error:
            self.log.warning("cannot read the request rate (%s): sizing the canary by replicas alone", error)
            return None, None
        self.log.info("capacity: %s %.2f requests/s, %s %.2f requests/s", req.stable_version, stable,
                      req.canary_version, canary)
        return stable, canary

    def _reference_replicas(self, context: Mapping[str, Any]) -> int | None:
        if not self.reference_task_id:
            return None
        first = context["ti"].xcom_pull(task_ids=self.reference_task_id) or {}
        value = first.get("stable_reference_replicas") if isinstance(first, Mapping) else None
        return int(value) if isinstance(value, int | float) and value > 0 else None

    def _unless_timed_out(
        self, context: Mapping[str, Any], decision: CapacityDecision, data: CapacityInput, config: CapacityConfig,
    ) -> CapacityDecision:
        first = context["ti"].get_first_reschedule_date(context)
        waited = datetime.now(UTC) - first if first else timedelta(0)
        self.log.info("capacity: holding for %s of at most %d min", str(waited).split(".")[0],
                      config.capacity_timeout_minutes)
        if waited >= timedelta(minutes=config.capacity_timeout_minutes):
            return hold_timed_out(decision, data, config.capacity_timeout_minutes)
        return decision

    def _act(self, decision: CapacityDecision) -> bool | PokeReturnValue:
        if as_bool(self.dry_run):
            self.log.info("DRY RUN: %s: %s (a dry run neither holds nor fails)", decision.action.upper(),
                          decision.message)
            return PokeReturnValue(True, {**decision.to_dict(), "dry_run": True})
        if decision.action == "refuse":
            self.log.error("capacity: REFUSE: %s", decision.message)
            raise AirflowFailException(decision.message)
        if decision.action == "hold":
            self.log.warning("capacity: HOLD at %d%%: %s (next check in %ss)", self.current_weight,
                             decision.message, self.poke_interval)
            return False
        self.log.info("capacity: OK: %s", decision.message)
        return PokeReturnValue(True, decision.to_dict())
