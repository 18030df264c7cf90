"""Release window policies: when a release may start or move on, as pure, DST-correct time math.

A `WindowPolicy` is a set of weekly `ReleaseWindow`s (weekdays + a local time range in an IANA
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
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from istio_canary.core.validation import ValidationError

HORIZON = timedelta(days=400)
ALWAYS = "always"
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MIDNIGHT = time(0, 0)


# --------------------------------------------------------------------------- local time


def zone(name: str, field_name: str = "timezone") -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise ValidationError(field_name, name, "must be an IANA timezone name such as 'Europe/Berlin'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(field_name, name, "is not a known IANA timezone (e.g. 'Asia/Shanghai')") from None


def as_utc(t: datetime) -> datetime:
    return t.astimezone(UTC)


def require_aware(t: datetime) -> datetime:
    if not isinstance(t, datetime) or t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime, got {t!r}")
    return as_utc(t)


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
class ReleaseWindow:
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
        if self.start == self.end and self.start != MIDNIGHT:
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
        end = "24:00" if self.end == MIDNIGHT else self.end.strftime("%H:%M")
        span = f"{self.start.strftime('%H:%M')}\u2013{end}"
        if self.overnight and self.end != MIDNIGHT:
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
            return resolve_local(self.start, MIDNIGHT, tz), resolve_local(
                self.end + timedelta(days=1), MIDNIGHT, tz
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
    return value if value.tzinfo is None else as_utc(value).replace(tzinfo=None)


def _instant(value: datetime, tz: tzinfo) -> datetime:
    if value.tzinfo is None:
        return resolve_local(value.date(), value.time(), tz)
    return as_utc(value)


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
    windows: tuple[ReleaseWindow, ...]
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
        lo, hi = require_aware(start), require_aware(end)
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
        t = require_aware(t)
        return bool(self.open_periods(t, t + timedelta(microseconds=1)))

    def next_open(self, t: datetime, horizon: timedelta = HORIZON) -> datetime | None:
        """`t` itself (in UTC) if open now, else the next instant the policy opens; None if it
        does not open within `horizon`."""
        t = require_aware(t)
        for span in (timedelta(days=8), horizon):
            periods = self.open_periods(t, t + span)
            if periods:
                return periods[0].start
        return None

    def closes_at(self, t: datetime, horizon: timedelta = HORIZON) -> datetime | None:
        """When the open period around `t` ends (a freeze starting inside a window ends it);
        None if closed at `t`, or open for longer than `horizon`."""
        t = require_aware(t)
        current = self._period_at(t, horizon)
        if current is None or current.beyond:
            return None
        return current.end

    # -- text
    @property
    def always_open(self) -> bool:
        return not self.freezes and any(
            w.weekdays == frozenset(range(7)) and w.start == w.end == MIDNIGHT for w in self.windows
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
    ALWAYS, (ReleaseWindow(frozenset(range(7)), MIDNIGHT, MIDNIGHT, "UTC"),), (), "UTC"
)
