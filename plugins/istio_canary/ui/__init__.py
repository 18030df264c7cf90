"""The release page: a FastAPI app the plugin mounts in Airflow's api-server (see `ui.app`).

`app` is a thin ASGI callable that builds the real app on its first request: the plugin module
is imported by every Airflow process (scheduler, workers, DAG processor), and only the
api-server ever serves it, so the others never import FastAPI or Airflow's API modules for it.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class LazyApp:
    """An ASGI app that creates `ui.app.create_app()` once, when first called."""

    def __init__(self) -> None:
        self._app: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "istio_canary.ui.app:create_app (release page)"

    def _get(self) -> Any:
        with self._lock:
            if self._app is None:
                from istio_canary.ui.app import create_app

                self._app = create_app()
        return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._get()(scope, receive, send)


app = LazyApp()
