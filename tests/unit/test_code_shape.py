"""Code size limits outside tests: no module over 600 lines, no function over 60.

Long modules and functions are where one concern quietly grows into three. A file that must stay
longer says why in a line `# long: <reason>` among its first five lines; the exemption covers that
file only. A failure names the file, the function and its length.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CHECKED = ("plugins", "sandbox", "bench", "tools", "dags")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60
REASON_MARK = "# long:"


def oversized(path: Path, root: Path = PROJECT_ROOT) -> list[str]:
    """What in `path` is over the limits, unless the file states its reason."""
    source = path.read_text()
    lines = source.splitlines()
    if any(line.startswith(REASON_MARK) and line[len(REASON_MARK) :].strip() for line in lines[:5]):
        return []
    relative = path.relative_to(root).as_posix()
    found = []
    if len(lines) > MAX_MODULE_LINES:
        found.append(f"{relative}: {len(lines)} lines (at most {MAX_MODULE_LINES})")
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(
                    f"{relative}:{node.lineno}: {node.name} is {length} lines (at most {MAX_FUNCTION_LINES})"
                )
    return found


def test_modules_and_functions_stay_within_the_limits() -> None:
    files = sorted(p for folder in CHECKED for p in (PROJECT_ROOT / folder).rglob("*.py"))
    assert len(files) > 50, "the scan found too few files to mean anything"
    found = [problem for path in files for problem in oversized(path)]
    assert not found, "over the size limits (split it, or give the reason in a `# long:` line):\n" + "\n".join(found)


def _function(name: str, body_lines: int) -> str:
    return f"def {name}():\n" + "    x = 1\n" * (body_lines - 1)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (_function("long_one", 61), ["x.py:1: long_one is 61 lines (at most 60)"]),
        (_function("fits", 60), []),
        ("x = 1\n" * 601, ["x.py: 601 lines (at most 600)"]),
        ("# long: a generated table\n" + "x = 1\n" * 700 + _function("long_one", 80), []),
        ("# long:\n" + _function("long_one", 61), ["x.py:2: long_one is 61 lines (at most 60)"]),
    ],
)
def test_an_oversized_file_is_named_unless_it_gives_a_reason(tmp_path: Path, source: str, expected: list[str]) -> None:
    path = tmp_path / "x.py"
    path.write_text(source)
    assert oversized(path, root=tmp_path) == expected
