"""SQL for the job hot paths: insert, fetch, complete. Asyncio side of the driver.

Each function here takes an asyncpg connection and runs on the asyncio side;
callers run it through ``Driver.run`` / ``Tx.run`` so that one call is one loop
crossing. ``/*schema*/`` in the SQL is replaced by ``qualify``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from . import qualify

# The columns every statement returns, in river_job's order.
JOB_COLUMNS = (
    "id, state, attempt, max_attempts, attempted_at, attempted_by, created_at, finalized_at, "
    "scheduled_at, priority, queue, kind, tags, metadata, errors, args, unique_key, unique_states"
)

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
RETURNING {", ".join("j." + c.strip() for c in JOB_COLUMNS.split(","))}
"""

# One statement completes a whole batch. Only rows still `running` change: a row
# finished by someone else meanwhile (the worker's own transaction, job_cancel,
# the rescuer, a delete) is returned as stored with persisted = false. The
# UPDATE locks and re-checks each row itself, so the decision below always sees
# the row as it is when it changes.
_SCHED = """(CASE u.outcome
    WHEN 'failed' THEN coalesce(u.retry_at, j.attempted_at + make_interval(secs => u.delay))
    WHEN 'snoozed' THEN now() + make_interval(secs => u.delay)
    ELSE now() END)"""
_STATE = f"""(CASE
    WHEN u.outcome = 'completed' THEN 'completed'
    WHEN u.outcome = 'cancelled' THEN 'cancelled'
    WHEN u.outcome = 'failed' AND j.attempt >= j.max_attempts THEN 'discarded'
    WHEN j.metadata ? 'cancel_attempted_at' THEN 'cancelled'
    WHEN u.outcome = 'interrupted' THEN 'available'
    WHEN {_SCHED} <= now() + interval '5 seconds' THEN 'available'
    WHEN u.outcome = 'failed' THEN 'retryable'
    ELSE 'scheduled'
END)::/*schema*/river_job_state"""
_RESTORES_ATTEMPT = f"(u.outcome IN ('snoozed', 'interrupted') AND {_STATE} <> 'cancelled')"

COMPLETE = f"""
WITH u AS (
    SELECT *
    FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::float8[], $5::jsonb[])
        AS u(id, outcome, retry_at, delay, error)
),
updated AS (
    UPDATE /*schema*/river_job AS j
    SET state = {_STATE},
        finalized_at = CASE
            WHEN {_STATE} IN ('completed', 'cancelled', 'discarded') THEN now() END,
        scheduled_at = CASE
            WHEN {_STATE} IN ('available', 'retryable', 'scheduled') THEN {_SCHED}
            ELSE j.scheduled_at END,
        attempt = CASE WHEN {_RESTORES_ATTEMPT} THEN greatest(j.attempt - 1, 0) ELSE j.attempt END,
        errors = CASE
            WHEN u.error IS NULL THEN j.errors
            ELSE array_append(j.errors, u.error || jsonb_build_object('at', now())) END,
        metadata = CASE
            WHEN u.outcome = 'snoozed' AND {_STATE} <> 'cancelled' THEN jsonb_set(
                j.metadata, '{{snoozes}}',
                -- Another client may have stored anything there: count only numbers.
                to_jsonb(CASE WHEN jsonb_typeof(j.metadata -> 'snoozes') = 'number'
                    THEN (j.metadata ->> 'snoozes')::numeric::int ELSE 0 END + 1))
            ELSE j.metadata END
    FROM u
    WHERE j.id = u.id AND j.state = 'running'
    RETURNING {", ".join("j." + c.strip() for c in JOB_COLUMNS.split(","))}
),
-- Rows someone else finished: the lock makes a row that another transaction
-- changed or deleted while we waited for it read as it is now (or not at all),
-- not as the statement's snapshot had it.
others AS (
    SELECT {", ".join("j." + c.strip() for c in JOB_COLUMNS.split(","))}
    FROM /*schema*/river_job AS j
    JOIN u ON u.id = j.id
    WHERE j.id NOT IN (SELECT id FROM updated)
    FOR SHARE OF j
)
SELECT *, true AS persisted FROM updated
UNION ALL
SELECT *, false FROM others
"""

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

INSERT = _INSERT_SELECT + f"RETURNING {JOB_COLUMNS}, false AS unique_skipped_as_duplicate"

# River's trick: DO UPDATE (a no-op change) so RETURNING yields the existing row;
# xmax is non-zero exactly for rows that already existed.
INSERT_UNIQUE = (
    _INSERT_SELECT
    + """
ON CONFLICT (unique_key)
    WHERE unique_key IS NOT NULL AND unique_states IS NOT NULL
        AND /*schema*/river_job_state_in_bitmask(unique_states, state)
    DO UPDATE SET kind = EXCLUDED.kind
"""
    + f"RETURNING {JOB_COLUMNS}, (xmax <> 0) AS unique_skipped_as_duplicate"
)

NOTIFY_MANY = "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS n(c, p)"


@dataclass(slots=True)
class InsertRows:
    """Column arrays for one multi-row insert (see `insert_jobs`)."""

    args: list[str]
    kind: list[str]
    max_attempts: list[int]
    metadata: list[str]
    priority: list[int]
    queue: list[str]
    scheduled_at: list[datetime | None]
    pending: list[bool]
    tags: list[str]
    unique_key: list[bytes | None]
    unique_states: list[str | None]

    def columns(self) -> tuple[list[Any], ...]:
        return (
            self.args,
            self.kind,
            self.max_attempts,
            self.metadata,
            self.priority,
            self.queue,
            self.scheduled_at,
            self.pending,
            self.tags,
            self.unique_key,
            self.unique_states,
        )


async def insert_jobs(
    conn: asyncpg.Connection,
    schema: str | None,
    rows: InsertRows,
    notify: Callable[[Sequence[asyncpg.Record]], tuple[list[str], list[str]]],
) -> list[asyncpg.Record]:
    """Insert jobs in one statement, then send the insert notifications `notify` picks.

    `notify` sees the inserted rows and returns (channels, payloads); it runs on
    this thread between the two statements and must not block.
    """
    sql = INSERT_UNIQUE if any(k is not None for k in rows.unique_key) else INSERT
    records: list[asyncpg.Record] = await conn.fetch(qualify(sql, schema), *rows.columns())
    channels, payloads = notify(records)
    if channels:
        await conn.execute(NOTIFY_MANY, channels, payloads)
    return records


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


async def complete_jobs(
    conn: asyncpg.Connection,
    schema: str | None,
    ids: list[int],
    outcomes: list[str],
    retry_at: list[datetime | None],
    delays: list[float | None],
    errors: list[str | None],
) -> list[asyncpg.Record]:
    """Persist a batch of outcomes in one statement; see `COMPLETE`."""
    return await conn.fetch(qualify(COMPLETE, schema), ids, outcomes, retry_at, delays, errors)
