"""The real-world corpus is well-formed, and the README table generated from it is stable.

Each `tests/fixtures/realworld/*.yaml` is one configuration and what a release must do with it
(see the README in that folder). Here: the files' shape, their objects (valid Kubernetes /
Istio v1 objects, checked against Istio's CRD schemas when `make test` points SANDBOX_CRDS at
them, else against the sandbox's built-in schema), the tags they cover, and
`tools/realworld_table.py` (rendering, `--check`, `--write`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sandbox.apiserver import istio_admission
from sandbox.client import sandbox_env
from sandbox.schema import CrdSchemas, load_schemas
from sandbox.store import Store
from tools.realworld_table import (
    CORPUS_DIR,
    END_MARKER,
    KNOWN_TAGS,
    REPO,
    REQUIRED_TAGS,
    RESULTS,
    START_MARKER,
    Case,
    case_files,
    extract_block,
    load_case,
    load_cases,
    main,
    render_table,
    replace_block,
)

TOP_LEVEL_KEYS = {"description", "covers", "params", "objects", "expect"}
REQUIRED_PARAMS = ("service", "namespace", "stable_version", "canary_version")
REFUSED_KEYS = {"result", "object", "field", "says", "fix"}
RELEASED_KEYS = {"result", "canary_weights", "promoted_owned_route"}
ISTIO_PLURALS = {"VirtualService": "virtualservices", "DestinationRule": "destinationrules"}
KINDS = {"VirtualService": "networking.istio.io/v1", "DestinationRule": "networking.istio.io/v1",
         "Service": "v1", "Pod": "v1"}

FILES = case_files()


@pytest.fixture(scope="module")
def schemas() -> CrdSchemas:
    return load_schemas(sandbox_env().get("SANDBOX_CRDS") or None)


def _raw(path: Path) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.name}: not a YAML mapping"
    return data


# --------------------------------------------------------------------------- the corpus


def test_corpus_has_enough_cases_covering_every_required_tag() -> None:
    cases = load_cases()
    assert len(cases) >= 25, len(cases)
    assert {c.result for c in cases} == set(RESULTS)
    covered = {tag for c in cases for tag in c.covers}
    assert set(KNOWN_TAGS) >= REQUIRED_TAGS
    assert not REQUIRED_TAGS - covered, f"required tags no case covers: {sorted(REQUIRED_TAGS - covered)}"


def test_every_case_has_its_own_namespace() -> None:
    namespaces = [c.params.get("namespace") for c in load_cases()]
    duplicates = sorted({n for n in namespaces if namespaces.count(n) > 1})
    assert not duplicates, duplicates


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_case_is_well_formed(path: Path) -> None:
    data = _raw(path)
    assert set(data) == TOP_LEVEL_KEYS, f"keys {sorted(data)}"
    description = data["description"]
    assert isinstance(description, str) and description.strip() and "\n" not in description.strip()
    covers = data["covers"]
    assert isinstance(covers, list) and covers and len(set(covers)) == len(covers), covers
    unknown = [t for t in covers if t not in KNOWN_TAGS]
    assert not unknown, f"unknown tags {unknown}; known: {sorted(KNOWN_TAGS)}"
    params = data["params"]
    assert isinstance(params, dict)
    for key in REQUIRED_PARAMS:
        assert isinstance(params.get(key), str) and params[key], f"params.{key}"
    assert params["namespace"].startswith("rw-"), params["namespace"]


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_case_expectation_is_complete(path: Path) -> None:
    expect = _raw(path)["expect"]
    assert isinstance(expect, dict) and expect.get("result") in RESULTS, expect
    if expect["result"] == "refused":
        assert set(expect) == REFUSED_KEYS, f"refused needs exactly {sorted(REFUSED_KEYS)}: {sorted(expect)}"
        for key in ("object", "field", "fix"):
            assert isinstance(expect[key], str) and expect[key].strip(), key
        says = expect["says"]
        assert isinstance(says, list) and says and all(isinstance(s, str) and s for s in says), says
        return
    assert set(expect) <= RELEASED_KEYS, f"released allows {sorted(RELEASED_KEYS)}: {sorted(expect)}"
    for weight, shares in (expect.get("canary_weights") or {}).items():
        assert isinstance(weight, int) and 1 <= weight <= 100, weight
        assert isinstance(shares, dict) and shares, shares
        assert all(isinstance(s, str) and isinstance(w, int) and 0 <= w <= 100 for s, w in shares.items())
        assert sum(shares.values()) == 100, shares
    pinned = expect.get("promoted_owned_route")
    if pinned is not None:
        assert isinstance(pinned, dict) and isinstance(pinned.get("route"), list) and pinned["route"]


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_case_objects_are_valid_and_complete(path: Path, schemas: CrdSchemas) -> None:
    case = load_case(path)
    namespace = case.params["namespace"]
    assert case.objects, "no objects"
    seen: set[tuple[str, str]] = set()
    for i, obj in enumerate(case.objects):
        where = f"objects[{i}]"
        assert isinstance(obj, dict), where
        kind = obj.get("kind")
        assert kind in KINDS, f"{where}: kind {kind!r}"
        assert obj.get("apiVersion") == KINDS[kind], f"{where}: apiVersion {obj.get('apiVersion')!r}"
        meta = obj.get("metadata")
        assert isinstance(meta, dict) and isinstance(meta.get("name"), str) and meta["name"], where
        assert meta.get("namespace") == namespace, f"{where} {meta['name']}: namespace {meta.get('namespace')!r}"
        assert (kind, meta["name"]) not in seen, f"{where}: duplicate {kind} {meta['name']}"
        seen.add((kind, meta["name"]))
        if kind in ISTIO_PLURALS:
            errors = [str(e) for e in schemas.validate(ISTIO_PLURALS[kind], "v1", obj)]
            semantic, _ = istio_admission(ISTIO_PLURALS[kind], obj, namespace, Store())
            assert not errors + [str(e) for e in semantic], f"{kind} {meta['name']} ({schemas.source}): {errors}"
        if kind == "Service":
            assert isinstance((obj.get("spec") or {}).get("selector"), dict), f"Service {meta['name']}: selector"
    params = case.params
    assert ("VirtualService", params.get("virtual_service") or params["service"]) in seen
    assert ("DestinationRule", params.get("destination_rule") or params["service"]) in seen
    assert ("Service", params["service"]) in seen
    pods = [o for o in case.objects if o["kind"] == "Pod"]
    label = params.get("version_label") or "version"
    for version in (params["stable_version"], params["canary_version"]):
        assert any((p["metadata"].get("labels") or {}).get(label) == version for p in pods), \
            f"no Pod labelled {label}={version}"


# --------------------------------------------------------------------------- the table


def _cases() -> list[Case]:
    return load_cases()


def test_table_is_stable_and_has_one_row_per_case() -> None:
    cases = _cases()
    table = render_table(cases)
    assert table == render_table(list(reversed(cases))) == render_table(_cases())
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) == len(cases)
    names = [row.split("`")[1] for row in rows]
    assert sorted(names) == sorted(c.name for c in cases)
    released = sorted(c.name for c in cases if not c.refused)
    assert names == released + sorted(c.name for c in cases if c.refused)
    for row in rows:
        cells = row.replace("\\|", "").split("|")
        assert len(cells) == 7, row  # five columns between six pipes
    assert not [row for row in rows if "<" in row or ">" in row]  # Markdown would eat `<ns>` as a tag


def test_refused_rows_name_object_field_and_fix() -> None:
    table = render_table(_cases())
    for case in _cases():
        row = next(line for line in table.splitlines() if line.startswith(f"| `{case.name}` |"))
        if case.refused:
            assert f"`{case.expect['field']}`" in row
            assert "refused: " in row
        else:
            assert "| released |" in row


def test_write_then_check_round_trip(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\nIntro.\n")
    assert main(["--check", str(readme)]) == 1  # no markers yet
    assert main(["--write", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\nIntro.\n") and START_MARKER in text and END_MARKER in text
    assert main(["--check", str(readme)]) == 0
    assert main(["--write", str(readme)]) == 0
    assert readme.read_text() == text  # idempotent
    block = extract_block(text)
    assert block is not None and block.strip() == render_table(_cases()).strip()
    readme.write_text(text.replace("| released |", "| refused |", 1) + "\n## After\n")
    assert main(["--check", str(readme)]) == 1
    assert main(["--write", str(readme)]) == 0
    assert main(["--check", str(readme)]) == 0
    assert readme.read_text().endswith("\n## After\n")  # text around the block is kept


def test_replace_block_keeps_the_text_around_it() -> None:
    text = f"before\n{START_MARKER}\nold\n{END_MARKER}\nafter\n"
    assert replace_block(text, "new\n") == f"before\n{START_MARKER}\nnew\n{END_MARKER}\nafter\n"
    assert extract_block("no markers") is None


def test_main_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert capsys.readouterr().out == render_table(_cases())


def test_corpus_dir_is_the_fixtures_folder() -> None:
    assert CORPUS_DIR.parts[-3:] == ("tests", "fixtures", "realworld") and FILES


def test_the_readme_table_is_the_corpus() -> None:
    """README.md's table is generated from the corpus: a changed case must be regenerated."""
    assert main(["--check", str(REPO / "README.md")]) == 0, (
        "README.md's real-world table is stale: run `python -m tools.realworld_table --write README.md`")
