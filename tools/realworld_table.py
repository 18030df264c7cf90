"""The README's table "What a release touches, what it refuses", from the real-world corpus.

The corpus is `tests/fixtures/realworld/*.yaml`: one configuration a user can have per file,
with what a release must do with it (see the README in that folder). This prints one row per
case; `--check FILE` exits 1 when FILE's table (between the markers) differs from the corpus,
`--write FILE` puts the current one there (appending a marked section if there is none yet).

    python -m tools.realworld_table                    # print the table
    python -m tools.realworld_table --check README.md  # exit 1 if README.md is stale
    python -m tools.realworld_table --write README.md  # refresh README.md's table
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
CORPUS_DIR = REPO / "tests" / "fixtures" / "realworld"
START_MARKER = "<!-- realworld-table:start -->"
END_MARKER = "<!-- realworld-table:end -->"
TITLE = "What a release touches, what it refuses"

RESULTS = ("released", "refused")

# Every tag a case may use in `covers`, and what it means.
KNOWN_TAGS: dict[str, str] = {
    "bookinfo": "Istio's Bookinfo samples, as shipped",
    "gateway-mesh-pair": "a VirtualService bound to an ingress gateway beside (or with) the mesh",
    "fqdn-host": "hosts written as FQDNs (reviews.<ns>.svc.<domain>)",
    "short-host": "hosts written as the short service name (reviews)",
    "host-spelling": "a host spelling Istio reads differently from what it looks like",
    "port-selector": "destinations with port.number",
    "subset-less-route": "a route to the host without a subset",
    "subset-traffic-policy": "a subset with its own trafficPolicy",
    "dr-traffic-policy": "a DestinationRule trafficPolicy (mTLS, pools, outlier detection)",
    "dr-without-subsets": "a DestinationRule with no subsets",
    "delegate": "root and delegate VirtualServices",
    "tcp-tls": "tcp and tls sections beside http",
    "weight-zero": "weight-0 route entries",
    "extra-destination": "the owned route also sends to another subset",
    "colliding-route-name": "a user's route already has the canary match route's name",
    "header-route-kept": "a user's match route ahead of the owned route (Bookinfo's end-user: jason)",
    "route-name": "the owned route chosen with route_name",
    "route-fields-kept": "retries, timeout, headers, fault on the owned route",
    "header-strategy": "the header (user-agent: canary) strategy",
    "cookie-strategy": "the cookie (canary=true) strategy",
    "export-to": "exportTo on a VirtualService or DestinationRule",
    "version-label": "versions in a label other than version",
    "service-selector": "a Service selector other than app: <service>",
    "mesh-domain": "a cluster DNS domain other than cluster.local",
    "live-traffic-off-stable": "the owned route's traffic is not all on stable_version",
    "other-vs-routes-to-service": "another VirtualService routes to the service",
    "duplicate-host": "two VirtualServices or DestinationRules for one host",
    "subset-conflict": "a subset with the canary's name selects other pods",
    "no-catch-all": "no catch-all route and no route_name",
    "other-objects-untouched": "other services' VirtualServices and DestinationRules in the namespace",
}

# Tags the corpus must cover: the configurations every release must be proven against.
REQUIRED_TAGS: frozenset[str] = frozenset({
    "bookinfo",
    "gateway-mesh-pair",
    "fqdn-host",
    "short-host",
    "port-selector",
    "subset-less-route",
    "subset-traffic-policy",
    "delegate",
    "tcp-tls",
    "weight-zero",
    "extra-destination",
    "colliding-route-name",
})


@dataclass(frozen=True)
class Case:
    """One corpus file, as read (no checks beyond being a YAML mapping)."""

    name: str
    path: Path
    description: str
    covers: tuple[str, ...]
    params: dict[str, Any]
    objects: list[dict[str, Any]]
    expect: dict[str, Any]

    @property
    def result(self) -> str:
        return str(self.expect.get("result", ""))

    @property
    def refused(self) -> bool:
        return self.result == "refused"


def case_files(directory: Path = CORPUS_DIR) -> list[Path]:
    return sorted(directory.glob("*.yaml"))


def load_case(path: Path) -> Case:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: not a YAML mapping")
    return Case(
        name=path.stem,
        path=path,
        description=str(data.get("description", "")),
        covers=tuple(data.get("covers") or ()),
        params=dict(data.get("params") or {}),
        objects=list(data.get("objects") or []),
        expect=dict(data.get("expect") or {}),
    )


def load_cases(directory: Path = CORPUS_DIR) -> list[Case]:
    return [load_case(path) for path in case_files(directory)]


def _cell(text: str) -> str:
    """Table-safe: one line, pipes escaped, `<`/`>` as entities (Markdown would read `<ns>` as a tag)."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def render_table(cases: Iterable[Case]) -> str:
    """The Markdown block: a title, one line of explanation, the table (released first, then refused)."""
    ordered = sorted(cases, key=lambda c: (RESULTS.index(c.result) if c.result in RESULTS else 9, c.name))
    released = sum(1 for c in ordered if c.result == "released")
    refused = sum(1 for c in ordered if c.refused)
    lines = [
        f"### {TITLE}",
        "",
        f"{len(ordered)} configurations from `tests/fixtures/realworld/` ({released} released, {refused} "
        "refused), each run against the sandbox by `tests/integration/test_realworld_corpus.py`. A release "
        "touches only the owned route, the canary match route it inserts and the subsets it adds; everything "
        "else stays byte-identical. A refusal comes before the first write and names the object, the field "
        "and the fix. Regenerate with `python -m tools.realworld_table --write README.md`.",
        "",
        "| Case | Configuration | Result | Field | Fix |",
        "|---|---|---|---|---|",
    ]
    for case in ordered:
        if case.refused:
            result = f"refused: {_cell(str(case.expect.get('object', '')))}"
            field = _code(_cell(str(case.expect.get("field", ""))))
            fix = _cell(str(case.expect.get("fix", "")))
        else:
            result, field, fix = _cell(case.result), "", ""
        lines.append(f"| `{case.name}` | {_cell(case.description)} | {result} | {field} | {fix} |")
    return "\n".join(lines) + "\n"


def extract_block(text: str) -> str | None:
    """What stands between the markers, or None when they are missing or out of order."""
    start, end = text.find(START_MARKER), text.find(END_MARKER)
    if start < 0 or end < start:
        return None
    return text[start + len(START_MARKER):end]


def replace_block(text: str, table: str) -> str:
    """`text` with the block between the markers replaced; a marked section appended if missing."""
    block = f"{START_MARKER}\n{table.rstrip()}\n{END_MARKER}"
    start, end = text.find(START_MARKER), text.find(END_MARKER)
    if start < 0 or end < start:
        return text.rstrip("\n") + "\n\n" + block + "\n"
    return text[:start] + block + text[end + len(END_MARKER):]


def is_current(text: str, table: str) -> bool:
    block = extract_block(text)
    return block is not None and block.strip() == table.strip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.realworld_table", description=TITLE)
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--check", metavar="FILE", type=Path, help="exit 1 if FILE's table is not current")
    action.add_argument("--write", metavar="FILE", type=Path, help="write the current table into FILE")
    parser.add_argument("--corpus", type=Path, default=CORPUS_DIR, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    table = render_table(load_cases(args.corpus))
    if args.check is not None:
        text = args.check.read_text()
        if extract_block(text) is None:
            print(f"{args.check}: no {START_MARKER} ... {END_MARKER} block; run with --write {args.check}",
                  file=sys.stderr)
            return 1
        if not is_current(text, table):
            print(f"{args.check}: the real-world table is stale; run python -m tools.realworld_table "
                  f"--write {args.check}", file=sys.stderr)
            return 1
        print(f"{args.check}: the real-world table is current")
        return 0
    if args.write is not None:
        text = args.write.read_text() if args.write.exists() else ""
        updated = replace_block(text, table)
        if updated != text:
            args.write.write_text(updated)
            print(f"{args.write}: real-world table written")
        else:
            print(f"{args.write}: real-world table already current")
        return 0
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
