"""The release window gate: proceed, wait for the next window, or refuse (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from istio_canary.core.validation import ValidationError
from istio_canary.core.window_policy import HORIZON, WindowPolicy, as_utc, require_aware

GateMode = Literal["wait", "refuse", "ignore"]

GATE_MODES: tuple[str, ...] = ("wait", "refuse", "ignore")



@dataclass(frozen=True)
class GateDecision:
    action: Literal["proceed", "wait", "refuse"]
    until: datetime | None
    message: str


def _human_delta(delta: timedelta) -> str:
    minutes = max(0, int(delta.total_seconds() // 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    if hours:
        parts.append(f"{hours}h")
    if mins or not parts:
        parts.append(f"{mins}m")
    return " ".join(parts)


def describe_moment(policy: WindowPolicy, moment: datetime, now: datetime) -> str:
    """'2026-06-02T02:00:00+00:00 (Tue 2026-06-02 10:00 CST, in 2d 3h)'."""
    return f"{as_utc(moment).isoformat()} ({policy.format_time(moment)}, in {_human_delta(moment - now)})"


def require_mode(mode: Any) -> GateMode:
    value = mode.strip().lower() if isinstance(mode, str) else mode
    if value not in GATE_MODES:
        raise ValidationError("window_mode", mode, f"must be one of {', '.join(GATE_MODES)}")
    return value  # type: ignore[no-any-return]


def gate(policy: WindowPolicy | None, now: datetime, mode: str = "wait") -> GateDecision:
    """May a release start at `now`? proceed, wait until the next window, or refuse."""
    mode = require_mode(mode)
    now = require_aware(now)
    if policy is None:
        return GateDecision("proceed", None, "no release window policy: proceeding")
    if mode == "ignore":
        return GateDecision("proceed", None, f"window_mode=ignore: not checking policy {policy.name!r}")
    if policy.is_open(now):
        closes = policy.closes_at(now)
        until = f"closes {describe_moment(policy, closes, now)}" if closes else "open beyond the search horizon"
        return GateDecision("proceed", None, f"inside release window {policy.name!r} ({policy.describe()}); {until}")
    opens = policy.next_open(now)
    closed = f"outside release window {policy.name!r} ({policy.describe()})"
    if opens is None:
        return GateDecision(
            "refuse", None, f"{closed}; no window opens within {HORIZON.days} days: refusing to release"
        )
    if mode == "refuse":
        return GateDecision(
            "refuse", opens,
            f"{closed}; window_mode=refuse: not releasing now. Next window opens {describe_moment(policy, opens, now)}",
        )
    return GateDecision("wait", opens, f"{closed}; waiting until {describe_moment(policy, opens, now)}")


def hold_before_step(policy: WindowPolicy | None, now: datetime, mode: str = "wait") -> GateDecision:
    """Before each further step: if the window closed (or a freeze began), hold at the current
    weight until it opens again. Mid-release, `refuse` holds too: failing would roll back a
    release that was judged healthy so far, and holding never promotes outside a window."""
    mode = require_mode(mode)
    decision = gate(policy, now, "ignore" if mode == "ignore" else "wait")
    if decision.action == "wait":
        assert policy is not None and decision.until is not None
        return GateDecision(
            "wait", decision.until,
            f"release window {policy.name!r} is closed: holding at the current weight until "
            f"{describe_moment(policy, decision.until, require_aware(now))}",
        )
    return decision

