"""Atomic inserts: the unnest insert in a transaction of its own, and COPY. Asyncio side.

Both functions run on one connection in one loop crossing (through ``Driver.run``
or ``Tx.run``). On a connection already inside a transaction (a caller's ``Tx``)
they run in it, so the rows and their notifications commit with the caller's
work; otherwise they open and commit a transaction of their own and say so.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from ._jobs import NOTIFY_MANY, InsertRows, insert_jobs

__all__ = ["copy_jobs", "insert_jobs_atomic"]

T = TypeVar("T")

# COPY column order; created_at is left to its default, now(), which inside the
# transaction is the same instant as the `SELECT now()` the states are decided by.
_COPY_COLUMNS = (
    "args",
    "kind",
    "max_attempts",
    "metadata",
    "priority",
    "queue",
    "scheduled_at",
    "state",
    "tags",
    "unique_key",
    "unique_states",
)


async def _atomically(conn: asyncpg.Connection, body: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
    if conn.is_in_transaction():
        return await body(), False
    async with conn.transaction():
        result = await body()
    return result, True


async def insert_jobs_atomic(
    conn: asyncpg.Connection,
    schema: str | None,
    rows: InsertRows,
    notify: Callable[[Sequence[asyncpg.Record]], tuple[list[str], list[str]]],
) -> tuple[list[asyncpg.Record], bool]:
    """`insert_jobs` inside a transaction (the caller's, or one of its own).

    Returns:
        The returned rows, and whether this call committed them.
    """
    return await _atomically(conn, lambda: insert_jobs(conn, schema, rows, notify))


async def copy_jobs(
    conn: asyncpg.Connection,
    schema: str | None,
    rows: InsertRows,
    notify: Callable[[frozenset[str]], tuple[list[str], list[str]]],
) -> tuple[int, frozenset[str], bool]:
    """Insert jobs with COPY, then send the insert notifications `notify` picks.

    The state of each row is decided against the database clock: one ``SELECT
    now()`` in the same transaction gives the instant that also fills
    ``created_at`` and an unset ``scheduled_at``. A unique conflict (with a
    stored row or inside the batch) fails the COPY, and nothing is inserted.

    `notify` gets the queues that received available jobs and returns
    (channels, payloads); it runs on this thread and must not block.

    Returns:
        The number of rows inserted, the queues that got available jobs, and
        whether this call committed them.
    """

    async def body() -> tuple[int, frozenset[str]]:
        now: datetime = await conn.fetchval("SELECT now()")
        records: list[tuple[Any, ...]] = []
        available: set[str] = set()
        for i in range(len(rows.args)):
            scheduled_at = rows.scheduled_at[i]
            if rows.pending[i]:
                state = "pending"
            elif scheduled_at is not None and scheduled_at > now:
                state = "scheduled"
            else:
                state = "available"
                available.add(rows.queue[i])
            tags = rows.tags[i]
            states = rows.unique_states[i]
            records.append(
                (
                    rows.args[i],
                    rows.kind[i],
                    rows.max_attempts[i],
                    rows.metadata[i],
                    rows.priority[i],
                    rows.queue[i],
                    now if scheduled_at is None else scheduled_at,
                    state,
                    tags.split(",") if tags else [],
                    rows.unique_key[i],
                    None if states is None else bytes([int(states, 2)]),
                )
            )
        status = await conn.copy_records_to_table(
            "river_job", records=records, columns=_COPY_COLUMNS, schema_name=schema
        )
        queues = frozenset(available)
        channels, payloads = notify(queues)
        if channels:
            await conn.execute(NOTIFY_MANY, channels, payloads)
        # The status is "COPY <count>".
        return int(status.rsplit(" ", 1)[-1]), queues

    (count, queues), committed = await _atomically(conn, body)
    return count, queues, committed
