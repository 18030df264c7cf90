"""Release window math: boundaries, weekends, freezes, DST in Europe/Berlin, Asia/Shanghai."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from istio_canary.core.validation import ValidationError
from istio_canary.core.window_gate import gate, hold_before_step
from istio_canary.core.window_policy import ALWAYS_POLICY, Freeze, ReleaseWindow, WindowPolicy
from istio_canary.core.windows import DEFAULT_WINDOWS_FILE, load_window_config, parse_window_config

BERLIN = ZoneInfo("Europe/Berlin")
SHANGHAI = ZoneInfo("Asia/Shanghai")
EVERY_DAY = frozenset(range(7))
MON_FRI = frozenset(range(5))
TUE_THU = frozenset({1, 2, 3})


def local(tz: ZoneInfo, y: int, m: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0, fold: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, ss, tzinfo=tz, fold=fold)


def utc(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=UTC)


def policy(*windows: ReleaseWindow, freezes: tuple[Freeze, ...] = (), tz: str = "Europe/Berlin") -> WindowPolicy:
    return WindowPolicy("test", windows, freezes, tz)


OFFICE = policy(ReleaseWindow(MON_FRI, time(9), time(17), "Europe/Berlin"))
MIDWEEK = WindowPolicy(
    "shanghai-midweek",
    (ReleaseWindow(TUE_THU, time(10), time(16), "Asia/Shanghai"),),
    (Freeze(date(2026, 12, 24), date(2026, 12, 26), "holidays"),),
    "Asia/Shanghai",
)


# --------------------------------------------------------------------------- boundaries


def test_open_from_start_inclusive_to_end_exclusive() -> None:
    monday = (2026, 11, 30)
    assert not OFFICE.is_open(local(BERLIN, *monday, 8, 59, 59))
    assert OFFICE.is_open(local(BERLIN, *monday, 9, 0))
    assert OFFICE.is_open(local(BERLIN, *monday, 16, 59, 59))
    assert not OFFICE.is_open(local(BERLIN, *monday, 17, 0))
    assert not OFFICE.is_open(local(BERLIN, 2026, 11, 28, 12))  # Saturday


def test_input_in_any_zone_is_the_same_instant() -> None:
    # 09:30 Berlin (CET, +1) on a Monday is 08:30 UTC and 03:30 in New York.
    assert OFFICE.is_open(utc(2026, 11, 30, 8, 30))
    assert OFFICE.is_open(datetime(2026, 11, 30, 3, 30, tzinfo=ZoneInfo("America/New_York")))
    assert not OFFICE.is_open(utc(2026, 11, 30, 7, 59))


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        OFFICE.is_open(datetime(2026, 11, 30, 10))


def test_next_open_is_now_when_open_and_crosses_the_weekend() -> None:
    inside = local(BERLIN, 2026, 11, 27, 10)  # Friday
    assert OFFICE.next_open(inside) == inside
    friday_evening = local(BERLIN, 2026, 11, 27, 17, 0)
    assert OFFICE.next_open(friday_evening) == local(BERLIN, 2026, 11, 30, 9)
    assert OFFICE.next_open(local(BERLIN, 2026, 11, 29, 23, 59)) == local(BERLIN, 2026, 11, 30, 9)


def test_closes_at() -> None:
    assert OFFICE.closes_at(local(BERLIN, 2026, 11, 30, 12)) == local(BERLIN, 2026, 11, 30, 17)
    assert OFFICE.closes_at(local(BERLIN, 2026, 11, 30, 18)) is None


def test_adjoining_windows_are_one_open_period() -> None:
    split = policy(ReleaseWindow(MON_FRI, time(9), time(12), "Europe/Berlin"),
                   ReleaseWindow(MON_FRI, time(12), time(17), "Europe/Berlin"))
    assert split.closes_at(local(BERLIN, 2026, 11, 30, 10)) == local(BERLIN, 2026, 11, 30, 17)


def test_overnight_window_belongs_to_the_day_it_starts() -> None:
    late = policy(ReleaseWindow(frozenset({4}), time(22), time(2), "Europe/Berlin"))  # Fri 22:00-02:00
    assert late.is_open(local(BERLIN, 2026, 11, 28, 1, 30))  # Saturday night, Friday's window
    assert not late.is_open(local(BERLIN, 2026, 11, 28, 2, 0))
    assert not late.is_open(local(BERLIN, 2026, 11, 26, 23))  # Thursday
    assert late.closes_at(local(BERLIN, 2026, 11, 27, 23)) == local(BERLIN, 2026, 11, 28, 2)


def test_whole_day_window_and_empty_window() -> None:
    weekend = policy(ReleaseWindow(frozenset({5, 6}), time(0), time(0), "Europe/Berlin"))
    assert weekend.is_open(local(BERLIN, 2026, 11, 28, 0, 0))
    assert weekend.closes_at(local(BERLIN, 2026, 11, 28, 12)) == local(BERLIN, 2026, 11, 30, 0)
    # Sunday's occurrence continues Saturday's: one period, not a new opening at Sunday 00:00.
    [sunday] = weekend.open_periods(local(BERLIN, 2026, 11, 29, 0), local(BERLIN, 2026, 11, 29, 12))
    assert sunday.from_before
    with pytest.raises(ValidationError, match=r"end='10:00'.*must differ from start"):
        ReleaseWindow(MON_FRI, time(10), time(10), "Europe/Berlin")


def test_bad_window_fields() -> None:
    with pytest.raises(ValidationError, match="timezone='Mars/Olympus'"):
        ReleaseWindow(MON_FRI, time(9), time(17), "Mars/Olympus")
    with pytest.raises(ValidationError, match="days"):
        ReleaseWindow(frozenset({7}), time(9), time(17), "UTC")


# --------------------------------------------------------------------------- freezes


def test_date_freeze_covers_whole_local_days_inclusive() -> None:
    # Wed 2026-12-23 17:00 CST is after the window; Thu 24 is frozen; next is Tue 29 10:00 CST.
    assert MIDWEEK.is_open(local(SHANGHAI, 2026, 12, 23, 15, 59))
    assert not MIDWEEK.is_open(local(SHANGHAI, 2026, 12, 24, 10))
    assert MIDWEEK.next_open(local(SHANGHAI, 2026, 12, 23, 17)) == local(SHANGHAI, 2026, 12, 29, 10)
    assert MIDWEEK.next_open(local(SHANGHAI, 2026, 12, 23, 17)) == utc(2026, 12, 29, 2)
    # The freeze is in Shanghai days: 2026-12-26 23:30 CST is frozen, 12-27 00:00 CST is not.
    freeze = MIDWEEK.freezes[0]
    assert freeze.interval(SHANGHAI) == (utc(2026, 12, 23, 16), utc(2026, 12, 26, 16))


def test_datetime_freeze_starting_inside_a_window_closes_it_and_reopens_it() -> None:
    peak = policy(
        ReleaseWindow(MON_FRI, time(9), time(17), "Europe/Berlin"),
        freezes=(Freeze(datetime(2026, 12, 1, 13, 0), datetime(2026, 12, 2, 11, 0), "peak"),),
    )
    assert peak.is_open(local(BERLIN, 2026, 12, 1, 12, 59))
    assert peak.closes_at(local(BERLIN, 2026, 12, 1, 10)) == local(BERLIN, 2026, 12, 1, 13)
    assert not peak.is_open(local(BERLIN, 2026, 12, 1, 13))
    # The window reopens when the freeze ends, mid-window on Wednesday.
    assert peak.next_open(local(BERLIN, 2026, 12, 1, 13)) == local(BERLIN, 2026, 12, 2, 11)


def test_aware_datetime_freeze_uses_its_own_offset() -> None:
    freeze = Freeze(datetime(2026, 12, 1, 12, tzinfo=UTC), datetime(2026, 12, 1, 14, tzinfo=UTC))
    frozen = policy(ReleaseWindow(MON_FRI, time(9), time(17), "Europe/Berlin"), freezes=(freeze,))
    assert not frozen.is_open(local(BERLIN, 2026, 12, 1, 13, 30))  # 12:30 UTC
    assert frozen.is_open(local(BERLIN, 2026, 12, 1, 15, 0))  # 14:00 UTC, freeze over


def test_no_window_within_the_horizon() -> None:
    frozen = policy(
        ReleaseWindow(MON_FRI, time(9), time(17), "Europe/Berlin"),
        freezes=(Freeze(date(2026, 1, 1), date(2028, 12, 31), "moratorium"),),
    )
    now = utc(2026, 11, 30, 12)
    assert frozen.next_open(now) is None
    decision = gate(frozen, now, "wait")
    assert decision.action == "refuse"
    assert "no window opens within 400 days" in decision.message


def test_freeze_field_checks() -> None:
    with pytest.raises(ValidationError, match=r"end='2026-12-01'.*must not be before start"):
        Freeze(date(2026, 12, 2), date(2026, 12, 1))
    with pytest.raises(ValidationError, match="same kind"):
        Freeze(date(2026, 12, 2), datetime(2026, 12, 3, 10))


# --------------------------------------------------------------------------- DST


@pytest.mark.parametrize(
    ("day", "opens", "closes"),
    [
        # Spring forward 2026-03-29: 02:30 does not exist -> opens at 03:00 CEST (01:00 UTC).
        (date(2026, 3, 29), utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 2, 0)),
        # Fall back 2026-10-25: 02:30 happens twice -> first (CEST, 00:30 UTC); 04:00 is CET.
        (date(2026, 10, 25), utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 3, 0)),
        # An ordinary Sunday for comparison: 02:30-04:00 CET.
        (date(2026, 3, 22), utc(2026, 3, 22, 1, 30), utc(2026, 3, 22, 3, 0)),
    ],
)
def test_night_window_on_dst_days_happens_exactly_once(day: date, opens: datetime, closes: datetime) -> None:
    night = policy(ReleaseWindow(EVERY_DAY, time(2, 30), time(4), "Europe/Berlin"))
    day_start = datetime.combine(day, time(0), BERLIN)
    periods = night.open_periods(day_start, day_start + timedelta(days=1))
    assert [(p.start, p.end) for p in periods] == [(opens, closes)]  # one, not skipped nor doubled
    assert night.next_open(day_start) == opens
    assert night.closes_at(opens) == closes
    assert not night.is_open(opens - timedelta(seconds=1))


def test_fall_back_second_0230_is_inside_the_same_window() -> None:
    night = policy(ReleaseWindow(EVERY_DAY, time(2, 30), time(4), "Europe/Berlin"))
    second_0230 = local(BERLIN, 2026, 10, 25, 2, 30, fold=1)  # CET, 01:30 UTC
    assert night.is_open(second_0230)


def test_window_wholly_inside_the_spring_gap_keeps_its_length() -> None:
    gap = policy(ReleaseWindow(EVERY_DAY, time(2), time(3), "Europe/Berlin"))
    day_start = local(BERLIN, 2026, 3, 29)
    periods = gap.open_periods(day_start, day_start + timedelta(days=1))
    assert [(p.start, p.end) for p in periods] == [(utc(2026, 3, 29, 1), utc(2026, 3, 29, 2))]  # 03:00-04:00 CEST


@pytest.mark.parametrize(
    ("day", "opens_utc"),
    [
        (date(2026, 3, 28), utc(2026, 3, 28, 9)),  # Saturday, CET
        (date(2026, 3, 29), utc(2026, 3, 29, 8)),  # Sunday, first CEST day
        (date(2026, 10, 24), utc(2026, 10, 24, 8)),  # Saturday, CEST
        (date(2026, 10, 25), utc(2026, 10, 25, 9)),  # Sunday, first CET day
    ],
)
def test_day_window_follows_the_wall_clock_across_dst(day: date, opens_utc: datetime) -> None:
    daytime = policy(ReleaseWindow(EVERY_DAY, time(10), time(16), "Europe/Berlin"))
    day_start = datetime.combine(day, time(0), BERLIN)
    periods = daytime.open_periods(day_start, day_start + timedelta(days=1))
    assert [(p.start, p.end) for p in periods] == [(opens_utc, opens_utc + timedelta(hours=6))]


def test_next_open_across_the_spring_change() -> None:
    daytime = policy(ReleaseWindow(EVERY_DAY, time(10), time(16), "Europe/Berlin"))
    assert daytime.next_open(local(BERLIN, 2026, 3, 28, 17)) == local(BERLIN, 2026, 3, 29, 10)
    assert daytime.next_open(local(BERLIN, 2026, 3, 28, 17)) == utc(2026, 3, 29, 8)


def test_shanghai_has_no_dst_and_reads_any_input_zone() -> None:
    # Thursday 16:00 CST closes; next is Tuesday 10:00 CST = 02:00 UTC.
    assert MIDWEEK.is_open(utc(2026, 12, 1, 2, 0))
    assert not MIDWEEK.is_open(utc(2026, 12, 1, 1, 59))
    assert MIDWEEK.next_open(local(SHANGHAI, 2026, 12, 3, 16)) == utc(2026, 12, 8, 2)
    summer = MIDWEEK.next_open(datetime(2026, 7, 6, 12, tzinfo=ZoneInfo("America/New_York")))
    assert summer == utc(2026, 7, 7, 2)


# --------------------------------------------------------------------------- describe


def test_describe() -> None:
    assert MIDWEEK.describe() == "Tue\u2013Thu 10:00\u201316:00 Asia/Shanghai; frozen 2026-12-24..2026-12-26 (holidays)"
    assert OFFICE.describe() == "Mon\u2013Fri 09:00\u201317:00 Europe/Berlin"
    odd = policy(ReleaseWindow(frozenset({0, 2, 4}), time(22), time(2), "UTC"),
                 ReleaseWindow(frozenset({5, 6}), time(0), time(0), "UTC"))
    assert odd.describe() == "Mon, Wed, Fri 22:00\u201302:00 (next day) UTC, Sat, Sun 00:00\u201324:00 UTC"
    assert ALWAYS_POLICY.describe() == "always open"


# --------------------------------------------------------------------------- gate


def test_gate_proceeds_inside_and_says_when_it_closes() -> None:
    decision = gate(MIDWEEK, utc(2026, 12, 1, 3), "wait")
    assert decision.action == "proceed" and decision.until is None
    assert "closes 2026-12-01T08:00:00+00:00 (Tue 2026-12-01 16:00 CST, in 5h)" in decision.message


def test_gate_waits_until_the_next_window() -> None:
    now = utc(2026, 12, 3, 9)  # Thu 17:00 CST
    decision = gate(MIDWEEK, now, "wait")
    assert decision.action == "wait"
    assert decision.until == utc(2026, 12, 8, 2)
    assert "waiting until 2026-12-08T02:00:00+00:00" in decision.message


def test_gate_refuse_names_the_policy_and_the_next_opening() -> None:
    now = utc(2026, 12, 23, 9)  # Wed 17:00 CST, holidays ahead
    decision = gate(MIDWEEK, now, "refuse")
    assert decision.action == "refuse"
    assert "'shanghai-midweek'" in decision.message
    assert "2026-12-29T02:00:00+00:00 (Tue 2026-12-29 10:00 CST, in 5d 17h)" in decision.message


def test_gate_ignore_and_no_policy_proceed() -> None:
    now = utc(2026, 12, 3, 9)
    assert gate(MIDWEEK, now, "ignore").action == "proceed"
    assert gate(None, now, "refuse").action == "proceed"
    assert gate(ALWAYS_POLICY, now, "refuse").action == "proceed"
    with pytest.raises(ValidationError, match="window_mode='later'"):
        gate(MIDWEEK, now, "later")


def test_hold_before_step_holds_even_in_refuse_mode() -> None:
    now = utc(2026, 12, 3, 9)
    decision = hold_before_step(MIDWEEK, now, "refuse")
    assert decision.action == "wait" and decision.until == utc(2026, 12, 8, 2)
    assert "holding at the current weight" in decision.message
    assert hold_before_step(MIDWEEK, utc(2026, 12, 1, 3)).action == "proceed"
    assert hold_before_step(MIDWEEK, now, "ignore").action == "proceed"


# --------------------------------------------------------------------------- YAML


def test_default_file_policies_and_service_mapping() -> None:
    assert DEFAULT_WINDOWS_FILE.exists()
    policies = load_window_config(DEFAULT_WINDOWS_FILE).policies
    assert {"always", "office-hours", "shanghai-midweek"} <= set(policies)
    assert policies["office-hours"].describe().startswith("Mon\u2013Fri 09:00\u201317:00 Europe/Berlin; frozen ")
    config = load_window_config(DEFAULT_WINDOWS_FILE)
    assert config.policy_for("ratings").name == "office-hours"
    assert config.policy_for("productpage", namespace="bookinfo").name == "shanghai-midweek"
    assert config.policy_for("productpage", namespace="other") is None
    assert config.policy_for("ratings", "none") is None  # explicit: no gate
    assert config.policy_for("ratings", "").name == "office-hours"  # empty: the mapping
    assert config.policy_for("ratings", "always").name == "always"
    with pytest.raises(ValidationError, match="release_window='nope': is not a release window policy"):
        config.policy_for("ratings", "nope")


def test_windows_file_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "w.yaml"
    file.write_text("policies:\n  nights:\n    windows: [{days: daily, start: '22:00', end: '24:00'}]\n"
                    "services:\n  reviews: nights\n")
    monkeypatch.setenv("ISTIO_CANARY_WINDOWS_FILE", str(file))
    assert load_window_config().policy_for("reviews").describe() == "every day 22:00\u201324:00 UTC"
    monkeypatch.setenv("ISTIO_CANARY_WINDOWS_FILE", str(tmp_path / "missing.yaml"))
    with pytest.raises(ValidationError, match=r"windows_file=.*missing.yaml.*does not exist"):
        load_window_config()


def _policy_yaml(window: str, extra: str = "") -> str:
    return f"policies:\n  office-hours:\n    timezone: Europe/Berlin\n    windows:\n      - {window}\n{extra}"


@pytest.mark.parametrize(
    ("text", "field", "hint"),
    [
        (_policy_yaml("{days: [mon, funday], start: '09:00', end: '17:00'}"),
         "policies.office-hours.windows[0].days", "'funday' is not a day name"),
        (_policy_yaml("{days: [1, 2], start: '09:00', end: '17:00'}"),
         "policies.office-hours.windows[0].days", "not numbers"),
        (_policy_yaml("{days: mon-fri, start: 10:00, end: '17:00'}"),
         "policies.office-hours.windows[0].start", "write times in quotes"),
        (_policy_yaml("{days: mon-fri, start: '25:00', end: '17:00'}"),
         "policies.office-hours.windows[0].start", "HH:MM"),
        (_policy_yaml("{days: mon-fri, start: '09:00', end: '09:00'}"),
         "policies.office-hours.windows[0].end", "must differ from start"),
        (_policy_yaml("{days: mon-fri, start: '09:00'}"),
         "policies.office-hours.windows[0].end", "is required"),
        (_policy_yaml("{days: mon-fri, start: '09:00', end: '17:00', timezone: Europe/Berln}"),
         "policies.office-hours.windows[0].timezone", "IANA"),
        (_policy_yaml("{days: mon-fri, start: '09:00', end: '17:00'}",
                      "    freezes:\n      - {start: 2026-12-24, end: 2026-12-20}\n"),
         "policies.office-hours.freezes[0].end", "must not be before start"),
        (_policy_yaml("{days: mon-fri, start: '09:00', end: '17:00'}",
                      "    freezes:\n      - {start: christmas, end: 2026-12-20}\n"),
         "policies.office-hours.freezes[0].start", "must be a date"),
        (_policy_yaml("{days: mon-fri, start: '09:00', end: '17:00'}", "services:\n  reviews: office-hour\n"),
         "services.reviews", "is not a policy"),
        ("policies:\n  always:\n    windows: [{days: daily, start: '09:00', end: '10:00'}]\n",
         "policies.always", "reserved"),
        ("policies:\n  empty:\n    timezone: UTC\n", "policies.empty.windows", "non-empty list"),
    ],
)
def test_yaml_errors_name_the_field(text: str, field: str, hint: str) -> None:
    import yaml

    with pytest.raises(ValidationError) as caught:
        parse_window_config(yaml.safe_load(text))
    assert caught.value.field == field
    assert field in str(caught.value) and hint in str(caught.value)


def test_yaml_syntax_error_names_the_file(tmp_path: Path) -> None:
    file = tmp_path / "broken.yaml"
    file.write_text("policies: [unclosed\n")
    with pytest.raises(ValidationError, match=r"broken.yaml.*not valid YAML"):
        load_window_config(file)
