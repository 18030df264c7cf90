"""PrometheusHook: instant PromQL queries, sync for operators and async for triggers.

Connection (`prometheus_default`, type `http`): host (may carry the scheme and a path,
e.g. `https://prom.example/prometheus`), port, schema (`http`/`https`), login/password for
basic auth, or a bearer token in extra `{"token": ...}` (or in password when login is
empty). Extra also takes `verify` (bool, or a CA bundle path), `timeout_seconds` (default
10) and `headers` (e.g. a tenant header for Thanos/Mimir).

Tasks query with `PrometheusHook.query` (requests); triggers, which cannot call
`get_connection` synchronously in Airflow 3, build the hook from the connection id, read
the connection with `aconnection_config()` and query with the module-level
`aquery(config, promql)` (aiohttp). Both transports hand the HTTP status and body to one
parser, `read_response`. Logs name the URL and the query, never credentials.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    import requests
    from prometheus_api_client import PrometheusConnect

DEFAULT_TIMEOUT_SECONDS = 10.0
QUERY_PATH = "/api/v1/query"
# Gateway and overload statuses: the server is not answering queries right now.
UNAVAILABLE_STATUS = {502, 503, 504}


class PrometheusQueryError(RuntimeError):
    """A query failed; carries the query text and the server's (or client's) message."""

    def __init__(self, query: str, message: str) -> None:
        self.query = query
        self.message = message
        super().__init__(f"Prometheus query failed: {message} (query: {query})")


class PrometheusUnavailableError(PrometheusQueryError):
    """Prometheus could not be reached or is not answering (refused, timeout, 5xx gateway)."""


def connection_config_from(
    *,
    host: str | None,
    port: int | None = None,
    schema: str | None = None,
    login: str | None = None,
    password: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The serializable request settings for a connection: url, headers, verify, timeout."""
    extra = dict(extra or {})
    if not host:
        raise ValueError("the Prometheus connection needs a host")
    if "://" in host:
        parts = urlsplit(host)
        scheme, netloc, path = parts.scheme, parts.netloc.rpartition("@")[2], parts.path
        # Credentials written into the URL move to the auth header, out of the logged URL.
        if parts.username and not login:
            login, password = unquote(parts.username), unquote(parts.password or "")
    else:
        scheme, (netloc, _, path) = (schema or "http"), host.partition("/")
        path = f"/{path}" if path else ""
    if scheme not in ("http", "https"):
        raise ValueError(f"the Prometheus connection's scheme must be http or https, not {scheme!r}")
    if port and not re.search(r":\d+$", netloc):
        netloc = f"{netloc}:{int(port)}"
    url = f"{scheme}://{netloc}{path}".rstrip("/")

    headers = {str(k): str(v) for k, v in (extra.get("headers") or {}).items()}
    if login:
        basic = base64.b64encode(f"{login}:{password or ''}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {basic}"
    elif extra.get("token") or password:
        headers["Authorization"] = f"Bearer {extra.get('token') or password}"

    verify = extra.get("verify", True)
    if isinstance(verify, str) and verify.strip().lower() in ("true", "false"):
        verify = verify.strip().lower() == "true"
    if not isinstance(verify, bool | str):
        raise ValueError(f"extra 'verify' must be true, false or a CA bundle path, not {verify!r}")
    timeout = float(extra.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS))
    if not timeout > 0:
        raise ValueError(f"extra 'timeout_seconds' must be > 0, not {timeout!r}")
    return {"url": url, "headers": headers, "verify": verify, "timeout": timeout}


def _as_vector(result: Any) -> list[dict[str, Any]]:
    # Scalar results come back as [ts, "value"]: make them a one-sample vector.
    if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
        return [{"metric": {}, "value": result}]
    return list(result or [])


def _server_message(status: int, body: str | bytes) -> str:
    """Prometheus' own error text (`errorType: error`) from a response body."""
    try:
        payload = json.loads(body)
        return f"{payload.get('errorType', 'error')}: {payload['error']} (HTTP {status})"
    except (ValueError, KeyError, TypeError, AttributeError):
        text = body.decode(errors="replace") if isinstance(body, bytes) else body
        return f"HTTP {status}: {text.strip()[:500]}"


def read_response(promql: str, status: int, body: bytes) -> list[dict[str, Any]]:
    """The result of an instant query from its HTTP status and body, for both transports:
    the samples, or the server's own error raised as `PrometheusQueryError` (unavailable
    for gateway and overload statuses)."""
    if status != 200:
        error_type = PrometheusUnavailableError if status in UNAVAILABLE_STATUS else PrometheusQueryError
        raise error_type(promql, _server_message(status, body))
    try:
        payload = json.loads(body)
        if payload.get("status") != "success":
            raise PrometheusQueryError(promql, _server_message(status, body))
        return _as_vector(payload["data"]["result"])
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise PrometheusQueryError(promql, f"unexpected response: {body[:200]!r}") from error


def _query_params(promql: str, at: float | None) -> dict[str, str]:
    params = {"query": promql}
    if at is not None:
        params["time"] = repr(float(at))
    return params


def _ssl_option(verify: bool | str) -> ssl.SSLContext | bool:
    if verify is True:
        return True
    if verify is False:
        return False
    return ssl.create_default_context(cafile=verify)


async def aquery(config: Mapping[str, Any], promql: str, at: float | None = None) -> list[dict[str, Any]]:
    """An instant query from a trigger (aiohttp, no blocking calls). `config` comes from
    `PrometheusHook.aconnection_config()`; `at` is an evaluation time in epoch seconds."""

    import aiohttp

    timeout = aiohttp.ClientTimeout(total=float(config.get("timeout", DEFAULT_TIMEOUT_SECONDS)))
    try:
        async with (
            aiohttp.ClientSession(headers=dict(config.get("headers") or {}), timeout=timeout) as session,
            session.get(
                config["url"] + QUERY_PATH,
                params=_query_params(promql, at),
                ssl=_ssl_option(config.get("verify", True)),
            ) as response,
        ):
            body = await response.read()
            status = response.status
    except (TimeoutError, aiohttp.ClientConnectionError) as error:
        raise PrometheusUnavailableError(
            promql, f"cannot reach Prometheus at {config['url']}: {error!r}"
        ) from error
    except aiohttp.ClientError as error:
        raise PrometheusQueryError(promql, f"request to {config['url']} failed: {error!r}") from error
    return read_response(promql, status, body)


class PrometheusHook(BaseHook):
    """Instant PromQL queries against the Prometheus of connection `prometheus_conn_id`."""

    conn_name_attr = "prometheus_conn_id"
    default_conn_name = "prometheus_default"
    conn_type = "http"
    hook_name = "Prometheus"

    def __init__(
        self, prometheus_conn_id: str = default_conn_name, *, config: Mapping[str, Any] | None = None
    ) -> None:
        """`config` (from `connection_config_from`) skips the connection lookup."""
        super().__init__()
        self.prometheus_conn_id = prometheus_conn_id
        self._config: dict[str, Any] | None = dict(config) if config is not None else None

    def __repr__(self) -> str:
        url = self._config["url"] if self._config else "<not loaded>"
        return f"{type(self).__name__}(prometheus_conn_id={self.prometheus_conn_id!r}, url={url!r})"

    __str__ = __repr__

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": [],
            "relabeling": {
                "host": "Host or URL",
                "schema": "Scheme (http or https)",
                "password": "Password, or bearer token when login is empty",
            },
            "placeholders": {
                "host": "prometheus.monitoring.svc.cluster.local",
                "port": "9090",
                "schema": "http",
                "extra": json.dumps({"verify": True, "timeout_seconds": 10, "token": "<bearer token>"}),
            },
        }

    # ------------------------------------------------------------------ configuration

    def connection_config(self) -> dict[str, Any]:
        """url, headers (with credentials), verify and timeout: what `aquery` takes.
        It holds secrets: never log it, nor put it in trigger kwargs (stored in the database)."""
        if self._config is None:
            self._config = self._config_from(self.get_connection(self.prometheus_conn_id))
        return dict(self._config)

    async def aconnection_config(self) -> dict[str, Any]:
        """`connection_config` without blocking the event loop."""
        if self._config is None:
            self._config = self._config_from(await self.aget_connection(self.prometheus_conn_id))
        return dict(self._config)

    def _config_from(self, conn: Any) -> dict[str, Any]:
        config = connection_config_from(
            host=conn.host,
            port=conn.port,
            schema=conn.schema,
            login=conn.login,
            password=conn.password,
            extra=conn.extra_dejson,
        )
        authorization = config["headers"].get("Authorization")
        if authorization:
            # Airflow masks the password and extra itself; the derived header (base64 of
            # login:password) is a new string, so mask it too.
            from airflow.sdk.log import mask_secret

            mask_secret(authorization)
            mask_secret(authorization.split(" ", 1)[-1])
        return config

    # ------------------------------------------------------------------ queries

    @cached_property
    def session(self) -> requests.Session:
        """A requests session with the connection's headers, TLS option and quick retries."""
        import requests
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        config = self.connection_config()
        session = requests.Session()
        session.verify = config["verify"]
        session.headers.update(config["headers"])
        # Few, quick retries: the watch re-checks every few seconds anyway.
        retry = Retry(total=2, backoff_factor=0.2, status_forcelist=sorted(UNAVAILABLE_STATUS))
        session.mount(config["url"], HTTPAdapter(max_retries=retry))
        return session

    def get_conn(self) -> PrometheusConnect:
        """prometheus-api-client's client on this hook's session (same headers, TLS and retries),
        for code that wants the library's range and metadata queries. The pipeline's own instant
        queries use the session directly: the library reports a failed query only as exception
        text, and both transports here read the server's status and body with one parser."""
        from prometheus_api_client import PrometheusConnect

        config = self.connection_config()
        return PrometheusConnect(
            url=config["url"], headers=config["headers"] or None, session=self.session, timeout=config["timeout"]
        )

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query: a list of {"metric": {...}, "value": [ts, "value"]}."""
        import requests

        session = self.session
        config = self.connection_config()
        url = config["url"]
        self.log.info("PromQL at %s: %s", url, promql)
        try:
            response = session.get(
                url + QUERY_PATH, params=_query_params(promql, at), timeout=config["timeout"]
            )
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError) as error:
            raise PrometheusUnavailableError(
                promql, f"cannot reach Prometheus at {url}: {type(error).__name__}: {error}"
            ) from error
        except requests.RequestException as error:
            raise PrometheusQueryError(promql, f"request to {url} failed: {error}") from error
        return read_response(promql, response.status_code, response.content)

    async def aquery(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """`query` for async code: the connection is read without blocking the event loop."""
        config = await self.aconnection_config()
        self.log.info("PromQL at %s: %s", config["url"], promql)
        return await aquery(config, promql, at)

    def test_connection(self) -> tuple[bool, str]:
        try:
            self.query("vector(1)")
        except PrometheusQueryError as error:
            return False, str(error)
        return True, f"Prometheus at {self.connection_config()['url']} answered"
