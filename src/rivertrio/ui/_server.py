"""Serving the dashboard with Hypercorn's Trio worker, on the caller's Trio run."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from .._exceptions import ConfigError
from ._security import is_loopback

__all__ = ["check_bind", "serve"]

log = logging.getLogger("rivertrio.ui")


def check_bind(host: str, port: int, *, authenticated: bool) -> None:
    """Refuse an address the dashboard must not listen on.

    Raises:
        ConfigError: A port out of range, or an address other than loopback
            without authentication.
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ConfigError(f"port must be from 0 to 65535, got {port!r}")
    if not is_loopback(host) and not authenticated:
        raise ConfigError(
            f"refusing to listen on {host}: anyone who reaches it could retry, cancel and "
            "delete jobs. Set an auth token (--auth-token or RIVERTRIO_UI_TOKEN) or basic "
            "auth (--basic-auth), or listen on 127.0.0.1 and put a proxy in front"
        )


async def serve(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    root_path: str = "",
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a dashboard made by `create_app` until cancelled or `shutdown_trigger` returns.

    Runs Hypercorn's Trio worker in the current Trio run; ``nursery.start(serve, app)``
    returns the URL it listens on (useful with ``port=0``). The app's lifespan
    (opening its database client) runs before the first connection is accepted.

    Raises:
        ConfigError: `host` is not a loopback address and the app requires no
            authentication, or the port is out of range.
    """
    dashboard = getattr(getattr(app, "state", None), "dashboard", None)
    authenticated = dashboard is not None and dashboard.auth.configured
    check_bind(host, port, authenticated=authenticated)
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.root_path = root_path.rstrip("/")
    config.accesslog = None
    config.errorlog = log
    config.graceful_timeout = 3.0
    # Tell a proxy-less client nothing about the server software.
    config.include_server_header = False

    async def started(*, task_status: trio.TaskStatus[list[str]]) -> None:
        await hypercorn_serve(
            app, config, shutdown_trigger=shutdown_trigger, task_status=task_status
        )

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(started)
        url = binds[0] + config.root_path + "/"
        task_status.started(url)
