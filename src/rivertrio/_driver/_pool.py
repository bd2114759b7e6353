"""The connection pool, and transactions on it: `Driver` and `open_driver`.

Which connection a statement gets and how it comes back is `_lending`'s part;
here is what a caller sees: statements held to their end or not, transaction
and connection blocks, outages reported once.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, Concatenate, ParamSpec, TypeVar

import asyncpg
import trio

from .._exceptions import ConfigError, DatabaseConnectionError, DatabaseError
from .._validate import duration, integer
from ._crossing import RELEASE_TIMEOUT, Crossing, hold_cancellation, open_crossing
from ._dedicated import connect_dedicated
from ._lending import Lender, as_connection
from ._listener import DELIVERY_PROBE_TIMEOUT, Listener
from ._queryable import Queryable, Tx
from ._sql import qualify
from ._topics import channel

__all__ = ["ACQUIRE_TIMEOUT", "Driver", "open_driver"]

log = logging.getLogger("rivertrio.driver")

T = TypeVar("T")
P = ParamSpec("P")

#: Default bound on waiting for a free pooled connection, in seconds.
ACQUIRE_TIMEOUT = 5.0
# An outage is reported over when a statement succeeds this long after the last
# one that failed for want of a connection.
_RECOVERY_QUIET = 1.0


class _Hold(enum.Enum):
    """How much of a crossing a cancellation of its caller may not interrupt."""

    NONE = "none"
    STATEMENT = "statement"  # from when the function begins, a connection in hand
    CROSSING = "crossing"  # all of it, the wait for a connection included


class Driver(Queryable):
    """A connection pool on one Postgres database, usable from Trio.

    Create one with `open_driver`.

    A connection that ran only a `run` function goes back to the pool with no
    reset (a reset is a whole round trip): such functions must leave no session
    state behind them (``SET LOCAL`` inside a transaction, not ``SET``; a session
    lock released before returning). SQL run with `execute`, `fetch`,
    `fetchrow` and `fetchval`, connections of `transaction` and `connection`
    blocks, and any connection whose statement failed or was cancelled are
    reset as they go back.
    """

    def __init__(
        self,
        crossing: Crossing,
        pool: asyncpg.Pool,
        *,
        schema: str,
        configured_schema: str | None,
        reserved: int = 0,
        acquire_timeout: float = ACQUIRE_TIMEOUT,
    ) -> None:
        super().__init__(schema=schema, configured_schema=configured_schema)
        self.crossing = crossing
        """The loop crossing, which dedicated connections share with the pool."""
        self._lender = Lender(
            pool, where=crossing.where, reserved=reserved, acquire_timeout=acquire_timeout
        )
        self._delivery_checked = False
        self._trouble_since: float | None = None
        self._trouble_last = 0.0
        self._trouble_count = 0

    @property
    def where(self) -> str:
        """Where the server is, as ``host:port``, for messages."""
        return self.crossing.where

    @property
    def reserved(self) -> int:
        """Connections that `transaction` and `connection` blocks may not hold."""
        return self._lender.reserved

    @property
    def acquire_timeout(self) -> float:
        """Seconds to wait for a free pooled connection before raising `DatabaseError`."""
        return self._lender.acquire_timeout

    @property
    def pool_size(self) -> int:
        """How many connections the pool may hold."""
        return self._lender.size

    @property
    def block_limit(self) -> int:
        """How many connections `transaction` and `connection` blocks may hold at once."""
        return self.pool_size - self.reserved

    async def run(
        self,
        fn: Callable[Concatenate[asyncpg.Connection, P], Coroutine[Any, Any, T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        return await self._run(fn, args, kwargs, hold=_Hold.NONE, keep=True)

    async def run_held(
        self,
        fn: Callable[Concatenate[asyncpg.Connection, P], Coroutine[Any, Any, T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """`run`, except that once `fn` has begun (a connection is in hand), it runs to its end.

        For a single autocommitted statement whose caller must know its outcome.
        A cancellation before `fn` begins raises `trio.Cancelled` (then nothing
        was sent); one arriving after is deferred: the caller gets `fn`'s result
        or its error, and its next checkpoint raises the cancellation. If `fn`
        has not ended `RELEASE_TIMEOUT` seconds after the cancellation, it is
        cancelled, and the caller gets `DatabaseConnectionError` (the outcome
        is unknown), never `trio.Cancelled`.
        """
        return await self._run(fn, args, kwargs, hold=_Hold.STATEMENT, keep=True)

    async def run_shielded(
        self,
        fn: Callable[Concatenate[asyncpg.Connection, P], Coroutine[Any, Any, T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """`run_held`, with the wait for a connection held too: `fn` always runs.

        For a statement run on behalf of other tasks as well, which the
        caller's cancellation must not tear: it is deferred from the start. The
        wait for a connection stays bounded by `acquire_timeout`.
        """
        return await self._run(fn, args, kwargs, hold=_Hold.CROSSING, keep=True)

    async def _run_sql(self, fn: Callable[..., Coroutine[Any, Any, T]], sql: str, *args: Any) -> T:
        # The caller's own SQL may leave session state (a SET, a session lock):
        # its connection goes back through the pool's reset.
        return await self._run(
            fn, (qualify(sql, self.configured_schema), *args), {}, hold=_Hold.NONE, keep=False
        )

    async def _run(
        self,
        fn: Callable[..., Coroutine[Any, Any, T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        hold: _Hold,
        keep: bool,
    ) -> T:
        busy: list[Any] = []  # the connection `fn` is using, while it is
        begun = False

        async def with_connection() -> T:
            nonlocal begun
            proxy = await self._lender.acquire()
            busy.append(proxy)
            if hold is not _Hold.NONE:
                hold_cancellation()
                begun = True
            try:
                result = await fn(as_connection(proxy), *args, **kwargs)
            except asyncio.CancelledError:
                busy.clear()
                self._lender.release_later(proxy)
                raise
            except asyncpg.exceptions.InternalClientError:
                busy.clear()
                # Never hand this connection out again: the pool replaces it.
                proxy.terminate()
                await self._lender.give_back(proxy)
                raise
            except BaseException:
                busy.clear()
                await self._lender.give_back(proxy)
                raise
            busy.clear()
            if keep:
                self._lender.keep(proxy)
            else:
                await self._lender.give_back(proxy)
            return result

        def cut_off() -> None:
            # Cancelled, and `fn` is still cleaning up (a ROLLBACK, say) on a
            # connection that does not answer: asyncpg would wait for as long as it
            # lives. Dropping it ends the wait at once.
            if busy:
                log.debug("dropping a connection that holds up a cancelled statement")
                busy[0].terminate()

        try:
            result = await self.crossing.cross(
                with_connection(), cut_off, hold=hold is _Hold.CROSSING
            )
        except trio.Cancelled:
            if begun:
                # A held statement that did not answer in time after the cancellation.
                raise self._in_doubt() from None
            raise
        except DatabaseConnectionError as exc:
            if not begun:
                # A cancelled caller gets its cancellation, not what cutting off
                # did; but a held statement's caller must hear that its outcome
                # is unknown.
                await trio.lowlevel.checkpoint_if_cancelled()
            self._trouble(exc)
            raise
        if self._trouble_since is not None:
            self._recovered()
        return result

    def _in_doubt(self) -> DatabaseConnectionError:
        return DatabaseConnectionError(
            f"the connection to {self.where} failed or did not answer (within "
            f"{RELEASE_TIMEOUT:g} s of a cancellation) while a statement was in flight: "
            "whether it took effect is unknown"
        )

    def _trouble(self, exc: DatabaseConnectionError) -> None:
        # One line per outage, whoever's statements fail (the client's services
        # say what it means for them; the user's own calls get the error).
        self._trouble_count += 1
        self._trouble_last = trio.current_time()
        if self._trouble_since is None:
            self._trouble_since = self._trouble_last
            log.warning(
                "statements to Postgres fail: %s (said once, until one succeeds again)", exc
            )
        else:
            log.debug("statements to Postgres still fail: %s", exc)

    def _recovered(self) -> None:
        assert self._trouble_since is not None
        # A server shutting down still answers on some connections for a moment:
        # the outage is over only once statements have worked for a while.
        if trio.current_time() - self._trouble_last < _RECOVERY_QUIET:
            return
        log.info(
            "Postgres at %s answers again, after %.1f s (%d statements failed meanwhile)",
            self.where,
            trio.current_time() - self._trouble_since,
            self._trouble_count,
        )
        self._trouble_since = None
        self._trouble_count = 0

    def _tx(self, proxy: Any) -> Tx:
        return Tx(
            self.crossing,
            as_connection(proxy),
            schema=self.schema,
            configured_schema=self.configured_schema,
        )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """Open a transaction on a pooled connection; commit on success, roll back on error.

        Cancel-safe: if the block is cancelled or raises, the transaction is rolled
        back (under a shielded deadline) and the connection returned to the pool.

        Raises:
            DatabaseError: No connection was free within `acquire_timeout` (the
                message says what holds them).
        """

        async def begin() -> tuple[Any, Any]:
            proxy = await self._lender.acquire()
            try:
                tr = proxy.transaction()
                await tr.start()
            except BaseException:
                await self._lender.give_back(proxy)
                raise
            return proxy, tr

        async def end(proxy: Any, tr: Any, commit: bool) -> None:
            try:
                if commit:
                    await tr.commit()
                else:
                    await tr.rollback()
            except asyncio.CancelledError:
                self._lender.release_later(proxy)
                raise
            except BaseException:
                await self._lender.give_back(proxy)
                raise
            await self._lender.give_back(proxy)

        async with self._lender.block_slot():
            proxy, tr = await self.crossing.cross(begin())
            try:
                yield self._tx(proxy)
            except BaseException:
                with trio.move_on_after(5, shield=True):
                    await self.crossing.cross(end(proxy, tr, commit=False))
                raise
            # Commit must not be torn by a cancellation arriving just now: the
            # caller would not know whether its jobs were inserted.
            with trio.move_on_after(30, shield=True) as scope:
                await self.crossing.cross(end(proxy, tr, commit=True))
            if scope.cancelled_caught:
                raise DatabaseError("timed out committing the transaction")

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Tx]:
        """Hold one pooled connection (no transaction) for several statements."""
        async with self._lender.block_slot():
            proxy = await self.crossing.cross(self._lender.acquire())
            try:
                yield self._tx(proxy)
            finally:
                with trio.move_on_after(5, shield=True):
                    await self.crossing.cross(self._lender.give_back(proxy))

    async def notify(self, topic: str, payload: str) -> None:
        """Send a notification on a topic of this schema."""
        await self.execute("SELECT pg_notify($1, $2)", self.channel(topic), payload)

    def channel(self, topic: str) -> str:
        """The Postgres channel name of a topic in this schema."""
        return channel(self.schema, topic)

    async def open_listener(self, *, buffer: int = 1000) -> Listener:
        """Open a dedicated LISTEN connection (outside the pool).

        The first one this driver opens is checked: a notification sent from a
        pooled connection must reach it.

        Raises:
            DatabaseConnectionError: The server cannot be reached.
            ConfigError: Notifications do not reach the connection: the URL leads
                to a pooler in transaction mode (use ``poll_only=True``).
        """
        conn = await connect_dedicated(self.crossing, "rivertrio-listener")
        assert conn is not None  # no setup that could refuse it
        listener = Listener(self.crossing, conn, self.schema, buffer)
        if not self._delivery_checked:
            try:
                with trio.move_on_after(DELIVERY_PROBE_TIMEOUT) as scope:
                    await listener.check_delivery(self)
            except BaseException:
                await listener.aclose()
                raise
            if scope.cancelled_caught:
                await listener.aclose()
                raise ConfigError(
                    f"notifications do not reach the LISTEN connection to {self.where}: one "
                    f"sent from another session did not arrive within {DELIVERY_PROBE_TIMEOUT:g} "
                    "s. A pooler in transaction mode (PgBouncer pool_mode = transaction) cannot "
                    "carry LISTEN: set Config(poll_only=True) to work without notifications, "
                    "or connect through session pooling or directly to Postgres"
                )
            self._delivery_checked = True
        return listener

    async def aclose(self) -> None:
        """Close the pool. Shielded; connections still in use are terminated after 5 s."""
        with trio.move_on_after(5, shield=True) as scope:
            await self.crossing.cross(self._lender.close())
        if scope.cancelled_caught:
            self._lender.pool.terminate()


@asynccontextmanager
async def open_driver(
    url: str,
    *,
    schema: str | None = None,
    min_size: int = 0,
    max_size: int = 10,
    poll_only: bool = False,
    reserved: int = 0,
    acquire_timeout: float = ACQUIRE_TIMEOUT,
) -> AsyncIterator[Driver]:
    """Open a connection pool on `url` inside a trio-asyncio loop, closed on exit.

    Args:
        url: A ``postgresql://`` URL.
        schema: The schema holding rivertrio's tables; None = the search path's.
        min_size: Connections kept open even when idle. None by default:
            asyncpg would restore a floor during an outage with a warning and a
            traceback each second or so; connections open on demand instead. The
            server is reached once at open either way.
        max_size: Most connections the pool holds.
        poll_only: Disable server-side prepared statements, for PgBouncer in
            transaction-pooling mode.
        reserved: Connections that transaction and connection blocks may not
            hold, kept for single statements: with the client's own services on
            the pool, user transactions then cannot starve its fetches and
            completions.
        acquire_timeout: Longest wait for a free connection, in seconds.

    Raises:
        DatabaseConnectionError: The server cannot be reached (names host and port).
        ValueError: `reserved` leaves no connection for blocks, or a bound is not positive.
    """
    integer("reserved", reserved, ValueError, minimum=0, maximum=max_size - 1)
    duration("acquire_timeout", acquire_timeout, ValueError)
    connect_kwargs: dict[str, Any] = {
        "server_settings": {"application_name": "rivertrio"},
        # Every connection, pooled or dedicated (LISTEN, liveness lock): a server
        # that accepts the TCP connection and never answers must not hold up a
        # reconnection for asyncpg's default minute.
        "timeout": 10,
    }
    if poll_only:
        connect_kwargs["statement_cache_size"] = 0
    async with open_crossing(url, connect_kwargs) as crossing:

        async def create() -> tuple[asyncpg.Pool, str]:
            pool = await crossing.create_pool(min_size=min_size, max_size=max_size)
            try:
                # Also the first connection: an unreachable server fails here.
                current = await pool.fetchval("SELECT current_schema()")
                current = schema or current
            except BaseException:
                await pool.close()
                raise
            if current is None:
                await pool.close()
                raise DatabaseError("the search path names no schema; pass schema=")
            return pool, current

        pool, resolved = await crossing.cross(create())
        driver = Driver(
            crossing,
            pool,
            schema=resolved,
            configured_schema=schema,
            reserved=reserved,
            acquire_timeout=acquire_timeout,
        )
        try:
            yield driver
        finally:
            await driver.aclose()
