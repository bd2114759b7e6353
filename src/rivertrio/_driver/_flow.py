"""SQL for flow control: the flow fetch, which starts held jobs under a queue's rules,
and the adoption of jobs inserted without them. Asyncio side.

The fetch's own SQL is a function of the ``rivertrio_flow`` migration line
(`_driver._flow_migrations`, version 3); this module calls it. See
`rivertrio._flow` for what the metadata keys mean (the workflows' SQL is in
`_driver._workflow`). Callers run these functions through ``Driver.run``: one
call is one loop crossing. ``/*schema*/`` in the SQL is replaced by ``qualify``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ._sql import JOB_COLUMNS, qualify

__all__ = [
    "FETCH",
    "FlowFetch",
    "FlowFetched",
    "flow_adopt",
    "flow_fetch_jobs",
    "held_in_text",
    "server_clock",
]

# The metadata key that marks a job held by rivertrio (rivertrio._flow.FLOW_KEY).
_FLOW_KEY_JSON = '"rivertrio:flow"'


def held_in_text(metadata: object) -> bool:
    """Whether a job's metadata (JSON text, as the driver returns it) marks it held.

    Only asked of ``pending`` rows, to wake the producers of their queue: a
    value that merely contains the text costs one needless fetch, nothing more.
    """
    if isinstance(metadata, str):
        return _FLOW_KEY_JSON in metadata
    return isinstance(metadata, Mapping) and "rivertrio:flow" in metadata


# Jobs of the queue found available (inserted by a River client, or by a client
# not given the queue's rules) are adopted, at most this many at a time.
_ADOPT_BATCH = 1000


@dataclass(frozen=True, slots=True)
class FlowFetch:
    """What the flow fetch of one queue needs to know of its rules (see `FlowControl`)."""

    concurrency: int | None
    partition_concurrency: int | None
    rate_limit: int | None
    rate_period: float
    rate_per_partition: bool
    sequence_continue: bool
    """Whether a discarded or cancelled job lets its sequence go on."""
    max_groups: int
    part_sql: str | None
    """The partition key of a river_job row ``j`` (None: not partitioned)."""

    @property
    def params(self) -> tuple[object, ...]:
        """The rules, as ``rivertrio_flow_fetch`` takes them ($7 to $13)."""
        return (
            self.concurrency,
            self.partition_concurrency,
            self.rate_limit,
            self.rate_period,
            self.rate_per_partition,
            self.sequence_continue,
            self.max_groups,
        )

    @property
    def adopt_sql(self) -> str:
        """The statement that holds the queue's available jobs (schema placeholder in it)."""
        return _adopt_sql(self.part_sql)


@dataclass(slots=True)
class FlowFetched:
    """What one flow fetch took, and where the next should go on from."""

    rows: list[asyncpg.Record]
    cursor: str | None
    """The last group this fetch served (else considered): the next one starts after it."""
    window_full: bool
    """It considered as many groups as it may: others may be waiting past them."""
    available: bool
    """The queue has available jobs, inserted without its rules: `flow_adopt` holds them."""
    wait: float | None
    """Seconds until a start leaves the rate limit's window (None: no rate limit, or
    no start in the window)."""


@functools.lru_cache(maxsize=64)
def _adopt_sql(part_sql: str | None) -> str:
    if part_sql is None:
        flow = "'p:'"
        part = ""
    else:
        flow = f"'p:' || {part_sql}"
        part = (
            " || CASE WHEN j.metadata ? 'rivertrio:flow' THEN '{}'::jsonb "
            f"ELSE jsonb_build_object('rivertrio:part', {part_sql}) END"
        )
    return f"""
WITH adopted AS (
    UPDATE /*schema*/river_job AS j
    SET state = 'pending',
        metadata = j.metadata
            || jsonb_build_object(
                'rivertrio:flow', coalesce(j.metadata ->> 'rivertrio:flow', {flow})){part}
    WHERE j.id IN (
        SELECT id FROM /*schema*/river_job
        WHERE state = 'available' AND queue = $1
        ORDER BY priority, scheduled_at, id
        LIMIT {_ADOPT_BATCH}
        FOR UPDATE SKIP LOCKED
    )
    RETURNING j.id
)
SELECT count(*) FROM adopted
"""


# ``rivertrio_flow_fetch`` (the line's version 3) takes the queue's lock, keyed by
# the schema the statements really use (named or found on the search path), so
# every client of one queue takes the same lock.
FETCH = f"""
SELECT {", ".join(f"(f.job).{column.strip()}" for column in JOB_COLUMNS.split(","))},
    f.next_cursor, f.window_full, f.available, f.wait_seconds
FROM /*schema*/rivertrio_flow_fetch(
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
    hashtext(coalesce($14::text, current_schema()) || '/' || $1), $15, $16
) AS f
"""


# Assigning a transaction id makes the commit write a record and, with the
# default synchronous_commit, wait for the WAL to be flushed up to it.
_FLUSH = "SELECT pg_current_xact_id()"


async def flow_fetch_jobs(
    conn: asyncpg.Connection,
    schema: str | None,
    queue: str,
    limit: int,
    client_id: str,
    rules: FlowFetch,
    cursor: str | None,
    in_hand: Sequence[int] = (),
    finished: Sequence[tuple[int, datetime]] = (),
    since: datetime | None = None,
) -> FlowFetched:
    """Start up to `limit` held jobs of `queue` that its rules allow, by `client_id`.

    One statement, committed on its own: ``rivertrio_flow_fetch`` takes the
    queue's flow lock and reads the database afresh under it, so flow fetches
    of one queue (in any process) take turns, each counts what the ones before
    it started, and the lock is held only while the server works, never
    across a round trip to the client or a wait for the disk. A second round
    trip waits for the fetch to be durable before its rows are returned.

    `in_hand` are the ids of the caller's jobs (running, or ended with the
    outcome not yet written), and `since` when it started, by the server's
    clock (`server_clock`). Its other running jobs of the queue started since
    were started by a fetch whose reply was lost (a failure here may have
    started jobs): they are returned again, within `limit`. None: none are.

    `finished` are (id, attempted_at) of the caller's own running jobs whose
    work has ended, their outcome not yet written: not counted as running.
    """
    records = await conn.fetch(
        qualify(FETCH, schema),
        queue,
        limit,
        client_id,
        cursor,
        [job_id for job_id, _ in finished],
        [attempted_at for _, attempted_at in finished],
        *rules.params,
        schema,
        list(in_hand),
        since,
    )
    rows = [r for r in records if r["id"] is not None]
    if rows:
        # Committed without waiting for its WAL to reach the disk (so the
        # queue's lock is not held through the flush): a transaction that waits
        # for its own flush waits for this one's too, which comes before it in
        # the WAL. No job runs before its start is as durable as a plain fetch's.
        await conn.fetchval(_FLUSH)
    summary = records[0]
    return FlowFetched(
        rows=rows,
        cursor=summary["next_cursor"],
        window_full=bool(summary["window_full"]),
        available=bool(summary["available"]),
        wait=summary["wait_seconds"],
    )


async def server_clock(conn: asyncpg.Connection) -> datetime:
    """The database server's current time (``since`` of `flow_fetch_jobs`)."""
    now: datetime = await conn.fetchval("SELECT clock_timestamp()")
    return now


async def flow_adopt(
    conn: asyncpg.Connection, schema: str | None, queue: str, rules: FlowFetch
) -> int:
    """Hold up to a batch of `queue`'s available jobs (inserted without its rules); how many."""
    return int(await conn.fetchval(qualify(rules.adopt_sql, schema), queue))
