"""``rivertrio ui``: serve the web dashboard."""

from __future__ import annotations

import functools
import signal
import threading
from typing import Any

import click
import trio

from ._common import admin_client, database_url_option, fail, run_trio, schema_option

__all__ = ["ui"]

TOKEN_ENV = "RIVERTRIO_UI_TOKEN"
BASIC_AUTH_ENV = "RIVERTRIO_UI_BASIC_AUTH"


def _basic_auth(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, str] | None:
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep:
        raise click.BadParameter("expected USER:PASSWORD", ctx=ctx, param=param)
    return user, password


async def _until_signalled() -> None:
    # Ctrl-C or SIGTERM stops the server gracefully (requests in flight finish).
    if threading.current_thread() is not threading.main_thread():
        await trio.sleep_forever()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


@click.command()
@database_url_option
@schema_option()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port to listen on (0: any free port).",
)
@click.option(
    "--auth-token",
    envvar=TOKEN_ENV,
    default=None,
    metavar="TOKEN",
    help=f"Require this token (16+ characters) to sign in or as a bearer token. "
    f"Default: ${TOKEN_ENV}.",
)
@click.option(
    "--basic-auth",
    envvar=BASIC_AUTH_ENV,
    default=None,
    metavar="USER:PASSWORD",
    callback=_basic_auth,
    help=f"Require HTTP basic auth. Default: ${BASIC_AUTH_ENV}.",
)
@click.option("--read-only", is_flag=True, help="Hide and refuse every action.")
@click.option(
    "--refresh",
    type=click.FloatRange(0.2, 3600),
    default=3.0,
    show_default=True,
    metavar="SECONDS",
    help="How often pages refresh their counts and lists.",
)
@click.option(
    "--root-path",
    default="",
    metavar="PATH",
    help="The path prefix a reverse proxy serves the dashboard under, e.g. /rivertrio.",
)
@click.option(
    "--allowed-origin",
    "allowed_origins",
    multiple=True,
    metavar="URL",
    help="An origin (https://host) allowed to send actions besides the request's own Host; "
    "for proxies that rewrite Host. Repeatable.",
)
def ui(
    database_url: str | None,
    schema: str | None,
    host: str,
    port: int,
    auth_token: str | None,
    basic_auth: tuple[str, str] | None,
    read_only: bool,
    refresh: float,
    root_path: str,
    allowed_origins: tuple[str, ...],
) -> None:
    """Serve the web dashboard: queues, jobs, the leader, periodic jobs; retry, cancel, pause.

    Listens on 127.0.0.1 unless told otherwise, and refuses any other address
    without --auth-token or --basic-auth. Needs the 'ui' extra:
    pip install 'rivertrio[ui]'.
    """
    try:
        from ..ui import create_app, serve
        from ..ui._server import check_bind
    except ImportError as exc:
        fail(str(exc))
    if root_path and (not root_path.startswith("/") or "//" in root_path):
        raise click.BadParameter("must be a path like /rivertrio", param_hint="--root-path")
    settings: dict[str, Any] = {
        "read_only": read_only,
        "refresh_seconds": refresh,
        "auth_token": auth_token or None,
        "basic_auth": basic_auth,
        "allowed_origins": allowed_origins,
    }
    # Every setting is checked before the database is opened.
    create_app(**settings)
    check_bind(host, port, authenticated=bool(auth_token or basic_auth))

    async def run() -> None:
        async with admin_client(database_url, schema) as client:
            migrated = await client.driver.fetchval(
                "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename = 'river_job'",
                client.driver.schema,
            )
            if not migrated:
                fail(
                    f"no river_job table in schema {client.driver.schema!r} at "
                    f"{client.driver.where}: run 'rivertrio migrate up' first"
                )
            app = create_app(client=client, **settings)
            async with trio.open_nursery() as nursery:
                url = await nursery.start(
                    functools.partial(
                        serve,
                        app,
                        host=host,
                        port=port,
                        root_path=root_path,
                        shutdown_trigger=_until_signalled,
                    )
                )
                mode = ", read-only" if read_only else ""
                click.echo(
                    f"rivertrio ui: serving {url} (schema {client.driver.schema} at "
                    f"{client.driver.where}{mode}); Ctrl-C to stop",
                    err=True,
                )

    run_trio(run)
