"""What asyncpg's errors mean to rivertrio: a lost connection, or a failed statement.

Users never catch asyncpg's types: every error that crosses back from asyncio
is mapped here to `DatabaseConnectionError` (the server could not be reached, or
the connection died) or `DatabaseError` (a statement failed; it carries the
SQLSTATE).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import asyncpg

from .._exceptions import DatabaseConnectionError, DatabaseError

__all__ = ["describe_url", "map_error"]

# asyncpg raises these (or OSError) when the server cannot be reached or the
# connection dies; every one means "connection", not "statement".
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.InterfaceError,
    # The protocol found the connection in a state it cannot continue from: the
    # server sent its shutdown error, and the socket's end is not processed yet.
    asyncpg.exceptions.InternalClientError,
)


def describe_url(url: str) -> str:
    """Return where a URL points, as ``host:port`` or a socket directory, for messages."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = parts.hostname or (query.get("host") or ["localhost"])[0]
    try:
        port = parts.port or int((query.get("port") or ["5432"])[0])
    except ValueError:
        port = 5432
    return f"{host}:{port}"


def map_error(exc: BaseException, where: str) -> BaseException:
    """The rivertrio error for an asyncpg error (`where`: the server, for messages).

    Returns `exc` itself when it is not asyncpg's (a bug, or the caller's own error).
    """
    # InterfaceError is mostly misuse (closed pool, wrong arguments), but a
    # connection lost mid-query also shows up as one.
    if (
        isinstance(exc, asyncpg.exceptions.InterfaceError)
        and not isinstance(exc, asyncpg.exceptions.ConnectionDoesNotExistError)
        and "connection" not in str(exc).lower()
        and "closed" not in str(exc)
    ):
        return DatabaseError(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, _CONNECTION_ERRORS):
        return DatabaseConnectionError(
            f"cannot reach Postgres at {where}: {exc or type(exc).__name__}"
        )
    if isinstance(exc, asyncpg.PostgresError):
        return DatabaseError(f"{exc.sqlstate}: {exc}", sqlstate=exc.sqlstate)
    return exc
