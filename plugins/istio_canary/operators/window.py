"""The release window gate: proceed inside a window, wait (deferred, no worker slot) or refuse.

The decisions live in `istio_canary.core.windows`; this operator resolves the policy, logs the
decision and turns it into Airflow: `wait` defers on the standard provider's
`DateTimeTrigger` (which also works under `airflow dags test`), `refuse` fails the task
without retries. Nothing here touches the cluster.

After the wait it checks again (a freeze may have begun, or the trigger fired early) and
defers again if still closed. That loop is bounded without carrying a counter (defer kwargs
do not survive `airflow dags test`): every re-deferral waits for a strictly later instant
that `next_open` found within its 400-day horizon, and no window within the horizon fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from airflow.providers.standard.triggers.temporal import DateTimeTrigger
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from istio_canary.core.window_gate import GateDecision, gate, hold_before_step, require_mode
from istio_canary.core.window_policy import WindowPolicy
from istio_canary.core.windows import load_window_config

# Slack on top of the wait before Airflow gives up on the trigger (triggerer restarts, skew).
TRIGGER_TIMEOUT_SLACK = timedelta(hours=1)


def _unset(value: Any) -> bool:
    # A template rendering Python None gives the string "None": that means "not given".
    return value is None or (isinstance(value, str) and value.strip() in {"", "None"})


class ReleaseWindowGateOperator(BaseOperator):
    """Let a release start (phase `start`) or take its next step (phase `step`) only inside its
    release window.

    :param release_window: a policy name from the windows file, `none`/`off` for no gate, or
        unset to use the `services:` mapping for `service` (no mapping: no gate).
    :param window_mode: `wait` (defer until the window opens), `refuse` (fail, saying when the
        next window opens) or `ignore`. In phase `step`, `refuse` holds too (see
        `core.window_gate.hold_before_step`): a release in flight is held, not failed.
    :param service: the released service, for the per-service policy mapping.
    :param namespace: its namespace (`namespace/service` mapping entries win).
    :param windows_file: the policy file; default `ISTIO_CANARY_WINDOWS_FILE` or include/.
    :param phase: `start` (before anything touches the cluster) or `step` (before each
        further traffic step: hold at the current weight while closed).
    """

    template_fields: Sequence[str] = ("release_window", "window_mode", "service", "namespace", "windows_file")
    ui_color = "#e8e0f5"

    def __init__(
        self,
        *,
        release_window: str | None = None,
        window_mode: str = "wait",
        service: str | None = None,
        namespace: str | None = None,
        windows_file: str | None = None,
        phase: Literal["start", "step"] = "start",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if phase not in ("start", "step"):
            raise ValueError(f"phase={phase!r}: must be 'start' or 'step'")
        self.release_window = release_window
        self.window_mode = window_mode
        self.service = service
        self.namespace = namespace
        self.windows_file = windows_file
        self.phase = phase

    def _policy(self) -> WindowPolicy | None:
        config = load_window_config(None if _unset(self.windows_file) else self.windows_file)
        return config.policy_for(
            None if _unset(self.service) else self.service,
            None if _unset(self.release_window) else self.release_window,
            None if _unset(self.namespace) else self.namespace,
        )

    def _decide(self, policy: WindowPolicy | None, now: datetime) -> GateDecision:
        mode = require_mode("wait" if _unset(self.window_mode) else self.window_mode)
        return (gate if self.phase == "start" else hold_before_step)(policy, now, mode)

    def execute(self, context: Mapping[str, Any]) -> dict[str, Any]:
        policy = self._policy()
        return self._act(policy, self._decide(policy, datetime.now(UTC)), waited=False)

    def execute_complete(self, context: Mapping[str, Any], event: Any = None) -> dict[str, Any]:
        policy = self._policy()
        now = datetime.now(UTC)
        decision = self._decide(policy, now)
        if decision.action == "wait":
            self.log.warning("still closed after waiting until %s (window closed again or a freeze began)", event)
        return self._act(policy, decision, waited=True)

    def _act(self, policy: WindowPolicy | None, decision: GateDecision, *, waited: bool) -> dict[str, Any]:
        name = policy.name if policy else None
        if decision.action == "proceed":
            self.log.info("release window gate (%s): %s", self.phase, decision.message)
            return {"policy": name, "action": "proceed", "waited": waited, "message": decision.message}
        if decision.action == "refuse":
            self.log.error("release window gate (%s): %s", self.phase, decision.message)
            raise AirflowFailException(decision.message)
        until = decision.until
        now = datetime.now(UTC)
        if until is None or until <= now:  # cannot happen with a correct policy; never spin
            raise AirflowFailException(f"release window gate: no future opening to wait for ({decision.message})")
        self.log.info("release window gate (%s): %s (deferring, no worker slot held)", self.phase, decision.message)
        self.defer(
            trigger=DateTimeTrigger(moment=until),
            method_name="execute_complete",
            timeout=until - now + TRIGGER_TIMEOUT_SLACK,
        )
