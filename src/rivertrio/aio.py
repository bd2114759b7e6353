"""Inserting jobs from asyncio programs (FastAPI, Starlette, aiohttp): an insert-only client.

`AsyncInsertClient` is the Trio client's insert family on an asyncpg pool, for
applications that run on asyncio and only enqueue jobs (a rivertrio or River
worker process works them). Jobs are prepared exactly as the Trio client
prepares them (options, defaults, unique keys) and inserted with the same
statements, notifications included, so a job inserted here is the same row,
and the same unique duplicate, as one inserted by the Trio client::

    pool = await asyncpg.create_pool(DATABASE_URL)
    jobs = rivertrio.aio.AsyncInsertClient(pool)
    await jobs.insert(SendEmail(to="a@example.com"))

    async with pool.acquire() as conn, conn.transaction():
        order_id = await conn.fetchval("INSERT INTO orders ... RETURNING id")
        await jobs.insert_tx(conn, ShipOrder(order_id=order_id))
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeAlias, TypeVar, cast

import asyncpg
import asyncpg.pool

from ._args import InsertOpts, InsertParams, JobArgs
from ._config import Config
from ._driver._errors import describe_url, map_error
from ._driver._insert import JobToInsert, available_queues, copy_jobs, insert_jobs
from ._driver._topics import INSERT_TOPIC, channel
from ._exceptions import ConfigError, DatabaseError, InvalidInputError
from ._insert import InsertResult
from ._prepare import dedupe, prepare_job, prepare_many, results

__all__ = ["AsyncConnection", "AsyncInsertClient", "open_insert_client"]

T = TypeVar("T")

#: An asyncpg connection, or one acquired from an asyncpg pool.
AsyncConnection: TypeAlias = "asyncpg.Connection | asyncpg.pool.PoolConnectionProxy"


def _plain_asyncio_loops() -> None:
    # rivertrio runs asyncpg inside Trio through trio-asyncio, whose import makes
    # asyncio.new_event_loop() (and so asyncio.run) build trio-asyncio's own
    # loop in any thread without an event loop policy set. An asyncio program
    # wants asyncio's loop: naming asyncio's policy for this thread (where the
    # program imports this module, usually its main thread) restores it. Trio
    # code is unaffected: inside Trio, trio-asyncio keeps its own policy.
    with contextlib.suppress(RuntimeError):  # imported inside Trio: nothing to restore
        asyncio.set_event_loop_policy(asyncio.get_event_loop_policy())


_plain_asyncio_loops()


class AsyncInsertClient:
    """Inserts jobs from asyncio code, on an asyncpg pool the application owns.

    The ``_tx`` forms take an asyncpg connection (usually inside the
    application's transaction): the jobs, and the notification that wakes the
    workers, commit with it. The other forms autocommit on a pooled
    connection.

    Args:
        pool: An asyncpg pool on the database with River's tables.
        config: Supplies the schema, ``max_attempts``, ``poll_only`` (no
            notifications) and ``fetch_cooldown`` (notifications are sent at
            most once per queue per cooldown), and, if it has workers, the
            kinds accepted. Default ``Config()``.

    Raises:
        ConfigError: `pool` is not an asyncpg pool.
    """

    def __init__(self, pool: asyncpg.Pool, config: Config | None = None) -> None:
        if not isinstance(pool, asyncpg.Pool):
            raise ConfigError(f"AsyncInsertClient takes an asyncpg pool, not {type(pool).__name__}")
        self.pool = pool
        self.config = config or Config()
        self._schema = self.config.schema
        self._channel: str | None = None
        self._last_notified: dict[str, float] = {}

    # --- one job ---

    async def insert(self, args: JobArgs, opts: InsertOpts | None = None) -> InsertResult:
        """Insert one job; committed, and its queue notified, when this returns.

        Raises:
            InvalidInputError: Invalid args or options (nothing is written).
            UnknownJobKindError: The config has workers and none works this kind.
            DatabaseError: The database refused the job.
            DatabaseConnectionError: The database could not be reached.
        """
        job = prepare_job(args, opts, self.config, datetime.now(UTC))
        async with self._acquire() as conn:
            return (await self._insert(conn, [job]))[0]

    async def insert_tx(
        self, conn: AsyncConnection, args: JobArgs, opts: InsertOpts | None = None
    ) -> InsertResult:
        """`insert` on the caller's connection: it commits (and notifies) with its transaction."""
        job = prepare_job(args, opts, self.config, datetime.now(UTC))
        return (await self._insert(_checked(conn), [job]))[0]

    # --- many jobs in one statement ---

    async def insert_many(self, params: Sequence[InsertParams]) -> list[InsertResult]:
        """Insert many jobs in one statement, all or none; results in the order of `params`.

        A unique job repeated within the batch is inserted once; the later
        copies are reported as duplicates of it.

        Raises:
            InvalidInputError: `params` is empty, or an entry is invalid (its index is named).
            UnknownJobKindError: The config has workers and none works an entry's kind.
        """
        jobs = prepare_many(params, "insert_many", self.config)
        async with self._acquire() as conn:
            return await self._insert(conn, jobs)

    async def insert_many_tx(
        self, conn: AsyncConnection, params: Sequence[InsertParams]
    ) -> list[InsertResult]:
        """`insert_many` on the caller's connection."""
        jobs = prepare_many(params, "insert_many", self.config)
        return await self._insert(_checked(conn), jobs)

    # --- many jobs with COPY ---

    async def insert_many_fast(self, params: Sequence[InsertParams]) -> int:
        """Insert many jobs with COPY and return how many; all or none.

        Faster than `insert_many` for large batches, but returns no rows and
        cannot skip unique duplicates: a unique conflict fails the whole call.

        Raises:
            InvalidInputError: `params` is empty, or an entry is invalid.
            DatabaseError: A unique conflict (sqlstate 23505) or another database error.
        """
        jobs = prepare_many(params, "insert_many_fast", self.config)
        async with self._acquire() as conn:
            return await self._copy(conn, jobs)

    async def insert_many_fast_tx(
        self, conn: AsyncConnection, params: Sequence[InsertParams]
    ) -> int:
        """`insert_many_fast` on the caller's connection; a conflict aborts its transaction."""
        jobs = prepare_many(params, "insert_many_fast", self.config)
        return await self._copy(_checked(conn), jobs)

    # --- the statements ---

    async def _insert(
        self, conn: asyncpg.Connection, jobs: list[JobToInsert]
    ) -> list[InsertResult]:
        sent, slot_of = dedupe(jobs)
        queues = self._may_notify({j.queue for j in sent if not j.pending})
        payloads = [_payload(q) for q in queues]
        schema = self._schema
        chan = await self._channel_name(conn)
        records = await self._mapped(insert_jobs(conn, schema, sent, chan, queues, payloads))
        self._notified(available_queues(records))
        return results(records, slot_of)  # type: ignore[return-value]  # no errors in it

    async def _copy(self, conn: asyncpg.Connection, jobs: list[JobToInsert]) -> int:
        chan = await self._channel_name(conn)

        def notify(queues: frozenset[str]) -> tuple[list[str], list[str]]:
            due = self._may_notify(queues)
            self._notified(due)
            return [chan] * len(due), [_payload(q) for q in due]

        try:
            count, _, _ = await self._mapped(copy_jobs(conn, self._schema, jobs, notify))
        except DatabaseError as exc:
            if exc.sqlstate != "23505":
                raise
            raise DatabaseError(
                "insert_many_fast: a job conflicts with a unique job (stored or in the same "
                f"batch); nothing was inserted: {exc}",
                sqlstate=exc.sqlstate,
            ) from exc
        return count

    async def _mapped(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except Exception as exc:
            _raise_mapped(exc, "the database")

    @asynccontextmanager
    async def _acquire(self) -> AsyncIterator[asyncpg.Connection]:
        conn = await self._mapped(self.pool.acquire())
        try:
            yield cast("asyncpg.Connection", conn)
        finally:
            await self.pool.release(conn)

    async def _channel_name(self, conn: asyncpg.Connection) -> str:
        # The channel names the schema the tables are in, as the workers that
        # LISTEN there name it: without a configured schema, the connection's.
        if self._channel is None:
            schema = self._schema
            if schema is None:
                schema = await self._mapped(conn.fetchval("SELECT current_schema()"))
            self._channel = channel(str(schema), INSERT_TOPIC)
        return self._channel

    # --- notifications: at most one per queue per fetch_cooldown ---

    def _may_notify(self, queues: set[str] | frozenset[str]) -> list[str]:
        if self.config.poll_only:
            return []
        now = time.monotonic()
        cooldown = self.config.fetch_cooldown
        last = self._last_notified
        return sorted(q for q in queues if now - last.get(q, -cooldown) >= cooldown)

    def _notified(self, queues: set[str] | list[str]) -> None:
        now = time.monotonic()
        for queue in queues:
            self._last_notified[queue] = now


@asynccontextmanager
async def open_insert_client(
    database_url: str | None = None, *, config: Config | None = None, **pool_options: Any
) -> AsyncIterator[AsyncInsertClient]:
    """Open an asyncpg pool and an `AsyncInsertClient` on it; both close when the block ends.

    Args:
        database_url: A ``postgresql://`` URL; default ``RIVERTRIO_DATABASE_URL``.
        config: As for `AsyncInsertClient`.
        pool_options: Passed to ``asyncpg.create_pool`` (``min_size``, ``max_size``...).

    Raises:
        ConfigError: No URL given and ``RIVERTRIO_DATABASE_URL`` is not set.
        DatabaseConnectionError: The database could not be reached.
    """
    url = database_url or os.environ.get("RIVERTRIO_DATABASE_URL")
    if not url:
        raise ConfigError(
            "open_insert_client needs a database URL: pass database_url= or set "
            "RIVERTRIO_DATABASE_URL"
        )
    try:
        pool = await asyncpg.create_pool(url, **pool_options)
    except Exception as exc:
        _raise_mapped(exc, describe_url(url))
    try:
        yield AsyncInsertClient(pool, config)
    finally:
        await pool.close()


def _raise_mapped(exc: Exception, where: str) -> NoReturn:
    """Raise asyncpg's error as rivertrio's (any other as it is)."""
    mapped = map_error(exc, where)
    if mapped is exc:
        raise exc
    raise mapped from exc


def _checked(conn: object) -> asyncpg.Connection:
    # A pooled connection is a proxy of one, and works the same.
    if not isinstance(conn, asyncpg.Connection | asyncpg.pool.PoolConnectionProxy):
        raise InvalidInputError(
            f"the _tx forms take an asyncpg connection, not {type(conn).__name__}"
        )
    return cast("asyncpg.Connection", conn)


def _payload(queue: str) -> str:
    return json.dumps({"queue": queue}, separators=(",", ":"))
