"""Label and field selectors (`?labelSelector=`, `?fieldSelector=`), as list and watch apply them."""

from __future__ import annotations

import re
from typing import Any

from sandbox.apiserver.errors import bad_request

# One parsed label requirement: (key, operator, values); operators "=", "!=", "in", "notin",
# "exists" and "!" (does not exist).
LabelRequirement = tuple[str, str, tuple[str, ...]]

_SELECTOR_TERM = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9_./-]+)\s*"
    r"(?:(?P<op>==|!=|=|\s+in\s+|\s+notin\s+)\s*(?P<value>\([^)]*\)|[A-Za-z0-9_.-]*))?\s*$"
)


def _split_selector(text: str) -> list[str]:
    """Split on commas outside parentheses: `a in (x,y),b=c` -> two terms."""
    terms, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        terms.append(current)
    return terms


def parse_label_selector(text: str) -> list[LabelRequirement]:
    """`a=b,c!=d,e in (x,y),f notin (z),g,!h` -> [(key, op, values)]; raises ApiError 400."""
    requirements: list[LabelRequirement] = []
    for term in _split_selector(text or ""):
        found = _SELECTOR_TERM.match(term)
        if not found:
            raise bad_request(f"unable to parse requirement: {term.strip()!r}")
        key, op, value = found["key"], (found["op"] or "").strip(), found["value"] or ""
        if found["neg"]:
            if op:
                raise bad_request(f"unable to parse requirement: {term.strip()!r}")
            requirements.append((key, "!", ()))
        elif not op:
            requirements.append((key, "exists", ()))
        elif op in ("in", "notin"):
            if not (value.startswith("(") and value.endswith(")")):
                raise bad_request(f"unable to parse requirement: {term.strip()!r}: expected (values)")
            values = tuple(v.strip() for v in value[1:-1].split(",") if v.strip())
            requirements.append((key, op, values))
        else:
            requirements.append((key, "!=" if op == "!=" else "=", (value,)))
    return requirements


def labels_match(labels: dict[str, str], requirements: list[LabelRequirement]) -> bool:
    for key, op, values in requirements:
        present = key in labels
        if op == "exists" and not present:
            return False
        if op == "!" and present:
            return False
        if op in ("=", "in") and (not present or labels[key] not in values):
            return False
        if op in ("!=", "notin") and present and labels[key] in values:
            return False
    return True


def field_value(obj: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted path (`metadata.name`), None where the path ends early."""
    value: Any = obj
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def fields_match(obj: dict[str, Any], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in (selector or "").split(","))):
        negate = "!=" in term
        key, _, wanted = term.partition("!=" if negate else "=")
        wanted = wanted.lstrip("=")
        actual = field_value(obj, key.strip())
        actual_text = "" if actual is None else str(actual)
        if (actual_text == wanted) == negate:
            return False
    return True


def select(
    items: list[dict[str, Any]], requirements: list[LabelRequirement], field_selector: str
) -> list[dict[str, Any]]:
    """The items whose labels meet `requirements` and whose fields match `field_selector`."""
    return [
        o
        for o in items
        if labels_match((o.get("metadata") or {}).get("labels") or {}, requirements)
        and fields_match(o, field_selector)
    ]
