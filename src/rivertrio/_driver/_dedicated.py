"""A dedicated connection: one long-lived session of its own, outside the pool.

Two things need a session that lives as long as the client: the LISTEN
connection (a notification reaches the session that listens) and the liveness
lock (a session advisory lock belongs to the session that took it, and Postgres
releases it when the session ends, whether the process exits, crashes or loses
its connection). Both are a `DedicatedConnection`: it notices its own death
(`broken`), answers pings, and closes within a bound.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import asyncpg
import trio

from .._exceptions import DatabaseConnectionError, DatabaseError

if TYPE_CHECKING:
    from ._crossing import Crossing

__all__ = ["DedicatedConnection", "connect_dedicated"]

T = TypeVar("T")
P = ParamSpec("P")

#: Bound on closing a dedicated connection before it is dropped instead.
CLOSE_TIMEOUT = 2.0


class DedicatedConnection:
    """A session of its own, outside the pool; `broken` is set when it dies.

    Args:
        crossing: The driver's loop crossing.
        conn: The open connection (see `connect_dedicated`).
        role: What the session is for, as messages name it (``"LISTEN"``).
    """

    def __init__(self, crossing: Crossing, conn: asyncpg.Connection, role: str) -> None:
        self._crossing = crossing
        self._conn = conn
        self._role = role
        self.broken = trio.Event()
        """Set when the connection dies (the server ended it, or a ping failed)."""
        conn.add_termination_listener(self._on_terminated)

    def _on_terminated(self, _conn: Any) -> None:
        self.broken.set()

    @property
    def backend_pid(self) -> int:
        """The server process id of the session."""
        return self._conn.get_server_pid()

    async def run(
        self,
        fn: Callable[Concatenate[asyncpg.Connection, P], Coroutine[Any, Any, T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run the asyncio function ``fn(conn, *args)`` on this session, in one loop crossing."""
        return await self._crossing.cross(fn(self._conn, *args, **kwargs))

    async def ping(self) -> None:
        """Check that the session is alive; sets `broken` and raises if not.

        Raises:
            DatabaseConnectionError: The session is gone.
        """
        try:
            await self._crossing.cross(self._conn.execute("SELECT 1"))
        except Exception as exc:
            # After the server kills the backend asyncpg may report anything from a
            # connection error to an internal protocol-state error; all mean broken.
            self.broken.set()
            raise DatabaseConnectionError(
                f"the {self._role} connection to {self._crossing.where} is broken: {exc}"
            ) from exc

    def terminate(self) -> None:
        """Drop the session at once, without waiting for the server."""
        self._conn.terminate()

    async def aclose(self) -> None:
        """Close the session (a lock it holds is released). Shielded and bounded."""
        if self._conn.is_closed():
            return
        with trio.move_on_after(CLOSE_TIMEOUT, shield=True) as scope:
            try:
                await self._crossing.cross(self._conn.close())
            except DatabaseError:
                self._conn.terminate()
        if scope.cancelled_caught:
            self._conn.terminate()


async def connect_dedicated(
    crossing: Crossing,
    application_name: str,
    setup: Callable[[asyncpg.Connection], Coroutine[Any, Any, bool]] | None = None,
) -> asyncpg.Connection | None:
    """Open a session outside the pool and run `setup` on it, in one loop crossing.

    Returns:
        The connection, or None if `setup` returned False (it is closed again).

    Raises:
        DatabaseConnectionError: The server cannot be reached.
    """

    async def connect() -> asyncpg.Connection | None:
        conn = await crossing.connect(application_name)
        if setup is None:
            return conn
        try:
            if await setup(conn):
                return conn
        except BaseException:
            conn.terminate()
            raise
        await conn.close()
        return None

    return await crossing.cross(connect())
