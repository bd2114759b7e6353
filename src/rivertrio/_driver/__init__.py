"""The database driver: asyncpg inside Trio through trio-asyncio.

This package is the only code in rivertrio that touches asyncio. The rest of the
library sees plain Trio async functions. Every call here is one loop crossing
(about 60-130 us on top of the query itself), so callers batch: one call fetches
a batch of jobs, one call completes a batch, one call inserts many jobs. A call
that needs several statements passes an asyncio function to `Driver.run`, which
runs it on one pooled connection in a single crossing.
"""

from __future__ import annotations

# trio_asyncio must be imported before asyncpg: it patches asyncio's loop lookup.
import trio_asyncio  # isort: skip

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar, cast
from urllib.parse import parse_qs, urlsplit

import asyncpg
import trio

from .._exceptions import DatabaseConnectionError, DatabaseError
from .._util import collapse_single_groups

__all__ = [
    "Driver",
    "Listener",
    "Notification",
    "Tx",
    "describe_url",
    "open_driver",
    "qualify",
]

log = logging.getLogger("rivertrio.driver")

T = TypeVar("T")
P = ParamSpec("P")

#: Placeholder for the schema prefix in SQL text; see `qualify`.
SCHEMA = "/*schema*/"

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


@functools.lru_cache(maxsize=1024)
def qualify(sql: str, schema: str | None) -> str:
    """Replace the schema placeholder in `sql` with a quoted schema prefix (or nothing)."""
    prefix = "" if schema is None else '"' + schema.replace('"', '""') + '".'
    return sql.replace(SCHEMA, prefix)


def _map_error(exc: BaseException, where: str) -> BaseException:
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
        err = DatabaseError(f"{exc.sqlstate}: {exc}")
        err.sqlstate = exc.sqlstate  # type: ignore[attr-defined]
        return err
    return exc


def _as_connection(proxy: Any) -> asyncpg.Connection:
    # A pooled connection is a proxy that behaves as the connection it wraps.
    return cast(asyncpg.Connection, proxy)


@dataclass(frozen=True, slots=True)
class Notification:
    """A Postgres notification on one of rivertrio's topics."""

    topic: str
    payload: str


class _Executor:
    """What the pool and a transaction share: statements, each one loop crossing."""

    _driver: Driver

    @property
    def schema(self) -> str:
        """The schema holding rivertrio's tables (configured, or the server's current one)."""
        return self._driver.schema

    async def run(
        self,
        fn: Callable[Concatenate[asyncpg.Connection, P], Coroutine[Any, Any, T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run the asyncio function ``fn(conn, *args)`` on a connection, in one loop crossing.

        A checkpoint. If cancelled, the statement in flight is cancelled on the server
        and the connection goes back to the pool in a usable state.
        """
        raise NotImplementedError

    async def execute(self, sql: str, *args: Any) -> str:
        """Run one statement (``/*schema*/`` is replaced by the schema prefix)."""
        return await self.run(_execute, qualify(sql, self._driver.configured_schema), *args)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Run one query and return its rows."""
        return await self.run(_fetch, qualify(sql, self._driver.configured_schema), *args)

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        """Run one query and return its first row, or None."""
        return await self.run(_fetchrow, qualify(sql, self._driver.configured_schema), *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """Run one query and return the first column of its first row."""
        return await self.run(_fetchval, qualify(sql, self._driver.configured_schema), *args)


async def _execute(conn: asyncpg.Connection, sql: str, *args: Any) -> str:
    return await conn.execute(sql, *args)


async def _fetch(conn: asyncpg.Connection, sql: str, *args: Any) -> list[asyncpg.Record]:
    return await conn.fetch(sql, *args)


async def _fetchrow(conn: asyncpg.Connection, sql: str, *args: Any) -> asyncpg.Record | None:
    return await conn.fetchrow(sql, *args)


async def _fetchval(conn: asyncpg.Connection, sql: str, *args: Any) -> Any:
    return await conn.fetchval(sql, *args)


class Tx(_Executor):
    """A transaction on one connection, for rivertrio's ``*_tx`` methods and the user's own SQL.

    Obtained from ``Driver.transaction()`` (or ``Client.transaction()``). Work done
    through it, including job inserts and their notifications, becomes visible only
    when the transaction commits.
    """

    def __init__(self, driver: Driver, conn: asyncpg.Connection) -> None:
        self._driver = driver
        self._conn = conn

    @property
    def connection(self) -> asyncpg.Connection:
        """The underlying asyncpg connection, for code that runs on the asyncio side."""
        return self._conn

    async def run(
        self,
        fn: Callable[Concatenate[asyncpg.Connection, P], Coroutine[Any, Any, T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        return await self._driver._cross(fn(self._conn, *args, **kwargs))


class Driver(_Executor):
    """A connection pool on one Postgres database, usable from Trio.

    Create one with `open_driver`.
    """

    def __init__(
        self,
        loop: Any,
        pool: asyncpg.Pool,
        *,
        url: str,
        schema: str,
        configured_schema: str | None,
        connect_kwargs: dict[str, Any],
    ) -> None:
        self._driver = self
        self._loop = loop
        self._pool = pool
        self.url = url
        self._schema = schema
        self.configured_schema = configured_schema
        self._connect_kwargs = connect_kwargs
        self.where = describe_url(url)

    @property
    def schema(self) -> str:
        return self._schema

    @property
    def pool_size(self) -> int:
        """How many connections the pool may hold."""
        return self._pool.get_max_size()

    def sql(self, text: str) -> str:
        """Return `text` with the schema placeholder replaced."""
        return qualify(text, self.configured_schema)

    async def _cross(self, coro: Awaitable[T]) -> T:
        try:
            return await self._loop.run_aio_coroutine(coro)  # type: ignore[no-any-return]
        except trio.Cancelled:
            raise
        except Exception as exc:
            mapped = _map_error(exc, self.where)
            if mapped is exc:
                raise
            raise mapped from exc

    async def run(
        self,
        fn: Callable[Concatenate[asyncpg.Connection, P], Coroutine[Any, Any, T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        pool = self._pool

        async def with_connection() -> T:
            async with pool.acquire() as proxy:
                return await fn(_as_connection(proxy), *args, **kwargs)

        return await self._cross(with_connection())

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """Open a transaction on a pooled connection; commit on success, roll back on error.

        Cancel-safe: if the block is cancelled or raises, the transaction is rolled
        back (under a shielded deadline) and the connection returned to the pool.
        """
        pool = self._pool

        async def begin() -> tuple[Any, Any]:
            proxy = await pool.acquire()
            try:
                tr = proxy.transaction()
                await tr.start()
            except BaseException:
                await pool.release(proxy)
                raise
            return proxy, tr

        async def end(proxy: Any, tr: Any, commit: bool) -> None:
            try:
                if commit:
                    await tr.commit()
                else:
                    await tr.rollback()
            finally:
                await pool.release(proxy)

        conn, tr = await self._cross(begin())
        try:
            yield Tx(self, _as_connection(conn))
        except BaseException:
            with trio.move_on_after(5, shield=True):
                await self._cross(end(conn, tr, commit=False))
            raise
        # Commit must not be torn by a cancellation arriving just now: the caller
        # would not know whether its jobs were inserted.
        with trio.move_on_after(30, shield=True) as scope:
            await self._cross(end(conn, tr, commit=True))
        if scope.cancelled_caught:
            raise DatabaseError("timed out committing the transaction")

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Tx]:
        """Hold one pooled connection (no transaction) for several statements."""
        proxy = await self._cross(self._pool.acquire())
        try:
            yield Tx(self, _as_connection(proxy))
        finally:
            with trio.move_on_after(5, shield=True):
                await self._cross(self._pool.release(proxy))

    async def notify(self, topic: str, payload: str) -> None:
        """Send a notification on a topic of this schema."""
        await self.execute("SELECT pg_notify($1, $2)", self.channel(topic), payload)

    def channel(self, topic: str) -> str:
        """The Postgres channel name of a topic: ``<schema>.<topic>``."""
        return f"{self._schema}.{topic}"

    async def open_listener(self, *, buffer: int = 1000) -> Listener:
        """Open a dedicated LISTEN connection (outside the pool)."""
        conn = await self._cross(asyncpg.connect(self.url, **self._connect_kwargs))
        return Listener(self, conn, buffer)

    async def aclose(self) -> None:
        """Close the pool. Shielded; connections still in use are terminated after 5 s."""
        with trio.move_on_after(5, shield=True) as scope:
            await self._cross(self._pool.close())
        if scope.cancelled_caught:
            self._pool.terminate()


class Listener:
    """A dedicated LISTEN connection; notifications arrive on `receive`.

    Notifications are a fast path only: if the consumer falls behind by more than
    the buffer, later ones are dropped (counted in `dropped`), since polling is the
    path correctness rests on. `broken` is set when the connection dies.
    """

    def __init__(self, driver: Driver, conn: asyncpg.Connection, buffer: int) -> None:
        self._driver = driver
        self._conn = conn
        self._send, self.receive = trio.open_memory_channel[Notification](buffer)
        self.broken = trio.Event()
        self.dropped = 0
        self._topics: set[str] = set()
        self._prefix = driver.schema + "."
        conn.add_termination_listener(self._on_terminated)

    @property
    def backend_pid(self) -> int:
        """The server process id of the LISTEN connection."""
        return self._conn.get_server_pid()

    @property
    def topics(self) -> frozenset[str]:
        """The topics listened to."""
        return frozenset(self._topics)

    def _on_notification(self, _conn: Any, _pid: int, channel: str, payload: object) -> None:
        # Runs on the asyncio side of trio-asyncio, which is the Trio thread:
        # send_nowait is safe here and never blocks the loop.
        topic = channel.removeprefix(self._prefix)
        try:
            self._send.send_nowait(Notification(topic, str(payload)))
        except trio.WouldBlock:
            self.dropped += 1
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def _on_terminated(self, _conn: Any) -> None:
        self.broken.set()

    async def listen(self, topic: str) -> None:
        """Start listening to a topic."""
        if topic in self._topics:
            return
        await self._driver._cross(
            self._conn.add_listener(self._driver.channel(topic), self._on_notification)
        )
        self._topics.add(topic)

    async def unlisten(self, topic: str) -> None:
        """Stop listening to a topic."""
        if topic not in self._topics:
            return
        self._topics.discard(topic)
        await self._driver._cross(
            self._conn.remove_listener(self._driver.channel(topic), self._on_notification)
        )

    async def ping(self) -> None:
        """Check the connection is alive; raises DatabaseConnectionError if not."""
        try:
            await self._driver._cross(self._conn.execute("SELECT 1"))
        except Exception as exc:
            # After the server kills the backend asyncpg may report anything from a
            # connection error to an internal protocol-state error; all mean broken.
            self.broken.set()
            raise DatabaseConnectionError(
                f"the LISTEN connection to {self._driver.where} is broken: {exc}"
            ) from exc

    async def aclose(self) -> None:
        """Close the connection and the notification channel. Shielded, bounded."""
        self._send.close()
        if self._conn.is_closed():
            return
        with trio.move_on_after(2, shield=True) as scope:
            with contextlib.suppress(DatabaseError):
                await self._driver._cross(self._conn.close())
        if scope.cancelled_caught:
            self._conn.terminate()


def _log_asyncio_error(_loop: Any, context: dict[str, Any]) -> None:
    log.debug("asyncio: %s", context.get("message"), exc_info=context.get("exception"))


@asynccontextmanager
async def open_driver(
    url: str,
    *,
    schema: str | None = None,
    min_size: int = 1,
    max_size: int = 10,
    poll_only: bool = False,
) -> AsyncIterator[Driver]:
    """Open a connection pool on `url` inside a trio-asyncio loop, closed on exit.

    Args:
        url: A ``postgresql://`` URL.
        schema: The schema holding rivertrio's tables; None = the search path's.
        min_size: Connections opened up front.
        max_size: Most connections the pool holds.
        poll_only: Disable server-side prepared statements, for PgBouncer in
            transaction-pooling mode.

    Raises:
        DatabaseConnectionError: The server cannot be reached (names host and port).
    """
    connect_kwargs: dict[str, Any] = {
        "server_settings": {"application_name": "rivertrio"},
    }
    if poll_only:
        connect_kwargs["statement_cache_size"] = 0
    # trio-asyncio runs its loop in a nursery of its own (two levels deep), so any
    # error leaving this block, ours or the caller's, would arrive wrapped alone.
    with collapse_single_groups():
        async with trio_asyncio.open_loop() as loop:
            # A connect cancelled mid-handshake leaves an asyncio future whose
            # error nobody retrieves; trio-asyncio's default handler would raise
            # it into the loop's nursery and tear the whole driver down.
            loop.set_exception_handler(_log_asyncio_error)
            where = describe_url(url)

            async def create() -> tuple[asyncpg.Pool, str]:
                # No idle-connection expiry: each release would arm a 300 s
                # timer, and trio-asyncio keeps cancelled timers until they are
                # due, so a busy client piled up thousands of them (+3-4 MiB).
                pool = await asyncpg.create_pool(
                    url,
                    min_size=min_size,
                    max_size=max_size,
                    timeout=10,
                    max_inactive_connection_lifetime=0,
                    **connect_kwargs,
                )
                try:
                    current = schema or await pool.fetchval("SELECT current_schema()")
                except BaseException:
                    await pool.close()
                    raise
                if current is None:
                    await pool.close()
                    raise DatabaseError("the search path names no schema; pass schema=")
                return pool, current

            try:
                pool, resolved = await loop.run_aio_coroutine(create())
            except (trio.Cancelled, DatabaseError):
                raise
            except Exception as exc:
                mapped = _map_error(exc, where)
                if mapped is exc:
                    raise
                raise mapped from exc
            driver = Driver(
                loop,
                pool,
                url=url,
                schema=resolved,
                configured_schema=schema,
                connect_kwargs=connect_kwargs,
            )
            try:
                yield driver
            finally:
                await driver.aclose()
