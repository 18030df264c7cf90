"""The "Release page" button on a release's tasks: the run's page in the release UI (`ui.app`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

RELEASE_PAGE_PREFIX = "/istio-canary"


def release_page_path(dag_id: str, run_id: str) -> str:
    return f"{RELEASE_PAGE_PREFIX}/releases/{quote(dag_id, safe='')}/{quote(run_id, safe='')}"


class ReleasePageLink(BaseOperatorLink):
    """Built when the task finishes (Airflow keeps it in XCom): `[api] base_url` + the page's
    path, or the path alone, which the UI opens on its own server."""

    name = "Release page"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow.configuration import conf

        base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
        return f"{base}{release_page_path(ti_key.dag_id, ti_key.run_id)}"
