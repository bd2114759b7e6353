"""Where statements run: the pool (`Driver`) or one connection in a transaction (`Tx`)."""

from __future__ import annotations

import abc
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import asyncpg

from ._sql import qualify

if TYPE_CHECKING:
    from ._crossing import Crossing

__all__ = ["Queryable", "Tx"]

T = TypeVar("T")
P = ParamSpec("P")


class Queryable(abc.ABC):
    """What the pool and a transaction share: statements, each one loop crossing.

    ``/*schema*/`` in SQL text is replaced by the configured schema's prefix.
    """

    def __init__(self, *, schema: str, configured_schema: str | None) -> None:
        self._schema = schema
        self.configured_schema = configured_schema
        """The schema asked for, or None to leave names to the search path."""

    @property
    def schema(self) -> str:
        """The schema holding rivertrio's tables (configured, or the server's current one)."""
        return self._schema

    @abc.abstractmethod
    async def run(
        self,
        fn: Callable[Concatenate[asyncpg.Connection, P], Coroutine[Any, Any, T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run the asyncio function ``fn(conn, *args)`` on a connection, in one loop crossing.

        A checkpoint. If cancelled, the statement in flight is cancelled on the server
        and the connection goes back to the pool in a usable state (or, if it never
        acknowledges the cancellation, is dropped); the caller does not wait for that.

        Raises:
            DatabaseConnectionError: The connection failed or could not be opened.
            DatabaseError: The statement failed, or no pooled connection was free
                within ``acquire_timeout`` (the message says what holds them).
        """

    async def _run_sql(self, fn: Callable[..., Coroutine[Any, Any, T]], sql: str, *args: Any) -> T:
        """Run one statement of the caller's SQL text through ``fn(conn, sql, *args)``."""
        return await self.run(fn, qualify(sql, self.configured_schema), *args)

    async def execute(self, sql: str, *args: Any) -> str:
        """Run one statement (``/*schema*/`` is replaced by the schema prefix)."""
        return await self._run_sql(_execute, sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Run one query and return its rows."""
        return await self._run_sql(_fetch, sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        """Run one query and return its first row, or None."""
        return await self._run_sql(_fetchrow, sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """Run one query and return the first column of its first row."""
        return await self._run_sql(_fetchval, sql, *args)


async def _execute(conn: asyncpg.Connection, sql: str, *args: Any) -> str:
    return await conn.execute(sql, *args)


async def _fetch(conn: asyncpg.Connection, sql: str, *args: Any) -> list[asyncpg.Record]:
    return await conn.fetch(sql, *args)


async def _fetchrow(conn: asyncpg.Connection, sql: str, *args: Any) -> asyncpg.Record | None:
    return await conn.fetchrow(sql, *args)


async def _fetchval(conn: asyncpg.Connection, sql: str, *args: Any) -> Any:
    return await conn.fetchval(sql, *args)


class Tx(Queryable):
    """A transaction on one connection, for rivertrio's ``*_tx`` methods and the user's own SQL.

    Obtained from ``Driver.transaction()`` (or ``Client.transaction()``). Work done
    through it, including job inserts and their notifications, becomes visible only
    when the transaction commits.
    """

    def __init__(
        self,
        crossing: Crossing,
        conn: asyncpg.Connection,
        *,
        schema: str,
        configured_schema: str | None,
    ) -> None:
        super().__init__(schema=schema, configured_schema=configured_schema)
        self._crossing = crossing
        self._conn = conn

    async def run(
        self,
        fn: Callable[Concatenate[asyncpg.Connection, P], Coroutine[Any, Any, T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        return await self._crossing.cross(fn(self._conn, *args, **kwargs))
