"""The release calendar: planned releases read from `include/releases.yaml`, one DAG each.

Each entry is checked on its own, with the same code the release DAG's validate task uses
(`ReleaseRequest.from_params`, `AnalysisConfig.from_params`), plus its window policy and
earliest date. A bad entry becomes a `CalendarError` naming the entry (index and service)
and the field; the other entries still load, so one typo does not take every planned
release's DAG down. Pure: no Airflow imports; the DAG file turns `PlannedRelease`s into DAGs.

File: `ISTIO_CANARY_RELEASES_FILE` if set, else include/releases.yaml of the checkout.
Entry keys: any release DAG param (service, namespace, stable_version, canary_version,
strategy, steps, thresholds, ...), plus
- `release_window`: policy name (default: the service's policy from the windows file;
  required one way or the other, since the policy is the schedule), `window_mode`,
- `earliest`: date (local midnight in the policy's timezone) or datetime (naive = policy's
  timezone), required,
- `dag_id` (default `release_<service>_<canary_version>`, lower-cased, [a-z0-9_]),
- `description` (default: generated).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import yaml

from istio_canary.core.analysis_config import AnalysisConfig
from istio_canary.core.request import ReleaseRequest
from istio_canary.core.validation import ValidationError
from istio_canary.core.window_gate import require_mode
from istio_canary.core.window_policy import resolve_local
from istio_canary.core.windows import NO_POLICY_NAMES, WindowConfig, load_window_config

RELEASES_FILE_ENV = "ISTIO_CANARY_RELEASES_FILE"
DEFAULT_RELEASES_FILE = Path(__file__).resolve().parents[3] / "include" / "releases.yaml"
CALENDAR_KEYS = frozenset({"earliest", "dag_id", "description"})
WINDOW_KEYS = frozenset({"release_window", "window_mode"})
_DAG_ID = re.compile(r"^[a-z0-9_]{1,200}$")


@dataclass(frozen=True)
class PlannedRelease:
    """One calendar entry, checked. `params` are the entry's own release params (JSON values,
    with `release_window` and `window_mode` filled in): the defaults of its DAG's params."""

    index: int
    dag_id: str
    service: str
    namespace: str
    params: dict[str, Any]
    policy_name: str
    earliest: datetime
    description: str
    window_mode: str = "wait"


@dataclass(frozen=True)
class CalendarError:
    """A calendar entry that could not be loaded: which one, which field, why."""

    index: int
    service: str | None
    field: str
    message: str
    source: str = ""

    @property
    def entry(self) -> str:
        return f"releases[{self.index}]" + (f" (service {self.service!r})" if self.service else "")

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.entry}: {self.message}"


def sanitize_dag_id(text: str) -> str:
    """'release_reviews_v2.1-rc' -> 'release_reviews_v2_1_rc'."""
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9_]", "_", text.lower())).strip("_")


def releases_file(path: str | os.PathLike[str] | None = None) -> Path:
    if path:
        return Path(path)
    return Path(os.environ.get(RELEASES_FILE_ENV) or DEFAULT_RELEASES_FILE)


def known_param_keys() -> frozenset[str]:
    analysis = {f.name for f in fields(AnalysisConfig)}
    return frozenset(ReleaseRequest.PARAM_KEYS) | analysis | WINDOW_KEYS | CALENDAR_KEYS


def load_calendar(
    path: str | os.PathLike[str] | None = None,
    *,
    defaults: Mapping[str, Any] | None = None,
    windows: WindowConfig | None = None,
) -> tuple[list[PlannedRelease], list[CalendarError]]:
    """Read the calendar: (planned releases, errors). A broken file is one error (index -1).

    :param defaults: the release DAG's default params; each entry is checked as
        `{**defaults, **entry}` (e.g. a default `bake_seconds`), and their keys are accepted.
    :param windows: the window policies (default: `load_window_config()`).
    """
    file = releases_file(path)
    try:
        raw = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        return [], [CalendarError(-1, None, "releases_file", f"cannot read {file}: {exc}", str(file))]
    try:
        windows = windows if windows is not None else load_window_config()
    except ValidationError as exc:
        return [], [CalendarError(-1, None, exc.field, f"window policies: {exc}", str(file))]
    return parse_calendar(raw, windows, defaults=defaults, source=str(file))


def parse_calendar(
    raw: Any,
    windows: WindowConfig,
    *,
    defaults: Mapping[str, Any] | None = None,
    source: str = "",
) -> tuple[list[PlannedRelease], list[CalendarError]]:
    entries = (raw or {}).get("releases") if isinstance(raw, Mapping) or raw is None else raw
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        return [], [CalendarError(-1, None, "releases", "must be a list of release entries", source)]
    planned: list[PlannedRelease] = []
    errors: list[CalendarError] = []
    seen: dict[str, int] = {}
    for index, raw_entry in enumerate(entries):
        try:
            release = _plan(index, raw_entry, windows, defaults or {})
        except ValidationError as exc:
            service = raw_entry.get("service") if isinstance(raw_entry, Mapping) else None
            errors.append(CalendarError(index, service if isinstance(service, str) else None,
                                        exc.field, str(exc), source))
            continue
        if release.dag_id in seen:
            errors.append(CalendarError(
                index, release.service, "dag_id",
                f"dag_id={release.dag_id!r}: duplicate of releases[{seen[release.dag_id]}] "
                "(set a distinct dag_id on one of them)", source,
            ))
            continue
        seen[release.dag_id] = index
        planned.append(release)
    return planned, errors


def _json_value(key: str, value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise ValidationError(key, value, "must be a plain YAML value (string, number, list); quote dates") from None
    return value


def _plan(index: int, raw: Any, windows: WindowConfig, defaults: Mapping[str, Any]) -> PlannedRelease:
    if not isinstance(raw, Mapping):
        raise ValidationError("(entry)", raw, "must be a mapping of release params")
    unknown = sorted(set(raw) - known_param_keys() - set(defaults))
    if unknown:
        raise ValidationError(unknown[0], raw[unknown[0]], "is not a release param (typo?)")
    params = {k: _json_value(k, v) for k, v in raw.items() if k not in CALENDAR_KEYS}
    merged = {**defaults, **params}
    request = ReleaseRequest.from_params(merged)
    AnalysisConfig.from_params(merged)
    mode = require_mode(merged.get("window_mode") or "wait")

    explicit = merged.get("release_window")
    if isinstance(explicit, str) and explicit.strip().lower() in NO_POLICY_NAMES:
        raise ValidationError("release_window", explicit, "a planned release needs a window policy (its schedule)")
    policy = windows.policy_for(request.service, explicit or None, request.namespace)
    if policy is None:
        raise ValidationError(
            "release_window", explicit,
            f"is required: no policy for service {request.service!r} in {windows.source}",
        )
    params["release_window"] = policy.name
    params["window_mode"] = mode

    if raw.get("earliest") in (None, ""):
        raise ValidationError("earliest", raw.get("earliest"), "is required (a date or datetime)")
    earliest = _earliest(raw["earliest"], policy.zoneinfo)

    dag_id = raw.get("dag_id") or sanitize_dag_id(f"release_{request.service}_{request.canary_version}")
    if not isinstance(dag_id, str) or not _DAG_ID.match(dag_id):
        raise ValidationError("dag_id", dag_id, "must be lower-case letters, digits and '_'")

    description = raw.get("description") or (
        f"{request.service} {request.stable_version} -> {request.canary_version} in {request.namespace} "
        f"({request.strategy}, steps {'/'.join(map(str, request.steps))}), "
        f"window {policy.name}: {policy.describe()}, from {earliest.astimezone(policy.zoneinfo):%Y-%m-%d %H:%M %Z}"
    )
    if not isinstance(description, str):
        raise ValidationError("description", description, "must be a string")
    return PlannedRelease(
        index=index, dag_id=dag_id, service=request.service, namespace=request.namespace,
        params=params, policy_name=policy.name, earliest=earliest, description=description,
        window_mode=mode,
    )


def _earliest(value: Any, tz: Any) -> datetime:
    if isinstance(value, str):
        text = value.strip()
        try:
            value = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
        except ValueError:
            raise ValidationError("earliest", value, "must be a date (2026-06-02) or datetime (2026-06-02T10:00)") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return resolve_local(value.date(), value.time(), tz)
        return value
    if isinstance(value, date):
        return resolve_local(value, time(0, 0), tz)
    raise ValidationError("earliest", value, "must be a date (2026-06-02) or datetime (2026-06-02T10:00)")
