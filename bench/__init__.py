"""Benchmarks that print figures (`python -m bench.<name>`); see bench/README.md."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def emit(table: str, result: Mapping[str, Any], json_path: Path | None) -> None:
    """Every bench's output: its table on stdout and, with `--json PATH`, the figures as JSON."""
    print(table)
    if json_path:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {json_path}")


def say(message: str) -> None:
    """A progress line of a long bench, on stderr: stdout holds only the table."""
    print(f"  {message}", file=sys.stderr, flush=True)


def measure_and_emit(
    name: str,
    measure: Callable[[], Mapping[str, Any]],
    format_table: Callable[[Mapping[str, Any]], str],
    json_path: Path | None,
    errors: tuple[type[Exception], ...],
) -> int:
    """A bench's exit status: 0 after `emit`, 1 when `measure` raised one of `errors` (said on stderr)."""
    try:
        result = measure()
    except errors as error:
        print(f"{name}: {error}", file=sys.stderr)
        return 1
    emit(format_table(result), result, json_path)
    return 0
