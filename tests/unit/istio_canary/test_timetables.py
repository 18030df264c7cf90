"""ReleaseWindowTimetable: runs at window openings, freezes skipped, Airflow serialization, DagBag."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pendulum
import pytest
from airflow.timetables.base import DataInterval, TimeRestriction

from istio_canary.timetables import ReleaseWindowTimetable

BERLIN = "Europe/Berlin"

# Mon/Wed 10:00-12:00 Berlin, frozen the week of 2026-12-14 (whole days), and one datetime
# freeze that ends inside the Wednesday window of 2027-01-06.
WINDOWS = """
policies:
  release-days:
    timezone: Europe/Berlin
    windows:
      - {days: "mon,wed", start: "10:00", end: "12:00"}
    freezes:
      - {start: 2026-12-14, end: 2026-12-20, reason: code freeze}
      - {start: "2027-01-06T00:00", end: "2027-01-06T11:00", reason: migration}
"""


@pytest.fixture
def windows_file(tmp_path: Path) -> str:
    file = tmp_path / "release_windows.yaml"
    file.write_text(WINDOWS)
    return str(file)


def berlin(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> pendulum.DateTime:
    return pendulum.datetime(y, m, d, hh, mm, tz=BERLIN)


def schedule(timetable: ReleaseWindowTimetable, restriction: TimeRestriction, runs: int) -> list[str]:
    """What the scheduler would do: ask again after each automated run."""
    last: DataInterval | None = None
    seen = []
    for _ in range(runs):
        info = timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
        if info is None:
            break
        assert info.data_interval.start == info.data_interval.end == info.run_after
        seen.append(info.run_after.in_timezone(BERLIN).format("ddd YYYY-MM-DD HH:mm"))
        last = info.data_interval
    return seen


def test_runs_at_each_opening_skipping_the_freeze(windows_file: str) -> None:
    timetable = ReleaseWindowTimetable("release-days", windows_file)
    restriction = TimeRestriction(earliest=berlin(2026, 12, 1), latest=None, catchup=True)
    assert schedule(timetable, restriction, 8) == [
        "Wed 2026-12-02 10:00",
        "Mon 2026-12-07 10:00",
        "Wed 2026-12-09 10:00",
        # Mon 14 and Wed 16: frozen
        "Mon 2026-12-21 10:00",
        "Wed 2026-12-23 10:00",
        "Mon 2026-12-28 10:00",
        "Wed 2026-12-30 10:00",
        "Mon 2027-01-04 10:00",
    ]


def test_a_freeze_ending_inside_a_window_moves_the_opening(windows_file: str) -> None:
    timetable = ReleaseWindowTimetable("release-days", windows_file)
    restriction = TimeRestriction(earliest=berlin(2027, 1, 5), latest=None, catchup=True)
    assert schedule(timetable, restriction, 2) == ["Wed 2027-01-06 11:00", "Mon 2027-01-11 10:00"]


def test_start_date_inside_a_window_runs_at_the_start_date(windows_file: str) -> None:
    timetable = ReleaseWindowTimetable("release-days", windows_file)
    restriction = TimeRestriction(earliest=berlin(2026, 12, 2, 11, 15), latest=None, catchup=True)
    assert schedule(timetable, restriction, 2) == ["Wed 2026-12-02 11:15", "Mon 2026-12-07 10:00"]


def test_end_date_and_once(windows_file: str) -> None:
    bounded = ReleaseWindowTimetable("release-days", windows_file)
    restriction = TimeRestriction(earliest=berlin(2026, 12, 1), latest=berlin(2026, 12, 7, 10), catchup=True)
    assert schedule(bounded, restriction, 5) == ["Wed 2026-12-02 10:00", "Mon 2026-12-07 10:00"]
    once = ReleaseWindowTimetable("release-days", windows_file, once=True)
    assert schedule(once, TimeRestriction(berlin(2026, 12, 1), None, True), 5) == ["Wed 2026-12-02 10:00"]
    no_start = ReleaseWindowTimetable("release-days", windows_file)
    assert no_start.next_dagrun_info(last_automated_data_interval=None,
                                     restriction=TimeRestriction(None, None, True)) is None


def test_catchup_off_skips_past_windows_but_keeps_the_open_one(windows_file: str) -> None:
    timetable = ReleaseWindowTimetable("release-days", windows_file)
    earliest = datetime(2026, 11, 1, tzinfo=UTC)

    def next_run(now: pendulum.DateTime, last: pendulum.DateTime | None = None) -> str:
        due = timetable.next_run_at(last_run=last, earliest=earliest, latest=None, catchup=False, now=now)
        assert due is not None
        return pendulum.instance(due).in_timezone(BERLIN).format("ddd YYYY-MM-DD HH:mm")

    # Wed 2026-12-09 11:00: the window that opened at 10:00 is still open -> run it (now).
    assert next_run(berlin(2026, 12, 9, 11)) == "Wed 2026-12-09 10:00"
    # ... but not again once it ran.
    assert next_run(berlin(2026, 12, 9, 11), last=berlin(2026, 12, 9, 10)) == "Mon 2026-12-21 10:00"
    # Wed 13:00: closed; the missed windows are not run, the next opening is.
    assert next_run(berlin(2026, 12, 9, 13), last=berlin(2026, 11, 2, 10)) == "Mon 2026-12-21 10:00"


def test_always_policy_runs_once_at_the_start() -> None:
    timetable = ReleaseWindowTimetable("always")
    restriction = TimeRestriction(earliest=pendulum.datetime(2026, 12, 1, tz="UTC"), latest=None, catchup=True)
    assert schedule(timetable, restriction, 3) == ["Tue 2026-12-01 01:00"]


def test_manual_runs_get_an_exact_interval(windows_file: str) -> None:
    timetable = ReleaseWindowTimetable("release-days", windows_file)
    at = pendulum.datetime(2026, 12, 5, 3, tz="UTC")
    assert timetable.infer_manual_data_interval(run_after=at) == DataInterval(at, at)


def test_summary_and_description(windows_file: str) -> None:
    timetable = ReleaseWindowTimetable("release-days", windows_file)
    assert timetable.summary == "release windows: release-days"
    assert timetable.description.startswith("release windows 'release-days': Mon, Wed 10:00\u201312:00 Europe/Berlin; frozen ")
    assert "cannot load" in ReleaseWindowTimetable("nope", windows_file).description


def test_serialize_round_trip(windows_file: str) -> None:
    timetable = ReleaseWindowTimetable("release-days", windows_file, once=True)
    data = timetable.serialize()
    assert data == {"policy": "release-days", "windows_file": windows_file, "once": True}
    again = ReleaseWindowTimetable.deserialize(data)
    assert again == timetable
    restriction = TimeRestriction(earliest=berlin(2026, 12, 1), latest=None, catchup=True)
    assert schedule(again, restriction, 3) == schedule(timetable, restriction, 3)


def test_airflow_serializes_it_through_the_registered_plugin(windows_file: str) -> None:
    from airflow.serialization.decoders import decode_timetable
    from airflow.serialization.encoders import encode_timetable

    timetable = ReleaseWindowTimetable("release-days", windows_file)
    encoded = encode_timetable(timetable)
    assert encoded["__type"] == "istio_canary.timetables.ReleaseWindowTimetable"
    assert decode_timetable(encoded) == timetable


DAG_FILE = """
from datetime import datetime, timezone

from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

from istio_canary.timetables import ReleaseWindowTimetable

with DAG(
    dag_id="{dag_id}",
    schedule=ReleaseWindowTimetable("{policy}", {windows_file!r}),
    start_date=datetime(2026, 12, 1, tzinfo=timezone.utc),
    catchup=False,
):
    EmptyOperator(task_id="noop")
"""


def test_dag_using_it_loads_in_a_dagbag(tmp_path: Path, windows_file: str) -> None:
    from airflow.dag_processing.dagbag import DagBag

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "good.py").write_text(DAG_FILE.format(dag_id="windowed", policy="release-days", windows_file=windows_file))
    (dags / "bad.py").write_text(DAG_FILE.format(dag_id="unknown_policy", policy="nope", windows_file=windows_file))
    bag = DagBag(dag_folder=str(dags), safe_mode=False)
    assert set(bag.dags) == {"windowed"}
    assert bag.dags["windowed"].timetable.summary == "release windows: release-days"
    [(path, error)] = bag.import_errors.items()
    assert path.endswith("bad.py")
    assert "release_window='nope': is not a release window policy" in error


def test_a_policy_that_never_opens_schedules_nothing(windows_file: str) -> None:
    # The search is bounded (400 days): None, not an endless loop.
    file = Path(windows_file)
    file.write_text(WINDOWS + "      - {start: 2026-01-01, end: 2029-12-31, reason: forever}\n")
    timetable = ReleaseWindowTimetable("release-days", windows_file)
    restriction = TimeRestriction(earliest=berlin(2026, 12, 1), latest=None, catchup=True)
    assert timetable.next_dagrun_info(last_automated_data_interval=None, restriction=restriction) is None


CALENDAR_DAG_FILE = """
from datetime import datetime, timezone

from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

from istio_canary.core.calendar import load_calendar
from istio_canary.timetables import ReleaseWindowTimetable

planned, errors = load_calendar({releases!r})
for release in planned:
    with DAG(dag_id=release.dag_id, start_date=release.earliest, catchup=False,
             schedule=ReleaseWindowTimetable(release.policy_name, once=True),
             params=release.params, description=release.description):
        EmptyOperator(task_id="release")
if errors:
    with DAG(dag_id="release_calendar_errors",
             schedule=ReleaseWindowTimetable.invalid("\\n".join(str(e) for e in errors))):
        EmptyOperator(task_id="invalid")
"""


def test_calendar_dag_file_broken_entry_is_an_import_error_and_the_rest_loads(tmp_path: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    releases = tmp_path / "releases.yaml"
    releases.write_text(
        "releases:\n"
        "  - {service: reviews, namespace: bookinfo, stable_version: v1, canary_version: v2,\n"
        "     bake_seconds: 60, release_window: office-hours, earliest: 2027-01-12}\n"
        "  - {service: ratings, namespace: bookinfo, stable_version: v1, canary_version: v1,\n"
        "     bake_seconds: 60, release_window: shanghai-midweek, earliest: 2027-01-19}\n"
    )
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "calendar.py").write_text(CALENDAR_DAG_FILE.format(releases=str(releases)))
    bag = DagBag(dag_folder=str(dags), safe_mode=False)
    assert set(bag.dags) == {"release_reviews_v2"}
    dag = bag.dags["release_reviews_v2"]
    assert dag.timetable.summary == "release windows: office-hours (once)"
    assert dag.params["release_window"] == "office-hours"
    [error] = bag.import_errors.values()
    assert "releases[1] (service 'ratings'): canary_version='v1': must differ from stable_version" in error
