"""The release calendar: entries -> planned releases, bad entries -> errors naming them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from istio_canary.core.calendar import DEFAULT_RELEASES_FILE, load_calendar, sanitize_dag_id
from istio_canary.core.windows import DEFAULT_WINDOWS_FILE, load_window_config

WINDOWS = load_window_config(DEFAULT_WINDOWS_FILE)
ENTRY = """
  - service: {service}
    namespace: bookinfo
    stable_version: v1
    canary_version: {canary}
    bake_seconds: 60
    release_window: {window}
    earliest: {earliest}
"""


def calendar(tmp_path: Path, *entries: str) -> Path:
    file = tmp_path / "releases.yaml"
    file.write_text("releases:\n" + "".join(entries))
    return file


def entry(service: str = "reviews", canary: str = "v2", window: str = "office-hours",
          earliest: str = "2027-01-12", **extra: object) -> str:
    text = ENTRY.format(service=service, canary=canary, window=window, earliest=earliest)
    return text + "".join(f"    {key}: {value}\n" for key, value in extra.items())


def test_two_entries_two_dags_with_their_policies(tmp_path: Path) -> None:
    file = calendar(tmp_path, entry(), entry("ratings", "v3", "shanghai-midweek", "2027-01-19T11:00"))
    planned, errors = load_calendar(file, windows=WINDOWS)
    assert errors == []
    assert [(p.dag_id, p.policy_name) for p in planned] == [
        ("release_reviews_v2", "office-hours"),
        ("release_ratings_v3", "shanghai-midweek"),
    ]
    reviews, ratings = planned
    # Dates are midnight in the policy's zone; naive datetimes are read there too.
    assert reviews.earliest == datetime(2027, 1, 11, 23, tzinfo=UTC)  # 00:00 CET
    assert ratings.earliest == datetime(2027, 1, 19, 3, tzinfo=UTC)  # 11:00 CST
    assert reviews.params == {
        "service": "reviews", "namespace": "bookinfo", "stable_version": "v1", "canary_version": "v2",
        "bake_seconds": 60, "release_window": "office-hours", "window_mode": "wait",
    }
    assert "reviews v1 -> v2 in bookinfo" in reviews.description
    assert "Mon\u2013Fri 09:00\u201317:00 Europe/Berlin" in reviews.description


def test_a_broken_entry_is_one_error_naming_it_and_the_other_still_loads(tmp_path: Path) -> None:
    file = calendar(tmp_path, entry(canary="v1"), entry("ratings", "v3"))
    planned, errors = load_calendar(file, windows=WINDOWS)
    assert [p.dag_id for p in planned] == ["release_ratings_v3"]
    [error] = errors
    assert (error.index, error.service, error.field) == (0, "reviews", "canary_version")
    assert str(error).endswith("releases[0] (service 'reviews'): canary_version='v1': must differ from stable_version")
    assert str(file) in str(error)


@pytest.mark.parametrize(
    ("bad", "field", "hint"),
    [
        (entry(window="night-shift"), "release_window", "is not a release window policy"),
        (entry(window="none"), "release_window", "needs a window policy"),
        (entry(earliest="soon"), "earliest", "must be a date"),
        (entry(max_error_rate=2), "max_error_rate", "between 0 and 1"),
        (entry(bake_secs=60), "bake_secs", "is not a release param"),
        (entry(strategy="big-bang"), "strategy", "must be one of"),
        (entry(window_mode="later"), "window_mode", "must be one of"),
        (entry(dag_id="Release-Reviews"), "dag_id", "lower-case"),
        (ENTRY.format(service="reviews", canary="v2", window="office-hours", earliest="''"), "earliest", "required"),
    ],
)
def test_field_errors(tmp_path: Path, bad: str, field: str, hint: str) -> None:
    planned, errors = load_calendar(calendar(tmp_path, bad, entry("ratings")), windows=WINDOWS)
    assert [p.service for p in planned] == ["ratings"]
    [error] = errors
    assert error.field == field and hint in error.message


def test_policy_from_the_service_mapping_and_defaults(tmp_path: Path) -> None:
    # ratings maps to office-hours in the default windows file; bake_seconds comes from defaults.
    text = "releases:\n  - {service: ratings, namespace: bookinfo, stable_version: v1, canary_version: v2,\n" \
           "     earliest: 2027-02-01, dry_run: true}\n"
    (tmp_path / "r.yaml").write_text(text)
    planned, errors = load_calendar(tmp_path / "r.yaml", windows=WINDOWS,
                                    defaults={"bake_seconds": 300, "dry_run": False})
    assert errors == []
    assert planned[0].policy_name == "office-hours"
    assert planned[0].params["dry_run"] is True and "bake_seconds" not in planned[0].params
    # Without the defaults: no bake_seconds, and dry_run is not a param this module knows.
    _, errors = load_calendar(tmp_path / "r.yaml", windows=WINDOWS)
    assert [e.field for e in errors] == ["dry_run"]


def test_duplicate_dag_ids_are_errors(tmp_path: Path) -> None:
    file = calendar(tmp_path, entry(), entry(earliest="2027-03-01"), entry(earliest="2027-04-01", dag_id="release_reviews_v2_april"))
    planned, errors = load_calendar(file, windows=WINDOWS)
    assert [p.dag_id for p in planned] == ["release_reviews_v2", "release_reviews_v2_april"]
    [error] = errors
    assert error.index == 1 and error.field == "dag_id" and "duplicate of releases[0]" in error.message


def test_dag_ids_are_sanitized() -> None:
    assert sanitize_dag_id("release_reviews_V2.1-rc") == "release_reviews_v2_1_rc"


def test_unreadable_file_is_one_error(tmp_path: Path) -> None:
    planned, errors = load_calendar(tmp_path / "missing.yaml", windows=WINDOWS)
    assert planned == [] and errors[0].index == -1 and "cannot read" in errors[0].message
    (tmp_path / "bad.yaml").write_text("releases: {service: reviews}\n")
    _, errors = load_calendar(tmp_path / "bad.yaml", windows=WINDOWS)
    assert errors[0].field == "releases"


def test_shipped_calendar_loads() -> None:
    planned, errors = load_calendar(DEFAULT_RELEASES_FILE, windows=WINDOWS)
    assert errors == []
    assert {p.dag_id for p in planned} == {"release_reviews_v2", "release_ratings_v2"}
