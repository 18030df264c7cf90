"""The release windows file: named window policies and the services each applies to.

Policy files (YAML, read with `yaml.safe_load`): see `include/release_windows.yaml`. The file
is `ISTIO_CANARY_WINDOWS_FILE` if set, else `include/release_windows.yaml` of the checkout
(`plugins/istio_canary/../../include`). When that default file does not exist (an image
built from the package alone) only the built-in `always` policy is known. The policies'
time math is in `core.window_policy`, the gate in `core.window_gate`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from istio_canary.core.validation import ValidationError
from istio_canary.core.window_policy import (
    ALWAYS,
    ALWAYS_POLICY,
    DAY_NAMES,
    MIDNIGHT,
    Freeze,
    ReleaseWindow,
    WindowPolicy,
    zone,
)

NO_POLICY_NAMES = frozenset({"none", "off"})  # release_window=none: no gate
WINDOWS_FILE_ENV = "ISTIO_CANARY_WINDOWS_FILE"
DEFAULT_WINDOWS_FILE = Path(__file__).resolve().parents[3] / "include" / "release_windows.yaml"

_DAY_LOOKUP = {name.lower(): i for i, name in enumerate(DAY_NAMES)} | {
    full: i
    for i, full in enumerate(("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"))
}
_POLICY_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$")


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


def _require_keys(spec: Any, where: str, allowed: Iterable[str], required: Iterable[str], shape: str) -> Mapping[str, Any]:
    """`spec` as a mapping with only `allowed` keys and every `required` one; else ValidationError."""
    if not isinstance(spec, Mapping):
        raise ValidationError(where, spec, f"must be a mapping with {shape}")
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise ValidationError(f"{where}.{unknown[0]}", spec[unknown[0]], "unknown key")
    for key in required:
        if key not in spec:
            raise ValidationError(f"{where}.{key}", None, "is required")
    return spec


def _parse_policy(name: str, spec: Any, where: str) -> WindowPolicy:
    spec = _require_keys(spec, where, ("timezone", "windows", "freezes", "description"), (),
                         "'timezone', 'windows', 'freezes'")
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


def _parse_window(spec: Any, default_tz: str, where: str) -> ReleaseWindow:
    spec = _require_keys(spec, where, ("days", "start", "end", "timezone"), ("days", "start", "end"),
                         "'days', 'start', 'end'")
    days = parse_weekdays(spec["days"], f"{where}.days")
    start = parse_time_of_day(spec["start"], f"{where}.start")
    end = parse_time_of_day(spec["end"], f"{where}.end", allow_24=True)
    tz_name = spec.get("timezone", default_tz)
    zone(tz_name, f"{where}.timezone")
    try:
        return ReleaseWindow(days, start, end, tz_name)
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
            return MIDNIGHT
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
    spec = _require_keys(spec, where, ("start", "end", "reason"), ("start", "end"), "'start', 'end' and 'reason'")
    reason = spec.get("reason", "")
    if not isinstance(reason, str):
        raise ValidationError(f"{where}.reason", reason, "must be a string")
    try:
        return Freeze(_parse_moment(spec["start"], f"{where}.start"), _parse_moment(spec["end"], f"{where}.end"), reason)
    except ValidationError as exc:
        if exc.field.startswith(where):
            raise
        raise _reraise_at(where, exc) from None
