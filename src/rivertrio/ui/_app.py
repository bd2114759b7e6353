"""The dashboard as an ASGI app: its routes, its lifespan, and how errors are answered."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .._client import Client, open_client
from .._config import Config
from .._exceptions import (
    ConfigError,
    DashboardUnavailableError,
    DatabaseError,
    InvalidInputError,
    JobRunningError,
    NotFoundError,
    RivertrioError,
)
from . import _api, _pages
from ._guard import Guard
from ._security import Auth
from ._state import Dashboard

__all__ = ["create_app"]

log = logging.getLogger("rivertrio.ui")


def create_app(
    *,
    database_url: str | None = None,
    schema: str | None = None,
    client: Client | None = None,
    read_only: bool = False,
    auth_token: str | None = None,
    basic_auth: tuple[str, str] | None = None,
    allowed_origins: Sequence[str] = (),
    refresh_seconds: float = 3.0,
) -> Starlette:
    """The dashboard as an ASGI app, to serve with a Trio ASGI server or mount in your own.

    Without `client`, the app opens its own insert-only client (a small pool; no
    queues, so no producers and no leadership) in its lifespan, on
    `database_url` (default ``RIVERTRIO_DATABASE_URL``, else the embedded
    Postgres) and `schema`. With `client`, it uses yours and opens nothing: the
    way to mount it inside an app whose server does not run a mounted app's
    lifespan. Actions go through the client's API (``job_retry``,
    ``queue_pause``, ...); reads that API has no call for run their own queries.

    Args:
        database_url: A ``postgresql://`` URL (without `client`).
        schema: The schema holding River's tables (without `client`).
        client: An open client to use instead of opening one.
        read_only: Hide and refuse every action.
        auth_token: Require this bearer token (or the session its login form sets);
            at least 16 characters.
        basic_auth: Require HTTP basic auth with this ``(user, password)``.
        allowed_origins: Origins besides the request's own ``Host`` that may
            send state changes, e.g. ``["https://ops.example.com"]`` behind a
            proxy that rewrites ``Host``.
        refresh_seconds: How often pages refresh their counts and lists.

    Raises:
        ConfigError: A setting is invalid (the message names it).
    """
    if client is not None and (database_url is not None or schema is not None):
        raise ConfigError("create_app: pass either client= or database_url=/schema=, not both")
    if client is not None and not isinstance(client, Client):
        raise ConfigError(f"client must be a rivertrio.Client, not {type(client).__name__}")
    if not isinstance(refresh_seconds, int | float) or not 0.2 <= refresh_seconds <= 3600:
        raise ConfigError(f"refresh_seconds must be from 0.2 to 3600, got {refresh_seconds!r}")
    config = Config(schema=schema)  # checks the schema name now
    dashboard = Dashboard(
        auth=Auth(token=auth_token, basic=basic_auth, allowed_origins=allowed_origins),
        read_only=bool(read_only),
        refresh_seconds=float(refresh_seconds),
        client=client,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with trio.open_nursery() as nursery:
            dashboard.nursery = nursery
            try:
                if client is not None:
                    yield
                else:
                    # No queues: the client runs no producers and never stands for leader.
                    async with open_client(config, database_url=database_url) as own:
                        dashboard.client = own
                        try:
                            yield
                        finally:
                            dashboard.client = None
            finally:
                dashboard.nursery = None
                nursery.cancel_scope.cancel()

    app = Starlette(
        routes=_routes(),
        lifespan=lifespan,
        exception_handlers={
            RivertrioError: _on_error,
            Exception: _on_error,
            404: _not_found,
            405: _not_allowed,
        },
    )
    app.state.dashboard = dashboard
    app.add_middleware(Guard, dashboard=dashboard)
    return app


def _routes() -> list[Route]:
    def post(path: str, endpoint: Callable[..., Awaitable[Response]], **kwargs: str) -> Route:
        return Route(path, functools.partial(endpoint, **kwargs), methods=["POST"])

    routes = [
        Route("/", _pages.overview_page),
        Route("/jobs", _pages.jobs_page),
        Route("/jobs/bulk", _pages.bulk_confirm_page),
        post("/jobs/bulk", _pages.bulk_action),
        Route("/jobs/{job_id:str}", _pages.job_page),
        Route("/periodic", _pages.periodic_page),
        Route("/workflows", _pages.workflows_page),
        # `path`: a workflow id is any text, "/" included.
        Route("/workflows/{workflow_id:path}", _pages.workflow_page),
        Route("/login", _pages.login_page),
        post("/login", _pages.login),
        post("/logout", _pages.logout),
        Route("/static/{version:str}/{name:str}", _pages.static_asset),
        Route("/api/overview", _api.overview),
        Route("/api/jobs", _api.jobs),
        Route("/api/jobs/{job_id:str}", _api.job),
        Route("/api/periodic", _api.periodic),
        Route("/api/workflows", _api.workflows),
        Route("/api/workflows/{workflow_id:path}", _api.workflow),
        Route("/api/csrf", _api.csrf),
    ]
    # One route per action: a path names only an action that exists.
    for action in ("retry", "cancel", "delete"):
        routes += [
            post(f"/jobs/{{job_id:str}}/{action}", _pages.job_action, action=action),
            post(f"/api/jobs/{{job_id:str}}/{action}", _api.job_action, action=action),
        ]
    for action in ("retry", "cancel"):
        routes += [
            post(
                f"/workflows/{{workflow_id:path}}/{action}", _pages.workflow_action, action=action
            ),
            post(
                f"/api/workflows/{{workflow_id:path}}/{action}", _api.workflow_action, action=action
            ),
        ]
    routes += [
        post(f"/api/jobs/{action}-matching", _api.bulk_action, action=action)
        for action in ("retry", "delete")
    ]
    for action in ("pause", "resume"):
        routes += [
            post(f"/queues/{action}", _pages.queue_action, action=action),
            post(f"/api/queues/{action}", _api.queue_action, action=action),
        ]
    return routes


async def _on_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, NotFoundError):
        return _pages.error_page(request, 404, str(exc))
    if isinstance(exc, JobRunningError):
        return _pages.error_page(request, 409, str(exc))
    if isinstance(exc, InvalidInputError):
        return _pages.error_page(request, 400, str(exc))
    if isinstance(exc, DashboardUnavailableError | DatabaseError):
        return _pages.error_page(request, 503, str(exc))
    log.exception("rivertrio ui: %s %s failed", request.method, request.url.path)
    return _pages.error_page(request, 500, f"unexpected {type(exc).__name__}: see the server's log")


async def _not_found(request: Request, exc: Exception) -> Response:
    return _pages.error_page(request, 404, "no such page")


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return _pages.error_page(request, 405, "method not allowed")
