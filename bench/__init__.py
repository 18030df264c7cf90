"""Benchmarks that print figures (`python -m bench.<name>`); see bench/README.md."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def emit(table: str, result: Mapping[str, Any], json_path: Path | None) -> None:
    """Every bench's output: its table on stdout and, with `--json PATH`, the figures as JSON."""
    print(table)
    if json_path:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {json_path}")
