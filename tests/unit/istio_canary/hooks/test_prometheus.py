"""PrometheusHook against a real Prometheus server and a real local HTTP server (no mocks)."""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from istio_canary.core.analysis_config import AnalysisConfig, CustomMetric
from istio_canary.core.judge import final_verdict
from istio_canary.core.judge_state import Observation
from istio_canary.core.promql import counter_snapshot_query, error_count_query, p99_query, request_count_query
from istio_canary.core.samples import CounterSnapshot, measurements_from_results, with_latency
from istio_canary.core.verdict import VerdictOutcome
from istio_canary.hooks.prometheus import (
    PrometheusHook,
    PrometheusQueryError,
    PrometheusUnavailableError,
    aquery,
    connection_config_from,
)

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
needs_prometheus = pytest.mark.skipif(not os.access(PROMETHEUS, os.X_OK), reason="prometheus binary missing")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrometheusServer:
    """A real Prometheus with an empty scrape config, in its own process group. `openmetrics`
    text, if given, is backfilled into its storage with promtool before it starts."""

    def __init__(self, workdir: Path, openmetrics: str | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        if openmetrics is not None:
            source = workdir / "backfill.om"
            source.write_text(openmetrics)
            subprocess.run(
                [
                    shutil.which("promtool") or "/usr/bin/promtool",
                    "tsdb",
                    "create-blocks-from",
                    "openmetrics",
                    str(source),
                    str(workdir / "data"),
                ],
                check=True,
                capture_output=True,
                timeout=120,
            )
        config = workdir / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
        self.log_path = workdir / "prometheus.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prometheus not ready after {timeout}s")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    if not os.access(PROMETHEUS, os.X_OK):
        pytest.skip("prometheus binary missing")
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"))
    yield server
    server.stop()


def _config(url: str, **extra: Any) -> dict[str, Any]:
    return {"url": url, "headers": {}, "verify": True, "timeout": 5.0, **extra}


# ---------------------------------------------------------------- a recording HTTP server


class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[dict[str, Any]]

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        self.server.seen.append(  # type: ignore[attr-defined]
            {"path": parts.path, "query": parse_qs(parts.query), "headers": dict(self.headers.items())}
        )
        body = json.dumps(
            {
                "status": "success",
                "data": {
                    "resultType": "vector",
                    "result": [{"metric": {"destination_version": "v2"}, "value": [1700000000.0, "42"]}],
                },
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass


@pytest.fixture
def recorder() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _recorder_url(server: http.server.ThreadingHTTPServer) -> tuple[str, int]:
    port = server.server_address[1]
    return f"http://127.0.0.1:{port}", port


# ---------------------------------------------------------------- connection settings


def test_connection_config_builds_url_from_host_port_and_schema() -> None:
    assert connection_config_from(host="prom.monitoring", port=9090, schema="https")["url"] == (
        "https://prom.monitoring:9090"
    )
    assert connection_config_from(host="prom", port=None, schema=None)["url"] == "http://prom"
    # The host may already carry scheme and a path prefix.
    config = connection_config_from(host="https://prom.example/prometheus/", port=None, schema="http")
    assert config["url"] == "https://prom.example/prometheus"
    assert config["verify"] is True
    assert config["timeout"] == 10.0


def test_connection_config_auth_headers_and_tls_options() -> None:
    basic = connection_config_from(host="p", login="alice", password="s3cr3t")
    assert basic["headers"]["Authorization"] == "Basic " + base64.b64encode(b"alice:s3cr3t").decode()
    token = connection_config_from(host="p", extra={"token": "tok-123"})
    assert token["headers"]["Authorization"] == "Bearer tok-123"
    password_token = connection_config_from(host="p", password="tok-456")
    assert password_token["headers"]["Authorization"] == "Bearer tok-456"
    assert "Authorization" not in connection_config_from(host="p")["headers"]
    tls = connection_config_from(
        host="p", extra={"verify": "false", "timeout_seconds": 3, "headers": {"X-Scope-OrgID": "t1"}}
    )
    assert tls["verify"] is False and tls["timeout"] == 3.0 and tls["headers"] == {"X-Scope-OrgID": "t1"}
    assert connection_config_from(host="p", extra={"verify": "/etc/ca.pem"})["verify"] == "/etc/ca.pem"
    # Credentials inside the URL go to the header, not into the (logged) URL.
    in_url = connection_config_from(host="https://bob:pw@prom.example:9443")
    assert in_url["url"] == "https://prom.example:9443"
    assert in_url["headers"]["Authorization"] == "Basic " + base64.b64encode(b"bob:pw").decode()
    with pytest.raises(ValueError, match="scheme"):
        connection_config_from(host="ftp://prom")
    with pytest.raises(ValueError, match="timeout_seconds"):
        connection_config_from(host="p", extra={"timeout_seconds": 0})


def test_basic_auth_header_reaches_the_server_sync_and_async(recorder) -> None:
    _url, port = _recorder_url(recorder)
    config = connection_config_from(host="127.0.0.1", port=port, schema="http", login="alice", password="pw")
    hook = PrometheusHook(config=config)
    result = hook.query("up", at=1700000000.5)
    assert result == [{"metric": {"destination_version": "v2"}, "value": [1700000000.0, "42"]}]
    assert asyncio.run(aquery(config, "up", at=1700000001)) == result
    expected = "Basic " + base64.b64encode(b"alice:pw").decode()
    assert [r["headers"].get("Authorization") for r in recorder.seen] == [expected, expected]
    assert [r["path"] for r in recorder.seen] == ["/api/v1/query", "/api/v1/query"]
    assert recorder.seen[0]["query"] == {"query": ["up"], "time": ["1700000000.5"]}
    assert recorder.seen[1]["query"]["time"] == ["1700000001.0"]


def test_bearer_token_and_extra_headers_reach_the_server(recorder) -> None:
    _url, port = _recorder_url(recorder)
    config = connection_config_from(
        host="127.0.0.1", port=port, extra={"token": "tok-xyz", "headers": {"X-Scope-OrgID": "team-a"}}
    )
    PrometheusHook(config=config).query("up")
    asyncio.run(aquery(config, "up"))
    for seen in recorder.seen:
        assert seen["headers"]["Authorization"] == "Bearer tok-xyz"
        assert seen["headers"]["X-Scope-OrgID"] == "team-a"
        assert "time" not in seen["query"]


# ---------------------------------------------------------------- a real Prometheus


@pytest.mark.integration
@needs_prometheus
def test_query_vector_sync_and_async(prometheus: PrometheusServer) -> None:
    hook = PrometheusHook(config=_config(prometheus.url))
    [sample] = hook.query("vector(1)")
    assert sample["metric"] == {} and sample["value"][1] == "1"
    [sample] = asyncio.run(hook.aquery('label_replace(vector(2), "destination_version", "v2", "", "")'))
    assert sample["metric"] == {"destination_version": "v2"} and sample["value"][1] == "2"
    # Scalars come back as one-sample vectors too.
    [sample] = hook.query("scalar(vector(3))")
    assert sample["value"][1] == "3"
    assert hook.test_connection()[0] is True


@pytest.mark.integration
@needs_prometheus
def test_get_conn_is_the_library_client_on_the_hooks_session(prometheus: PrometheusServer) -> None:
    hook = PrometheusHook(config=_config(prometheus.url, headers={"X-Scope-OrgID": "team-a"}))
    client = hook.get_conn()
    # prometheus-api-client's own calls go through the hook's session: same headers and TLS option.
    assert client.check_prometheus_connection()
    assert client.custom_query("vector(4)")[0]["value"][1] == "4"
    assert hook.session.headers["X-Scope-OrgID"] == "team-a"


@pytest.mark.integration
@needs_prometheus
def test_bad_query_reports_server_parse_error_and_the_query(prometheus: PrometheusServer) -> None:
    bad = 'sum(rate(istio_requests_total{reporter="destination"[30s]))'
    hook = PrometheusHook(config=_config(prometheus.url))
    with pytest.raises(PrometheusQueryError) as sync_error:
        hook.query(bad)
    assert not isinstance(sync_error.value, PrometheusUnavailableError)
    assert "parse error" in sync_error.value.message and "bad_data" in sync_error.value.message
    assert bad in str(sync_error.value) and sync_error.value.query == bad
    with pytest.raises(PrometheusQueryError) as async_error:
        asyncio.run(aquery(_config(prometheus.url), bad))
    assert not isinstance(async_error.value, PrometheusUnavailableError)
    assert "parse error" in async_error.value.message and bad in str(async_error.value)


@pytest.mark.integration
@needs_prometheus
def test_stopped_prometheus_is_unavailable(tmp_path: Path) -> None:
    server = PrometheusServer(tmp_path / "short-lived")
    try:
        hook = PrometheusHook(config=_config(server.url))
        assert hook.query("vector(1)")[0]["value"][1] == "1"
    finally:
        server.stop()
    with pytest.raises(PrometheusUnavailableError) as sync_error:
        hook.query("vector(1)")
    assert "vector(1)" in str(sync_error.value) and server.url in sync_error.value.message
    with pytest.raises(PrometheusUnavailableError) as async_error:
        asyncio.run(aquery(_config(server.url), "vector(1)"))
    assert "vector(1)" in str(async_error.value)


@pytest.mark.integration
@needs_prometheus
def test_connection_from_environment_and_no_secrets_in_logs(
    prometheus: PrometheusServer, monkeypatch: pytest.MonkeyPatch, capsys, caplog
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_PROMETHEUS_DEFAULT",
        json.dumps(
            {
                "conn_type": "http",
                "host": "127.0.0.1",
                "port": prometheus.port,
                "schema": "http",
                "login": "admin",
                "password": "hunter2-secret",
            }
        ),
    )
    hook = PrometheusHook()
    assert "hunter2" not in str(hook)
    [sample] = hook.query("vector(1)")  # Prometheus ignores the basic auth header
    assert sample["value"][1] == "1"
    [sample] = asyncio.run(PrometheusHook().aquery("vector(5)"))
    assert sample["value"][1] == "5"
    basic = base64.b64encode(b"admin:hunter2-secret").decode()
    captured = capsys.readouterr()
    shown = str(hook) + repr(hook) + captured.out + captured.err + caplog.text
    assert f"127.0.0.1:{prometheus.port}" in str(hook)
    assert "PromQL at" in shown and "vector(5)" in shown  # the query log was captured
    assert "hunter2-secret" not in shown and basic not in shown
    assert hook.connection_config()["headers"]["Authorization"] == f"Basic {basic}"


# ---------------------------------------------------------------- the analysis queries on real data

STEP = 15  # seconds between samples
PER_STEP = {  # version -> (requests by response code, requests by latency bucket upper bound)
    "v1": ({"200": 696, "503": 4}, {"50": 686, "100": 14}),  # p99 = 75 ms, 0.57 % errors
    "v2": ({"200": 95, "500": 5}, {"50": 90, "500": 10}),  # p99 = 475 ms, 5 % errors
}
BUCKETS = ["5", "10", "25", "50", "100", "250", "500", "1000", "+Inf"]


def _istio_openmetrics(start: int, steps: int) -> str:
    """Istio standard metrics for `reviews` in `shop` (plus series the queries must ignore)."""
    labels = (
        'destination_service_name="{svc}",destination_workload_namespace="shop",destination_version="{v}"'
    )
    lines = ["# TYPE istio_requests counter"]
    for reporter, service in (("destination", "reviews"), ("source", "reviews"), ("destination", "ratings")):
        for version, (codes, _) in PER_STEP.items():
            for code, per_step in codes.items():
                series = (
                    f'reporter="{reporter}",{labels.format(svc=service, v=version)},response_code="{code}"'
                )
                lines += [
                    f"istio_requests_total{{{series}}} {per_step * k} {start + STEP * k}"
                    for k in range(steps)
                ]
    lines.append("# TYPE istio_request_duration_milliseconds histogram")
    for version, (_, buckets) in PER_STEP.items():
        series = f'reporter="destination",{labels.format(svc="reviews", v=version)}'
        total = sum(buckets.values())
        for k in range(steps):
            at = start + STEP * k
            for le in BUCKETS:
                below = total if le == "+Inf" else sum(n for b, n in buckets.items() if float(b) <= float(le))
                lines.append(
                    f'istio_request_duration_milliseconds_bucket{{{series},le="{le}"}} {below * k} {at}'
                )
            lines.append(f"istio_request_duration_milliseconds_count{{{series}}} {total * k} {at}")
            lines.append(f"istio_request_duration_milliseconds_sum{{{series}}} {40 * total * k} {at}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@pytest.mark.integration
@needs_prometheus
@pytest.mark.skipif(
    not shutil.which("promtool") and not os.access("/usr/bin/promtool", os.X_OK), reason="no promtool"
)
def test_analysis_queries_on_istio_metrics_in_a_real_prometheus(tmp_path: Path) -> None:
    start = (int(time.time()) // 3600 - 4) * 3600  # hours ago: backfilled blocks, not the head
    server = PrometheusServer(tmp_path / "istio", openmetrics=_istio_openmetrics(start, steps=61))
    try:
        hook = PrometheusHook(config=_config(server.url))
        versions = ["v1", "v2"]
        watch_start, now = start + 60, start + 360

        # Exact counts: raw counters at the watch start and now, differenced.
        snapshot_query = counter_snapshot_query("reviews", "shop", versions)
        before = CounterSnapshot.from_results(hook.query(snapshot_query, at=watch_start), at=watch_start)
        after = CounterSnapshot.from_results(hook.query(snapshot_query, at=now), at=now)
        counts = after.since(before, versions)
        assert (counts["v1"].requests, counts["v1"].errors) == (14000, 80)
        assert (counts["v2"].requests, counts["v2"].errors) == (2000, 100)

        # Windowed form: increase() extrapolates; rounded it lands on the same counts here.
        window = now - watch_start
        measured = measurements_from_results(
            versions,
            requests=hook.query(request_count_query("reviews", "shop", versions, window), at=now),
            errors=hook.query(error_count_query("reviews", "shop", versions, window), at=now),
            p99=hook.query(p99_query("reviews", "shop", versions, window), at=now),
        )
        assert measured["v1"].requests == pytest.approx(14000, rel=0.05)
        assert measured["v2"].errors == pytest.approx(100, rel=0.05)
        assert measured["v1"].p99_ms == pytest.approx(75.0)
        assert measured["v2"].p99_ms == pytest.approx(475.0)

        custom = CustomMetric(
            name="server_errors",
            query='sum(increase(istio_requests_total{reporter="destination",destination_service_name="{service}",'
            'destination_version="{version}",response_code=~"5.."}[{window}]))',
            direction="lower",
            threshold=10,
        )
        rendered = custom.render(service="reviews", namespace="shop", version="v2", window_seconds=window)
        [sample] = hook.query(rendered, at=now)
        assert float(sample["value"][1]) == pytest.approx(100, rel=0.05)

        # The judge on these numbers: a 5 % canary with a 475 ms p99 next to a healthy stable.
        canary = with_latency(counts["v2"], measured["v2"].p99_ms)
        stable = with_latency(counts["v1"], measured["v1"].p99_ms)
        config = AnalysisConfig.from_params({"bake_seconds": 300})
        verdict, _ = final_verdict(
            config, Observation(canary=canary, stable=stable, window_canary=canary, window_stable=stable)
        )
        assert verdict.outcome is VerdictOutcome.FAIL
        failed = {r.name for r in verdict.reasons if r.outcome is VerdictOutcome.FAIL}
        # One interval never decides errors_vs_stable (its evidence is capped per interval).
        assert {"errors_vs_max", "error_rate", "p99_vs_stable"} <= failed
    finally:
        server.stop()
