"""SQL for the inserter: the unnest insert and COPY, atomic with their notifications. Asyncio side.

`insert_jobs` is one statement: it inserts the rows and sends their insert
notifications, so on the pool it autocommits in one round trip, and in a
caller's transaction (a ``Tx``) both commit with the caller's work. `copy_jobs`
needs several statements and runs them in a transaction (the caller's, or one
of its own). Each runs on one connection in one loop crossing (through
``Driver.run_held`` or ``Tx.run``). ``/*schema*/`` in the SQL is replaced by
``qualify``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from ._flow import held_in_text
from ._sql import JOB_COLUMNS, qualify

__all__ = [
    "JobToInsert",
    "available_queues",
    "copy_jobs",
    "insert_each",
    "insert_jobs",
    "insert_statement",
    "notify_many",
]

T = TypeVar("T")

_INSERT_SELECT = """
INSERT INTO /*schema*/river_job (
    args, kind, max_attempts, metadata, priority, queue, scheduled_at, state, tags,
    unique_key, unique_states)
SELECT u.args, u.kind, u.max_attempts, u.metadata, u.priority, u.queue,
    coalesce(u.scheduled_at, now()),
    (CASE
        WHEN u.pending THEN 'pending'
        WHEN u.scheduled_at > now() THEN 'scheduled'
        ELSE 'available'
    END)::/*schema*/river_job_state,
    CASE WHEN u.tags = '' THEN '{}'::varchar(255)[] ELSE string_to_array(u.tags, ',') END,
    u.unique_key, u.unique_states::bit(8)
FROM unnest($1::jsonb[], $2::text[], $3::smallint[], $4::jsonb[], $5::smallint[], $6::text[],
    $7::timestamptz[], $8::boolean[], $9::text[], $10::bytea[], $11::text[])
    WITH ORDINALITY
    AS u(args, kind, max_attempts, metadata, priority, queue, scheduled_at, pending, tags,
         unique_key, unique_states, ord)
ORDER BY u.ord
"""

# River's trick: DO UPDATE (a no-op change) so RETURNING yields the existing row;
# xmax is non-zero exactly for rows that already existed.
_ON_CONFLICT = """
ON CONFLICT (unique_key)
    WHERE unique_key IS NOT NULL AND unique_states IS NOT NULL
        AND /*schema*/river_job_state_in_bitmask(unique_states, state)
    DO UPDATE SET kind = EXCLUDED.kind
"""

# The notifications travel in the insert's own statement: one round trip, and
# they commit (and are delivered) exactly when the rows do. $13/$14 are the
# queues the inserter may notify (its debounce) and their payloads; a queue is
# notified only if one of its rows was inserted available, or held for a flow
# fetch (see rivertrio._flow). The final SELECT reads `notified`, or Postgres
# would not run it.
_WITH_NOTIFY = """
WITH inserted AS ({insert}
    RETURNING {columns}, {duplicate} AS unique_skipped_as_duplicate
), notified AS (
    SELECT pg_notify($12, n.payload)
    FROM unnest($13::text[], $14::text[]) AS n(queue, payload)
    WHERE EXISTS (
        SELECT 1 FROM inserted i
        WHERE i.queue = n.queue
            AND (i.state = 'available' OR i.metadata ? 'rivertrio:flow')
            AND NOT i.unique_skipped_as_duplicate)
)
SELECT inserted.*, (SELECT count(*) FROM notified) AS notifications FROM inserted
"""

INSERT = _WITH_NOTIFY.format(insert=_INSERT_SELECT, columns=JOB_COLUMNS, duplicate="false")
INSERT_UNIQUE = _WITH_NOTIFY.format(
    insert=_INSERT_SELECT + _ON_CONFLICT, columns=JOB_COLUMNS, duplicate="(xmax <> 0)"
)

NOTIFY_MANY = "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS n(c, p)"


async def notify_many(conn: asyncpg.Connection, channels: list[str], payloads: list[str]) -> None:
    """Send one notification per (channel, payload), in a transaction of its own."""
    await conn.execute(NOTIFY_MANY, channels, payloads)


@dataclass(frozen=True, slots=True)
class JobToInsert:
    """One job as the insert statements store it: every value resolved, checked and encoded.

    The one description of a job to insert below the public options: the
    inserter resolves each `InsertParams` (args, `InsertOpts`, the args class's
    options, the config's defaults) into one of these. `insert_jobs` sends a
    batch as one array per column, `copy_jobs` as COPY records.
    """

    args: str
    """The args, as a JSON object."""
    kind: str
    max_attempts: int
    metadata: str
    """A JSON object."""
    priority: int
    queue: str
    scheduled_at: datetime | None
    """When the job becomes due (timezone-aware); None: now, by the database's clock."""
    pending: bool
    tags: tuple[str, ...]
    unique_key: bytes | None
    unique_states: int | None
    """The states bitmask of a unique job (river_job's bit(8) as an int); None if not unique."""


def _columns(jobs: Sequence[JobToInsert]) -> list[list[Any]]:
    """The unnest arrays of `INSERT`, in its parameter order."""
    return [
        [j.args for j in jobs],
        [j.kind for j in jobs],
        [j.max_attempts for j in jobs],
        [j.metadata for j in jobs],
        [j.priority for j in jobs],
        [j.queue for j in jobs],
        [j.scheduled_at for j in jobs],
        [j.pending for j in jobs],
        # unnest cannot carry a 2-D array, so tags travel comma-joined (the tag
        # rule forbids commas).
        [",".join(j.tags) for j in jobs],
        [j.unique_key for j in jobs],
        [None if j.unique_states is None else format(j.unique_states, "08b") for j in jobs],
    ]


def available_queues(records: Sequence[asyncpg.Record]) -> set[str]:
    """The queues that got an available (or flow-held) job, new and not a unique
    duplicate, among `records`."""
    return {
        rec["queue"]
        for rec in records
        if (
            rec["state"] == "available"
            or (rec["state"] == "pending" and held_in_text(rec["metadata"]))
        )
        and not rec["unique_skipped_as_duplicate"]
    }


async def insert_jobs(
    conn: asyncpg.Connection,
    schema: str | None,
    jobs: Sequence[JobToInsert],
    channel: str,
    queues: Sequence[str],
    payloads: Sequence[str],
) -> list[asyncpg.Record]:
    """Insert jobs and send their notifications, in one statement.

    `queues` are those that may be notified, with their `payloads`, on
    `channel`; a queue is notified only if it got an available job. Returns
    one row per job, in order, with ``unique_skipped_as_duplicate``.
    """
    sql, args = insert_statement(schema, jobs, channel, queues, payloads)
    return await conn.fetch(sql, *args)


def insert_statement(
    schema: str | None,
    jobs: Sequence[JobToInsert],
    channel: str,
    queues: Sequence[str],
    payloads: Sequence[str],
) -> tuple[str, list[Any]]:
    """The SQL (``$n`` placeholders) and arguments `insert_jobs` runs.

    Also what ``rivertrio.render_insert`` hands to programs that run the
    statement on their own connection.
    """
    sql = INSERT_UNIQUE if any(j.unique_key is not None for j in jobs) else INSERT
    return qualify(sql, schema), [*_columns(jobs), channel, list(queues), list(payloads)]


async def insert_each(
    conn: asyncpg.Connection,
    schema: str | None,
    jobs: Sequence[JobToInsert],
    channel: str,
    queues: Sequence[str],
    payloads: Sequence[str],
) -> list[asyncpg.Record | Exception]:
    """`insert_jobs` one job at a time, each autocommitted: a rejected job fails alone.

    Returns, per job, its row or the error that rejected it. Once the
    connection fails, that error stands for the job it failed and every later
    one (none of which was sent). A queue is notified at most once.
    """
    pending = dict(zip(queues, payloads, strict=True))
    outcomes: list[asyncpg.Record | Exception] = []
    for i, job in enumerate(jobs):
        try:
            records = await insert_jobs(
                conn, schema, [job], channel, list(pending), list(pending.values())
            )
        except asyncpg.PostgresError as exc:
            outcomes.append(exc)
            continue
        except Exception as exc:
            outcomes.extend([exc] * (len(jobs) - i))
            break
        outcomes.append(records[0])
        for queue in available_queues(records):
            pending.pop(queue, None)
    return outcomes


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


async def copy_jobs(
    conn: asyncpg.Connection,
    schema: str | None,
    jobs: Sequence[JobToInsert],
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
        for job in jobs:
            if job.pending:
                state = "pending"
                if held_in_text(job.metadata):
                    available.add(job.queue)
            elif job.scheduled_at is not None and job.scheduled_at > now:
                state = "scheduled"
            else:
                state = "available"
                available.add(job.queue)
            records.append(
                (
                    job.args,
                    job.kind,
                    job.max_attempts,
                    job.metadata,
                    job.priority,
                    job.queue,
                    now if job.scheduled_at is None else job.scheduled_at,
                    state,
                    list(job.tags),
                    job.unique_key,
                    None if job.unique_states is None else bytes([job.unique_states]),
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
