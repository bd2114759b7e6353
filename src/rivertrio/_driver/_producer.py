"""SQL for the producer: fetch jobs, settle a fetch in doubt, refresh its queue. Asyncio side.

Each function takes an asyncpg connection; callers run it through
``Driver.run`` so that one call is one loop crossing. ``/*schema*/`` in the
SQL is replaced by ``qualify``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from ._sql import J_JOB_COLUMNS, JOB_COLUMNS, qualify

__all__ = ["FetchAttempt", "confirm_fetch", "fetch_jobs", "queue_refresh"]

FETCH = f"""
WITH locked AS (
    SELECT id
    FROM /*schema*/river_job
    WHERE state = 'available' AND queue = $1 AND scheduled_at <= now()
    ORDER BY priority, scheduled_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE /*schema*/river_job AS j
SET state = 'running',
    attempt = j.attempt + 1,
    attempted_at = now(),
    -- keep the last 100 client ids, as River does
    attempted_by = (array_append(coalesce(j.attempted_by, '{{}}'), $3::text))
        [greatest(1, cardinality(coalesce(j.attempted_by, '{{}}')) - 98):]
-- ANY(ARRAY(...)) rather than a join with `locked`: with statistics that say
-- the table is empty (filled since the last ANALYZE) the planner would scan the
-- whole table once per locked row; this form always looks each id up by key.
WHERE j.id = ANY(ARRAY(SELECT id FROM locked))
RETURNING {J_JOB_COLUMNS}
"""

# The fetch is a transaction of its own, so that its jobs become ours at a
# COMMIT whose reply we wait for with the rows already in hand: if that reply is
# lost, `confirm_fetch` can tell whether they are ours (an autocommitted UPDATE
# whose reply is lost leaves no trace of which rows it took). A session that
# goes silent inside the transaction (a black-holed connection) is ended by the
# server after a while, which releases the rows instead of keeping them locked
# for as long as TCP keeps the connection.
FETCH_IDLE_TIMEOUT = 10.0
_BEGIN_FETCH = (
    f"BEGIN; SET LOCAL idle_in_transaction_session_timeout = '{int(FETCH_IDLE_TIMEOUT * 1000)}ms'"
)

# FOR SHARE waits for a fetch transaction that may still be in flight (its
# COMMIT not yet arrived) and then reads the rows as that transaction left them.
# Filtering in the WHERE clause would test the rows as they were before it, and
# not wait at all.
_CONFIRM = f"SELECT {JOB_COLUMNS} FROM /*schema*/river_job WHERE id = ANY($1::bigint[]) FOR SHARE"


@dataclass(slots=True)
class FetchAttempt:
    """What a fetch got before it failed: see `fetch_jobs` and `confirm_fetch`."""

    rows: list[asyncpg.Record] | None = None
    """The rows the fetch's UPDATE returned; None until it returns."""


async def fetch_jobs(
    conn: asyncpg.Connection,
    schema: str | None,
    queue: str,
    limit: int,
    client_id: str,
    attempt: FetchAttempt | None = None,
) -> list[asyncpg.Record]:
    """Lock up to `limit` due jobs of `queue` and mark them running by `client_id`.

    `attempt` records how far it got, for the caller to sort out a failure: a
    failure before the rows arrive took nothing (the server rolls back a
    transaction it never saw committed); one after, while committing, leaves
    the rows' fate in doubt until `confirm_fetch` settles it.
    """
    if attempt is None:
        attempt = FetchAttempt()
    await conn.execute(_BEGIN_FETCH)
    # A failure up to here is rolled back: by the pool, which resets a connection
    # it takes back, or by the server, when the connection is gone.
    attempt.rows = await conn.fetch(qualify(FETCH, schema), queue, limit, client_id)
    await conn.execute("COMMIT")
    return attempt.rows


async def confirm_fetch(
    conn: asyncpg.Connection, schema: str | None, rows: list[asyncpg.Record], client_id: str
) -> list[asyncpg.Record]:
    """Of a fetch's `rows`, those its (unacknowledged) commit made ours: still running
    in the attempt that fetch started, by `client_id`."""
    attempted_at = rows[0]["attempted_at"]
    current = await conn.fetch(qualify(_CONFIRM, schema), [r["id"] for r in rows])
    return [
        r
        for r in current
        if r["state"] == "running"
        and r["attempted_at"] == attempted_at
        and r["attempted_by"]
        and r["attempted_by"][-1] == client_id
    ]


# A producer's registration and periodic refresh in one statement: create the
# queue's row (again, if the queue cleaner or a person deleted it) or touch its
# updated_at; read whether it is paused; and find which of the producer's
# running jobs were marked for cancellation (the path that works without
# notifications: poll_only, a lost notification, a job_cancel_tx).
QUEUE_REFRESH = """
WITH q AS (
    INSERT INTO /*schema*/river_queue (name, created_at, metadata, updated_at)
    VALUES ($1, now(), '{}', now())
    ON CONFLICT (name) DO UPDATE SET updated_at = now()
    RETURNING paused_at
)
SELECT
    (SELECT paused_at IS NOT NULL FROM q) AS paused,
    ARRAY(
        SELECT id FROM /*schema*/river_job
        WHERE id = ANY($2::bigint[]) AND state = 'running' AND metadata ? 'cancel_attempted_at'
    ) AS cancel_ids
"""


async def queue_refresh(
    conn: asyncpg.Connection, schema: str | None, name: str, running: list[int]
) -> Any:
    """Register or refresh a producer's queue row; a record (paused, cancel_ids)."""
    return await conn.fetchrow(qualify(QUEUE_REFRESH, schema), name, running)
