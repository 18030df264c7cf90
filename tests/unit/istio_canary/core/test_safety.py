"""Input safety without a cluster: PromQL is built only from validated identifiers, connection ids
are checked, and every YAML document the project reads is loaded safely."""

from __future__ import annotations

import ast
import inspect
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import re2

from istio_canary.core import promql as promql_builders
from istio_canary.core.analysis_config import AnalysisConfig, CustomMetric
from istio_canary.core.request import ReleaseRequest
from istio_canary.core.validation import ValidationError, require_conn_id
from istio_canary.core.watch import WatchTarget

PROJECT_ROOT = Path(__file__).resolve().parents[4]
RELEASE = {"service": "reviews", "namespace": "bookinfo", "stable_version": "v1", "canary_version": "v2"}

# Attempts to break out of a PromQL label value, or to widen a regex matcher.
INJECTIONS = [
    'reviews"} or vector(1) #',
    'v1",x="',
    'v1"',
    "v1\\",
    "v1}",
    "v1|.*",
    ".*",
    "v1 or vector(1)",
    "v1\n",
    "v1\u2028",
    "v\uff11",  # a full-width digit one
    "v1)",
    "",
]


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("bad", INJECTIONS)
@pytest.mark.parametrize("field", ["service", "namespace", "stable_version", "canary_version"])
def test_injection_in_a_name_is_refused_at_validation(field: str, bad: str) -> None:
    with pytest.raises(ValidationError) as error:
        ReleaseRequest.from_params({**RELEASE, field: bad})
    # An empty required value is "required"; anything else names the value as given.
    assert error.value.field == field and error.value.value == bad
    assert field in str(error.value)


@pytest.mark.parametrize("conn_id", ["kubernetes_default", "prom-eu.1", "team/prometheus", "k8s:prod#2"])
def test_connection_ids_airflow_accepts_pass(conn_id: str) -> None:
    assert require_conn_id("kubernetes_conn_id", conn_id) == conn_id
    ReleaseRequest.from_params({**RELEASE, "kubernetes_conn_id": conn_id, "prometheus_conn_id": conn_id})


@pytest.mark.parametrize("conn_id", ["my conn", "prom\n", "../../etc/passwd", "a..b", "", "x" * 251, 7, "prom€"])
@pytest.mark.parametrize("field", ["kubernetes_conn_id", "prometheus_conn_id"])
def test_bad_connection_ids_are_refused_naming_field_and_value(field: str, conn_id: Any) -> None:
    with pytest.raises(ValidationError) as error:
        ReleaseRequest.from_params({**RELEASE, field: conn_id})
    assert error.value.field == field and error.value.value == conn_id
    assert f"{field}={conn_id!r}" in str(error.value)


# --------------------------------------------------------------------------- PromQL builders

_STRING = r'"(?:[^"\\\n]|\\.)*"'
_MATCHER = re.compile(rf"([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*({_STRING})")


def selectors(promql: str) -> list[dict[str, tuple[str, str]]]:
    """Each `{...}` label selector of `promql` as {label: (operator, unquoted value)}.

    Fails when the text outside string literals holds a quote, a comment or a line break, or a
    selector holds anything besides comma-separated matchers: the marks of an injection."""
    outside = re.sub(_STRING, '""', promql)
    assert '"' not in outside.replace('""', ""), f"unterminated string in {promql!r}"
    assert "#" not in outside and "\n" not in outside, f"comment or line break in {promql!r}"
    found = []
    for body in re.findall(r"\{((?:[^{}\"]|" + _STRING + r")*)\}", promql):
        matchers = {}
        rest = _MATCHER.sub("", body)
        assert rest.replace(",", "").strip() == "", f"not just matchers: {body!r}"
        for label, op, literal in _MATCHER.findall(body):
            assert label not in matchers, f"{label} matched twice in {body!r}"
            matchers[label] = (op, json.loads(literal))  # PromQL strings escape as JSON/Go does
        found.append(matchers)
    assert found, f"no label selector in {promql!r}"
    return found


def builtin_builders() -> dict[str, Callable[..., str]]:
    """Every public `*_query` function defined in core/promql.py."""
    return {
        name: fn for name, fn in inspect.getmembers(promql_builders, inspect.isfunction)
        if name.endswith("_query") and not name.startswith("_") and fn.__module__ == promql_builders.__name__
    }


def call_builder(fn: Callable[..., str], service: str, namespace: str, versions: list[str]) -> str:
    values = {"service": service, "namespace": namespace, "versions": versions, "window_seconds": 60,
              "label": "destination_version"}
    params = inspect.signature(fn).parameters
    unknown = set(params) - set(values)
    assert not unknown, f"{fn.__name__} takes {unknown}: teach this test what to pass"
    return fn(**{name: values[name] for name in params})


def custom_builder(service: str, namespace: str, versions: list[str]) -> str:
    metric = CustomMetric(name="errs", direction="lower", threshold=1,
                          query='sum(rate(app_errors_total{app="{service}",ns="{namespace}",v="{version}"}[{window}]))')
    return " or ".join(metric.render(service=service, namespace=namespace, version=v, window_seconds=60)
                       for v in versions)


def all_builders() -> list[Any]:
    """pytest params: every built-in builder, and a custom metric's render."""
    params = [pytest.param(lambda s, n, v, fn=fn: call_builder(fn, s, n, v), id=name)
              for name, fn in sorted(builtin_builders().items())]
    return [*params, pytest.param(custom_builder, id="CustomMetric.render")]


def test_the_builtin_builders_are_all_found() -> None:
    assert {"request_count_query", "error_count_query", "p99_query", "counter_snapshot_query",
            "scrape_time_query", "error_ratio_graph_query"} <= set(builtin_builders())


@pytest.mark.parametrize("build", all_builders())
@pytest.mark.parametrize("bad", INJECTIONS)
@pytest.mark.parametrize("position", ["service", "namespace", "version"])
def test_every_query_builder_refuses_injection(build: Callable[..., str], bad: str, position: str) -> None:
    args = {"service": "reviews", "namespace": "bookinfo", "versions": ["v1", "v2"]}
    if position == "version":
        args["versions"] = ["v1", bad]
    else:
        args[position] = bad
    with pytest.raises(ValidationError) as error:
        build(args["service"], args["namespace"], args["versions"])
    assert error.value.field == position and error.value.value == bad


# Legal Kubernetes version label values, with look-alikes an unescaped regex would also match.
LEGAL_VERSIONS = [("1.2.0", ["1x2x0", "1-2-0"]), ("v1.2_rc", ["v1x2_rc"]), ("Reviews", ["reviews"])]


@pytest.mark.parametrize("build", all_builders())
@pytest.mark.parametrize(("version", "lookalikes"), LEGAL_VERSIONS)
def test_legal_versions_become_exact_label_matches(
    build: Callable[..., str], version: str, lookalikes: list[str]
) -> None:
    promql = build("reviews", "bookinfo", ["v1", version])
    for matchers in selectors(promql):
        if "destination_version" in matchers:  # a built-in query
            assert set(matchers) - {"response_code"} == {
                "reporter", "destination_service_name", "destination_workload_namespace", "destination_version"}
            assert matchers["destination_service_name"] == ("=", "reviews")
            assert matchers["destination_workload_namespace"] == ("=", "bookinfo")
            op, pattern = matchers["destination_version"]
            assert op == "=~"
            # Prometheus anchors the regex (RE2) at both ends.
            assert re2.fullmatch(pattern, version) and re2.fullmatch(pattern, "v1"), (pattern, promql)
            for other in lookalikes:
                assert not re2.fullmatch(pattern, other), (pattern, other)
        else:  # the custom template: exact values where the template put them
            assert matchers["app"] == ("=", "reviews") and matchers["ns"] == ("=", "bookinfo")
            assert set(matchers) == {"app", "ns", "v"} and matchers["v"][1] in ("v1", version)


def test_any_version_a_request_accepts_can_be_watched() -> None:
    # A request valid at validation must not fail later, in the watch, after routes were written.
    request = ReleaseRequest.from_params({**RELEASE, "stable_version": "1.2.0", "canary_version": "1.3.0_rc",
                                          "stable_subset": "stable", "canary_subset": "canary"})
    target = WatchTarget(request.service, request.namespace, request.stable_version, request.canary_version)
    history = target.history_queries(AnalysisConfig.from_params({"bake_seconds": 30}))
    for promql in (target.snapshot_query(), target.freshness_query(), target.latency_query(30), *history):
        [pattern] = [m["destination_version"][1] for m in selectors(promql)]
        assert re2.fullmatch(pattern, "1.2.0") and not re2.fullmatch(pattern, "1x2x0"), pattern
    [pattern] = [m["destination_version"][1] for m in selectors(target.snapshot_query())]
    assert re2.fullmatch(pattern, "1.3.0_rc")


# --------------------------------------------------------------------------- YAML


SCANNED_DIRS = ("plugins", "dags", "sandbox", "tools", "bench")
SAFE_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}
UNSAFE_LOADERS = {"Loader", "FullLoader", "UnsafeLoader", "CLoader", "CFullLoader", "CUnsafeLoader"}
UNSAFE_FUNCTIONS = {"unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}
LOADING_FUNCTIONS = {"load", "load_all"}  # safe only with an explicit safe Loader


def _loader_names(node: ast.AST) -> set[str]:
    """Loader-looking names an expression mentions: attributes, names and getattr strings."""
    names = set()
    for sub in ast.walk(node):
        text = (sub.attr if isinstance(sub, ast.Attribute) else sub.id if isinstance(sub, ast.Name)
                else sub.value if isinstance(sub, ast.Constant) and isinstance(sub.value, str) else "")
        if text.endswith("Loader"):
            names.add(text)
    return names


def _assignments(tree: ast.AST, call: ast.Call) -> dict[str, list[ast.expr]]:
    """Values assigned to each plain name in the function (or module) that holds `call`."""
    scope: ast.AST = tree
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and any(n is call for n in ast.walk(node)):
            scope = node  # the innermost wins: ast.walk goes outside in
    values: dict[str, list[ast.expr]] = {}
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    values.setdefault(target.id, []).append(node.value)
    return values


def _safe_loader(tree: ast.AST, call: ast.Call, loader: ast.expr) -> bool:
    values = [loader]
    if isinstance(loader, ast.Name) and loader.id not in SAFE_LOADERS:
        values = _assignments(tree, call).get(loader.id, [])
    return bool(values) and all(_loader_names(v) and _loader_names(v) <= SAFE_LOADERS for v in values)


def unsafe_yaml_uses(source: str, filename: str = "<string>") -> list[str]:
    """`file:line: what` for every use of PyYAML that can build arbitrary Python objects."""
    tree = ast.parse(source, filename)
    modules = {"yaml"}  # names bound to the yaml module
    loaders: set[str] = set()  # names bound to yaml.load / yaml.load_all
    found = []

    def report(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{node.lineno}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name == "yaml"}
        elif isinstance(node, ast.ImportFrom) and node.module == "yaml":
            for alias in node.names:
                if alias.name in UNSAFE_FUNCTIONS | UNSAFE_LOADERS or alias.name == "*":
                    report(node, f"from yaml import {alias.name}")
                elif alias.name in LOADING_FUNCTIONS:
                    loaders.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                and node.attr in UNSAFE_FUNCTIONS | UNSAFE_LOADERS):
            report(node, f"yaml.{node.attr}")
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (isinstance(func, ast.Name) and func.id == "getattr" and len(node.args) >= 2
                and isinstance(node.args[0], ast.Name) and node.args[0].id in modules
                and isinstance(node.args[1], ast.Constant) and node.args[1].value in UNSAFE_FUNCTIONS | UNSAFE_LOADERS):
            report(node, f"getattr(yaml, {node.args[1].value!r})")
        loading = (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                   and func.value.id in modules and func.attr in LOADING_FUNCTIONS) or (
                       isinstance(func, ast.Name) and func.id in loaders)
        if loading:
            loader = next((k.value for k in node.keywords if k.arg == "Loader"), None)
            if loader is None and len(node.args) > 1:
                loader = node.args[1]
            if loader is None or not _safe_loader(tree, node, loader):
                report(node, f"{ast.unparse(func)}(...) without a Loader known to be safe")
    return sorted(found)


def project_python_files() -> list[Path]:
    files = [p for d in SCANNED_DIRS for p in (PROJECT_ROOT / d).rglob("*.py")]
    assert len(files) > 20, f"found only {files}"
    return sorted(files)


def test_project_loads_yaml_only_safely() -> None:
    problems = [problem for path in project_python_files()
                for problem in unsafe_yaml_uses(path.read_text(), str(path.relative_to(PROJECT_ROOT)))]
    assert problems == [], "unsafe YAML loading:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("import yaml\nyaml.safe_load(s)", False),
        ("import yaml\nyaml.safe_dump(d)", False),
        ("import yaml\nyaml.load(s, Loader=yaml.SafeLoader)", False),
        ("import yaml\ndef f():\n    loader = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)\n"
         "    return yaml.load_all(s, Loader=loader)", False),
        ("from yaml import safe_load\nsafe_load(s)", False),
        ("import yaml\nyaml.load(s)", True),
        ("import yaml\nyaml.load(s, Loader=yaml.Loader)", True),
        ("import yaml\nyaml.load(s, yaml.FullLoader)", True),
        ("import yaml\nyaml.unsafe_load(s)", True),
        ("import yaml as y\ny.full_load(s)", True),
        ("from yaml import load\nload(s, Loader=L)", True),
        ("from yaml import FullLoader", True),
        ("from yaml import unsafe_load as ul", True),
        ("import yaml\nloader = yaml.UnsafeLoader\nyaml.load(s, Loader=loader)", True),
        ("import yaml\nyaml.load(s, Loader=getattr(yaml, 'CLoader'))", True),
        ("import yaml\nyaml.add_constructor('!x', f, Loader=yaml.Loader)", True),
    ],
)
def test_the_yaml_scan_tells_safe_from_unsafe(source: str, flagged: bool) -> None:
    problems = unsafe_yaml_uses(source, "example.py")
    assert bool(problems) == flagged, problems
    assert all(p.startswith("example.py:") for p in problems)
