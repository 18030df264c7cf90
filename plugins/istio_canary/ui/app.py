"""The release page's FastAPI app, mounted by the plugin at /istio-canary in the api-server.

    GET  /                                         releases per service (HTML)
    GET  /releases/{dag_id}/{run_id}               one release: summary, phases, charts, Abort (HTML)
    GET  /api/releases                             the list as JSON
    GET  /api/releases/{dag_id}/{run_id}           one release as JSON
    POST /api/releases/{dag_id}/{run_id}/abort     fail the running release tasks: rollback starts

Authentication is Airflow's own: a bearer JWT (from /auth/token) or the UI's session cookie,
checked by Airflow's `get_user`; authorization asks the auth manager as /api/v2 does (read a
DAG's runs; edit its task instances to abort). A browser without a session is sent to the
login page. A cookie-authenticated POST must come from this origin.
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import urlsplit

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from istio_canary.ui import views
from istio_canary.ui.render import Links

URL_PREFIX = "/istio-canary"
READ_RUN = Depends(requires_access_dag("GET", DagAccessEntity.RUN))
EDIT_TASKS = Depends(requires_access_dag("PUT", DagAccessEntity.TASK_INSTANCE))


def links_for(request: Request) -> Links:
    app_path = request.scope.get("root_path", "").rstrip("/") or URL_PREFIX
    return Links(app=app_path, airflow=app_path.removesuffix(URL_PREFIX))


def create_app() -> FastAPI:
    app = FastAPI(title="Istio canary releases", docs_url=None, redoc_url=None, openapi_url=None)
    app.exception_handler(HTTPException)(_login_or_error)

    @app.get("/", response_class=HTMLResponse)
    def release_list(request: Request, user: GetUserDep) -> HTMLResponse:
        return HTMLResponse(views.list_html(user, links_for(request)))

    @app.get("/releases/{dag_id}/{run_id}", response_class=HTMLResponse, dependencies=[READ_RUN])
    def release(request: Request, dag_id: str, run_id: str) -> HTMLResponse:
        return HTMLResponse(views.release_html(dag_id, run_id, links_for(request), request.query_params.get("abort")))

    @app.get("/api/releases")
    def release_list_json(user: GetUserDep) -> dict[str, Any]:
        return views.list_json(user)

    @app.get("/api/releases/{dag_id}/{run_id}", dependencies=[READ_RUN])
    def release_json(dag_id: str, run_id: str) -> dict[str, Any]:
        return views.release_json(dag_id, run_id)

    @app.post("/api/releases/{dag_id}/{run_id}/abort", dependencies=[EDIT_TASKS])
    def abort(request: Request, dag_id: str, run_id: str, user: GetUserDep) -> Response:
        return _abort(request, dag_id, run_id, user)

    return app


def _abort(request: Request, dag_id: str, run_id: str, user: Any) -> Response:
    from istio_canary.ui.abort import AbortRefused, abort_release

    _require_same_origin(request)
    from_form = request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
    try:
        result = abort_release(dag_id, run_id, user.get_name(), str(user.get_id()))
    except AbortRefused as refused:
        if from_form:
            return RedirectResponse(_page_url(request, dag_id, run_id, "refused"), status_code=303)
        return JSONResponse({"detail": str(refused)}, status_code=refused.status)
    if from_form:
        return RedirectResponse(_page_url(request, dag_id, run_id, "done"), status_code=303)
    return JSONResponse(result.to_dict())


def _page_url(request: Request, dag_id: str, run_id: str, abort: str) -> str:
    """The page after a form's abort. Only a word travels in the URL: the page says the rest
    from the run itself, so a crafted link cannot put text on it."""
    return f"{links_for(request).release(dag_id, run_id)}?abort={abort}"


def _require_same_origin(request: Request) -> None:
    """A POST that relies on the session cookie (no Authorization header) must come from a page
    of this server: the cookie is SameSite=Lax already; this also refuses a same-site other origin."""
    from airflow.configuration import conf

    if request.headers.get("authorization"):
        return
    origin = request.headers.get("origin") or request.headers.get("referer")
    # Behind a proxy the Host header may be the proxy's: `[api] base_url` names the public origin.
    allowed = {request.headers.get("host"), urlsplit(conf.get("api", "base_url", fallback="") or "").netloc} - {""}
    if origin is None or urlsplit(origin).netloc not in allowed:
        raise HTTPException(403, "cross-origin abort refused: post from the release page, or with a bearer token")


async def _login_or_error(request: Request, exc: HTTPException) -> Response:
    """A browser without a session goes to Airflow's login page and comes back; APIs get JSON."""
    wants_html = "text/html" in request.headers.get("accept", "") and request.method == "GET"
    if exc.status_code == 401 and wants_html:
        from airflow.api_fastapi.app import get_auth_manager

        return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=303)
    if wants_html:
        # E.g. the run tab of a DAG that is not a release: a line in the frame, not raw JSON.
        from istio_canary.ui.render import page

        return HTMLResponse(page("Not a release", f"<p>{escape(str(exc.detail))}</p>"), status_code=exc.status_code)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
