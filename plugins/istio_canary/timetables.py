"""`ReleaseWindowTimetable`: schedule release runs when a release window opens.

Runs are due at the start of each open period of the policy (each window opening; a freeze
moves an opening to when the freeze ends inside a window, or skips it), intersected with
[`start_date`, `end_date`]: if the DAG's start date falls inside an open window, the first run
is due at the start date. Each run is an exact moment (data interval of zero length).

- `catchup=False`: openings whose open period has already ended are skipped; a period still
  open now is run (its opening is in the past, so the run starts at once, still in the window).
- `once=True`: only the first due run (a planned release from the release calendar).
- Manual runs get an exact interval at trigger time; they still go through the window gate.
- Serialized as the policy name, the windows file (as given, None = resolved by the scheduler
  like by the DAG processor: `ISTIO_CANARY_WINDOWS_FILE` or include/) and `once`;
  deserialize reloads the policy.
- The `always` policy has a single endless open period: one run (at the start date).
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.exceptions import AirflowTimetableInvalid
from airflow.timetables.base import DagRunInfo, DataInterval, Timetable
from pendulum import instance

from istio_canary.core.validation import ValidationError
from istio_canary.core.window_policy import ALWAYS, HORIZON, WindowPolicy
from istio_canary.core.windows import load_window_config

if TYPE_CHECKING:
    from airflow.timetables.base import TimeRestriction
    from pendulum import DateTime

# With catchup off, look back at most this far for the opening of the period open now.
CATCHUP_OFF_LOOKBACK = timedelta(days=8)


def _utc(t: datetime) -> datetime:
    # A plain datetime: pendulum's arithmetic with stdlib tzinfo objects can drop the zone.
    return datetime.fromtimestamp(t.timestamp(), UTC)


class ReleaseWindowTimetable(Timetable):
    """Runs at the openings of release window policy `policy` (see module doc)."""

    _invalid: str | None = None

    def __init__(self, policy: str, windows_file: str | None = None, *, once: bool = False) -> None:
        self.policy_name = policy
        self.windows_file = windows_file
        self.once = once
        self.description = self._describe()

    def _describe(self) -> str:
        try:
            text = f"release windows {self.policy_name!r}: {self.policy.describe()}"
        except ValidationError as exc:
            text = f"release windows {self.policy_name!r}: cannot load ({exc})"
        return f"{text} (once)" if self.once else text

    @cached_property
    def policy(self) -> WindowPolicy:
        return load_window_config(self.windows_file).get(self.policy_name)

    @property
    def summary(self) -> str:
        return f"release windows: {self.policy_name}" + (" (once)" if self.once else "")

    @classmethod
    def invalid(cls, message: str) -> ReleaseWindowTimetable:
        """A timetable that fails DAG validation with `message`.

        For a DAG file that builds several DAGs (the release calendar): Airflow turns a DAG
        whose validation fails into an import error of the file, while the file's other DAGs
        still load. An exception at module level would lose them all.
        """
        timetable = cls(ALWAYS)
        timetable._invalid = message
        timetable.description = f"invalid: {message}"
        return timetable

    def validate(self) -> None:
        if self._invalid is not None:
            raise AirflowTimetableInvalid(self._invalid)
        try:
            self.policy  # noqa: B018 - loading is the check
        except ValidationError as exc:
            raise AirflowTimetableInvalid(f"ReleaseWindowTimetable: {exc}") from None

    def serialize(self) -> dict[str, Any]:
        return {"policy": self.policy_name, "windows_file": self.windows_file, "once": self.once}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> Timetable:
        return cls(data["policy"], data.get("windows_file"), once=bool(data.get("once", False)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReleaseWindowTimetable):
            return NotImplemented
        return self.serialize() == other.serialize()

    def __hash__(self) -> int:
        return hash((self.policy_name, self.windows_file, self.once))

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        return DataInterval.exact(run_after)

    def next_dagrun_info(
        self,
        *,
        last_automated_data_interval: DataInterval | None,
        restriction: TimeRestriction,
    ) -> DagRunInfo | None:
        due = self.next_run_at(
            last_run=_utc(last_automated_data_interval.start) if last_automated_data_interval else None,
            earliest=_utc(restriction.earliest) if restriction.earliest else None,
            latest=_utc(restriction.latest) if restriction.latest else None,
            catchup=restriction.catchup,
            now=datetime.now(UTC),
        )
        return DagRunInfo.exact(instance(due)) if due is not None else None

    def next_run_at(
        self,
        *,
        last_run: datetime | None,
        earliest: datetime | None,
        latest: datetime | None,
        catchup: bool,
        now: datetime,
    ) -> datetime | None:
        """The next due run (UTC) after `last_run` within [earliest, latest]; None if none."""
        if last_run is None and earliest is None:
            return None  # no start date: nothing to schedule from
        if last_run is not None and self.once:
            return None
        # Where to start looking: the last run (its own period is done), else the start date.
        bounds = [t for t in (last_run, earliest) if t is not None]
        lower = max(bounds)
        if not catchup and lower < now - CATCHUP_OFF_LOOKBACK:
            # A UTC midnight, so the answer stays the same all day (the scheduler asks often).
            lower = datetime.combine((now - CATCHUP_OFF_LOOKBACK).date(), time(0), UTC)
        # Most policies open within days: look a little ahead first, then the full horizon.
        for span in (timedelta(days=16), HORIZON):
            # Catchup: every due run counts, so the search starts at `lower`, however old.
            hi = (lower if catchup else max(lower, now)) + span
            due = self._first_due(lower, hi, last_run, earliest, catchup, now)
            if due is not None:
                return None if latest is not None and due > latest else due
        return None

    def _first_due(
        self,
        lower: datetime,
        hi: datetime,
        last_run: datetime | None,
        earliest: datetime | None,
        catchup: bool,
        now: datetime,
    ) -> datetime | None:
        for period in self.policy.open_periods(lower, hi):
            due = period.start
            if period.from_before:
                # Open since before `lower`: the period of the last run (done already), or the
                # one around the start date / the look-back edge (due at `lower` if never run).
                if last_run is not None:
                    continue
                due = lower
            if earliest is not None and due < earliest:
                continue
            if last_run is not None and due <= last_run:
                continue
            if not catchup and period.end <= now:
                continue  # missed and over: never release into a closed window
            return due
        return None
