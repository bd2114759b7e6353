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

import asyncio
import contextlib
import functools
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar, cast
from urllib.parse import parse_qs, urlsplit

import asyncpg
import trio

from .._exceptions import ConfigError, DatabaseConnectionError, DatabaseError
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

#: Default bound on waiting for a free pooled connection, in seconds.
ACQUIRE_TIMEOUT = 5.0
#: How long a connection may take to acknowledge a cancelled statement when it
# goes back to the pool. asyncpg waits for that without a bound, and a
# black-holed connection never answers: the pool slot would be lost for good
# and the cancelled caller would wait with it. Past this, it is dropped.
RELEASE_TIMEOUT = 5.0
# An outage is reported over when a statement succeeds this long after the last
# one that failed for want of a connection.
_RECOVERY_QUIET = 1.0
# How long a probe notification may take to reach a new LISTEN connection.
# Delivery takes milliseconds; a pooler in transaction mode never delivers.
DELIVERY_PROBE_TIMEOUT = 5.0

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


class _CrossingTask(asyncio.Task[T]):
    """The asyncio task of one loop crossing; it can arm a watchdog when cancelled."""

    watchdog: Callable[[], None] | None = None

    def cancel(self, msg: Any | None = None) -> bool:
        if self.watchdog is not None and not self.done():
            watchdog = self.watchdog
            self.watchdog = None

            def check() -> None:
                if not self.done():
                    watchdog()

            self.get_loop().call_later(RELEASE_TIMEOUT, check)
        return super().cancel(msg)


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
        and the connection goes back to the pool in a usable state (or, if it never
        acknowledges the cancellation, is dropped); the caller does not wait for that.

        Raises:
            DatabaseConnectionError: The connection failed or could not be opened.
            DatabaseError: The statement failed, or no pooled connection was free
                within ``acquire_timeout`` (the message says what holds them).
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
        reserved: int = 0,
        acquire_timeout: float = ACQUIRE_TIMEOUT,
    ) -> None:
        self._driver = self
        self._loop = loop
        self._pool = pool
        self.url = url
        self._schema = schema
        self.configured_schema = configured_schema
        self._connect_kwargs = connect_kwargs
        self.where = describe_url(url)
        self.reserved = reserved
        self.acquire_timeout = acquire_timeout
        """Seconds to wait for a free pooled connection before raising `DatabaseError`."""
        # transaction() and connection() blocks hold a connection for as long as
        # the caller likes; they may hold all but `reserved` of them, which stay
        # for single statements (the client's fetches, completions, elections).
        self._block_slots = trio.Semaphore(pool.get_max_size() - reserved)
        self._in_use = 0
        self._held_by_blocks = 0
        self._unresponsive = 0
        self._delivery_checked = False
        self._trouble_since: float | None = None
        self._trouble_last = 0.0
        self._trouble_count = 0
        self._releasing: set[asyncio.Task[None]] = set()

    @property
    def schema(self) -> str:
        return self._schema

    @property
    def pool_size(self) -> int:
        """How many connections the pool may hold."""
        return self._pool.get_max_size()

    @property
    def block_limit(self) -> int:
        """How many connections `transaction` and `connection` blocks may hold at once."""
        return self.pool_size - self.reserved

    def _exhausted(self, waited: float, *, blocks_only: bool = False) -> DatabaseError:
        what = (
            f"all {self.block_limit} connections that transaction blocks may hold "
            f"({self.reserved} more are kept for single statements)"
            if blocks_only
            else f"all {self.pool_size} pooled connections"
        )
        return DatabaseError(
            f"no connection to {self.where} was free for {waited:g} s: {what} are in use, "
            f"{self._held_by_blocks} of them held open by transaction blocks "
            "(client.transaction(), driver.connection()). Hold transactions for shorter "
            "times or open fewer at once, or size the pool for them (Config.pool_size)"
        )

    async def _acquire(self) -> Any:
        """Take a pooled connection (asyncio side); bounded by `acquire_timeout`."""
        try:
            proxy = await self._pool.acquire(timeout=self.acquire_timeout)
        except TimeoutError as exc:
            if self._in_use >= self.pool_size:
                raise self._exhausted(self.acquire_timeout) from exc
            raise DatabaseConnectionError(
                f"cannot reach Postgres at {self.where}: no connection within "
                f"{self.acquire_timeout:g} s"
            ) from exc
        self._in_use += 1
        return proxy

    def _release_later(self, proxy: Any) -> asyncio.Task[None]:
        """Release in the background: a cancelled caller must not wait for it.

        The release waits for the server to acknowledge the cancelled statement
        (bounded, see `_release`); the caller's deadline has passed already.
        """
        task = asyncio.get_running_loop().create_task(self._release(proxy))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)
        return task

    async def _give_back(self, proxy: Any) -> None:
        """Release (asyncio side); if the caller is cancelled meanwhile, it goes on alone."""
        await asyncio.shield(self._release_later(proxy))

    async def _release(self, proxy: Any) -> None:
        """Give a connection back (asyncio side); a dead one is dropped, never waited on."""
        self._in_use -= 1
        try:
            await self._pool.release(proxy, timeout=RELEASE_TIMEOUT)
        except TimeoutError:
            # asyncpg terminated it. A connection that does not answer at all is a
            # black hole (a dead route, a hung proxy): its idle siblings most
            # likely lead there too, and each would hang the next statement that
            # takes it until that one's deadline. Renew them all instead.
            await self._pool.expire_connections()
            self._unresponsive += 1
            if self._unresponsive == 1 or self._unresponsive % 100 == 0:
                log.warning(
                    "a connection to %s did not answer within %g s after its statement was "
                    "cancelled (%d so far): dropped it, and renewing the pool's connections",
                    self.where,
                    RELEASE_TIMEOUT,
                    self._unresponsive,
                )
        except Exception as exc:
            # asyncpg has terminated the connection; the pool opens a new one.
            log.debug("dropped a pooled connection on release: %r", exc)

    def sql(self, text: str) -> str:
        """Return `text` with the schema placeholder replaced."""
        return qualify(text, self.configured_schema)

    async def _cross(
        self, coro: Coroutine[Any, Any, T], watchdog: Callable[[], None] | None = None
    ) -> T:
        """Run `coro` on the asyncio side and wait for it: one loop crossing.

        Cancelling the caller cancels the coroutine, and the caller waits for it
        to finish (its cleanup included). `watchdog`, if given, is called if it
        has not finished `RELEASE_TIMEOUT` seconds after that.
        """
        try:
            task = _CrossingTask(coro, loop=self._loop)
        except BaseException:
            coro.close()  # avoid an "never awaited" warning
            raise
        task.watchdog = watchdog
        try:
            return await trio_asyncio.run_aio_future(task)  # type: ignore[no-any-return]
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

        busy: list[Any] = []  # the connection `fn` is using, while it is

        async def with_connection() -> T:
            proxy = await self._acquire()
            busy.append(proxy)
            try:
                result = await fn(_as_connection(proxy), *args, **kwargs)
            except asyncio.CancelledError:
                busy.clear()
                self._release_later(proxy)
                raise
            except asyncpg.exceptions.InternalClientError:
                busy.clear()
                # Never hand this connection out again: the pool replaces it.
                proxy.terminate()
                await self._give_back(proxy)
                raise
            except BaseException:
                busy.clear()
                await self._give_back(proxy)
                raise
            busy.clear()
            await self._give_back(proxy)
            return result

        def cut_off() -> None:
            # Cancelled, and `fn` is still cleaning up (a ROLLBACK, say) on a
            # connection that does not answer: asyncpg would wait for as long as it
            # lives. Dropping it ends the wait at once.
            if busy:
                log.debug("dropping a connection that holds up a cancelled statement")
                busy[0].terminate()

        try:
            result = await self._cross(with_connection(), cut_off)
        except DatabaseConnectionError as exc:
            # A cancelled caller gets its cancellation, not what cutting off did.
            await trio.lowlevel.checkpoint_if_cancelled()
            self._trouble(exc)
            raise
        if self._trouble_since is not None:
            self._recovered()
        return result

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
            proxy = await self._acquire()
            try:
                tr = proxy.transaction()
                await tr.start()
            except BaseException:
                await self._give_back(proxy)
                raise
            return proxy, tr

        async def end(proxy: Any, tr: Any, commit: bool) -> None:
            try:
                if commit:
                    await tr.commit()
                else:
                    await tr.rollback()
            except asyncio.CancelledError:
                self._release_later(proxy)
                raise
            except BaseException:
                await self._give_back(proxy)
                raise
            await self._give_back(proxy)

        async with self._block_slot():
            conn, tr = await self._cross(begin())
            try:
                yield Tx(self, _as_connection(conn))
            except BaseException:
                with trio.move_on_after(5, shield=True):
                    await self._cross(end(conn, tr, commit=False))
                raise
            # Commit must not be torn by a cancellation arriving just now: the
            # caller would not know whether its jobs were inserted.
            with trio.move_on_after(30, shield=True) as scope:
                await self._cross(end(conn, tr, commit=True))
            if scope.cancelled_caught:
                raise DatabaseError("timed out committing the transaction")

    @asynccontextmanager
    async def _block_slot(self) -> AsyncIterator[None]:
        """Hold one of the connections blocks may hold; bounded by `acquire_timeout`."""
        with trio.move_on_after(self.acquire_timeout) as scope:
            await self._block_slots.acquire()
        if scope.cancelled_caught:
            raise self._exhausted(self.acquire_timeout, blocks_only=True)
        self._held_by_blocks += 1
        try:
            yield
        finally:
            self._held_by_blocks -= 1
            self._block_slots.release()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Tx]:
        """Hold one pooled connection (no transaction) for several statements."""
        async with self._block_slot():
            proxy = await self._cross(self._acquire())
            try:
                yield Tx(self, _as_connection(proxy))
            finally:
                with trio.move_on_after(5, shield=True):
                    await self._cross(self._give_back(proxy))

    async def notify(self, topic: str, payload: str) -> None:
        """Send a notification on a topic of this schema."""
        await self.execute("SELECT pg_notify($1, $2)", self.channel(topic), payload)

    def channel(self, topic: str) -> str:
        """The Postgres channel name of a topic: ``<schema>.<topic>``."""
        return f"{self._schema}.{topic}"

    async def open_listener(self, *, buffer: int = 1000) -> Listener:
        """Open a dedicated LISTEN connection (outside the pool).

        The first one this driver opens is checked: a notification sent from a
        pooled connection must reach it.

        Raises:
            DatabaseConnectionError: The server cannot be reached.
            ConfigError: Notifications do not reach the connection: the URL leads
                to a pooler in transaction mode (use ``poll_only=True``).
        """
        kwargs = dict(self._connect_kwargs)
        # Named apart from the pool's connections, so operators (and the fault
        # tests' proxy) can tell it from them in pg_stat_activity.
        kwargs["server_settings"] = {
            **kwargs.get("server_settings", {}),
            "application_name": "rivertrio-listener",
        }
        conn = await self._cross(asyncpg.connect(self.url, **kwargs))
        listener = Listener(self, conn, buffer)
        if not self._delivery_checked:
            try:
                with trio.move_on_after(DELIVERY_PROBE_TIMEOUT) as scope:
                    await listener.check_delivery()
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

    async def check_delivery(self) -> None:
        """Send a notification from a pooled connection; return once it reaches this one.

        LISTEN needs a session of its own. Behind a pooler in transaction mode
        (PgBouncer ``pool_mode = transaction``) the LISTEN runs on whichever server
        connection is free, which then serves other clients, and nothing ever
        reaches this one; the statements themselves all succeed, so only a round
        trip can tell. Session pooling, and a direct connection, deliver.

        A checkpoint. Never returns if nothing arrives: wrap it in a deadline.
        """
        channel = f"rivertrio_probe_{secrets.token_hex(8)}"
        arrived = trio.Event()

        def on_probe(_conn: Any, _pid: int, _channel: str, _payload: object) -> None:
            arrived.set()  # on the Trio thread, as _on_notification

        await self._driver._cross(self._conn.add_listener(channel, on_probe))
        try:
            await self._driver.execute("SELECT pg_notify($1, 'probe')", channel)
            await arrived.wait()
        finally:
            with trio.move_on_after(2, shield=True), contextlib.suppress(DatabaseError):
                await self._driver._cross(self._conn.remove_listener(channel, on_probe))

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
    if not 0 <= reserved < max_size:
        raise ValueError(
            f"reserved must be from 0 to max_size - 1 ({max_size - 1}), got {reserved}"
        )
    if not acquire_timeout > 0:
        raise ValueError(f"acquire_timeout must be > 0 seconds, got {acquire_timeout!r}")
    connect_kwargs: dict[str, Any] = {
        "server_settings": {"application_name": "rivertrio"},
        # Every connection, pooled or dedicated (LISTEN, liveness lock): a server
        # that accepts the TCP connection and never answers must not hold up a
        # reconnection for asyncpg's default minute.
        "timeout": 10,
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
                    max_inactive_connection_lifetime=0,
                    **connect_kwargs,
                )
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
                reserved=reserved,
                acquire_timeout=acquire_timeout,
            )
            try:
                yield driver
            finally:
                await driver.aclose()
