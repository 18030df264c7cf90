"""The release DAG, built by a factory so several pipelines (other step lists) can be declared.

One run is one release. Task structure is static (it must be, for the grid):

    validate -> window_gate -> preflight -> destination_rule -> choose_strategy
      -> [targeted: set_route -> watch -> analyze -> decide]      (header/cookie strategies)
      -> step_<w>: [window ->] set_route -> watch -> analyze -> decide   (for each step w)
      -> [approve_promotion, before the last step, if require_approval]
      -> promote_window -> promote
    rollback: trigger rule one_failed, downstream of every task that can fail
    report, outcome: always run; `outcome` fails the run unless the canary was promoted

`decide` branches to the next step or to the step's `verdict_failed` task, which fails
with the verdict's reason: that failure is what triggers `rollback` (trigger rules, so a
crash anywhere triggers it the same way). This module imports only Airflow's authoring
API and our operators, whose clients load lazily: DAG files stay cheap to parse.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from itertools import pairwise
from typing import Any

from airflow.sdk import DAG, Param, TaskGroup, task

from istio_canary.core.request import DEFAULT_COOKIE_REGEX, DEFAULT_MESH_DOMAIN
from istio_canary.operators.analysis import (
    CanaryAnalysisOperator,
    CanaryBakePlanOperator,
    CanaryWatchOperator,
)
from istio_canary.operators.preflight import IstioPreflightOperator
from istio_canary.operators.routing import (
    ROLLBACK_FAILED_XCOM,
    IstioDestinationRuleOperator,
    IstioMatchRouteOperator,
    IstioPromoteOperator,
    IstioRollbackOperator,
    IstioTrafficShiftOperator,
)
from istio_canary.operators.window import ReleaseWindowGateOperator

DEFAULT_STEPS: tuple[int, ...] = (10, 50, 100)
VALIDATED = "{{ ti.xcom_pull(task_ids='validate') | tojson }}"
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
RELEASE = "Release"
STRATEGY = "Targeted canary (header / cookie strategies)"
ANALYSIS = "Analysis"
SAFETY = "Safety and connections"


def release_params(overrides: dict[str, Any] | None = None) -> dict[str, Param]:
    """The trigger form. Names are a public contract (REST conf keys, CLI -c JSON keys)."""
    params: dict[str, Param] = {
        "service": Param(None, type="string", pattern=NAME_PATTERN, maxLength=63, title="Service",
                         description="Kubernetes Service (and, by default, VirtualService and DestinationRule) name, e.g. reviews.",
                         section=RELEASE),
        "namespace": Param(None, type="string", pattern=NAME_PATTERN, maxLength=63, title="Namespace",
                           description="Namespace of the service and its Istio objects.", section=RELEASE),
        "stable_version": Param(None, type="string", minLength=1, maxLength=63, title="Stable version",
                                description="Value of the pods' `version` label serving traffic now, e.g. v1.",
                                section=RELEASE),
        "canary_version": Param(None, type="string", minLength=1, maxLength=63, title="Canary version",
                                description="Value of the new pods' `version` label, e.g. v2. Must differ from the stable version.",
                                section=RELEASE),
        "strategy": Param("weighted", type="string", enum=["weighted", "header", "cookie"], title="Strategy",
                          description="weighted: shift a share of all traffic. header / cookie: first send only "
                                      "matching requests to the canary (a targeted phase judged like a step), then shift.",
                          section=RELEASE),
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="Compute and log every object and diff for every step; write nothing, no waits.",
                         section=RELEASE),
        "header_name": Param("user-agent", type="string", minLength=1, title="Header name",
                             description="Header that marks canary requests (header strategy).", section=STRATEGY),
        "header_value": Param("canary", type="string", minLength=1, title="Header value",
                              description="Exact header value that routes to the canary.", section=STRATEGY),
        "cookie_regex": Param(DEFAULT_COOKIE_REGEX, type="string", minLength=1, maxLength=1024, title="Cookie regex",
                              description="RE2 regex the whole Cookie header must match (cookie strategy). The "
                                          "default takes the cookie canary=true, not notcanary=true or canary=true2.",
                              section=STRATEGY),
        "bake_seconds": Param(300, type="integer", minimum=1, title="Bake time per step (s)",
                              description="How long each step is watched before its verdict.", section=ANALYSIS),
        "check_interval_seconds": Param(5, type="integer", minimum=1, title="Check interval (s)",
                                        description="How often Prometheus is checked during the bake (early stop).",
                                        section=ANALYSIS),
        "min_requests": Param(50, type="integer", minimum=1, title="Minimum canary requests",
                              description="Fewer canary requests than this is inconclusive, never a pass.",
                              section=ANALYSIS),
        "max_error_rate": Param(0.01, type="number", exclusiveMinimum=0, exclusiveMaximum=1,
                                title="Max error rate", description="Highest canary 5xx ratio accepted (0.01 = 1%).",
                                section=ANALYSIS),
        "max_p99_ms": Param(500, type="number", exclusiveMinimum=0, title="Max p99 latency (ms)",
                            description="Highest canary p99 request duration accepted.", section=ANALYSIS),
        "max_bake_seconds": Param(None, type=["integer", "null"], minimum=1, title="Max bake time (s)",
                                  description="Low traffic extends the bake up to this (default: 3 x bake time).",
                                  section=ANALYSIS),
        "plan_bake": Param(True, type="boolean", title="Plan the bake from traffic",
                           description="Before each step, bake long enough (up to the max bake time) to catch a "
                                       "canary failing twice as often as stable; refuse a release whose traffic "
                                       "cannot give that even at the max. Off: bake the bake time.",
                           section=ANALYSIS),
        "release_window": Param(None, type=["string", "null"], title="Release window policy",
                                description="A policy from include/release_windows.yaml (e.g. office-hours); "
                                            "empty: the service's policy if it has one; 'none': no window.",
                                section=SAFETY),
        "window_mode": Param("wait", type="string", enum=["wait", "refuse", "ignore"], title="Outside a window",
                             description="wait: defer until the window opens (no worker slot); refuse: fail saying "
                                         "when it opens; ignore: release now. Mid-release, a closed window holds "
                                         "the current weight.", section=SAFETY),
        "require_approval": Param(False, type="boolean", title="Require approval",
                                  description="A person approves before the last step (Required actions); "
                                              "reject or timeout rolls back.", section=SAFETY),
        "break_stale_lock": Param(False, type="boolean", title="Break a stale release lock",
                                  description="Take the service's release lock even if another run holds it. "
                                              "Only when that run is known to be dead.", section=SAFETY),
        "kubernetes_conn_id": Param("kubernetes_default", type="string", minLength=1, title="Kubernetes connection",
                                    section=SAFETY),
        "prometheus_conn_id": Param("prometheus_default", type="string", minLength=1, title="Prometheus connection",
                                    section=SAFETY),
        "istio_api_version": Param("v1", type="string", enum=["v1", "v1beta1"], title="Istio API version",
                                   section=SAFETY),
        "mesh_domain": Param(DEFAULT_MESH_DOMAIN, type="string", pattern=DOMAIN_PATTERN, maxLength=253,
                             title="Mesh domain",
                             description="The cluster's DNS domain (cluster.local unless the cluster was set "
                                         "up with another). Istio expands a short host such as reviews to "
                                         "reviews.<namespace>.svc.<mesh domain>; names with a dot stay as written.",
                             section=SAFETY),
        "virtual_services": Param([], type="array", items={"type": "string"}, title="Move with it",
                                  description="Other VirtualServices of the namespace routing to the service "
                                              "(e.g. an ingress-gateway one), moved in the same steps; each "
                                              "keeps everything but its owned route.", section=SAFETY),
        "route_name": Param(None, type=["string", "null"], title="Owned route name",
                            description="The HTTP route the release edits; default: the host's catch-all route.",
                            section=SAFETY),
    }
    for key, value in (overrides or {}).items():
        if key in params:
            params[key].value = value  # a planned release's defaults (the calendar)
        else:
            params[key] = Param(value)
    return params


def _validate(steps: list[int], **context: Any) -> dict[str, Any]:
    """Typed, checked release parameters, or a failure naming the field, before any write."""
    from airflow.sdk.exceptions import AirflowFailException

    from istio_canary.core.metrics import AnalysisConfig
    from istio_canary.core.request import ReleaseRequest
    from istio_canary.core.validation import ValidationError

    raw = {k: v for k, v in dict(context["params"]).items() if v is not None}
    try:
        _refuse_unknown_params(raw, context.get("dag"))
        request = ReleaseRequest.from_params(raw)
        analysis = AnalysisConfig.from_params(raw)
        if "steps" in raw and list(request.steps) != list(steps):
            raise ValidationError("steps", raw["steps"], f"this pipeline's steps are fixed at {steps}; declare "
                                  "another pipeline with build_release_dag(steps=...) for other steps")
    except ValidationError as exc:
        raise AirflowFailException(f"invalid release parameter: {exc}") from exc
    # decide() reads dry_run and require_approval from this output, not from the params.
    return {**request.to_params(), **analysis.to_dict(), "dry_run": bool(raw.get("dry_run")),
            "require_approval": bool(raw.get("require_approval"))}


def _refuse_unknown_params(raw: dict[str, Any], dag: Any) -> None:
    """A misspelt key ("stratgy") would otherwise be ignored and the release run with defaults."""
    import dataclasses
    import difflib

    from istio_canary.core.metrics import AnalysisConfig
    from istio_canary.core.request import ReleaseRequest
    from istio_canary.core.validation import ValidationError

    # The form's params, what the DAG declares (a calendar entry may add some), and every key
    # the release and analysis read (REST/CLI may set e.g. canary_subset, absent from the form).
    known = (set(release_params()) | set(getattr(dag, "params", None) or {})
             | {f.name for f in dataclasses.fields(ReleaseRequest)}
             | {f.name for f in dataclasses.fields(AnalysisConfig)})
    for key in sorted(set(raw) - known):
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "see the DAG's params for the known ones"
        raise ValidationError(key, raw[key], f"unknown release parameter: {hint}")


def build_release_dag(
    dag_id: str = "istio_canary_release",
    *,
    steps: Sequence[int] = DEFAULT_STEPS,
    schedule: Any = None,
    params: dict[str, Any] | None = None,
    approval_timeout: timedelta = timedelta(hours=1),
    description: str | None = None,
    tags: Sequence[str] = ("istio", "canary", "release"),
    **dag_kwargs: Any,
) -> DAG:
    """A release pipeline with `steps` (increasing percentages ending at 100)."""
    steps = tuple(int(w) for w in steps)
    if not steps or steps[-1] != 100 or any(b <= a for a, b in pairwise(steps)):
        raise ValueError(f"steps={steps!r}: must increase strictly and end at 100")
    if steps[0] <= 0:
        raise ValueError(f"steps={steps!r}: the first step must be above 0")

    with DAG(
        dag_id=dag_id,
        schedule=schedule,
        params=release_params(params),
        description=description or f"Istio canary release: {' -> '.join(f'{w}%' for w in steps)}, judge, promote or roll back",
        catchup=False,
        tags=list(tags),
        default_args={"retries": 2, "retry_delay": timedelta(seconds=5), "retry_exponential_backoff": True},
        doc_md=__doc__,
        # Releases of different services run side by side (each service's lock keeps one per
        # service); a scheduled (calendar) release runs once at a time. Callers may override.
        **{"max_active_runs": 1 if schedule is not None else 16, **dag_kwargs},
    ) as dag:
        # One XCom, not one per key: a dict return would otherwise be split (multiple_outputs).
        validate = task(task_id="validate", retries=0, multiple_outputs=False)(_validate)(steps=list(steps))
        # Operators read the validated parameters through a template, not an XComArg: an
        # XComArg would add validate as an upstream of every task, and its success would
        # satisfy the step set_route's none_failed_min_one_success after a branch skipped it.
        release = VALIDATED
        conns = {"kubernetes_conn_id": "{{ params.kubernetes_conn_id }}", "dry_run": "{{ params.dry_run }}"}
        prom = {"prometheus_conn_id": "{{ params.prometheus_conn_id }}", "dry_run": "{{ params.dry_run }}"}
        failable: list[Any] = []  # rollback runs when any of these fails

        preflight = IstioPreflightOperator(task_id="preflight", release=release,
                                           break_stale_lock="{{ params.break_stale_lock }}", retries=1, **conns)
        destination_rule = IstioDestinationRuleOperator(task_id="destination_rule", release=release, **conns)
        failable += [preflight, destination_rule]

        def phase(group_id: str, set_route: Any, judge_state_from: str | None, label: str,
                  next_ids: Any, plan_weights: Sequence[int] | None = None) -> Any:
            """set_route -> watch -> analyze -> decide (branch: next, or verdict_failed)."""
            watch = CanaryWatchOperator(task_id="watch", release=release, judge_state_from=judge_state_from,
                                        plan_weights=plan_weights, **prom)
            analyze = CanaryAnalysisOperator(task_id="analyze", release=release,
                                             watch_task_id=f"{group_id}.watch", **prom)

            @task.branch(task_id="decide")
            def decide(analysis: dict[str, Any], validated: dict[str, Any]) -> str | list[str]:
                dry_run_pass = validated["dry_run"] and analysis["outcome"] == "dry_run"
                if analysis["outcome"] != "pass" and not dry_run_pass:
                    return f"{group_id}.verdict_failed"
                return next_ids(validated)

            @task(task_id="verdict_failed", retries=0)
            def verdict_failed(analysis: dict[str, Any]) -> None:
                from airflow.sdk.exceptions import AirflowFailException

                raise AirflowFailException(f"{label}: canary {analysis['outcome']}: {analysis['summary']}")

            decided = decide(analyze.output, validate)
            failed = verdict_failed(analyze.output)
            set_route >> watch >> analyze >> decided >> failed
            failable.extend([set_route, watch, analyze, decided, failed])
            return decided

        first_step = f"step_{steps[0]}.set_route"

        @task.branch(task_id="choose_strategy")
        def choose_strategy(validated: dict[str, Any]) -> str:
            if validated["strategy"] in ("header", "cookie"):
                return "targeted.set_route"
            return "targeted.not_needed"

        strategy = choose_strategy(validate)
        window = {"release_window": "{{ params.release_window }}", "window_mode": "{{ params.window_mode }}",
                  "service": "{{ params.service }}", "namespace": "{{ params.namespace }}"}
        window_gate = ReleaseWindowGateOperator(task_id="window_gate", retries=0, **window)
        # Read-only: refuses a release its traffic cannot judge before the lock or any route.
        bake_plan = CanaryBakePlanOperator(task_id="bake_plan", release=release, steps=list(steps), **prom)
        validate >> window_gate >> bake_plan >> preflight >> destination_rule >> strategy

        from airflow.providers.standard.operators.empty import EmptyOperator

        with TaskGroup("targeted", tooltip="header/cookie strategies: only matching requests reach the canary"):
            targeted_route = IstioMatchRouteOperator(task_id="set_route", release=release, enabled=True, **conns)
            not_needed = EmptyOperator(task_id="not_needed")
            targeted = phase("targeted", targeted_route, None, "targeted phase", lambda _v: first_step)
        strategy >> [targeted_route, not_needed]
        entries: list[Any] = [targeted, not_needed]  # what may lead into the next step's set_route
        previous_analyze = "targeted.analyze"

        for index, weight in enumerate(steps):
            group_id = f"step_{weight}"
            with TaskGroup(group_id, tooltip=f"{weight}% of the owned route's traffic to the canary"):
                # The first step is entered from a branch (targeted phase or not); later steps
                # through their window hold, which carries that trigger rule instead.
                set_route = IstioTrafficShiftOperator(
                    task_id="set_route", release=release, canary_weight=weight,
                    trigger_rule="none_failed_min_one_success" if index == 0 else "all_success", **conns,
                )
                if index == len(steps) - 1:
                    next_ids: Any = lambda _v: "promote_window"  # noqa: E731
                elif index == len(steps) - 2:
                    # Before the last step: a person approves when asked to.
                    next_ids = lambda v: "approve_promotion" if v.get("require_approval") else "no_approval_needed"  # noqa: E731
                else:
                    next_ids = lambda _v, nxt=f"step_{steps[index + 1]}.window": nxt  # noqa: E731
                decided = phase(group_id, set_route, previous_analyze, f"step {weight}%", next_ids,
                                plan_weights=steps[index:])
                if index == 0:
                    entries >> set_route
                else:
                    # Hold at the current weight while the release window is closed.
                    hold = ReleaseWindowGateOperator(task_id="window", phase="step",
                                                     trigger_rule="none_failed_min_one_success", **window)
                    entries >> hold >> set_route
                    failable.append(hold)
            if index == len(steps) - 2:
                approval = _approval_task(approval_timeout, steps[-1])
                no_approval = EmptyOperator(task_id="no_approval_needed")
                decided >> [approval, no_approval]
                failable.append(approval)
                entries = [approval, no_approval]
            else:
                entries = [decided]
            previous_analyze = f"{group_id}.analyze"

        promote_window = ReleaseWindowGateOperator(task_id="promote_window", phase="step",
                                                   trigger_rule="none_failed_min_one_success", **window)
        promote = IstioPromoteOperator(task_id="promote", release=release, **conns)
        entries >> promote_window >> promote  # never promotes outside a window
        failable += [promote_window, promote]

        rollback = IstioRollbackOperator(
            task_id="rollback",
            # Templates: rollback must start even when validate or preflight failed.
            release=VALIDATED,
            snapshot="{{ (ti.xcom_pull(task_ids='preflight') or {}).get('snapshot') | tojson }}",
            reason="a release task failed; its log says why",
            trigger_rule="one_failed", retries=3, **conns,
        )
        failable >> rollback

        report = task(task_id="report", trigger_rule="all_done", retries=0)(_report)(steps=list(steps))
        outcome = task(task_id="outcome", trigger_rule="all_done", retries=0)(_outcome)()
        [promote, rollback] >> report >> outcome
    return dag


def _approval_task(timeout: timedelta, last_step: int) -> Any:
    from istio_canary.operators.approval import PromotionApprovalOperator

    # A rejected (or timed out) promotion is a failed release and rolls back through the same
    # trigger rule as any other failure. One retry: Airflow 3.3 can fail a deferred task whose
    # answer arrives within seconds ("state mismatch"); the question is then asked again, while
    # a rejection is final (AirflowFailException).
    return PromotionApprovalOperator(
        task_id="approve_promotion",
        subject=f"Go to {last_step}%: {{{{ params.service }}}} {{{{ params.canary_version }}}}?",
        body="Every step so far passed its analysis. Approve to continue to the last step; "
             "reject (or no answer before the timeout) rolls the release back.",
        defaults=["Reject"],
        response_timeout=timeout,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )


def _report(steps: list[int], **context: Any) -> dict[str, Any]:
    from istio_canary.core.report import build_report, render_report

    ti = context["ti"]
    phases = ["targeted"] + [f"step_{w}" for w in steps]
    analyses = {p: ti.xcom_pull(task_ids=f"{p}.analyze") for p in phases}
    routes = {p: ti.xcom_pull(task_ids=f"{p}.set_route") for p in phases}
    report = build_report(
        phases=phases,
        routes=routes,
        analyses=analyses,
        promoted=ti.xcom_pull(task_ids="promote"),
        rolled_back=ti.xcom_pull(task_ids="rollback"),
        validated=ti.xcom_pull(task_ids="validate"),
        rollback_failed=ti.xcom_pull(task_ids="rollback", key=ROLLBACK_FAILED_XCOM),
    )
    print(render_report(report))  # the table belongs in the task log as is
    ti.xcom_push(key="release_report", value=report)
    from istio_canary.notifications import notify_outcome

    notify_outcome(report, context)
    return report


def _outcome(**context: Any) -> str:
    from airflow.sdk.exceptions import AirflowFailException

    report = context["ti"].xcom_pull(task_ids="report", key="release_report") or {}
    result = report.get("outcome", "unknown")
    if result in ("promoted", "dry_run"):
        return f"{result}: {report.get('reason', '')}"
    raise AirflowFailException(f"release {result}: {report.get('reason', 'see the failed task')}")
