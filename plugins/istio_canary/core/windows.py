"""Release windows: when a release may start or move on, as pure, DST-correct time math.

A `WindowPolicy` is a set of weekly `Window`s (weekdays + a local time range in an IANA
zone) minus `Freeze` periods. Its *open set* is the union of all window occurrences minus
the freezes; `is_open`, `next_open`, `closes_at` and `open_periods` all read that one set,
so they never disagree. No Airflow imports: the gate operator and the timetable call this.

Time rules (all with `zoneinfo`):
- A window occurrence belongs to the local day it starts on. `end <= start` means it ends
  on the next day (22:00-02:00); `end == 00:00` is midnight ending the day, so
  00:00-00:00 is the whole day. Any other `start == end` is refused (empty or ambiguous).
- A local time that does not exist (spring-forward gap) resolves to the first valid instant
  after the gap: a 02:30 start on 2026-03-29 in Europe/Berlin opens at 03:00 CEST.
- An ambiguous local time (fall-back) resolves to its first occurrence (fold=0): a 02:30
  start on 2026-10-25 in Europe/Berlin opens at 02:30 CEST, so that day's window is an hour
  longer in real time. One occurrence per day either way: never skipped, never doubled.
- An occurrence that falls wholly inside a gap (02:00-03:00 on a spring-forward day) would
  be empty; it keeps its nominal length from the first valid instant instead (03:00-04:00
  CEST), because a skipped release window is a surprise while a shifted one is not.
- Date freezes cover whole local days in the policy's timezone, both ends inclusive;
  datetime freezes are [start, end) instants (naive values are read in the policy's zone).
- Searches look at most `HORIZON` (400 days) ahead; beyond that `next_open` says None.

Policy files (YAML, read with `yaml.safe_load`): see `include/release_windows.yaml`. The file
is `ISTIO_CANARY_WINDOWS_FILE` if set, else `include/release_windows.yaml` of the checkout
(`plugins/istio_canary/../../include`). When that default file does not exist (an image
built from the package alone) only the built-in `always` policy is known.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from istio_canary.core.validation import ValidationError

HORIZON = timedelta(days=400)
ALWAYS = "always"
NO_POLICY_NAMES = frozenset({"none", "off"})  # release_window=none: no gate
WINDOWS_FILE_ENV = "ISTIO_CANARY_WINDOWS_FILE"
DEFAULT_WINDOWS_FILE = Path(__file__).resolve().parents[3] / "include" / "release_windows.yaml"

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_DAY_LOOKUP = {name.lower(): i for i, name in enumerate(DAY_NAMES)} | {
    full: i
    for i, full in enumerate(("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"))
}
_POLICY_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$")
_MIDNIGHT = time(0, 0)

GateMode = Literal["wait", "refuse", "ignore"]
GATE_MODES: tuple[str, ...] = ("wait", "refuse", "ignore")


# --------------------------------------------------------------------------- local time


def zone(name: str, field_name: str = "timezone") -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise ValidationError(field_name, name, "must be an IANA timezone name such as 'Europe/Berlin'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(field_name, name, "is not a known IANA timezone (e.g. 'Asia/Shanghai')") from None


def _as_utc(t: datetime) -> datetime:
    return t.astimezone(UTC)


def _require_aware(t: datetime) -> datetime:
    if not isinstance(t, datetime) or t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime, got {t!r}")
    return _as_utc(t)


def resolve_local(day: date, wall: time, tz: tzinfo) -> datetime:
    """The instant (UTC) of local `day` + `wall` in `tz`: gap -> first valid instant after,
    fold -> first occurrence."""
    local = datetime.combine(day, wall).replace(tzinfo=tz, fold=0)
    instant = local.astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == local.replace(tzinfo=None):
        return instant  # exists (fold=0 picks the first of two when ambiguous)
    # In a gap. With fold=0 Python maps it with the offset from before the transition, which
    # lands after the transition; with fold=1 with the offset after, which lands before it.
    # The transition itself is the first valid instant: bisect between the two.
    low = local.replace(fold=1).astimezone(UTC)  # before the transition
    high = instant  # after the transition
    after_offset = high.astimezone(tz).utcoffset()
    lo_s, hi_s = int(low.timestamp()), int(high.timestamp())
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(tz).utcoffset() == after_offset:
            hi_s = mid
        else:
            lo_s = mid
    return datetime.fromtimestamp(hi_s, UTC)


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Window:
    """Weekly window: on `weekdays` (0=Mon .. 6=Sun) from `start` to `end` local time in `tz`."""

    weekdays: frozenset[int]
    start: time
    end: time
    tz: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "weekdays", frozenset(self.weekdays))
        if not self.weekdays or any(not isinstance(d, int) or not 0 <= d <= 6 for d in self.weekdays):
            raise ValidationError("days", sorted(self.weekdays), "must name at least one weekday (Mon..Sun)")
        for name in ("start", "end"):
            value = getattr(self, name)
            if not isinstance(value, time) or value.tzinfo is not None:
                raise ValidationError(name, value, "must be a local time of day such as 10:00")
        if self.start == self.end and self.start != _MIDNIGHT:
            raise ValidationError(
                "end", self.end.strftime("%H:%M"),
                "must differ from start (a window cannot be empty; 00:00-00:00 is the whole day)",
            )
        zone(self.tz)

    @property
    def zoneinfo(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    @property
    def overnight(self) -> bool:
        """Ends on the day after it starts (this includes an end of 00:00 = midnight)."""
        return self.end <= self.start

    def occurrence(self, day: date) -> tuple[datetime, datetime] | None:
        """[open, close) in UTC of the occurrence starting on local `day`, if it has one."""
        if day.weekday() not in self.weekdays:
            return None
        tz = self.zoneinfo
        opens = resolve_local(day, self.start, tz)
        closes = resolve_local(day + timedelta(days=1) if self.overnight else day, self.end, tz)
        if closes <= opens:  # wholly inside a spring-forward gap: keep the nominal length
            nominal = datetime.combine(day + timedelta(days=1) if self.overnight else day, self.end) - (
                datetime.combine(day, self.start)
            )
            closes = opens + nominal
        return opens, closes

    def describe(self) -> str:
        end = "24:00" if self.end == _MIDNIGHT else self.end.strftime("%H:%M")
        span = f"{self.start.strftime('%H:%M')}\u2013{end}"
        if self.overnight and self.end != _MIDNIGHT:
            span += " (next day)"
        return f"{describe_weekdays(self.weekdays)} {span} {self.tz}"


def describe_weekdays(weekdays: Iterable[int]) -> str:
    days = sorted(set(weekdays))
    if len(days) == 7:
        return "every day"
    runs: list[list[int]] = []
    for day in days:
        if runs and day == runs[-1][-1] + 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    parts = []
    for run in runs:
        if len(run) >= 3:
            parts.append(f"{DAY_NAMES[run[0]]}\u2013{DAY_NAMES[run[-1]]}")
        else:
            parts.extend(DAY_NAMES[d] for d in run)
    return ", ".join(parts)


@dataclass(frozen=True)
class Freeze:
    """No releases from `start` to `end`: dates = whole local days (inclusive), or datetimes
    = the instants [start, end). Naive datetimes are read in the policy's timezone."""

    start: date | datetime
    end: date | datetime
    reason: str = ""

    def __post_init__(self) -> None:
        start_is_dt, end_is_dt = isinstance(self.start, datetime), isinstance(self.end, datetime)
        if not isinstance(self.start, date) or not isinstance(self.end, date):
            raise ValidationError("start", self.start, "freeze start and end must be dates or datetimes")
        if start_is_dt != end_is_dt:
            raise ValidationError("end", self.end, "must be the same kind as start (both dates or both datetimes)")
        if start_is_dt:
            if (self.start.tzinfo is None) != (self.end.tzinfo is None):  # type: ignore[union-attr]
                raise ValidationError("end", self.end, "start and end must both have a UTC offset, or neither")
            if _cmp_key(self.end) <= _cmp_key(self.start):
                raise ValidationError("end", str(self.end), f"must be after start ({self.start})")
        elif self.end < self.start:
            raise ValidationError("end", str(self.end), f"must not be before start ({self.start})")

    @property
    def by_date(self) -> bool:
        return not isinstance(self.start, datetime)

    def interval(self, tz: tzinfo) -> tuple[datetime, datetime]:
        """[start, end) in UTC."""
        if self.by_date:
            return resolve_local(self.start, _MIDNIGHT, tz), resolve_local(
                self.end + timedelta(days=1), _MIDNIGHT, tz
            )
        return _instant(self.start, tz), _instant(self.end, tz)  # type: ignore[arg-type]

    def describe(self, tz_name: str) -> str:
        if self.by_date:
            text = f"{self.start.isoformat()}..{self.end.isoformat()}"
        else:
            text = f"{_fmt_dt(self.start)}..{_fmt_dt(self.end)}"  # type: ignore[arg-type]
            if self.start.tzinfo is None:  # type: ignore[union-attr]
                text += f" {tz_name}"
        return f"{text} ({self.reason})" if self.reason else text


def _cmp_key(value: datetime) -> datetime:
    return value if value.tzinfo is None else _as_utc(value).replace(tzinfo=None)


def _instant(value: datetime, tz: tzinfo) -> datetime:
    if value.tzinfo is None:
        return resolve_local(value.date(), value.time(), tz)
    return _as_utc(value)


def _fmt_dt(value: datetime) -> str:
    text = value.strftime("%Y-%m-%d %H:%M")
    return text if value.tzinfo is None else f"{text}{value.strftime('%z')}"


@dataclass(frozen=True)
class OpenPeriod:
    """One stretch of the open set. `from_before`/`beyond`: it began before / goes on past the
    range it was computed for, so `start`/`end` are the range's edges, not real openings."""

    start: datetime
    end: datetime
    from_before: bool = False
    beyond: bool = False


@dataclass(frozen=True)
class WindowPolicy:
    """Named set of windows minus freezes. `timezone` reads date freezes and naive datetimes,
    and is the zone in which messages show times."""

    name: str
    windows: tuple[Window, ...]
    freezes: tuple[Freeze, ...] = ()
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        object.__setattr__(self, "windows", tuple(self.windows))
        object.__setattr__(self, "freezes", tuple(self.freezes))
        zone(self.timezone)

    @property
    def zoneinfo(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    # -- the open set
    def open_periods(self, start: datetime, end: datetime) -> list[OpenPeriod]:
        """The open set within [start, end), merged, freezes cut out, sorted."""
        lo, hi = _require_aware(start), _require_aware(end)
        if hi <= lo:
            return []
        occurrences: list[tuple[datetime, datetime]] = []
        for window in self.windows:
            tz = window.zoneinfo
            # The day before `lo` too: an overnight occurrence from yesterday may still be open.
            day = lo.astimezone(tz).date() - timedelta(days=1)
            last_day = hi.astimezone(tz).date()
            while day <= last_day:
                occ = window.occurrence(day)
                # Touching occurrences count too: they merge into one stretch.
                if occ and occ[1] >= lo and occ[0] < hi:
                    occurrences.append(occ)
                day += timedelta(days=1)
        merged = _merge(occurrences)
        freezes = _merge([f.interval(self.zoneinfo) for f in self.freezes])
        periods = []
        for opens, closes in _subtract(merged, freezes):
            s, e = max(opens, lo), min(closes, hi)
            if s < e:
                periods.append(OpenPeriod(s, e, from_before=opens < lo, beyond=closes >= hi))
        return periods

    def _period_at(self, t: datetime, horizon: timedelta = HORIZON) -> OpenPeriod | None:
        # A short look first: almost every period ends within days.
        for span in (timedelta(days=8), horizon):
            periods = self.open_periods(t, t + span)
            current = periods[0] if periods and periods[0].start == t else None
            if current is None or not current.beyond or span == horizon:
                return current
        return None  # pragma: no cover - loop always returns

    def is_open(self, t: datetime) -> bool:
        t = _require_aware(t)
        return bool(self.open_periods(t, t + timedelta(microseconds=1)))

    def next_open(self, t: datetime, horizon: timedelta = HORIZON) -> datetime | None:
        """`t` itself (in UTC) if open now, else the next instant the policy opens; None if it
        does not open within `horizon`."""
        t = _require_aware(t)
        for span in (timedelta(days=8), horizon):
            periods = self.open_periods(t, t + span)
            if periods:
                return periods[0].start
        return None

    def closes_at(self, t: datetime, horizon: timedelta = HORIZON) -> datetime | None:
        """When the open period around `t` ends (a freeze starting inside a window ends it);
        None if closed at `t`, or open for longer than `horizon`."""
        t = _require_aware(t)
        current = self._period_at(t, horizon)
        if current is None or current.beyond:
            return None
        return current.end

    def next_opening(self, after: datetime, horizon: timedelta = HORIZON) -> datetime | None:
        """The first start of an open period strictly after `after` (a real opening, not `after`
        itself when already open)."""
        after = _require_aware(after)
        for span in (timedelta(days=8), horizon):
            for period in self.open_periods(after, after + span):
                if period.start > after and not period.from_before:
                    return period.start
        return None

    # -- text
    @property
    def always_open(self) -> bool:
        return not self.freezes and any(
            w.weekdays == frozenset(range(7)) and w.start == w.end == _MIDNIGHT for w in self.windows
        )

    def describe(self) -> str:
        if self.always_open:
            text = "always open"
        elif not self.windows:
            text = "never open (no windows)"
        else:
            text = ", ".join(w.describe() for w in self.windows)
        if self.freezes:
            text += "; frozen " + ", ".join(f.describe(self.timezone) for f in self.freezes)
        return text

    def format_time(self, t: datetime) -> str:
        """'Tue 2026-06-02 10:00 CST' in the policy's timezone."""
        return t.astimezone(self.zoneinfo).strftime("%a %Y-%m-%d %H:%M %Z")


def _merge(intervals: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:  # overlapping or touching: one open stretch
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _subtract(
    periods: list[tuple[datetime, datetime]], holes: list[tuple[datetime, datetime]]
) -> list[tuple[datetime, datetime]]:
    result = []
    for start, end in periods:
        cursor = start
        for hole_start, hole_end in holes:
            if hole_end <= cursor or hole_start >= end:
                continue
            if hole_start > cursor:
                result.append((cursor, hole_start))
            cursor = max(cursor, hole_end)
        if cursor < end:
            result.append((cursor, end))
    return result


ALWAYS_POLICY = WindowPolicy(
    ALWAYS, (Window(frozenset(range(7)), _MIDNIGHT, _MIDNIGHT, "UTC"),), (), "UTC"
)


# --------------------------------------------------------------------------- gate decisions


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
    return f"{_as_utc(moment).isoformat()} ({policy.format_time(moment)}, in {_human_delta(moment - now)})"


def require_mode(mode: Any) -> GateMode:
    value = mode.strip().lower() if isinstance(mode, str) else mode
    if value not in GATE_MODES:
        raise ValidationError("window_mode", mode, f"must be one of {', '.join(GATE_MODES)}")
    return value  # type: ignore[no-any-return]


def gate(policy: WindowPolicy | None, now: datetime, mode: str = "wait") -> GateDecision:
    """May a release start at `now`? proceed, wait until the next window, or refuse."""
    mode = require_mode(mode)
    now = _require_aware(now)
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
            f"{describe_moment(policy, decision.until, _require_aware(now))}",
        )
    return decision


# --------------------------------------------------------------------------- YAML


@dataclass(frozen=True)
class WindowConfig:
    """The policies of one file (plus `always`) and the per-service defaults."""

    policies: Mapping[str, WindowPolicy]
    services: Mapping[str, str] = field(default_factory=dict)
    source: str = "(built in)"

    def get(self, name: str) -> WindowPolicy:
        try:
            return self.policies[name]
        except KeyError:
            known = ", ".join(sorted(self.policies))
            raise ValidationError(
                "release_window", name, f"is not a release window policy in {self.source} (known: {known})"
            ) from None

    def policy_for(
        self, service: str | None, explicit_name: str | None = None, namespace: str | None = None
    ) -> WindowPolicy | None:
        """The explicit name if given ('none' or 'off' = no policy), else (None or '') the
        service's policy from `services:` (`namespace/service` before `service`), else None."""
        if explicit_name is not None:
            if not isinstance(explicit_name, str):
                raise ValidationError("release_window", explicit_name, "must be a policy name or 'none'")
            name = explicit_name.strip()
            if name.lower() in NO_POLICY_NAMES:
                return None
            if name:
                return self.get(name)
        return self._for_service(service, namespace)

    def _for_service(self, service: str | None, namespace: str | None) -> WindowPolicy | None:
        if not service:
            return None
        for key in ([f"{namespace}/{service}"] if namespace else []) + [service]:
            if key in self.services:
                return self.get(self.services[key])
        return None


def windows_file(path: str | os.PathLike[str] | None = None) -> tuple[Path, bool]:
    """(the file to read, whether it was asked for explicitly)."""
    if path:
        return Path(path), True
    if os.environ.get(WINDOWS_FILE_ENV):
        return Path(os.environ[WINDOWS_FILE_ENV]), True
    return DEFAULT_WINDOWS_FILE, False


# Parsed files by (path, mtime, size): a calendar DAG file builds one timetable per release,
# and the scheduler deserializes them often; an edited file is read again.
_CACHE: dict[tuple[str, int, int], WindowConfig] = {}


def load_window_config(path: str | os.PathLike[str] | None = None) -> WindowConfig:
    file, explicit = windows_file(path)
    try:
        stat = file.stat()
    except FileNotFoundError:
        if explicit:
            raise ValidationError("windows_file", str(file), "does not exist") from None
        return WindowConfig({ALWAYS: ALWAYS_POLICY}, {}, f"{file} (missing: only 'always')")
    key = (str(file.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _CACHE:
        try:
            raw = yaml.safe_load(file.read_text())
        except yaml.YAMLError as exc:
            raise ValidationError("windows_file", str(file), f"is not valid YAML: {exc}") from None
        config = parse_window_config(raw, source=str(file))
        _CACHE.clear()  # one or two files in practice: keep only the latest
        _CACHE[key] = config
    return _CACHE[key]


def load_policies(path: str | os.PathLike[str] | None = None) -> dict[str, WindowPolicy]:
    """{name: policy} from the windows file (see module doc), `always` included."""
    return dict(load_window_config(path).policies)


def policy_for(
    service: str | None,
    explicit_name: str | None = None,
    *,
    namespace: str | None = None,
    path: str | os.PathLike[str] | None = None,
) -> WindowPolicy | None:
    return load_window_config(path).policy_for(service, explicit_name, namespace)


def parse_window_config(raw: Any, source: str = "(inline)") -> WindowConfig:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ValidationError("(top level)", raw, "must be a mapping with 'policies' and optional 'services'")
    unknown = sorted(set(raw) - {"policies", "services"})
    if unknown:
        raise ValidationError(unknown[0], raw[unknown[0]], "unknown key (expected 'policies', 'services')")
    raw_policies = raw.get("policies") or {}
    if not isinstance(raw_policies, Mapping):
        raise ValidationError("policies", raw_policies, "must map policy names to policies")
    policies: dict[str, WindowPolicy] = {ALWAYS: ALWAYS_POLICY}
    for name, spec in raw_policies.items():
        if not isinstance(name, str) or not _POLICY_NAME.match(name):
            raise ValidationError(f"policies.{name}", name, "policy names are letters, digits, '-', '_' or '.'")
        if name == ALWAYS or name.lower() in NO_POLICY_NAMES:
            raise ValidationError(f"policies.{name}", name, "is a reserved name (built in)")
        policies[name] = _parse_policy(name, spec, f"policies.{name}")
    raw_services = raw.get("services") or {}
    if not isinstance(raw_services, Mapping):
        raise ValidationError("services", raw_services, "must map service names to policy names")
    services: dict[str, str] = {}
    for service, policy_name in raw_services.items():
        where = f"services.{service}"
        if not isinstance(policy_name, str) or policy_name not in policies:
            raise ValidationError(where, policy_name, f"is not a policy (known: {', '.join(sorted(policies))})")
        services[str(service)] = policy_name
    return WindowConfig(MappingProxyType(policies), MappingProxyType(services), source)


def _parse_policy(name: str, spec: Any, where: str) -> WindowPolicy:
    if not isinstance(spec, Mapping):
        raise ValidationError(where, spec, "must be a mapping with 'timezone', 'windows', 'freezes'")
    unknown = sorted(set(spec) - {"timezone", "windows", "freezes", "description"})
    if unknown:
        raise ValidationError(f"{where}.{unknown[0]}", spec[unknown[0]], "unknown key")
    tz_name = spec.get("timezone", "UTC")
    zone(tz_name, f"{where}.timezone")
    raw_windows = spec.get("windows")
    if not isinstance(raw_windows, list) or not raw_windows:
        raise ValidationError(f"{where}.windows", raw_windows, "must be a non-empty list of windows")
    windows = tuple(_parse_window(w, tz_name, f"{where}.windows[{i}]") for i, w in enumerate(raw_windows))
    raw_freezes = spec.get("freezes") or []
    if not isinstance(raw_freezes, list):
        raise ValidationError(f"{where}.freezes", raw_freezes, "must be a list")
    freezes = tuple(_parse_freeze(f, tz_name, f"{where}.freezes[{i}]") for i, f in enumerate(raw_freezes))
    return WindowPolicy(name, windows, freezes, tz_name)


def _reraise_at(where: str, exc: ValidationError) -> ValidationError:
    return ValidationError(f"{where}.{exc.field}", exc.value, exc.problem)


def _parse_window(spec: Any, default_tz: str, where: str) -> Window:
    if not isinstance(spec, Mapping):
        raise ValidationError(where, spec, "must be a mapping with 'days', 'start', 'end'")
    unknown = sorted(set(spec) - {"days", "start", "end", "timezone"})
    if unknown:
        raise ValidationError(f"{where}.{unknown[0]}", spec[unknown[0]], "unknown key")
    for key in ("days", "start", "end"):
        if key not in spec:
            raise ValidationError(f"{where}.{key}", None, "is required")
    days = parse_weekdays(spec["days"], f"{where}.days")
    start = parse_time_of_day(spec["start"], f"{where}.start")
    end = parse_time_of_day(spec["end"], f"{where}.end", allow_24=True)
    tz_name = spec.get("timezone", default_tz)
    zone(tz_name, f"{where}.timezone")
    try:
        return Window(days, start, end, tz_name)
    except ValidationError as exc:
        raise _reraise_at(where, exc) from None


def parse_weekdays(value: Any, where: str) -> frozenset[int]:
    """'mon-fri', 'tue,thu', ['mon', 'wed'], 'daily'; names only (numbers are ambiguous)."""
    if isinstance(value, str):
        if value.strip().lower() in {"daily", "every day", "all"}:
            return frozenset(range(7))
        items: list[Any] = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, list):
        items = value
    else:
        raise ValidationError(where, value, "must be day names like 'mon-fri' or [tue, wed, thu]")
    days: set[int] = set()
    for item in items:
        if not isinstance(item, str):
            raise ValidationError(where, value, f"{item!r} is not a day name (use mon..sun, not numbers)")
        first, dash, last = item.strip().lower().partition("-")
        try:
            a = _DAY_LOOKUP[first.strip()]
            b = _DAY_LOOKUP[last.strip()] if dash else a
        except KeyError:
            raise ValidationError(where, value, f"{item!r} is not a day name or range (mon..sun)") from None
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])  # fri-mon wraps
    if not days:
        raise ValidationError(where, value, "must name at least one day")
    return frozenset(days)


def parse_time_of_day(value: Any, where: str, *, allow_24: bool = False) -> time:
    if isinstance(value, time):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 10:00 as the base-60 number 600.
        raise ValidationError(where, value, "write times in quotes, e.g. '10:00' (YAML reads 10:00 unquoted as 600)")
    if isinstance(value, str):
        text = value.strip()
        if allow_24 and text in {"24:00", "24:00:00"}:
            return _MIDNIGHT
        match = re.fullmatch(r"(\d{1,2}):(\d{2})(?::(\d{2}))?", text)
        if match:
            hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
            if hour < 24 and minute < 60 and second < 60:
                return time(hour, minute, second)
    raise ValidationError(where, value, "must be a time of day 'HH:MM' (00:00..23:59" + (", or 24:00)" if allow_24 else ")"))


def _parse_moment(value: Any, where: str) -> date | datetime:
    if isinstance(value, date):  # includes datetime; YAML makes these from unquoted values
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
        except ValueError:
            pass
    raise ValidationError(where, value, "must be a date (2026-12-24) or a datetime (2026-12-24T18:00)")


def _parse_freeze(spec: Any, default_tz: str, where: str) -> Freeze:
    if not isinstance(spec, Mapping):
        raise ValidationError(where, spec, "must be a mapping with 'start', 'end' and 'reason'")
    unknown = sorted(set(spec) - {"start", "end", "reason"})
    if unknown:
        raise ValidationError(f"{where}.{unknown[0]}", spec[unknown[0]], "unknown key")
    for key in ("start", "end"):
        if key not in spec:
            raise ValidationError(f"{where}.{key}", None, "is required")
    reason = spec.get("reason", "")
    if not isinstance(reason, str):
        raise ValidationError(f"{where}.reason", reason, "must be a string")
    try:
        return Freeze(_parse_moment(spec["start"], f"{where}.start"), _parse_moment(spec["end"], f"{where}.end"), reason)
    except ValidationError as exc:
        if exc.field.startswith(where):
            raise
        raise _reraise_at(where, exc) from None
