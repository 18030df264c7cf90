"""Import layering: which top-level packages may import which.

- sandbox/ (the stand-in cluster) imports nothing of the pipeline it checks (istio_canary);
- bench/ and tools/ import nothing from tests/ (tests import them, not the other way round);
- istio_canary.core (the pure release logic) imports nothing from Airflow.

Every .py under sandbox/, bench/, tools/, plugins/ and dags/ is parsed, including imports inside
functions; a failure names the file, the line and the import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("sandbox", "bench", "tools", "plugins", "dags")

# (files under this folder, may not import this top-level package or anything under it)
RULES = (
    ("sandbox", "istio_canary"),
    ("bench", "tests"),
    ("tools", "tests"),
    ("plugins/istio_canary/core", "airflow"),
)


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """(line, dotted module name) of every import in the file; relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = path.relative_to(PROJECT_ROOT).parent.parts
    if package and package[0] == "plugins":
        package = package[1:]  # plugins/ is on sys.path: istio_canary is top-level
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join((*base, node.module) if node.module else base)
            else:
                module = node.module or ""
            yield node.lineno, module


def python_files() -> list[Path]:
    return sorted(p for folder in SCANNED for p in (PROJECT_ROOT / folder).rglob("*.py"))


def violations(files: list[Path]) -> list[str]:
    found = []
    for path in files:
        relative = path.relative_to(PROJECT_ROOT).as_posix()
        for folder, forbidden in RULES:
            if not relative.startswith(f"{folder}/"):
                continue
            for line, module in imported_modules(path):
                if module == forbidden or module.startswith(f"{forbidden}."):
                    found.append(f"{relative}:{line}: imports {module} ({folder}/ may not import {forbidden})")
    return sorted(set(found))


def test_every_scanned_folder_has_python_files() -> None:
    for folder in SCANNED:
        assert any((PROJECT_ROOT / folder).rglob("*.py")), f"{folder}/ has no .py file: the scan would pass vacuously"


def test_imports_keep_to_their_layers() -> None:
    found = violations(python_files())
    assert not found, "imports across layers:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("relative", "source", "expected"),
    [
        ("bench/x.py", "from tests.conftest import SandboxInfo\n", "bench/x.py:1: imports tests.conftest"),
        ("tools/x.py", "def f():\n    import tests.e2e.conftest\n", "tools/x.py:2: imports tests.e2e.conftest"),
        ("sandbox/x.py", "from istio_canary.core import judge\n", "sandbox/x.py:1: imports istio_canary.core"),
        ("plugins/istio_canary/core/x.py", "from airflow.sdk import DAG\n",
         "plugins/istio_canary/core/x.py:1: imports airflow.sdk"),
    ],
)
def test_a_forbidden_import_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, relative: str, source: str, expected: str
) -> None:
    monkeypatch.setattr(f"{__name__}.PROJECT_ROOT", tmp_path)
    path = tmp_path / relative
    path.parent.mkdir(parents=True)
    path.write_text(source)
    found = violations([path])
    assert len(found) == 1 and found[0].startswith(expected), found


def test_allowed_imports_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(f"{__name__}.PROJECT_ROOT", tmp_path)
    path = tmp_path / "bench" / "x.py"
    path.parent.mkdir(parents=True)
    path.write_text("from sandbox.client import SandboxInfo\nimport testsuite\nfrom . import tests\n")
    assert violations([path]) == []
