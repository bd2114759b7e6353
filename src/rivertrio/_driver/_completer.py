"""SQL for the completer: one statement persists a batch of outcomes. Asyncio side.

Callers run `complete_jobs` through ``Driver.run``: one call is one loop
crossing. ``/*schema*/`` in the SQL is replaced by ``qualify``.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from ._sql import J_JOB_COLUMNS, JOB_COLUMNS, qualify

__all__ = ["complete_in_tx", "complete_jobs"]

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
    -- Held by rivertrio (flow control): back to pending, for its flow fetch only.
    WHEN u.held THEN 'pending'
    WHEN u.outcome = 'interrupted' THEN 'available'
    WHEN {_SCHED} <= now() + interval '5 seconds' THEN 'available'
    WHEN u.outcome = 'failed' THEN 'retryable'
    ELSE 'scheduled'
END)::/*schema*/river_job_state"""
# The columns the completion changes, and the others (see the end of `COMPLETE`).
_CHANGED = "id, state, attempt, finalized_at, scheduled_at, metadata, errors"
_UNCHANGED = (
    "max_attempts, attempted_at, attempted_by, created_at, priority, queue, kind, tags, args, "
    "unique_key, unique_states"
)
_UNCHANGED_NULLS = ", ".join(f"NULL AS {c.strip()}" for c in _UNCHANGED.split(","))
assert sorted(c.strip() for c in f"{_CHANGED}, {_UNCHANGED}".split(",")) == sorted(
    c.strip() for c in JOB_COLUMNS.split(",")
)

_RESTORES_ATTEMPT = f"(u.outcome IN ('snoozed', 'interrupted') AND {_STATE} <> 'cancelled')"

COMPLETE = f"""
WITH u AS (
    SELECT *
    FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::float8[], $5::jsonb[],
        $6::jsonb[], $7::boolean[], $8::timestamptz[])
        AS u(id, outcome, retry_at, delay, error, metadata_updates, held, attempted_at)
),
updated AS (
    UPDATE /*schema*/river_job AS j
    SET state = {_STATE},
        finalized_at = CASE
            WHEN {_STATE} IN ('completed', 'cancelled', 'discarded') THEN now() END,
        scheduled_at = CASE
            WHEN {_STATE} IN ('available', 'retryable', 'scheduled', 'pending') THEN {_SCHED}
            ELSE j.scheduled_at END,
        attempt = CASE WHEN {_RESTORES_ATTEMPT} THEN greatest(j.attempt - 1, 0) ELSE j.attempt END,
        errors = CASE
            WHEN u.error IS NULL THEN j.errors
            ELSE array_append(j.errors, u.error || jsonb_build_object('at', now())) END,
        -- The attempt's metadata updates (output, logs, progress) are merged
        -- whatever the outcome, as River merges its metadata updates.
        metadata = CASE
            WHEN u.outcome = 'snoozed' AND {_STATE} <> 'cancelled' THEN jsonb_set(
                j.metadata, '{{snoozes}}',
                -- Another client may have stored anything there: count only numbers.
                to_jsonb(CASE WHEN jsonb_typeof(j.metadata -> 'snoozes') = 'number'
                    THEN (j.metadata ->> 'snoozes')::numeric::int ELSE 0 END + 1))
                || coalesce(u.metadata_updates, '{{}}'::jsonb)
            -- Unchanged (the common case) is not rebuilt.
            WHEN u.metadata_updates IS NULL THEN j.metadata
            ELSE j.metadata || u.metadata_updates END
    FROM u
    WHERE j.id = u.id AND j.state = 'running'
    RETURNING {J_JOB_COLUMNS},
        -- Still the attempt the caller fetched: only the columns set above changed.
        j.attempted_at = u.attempted_at AS ours,
        u.error IS NOT NULL AS errored
),
-- Rows someone else finished: the lock makes a row that another transaction
-- changed or deleted while we waited for it read as it is now (or not at all),
-- not as the statement's snapshot had it.
others AS (
    SELECT {J_JOB_COLUMNS}
    FROM /*schema*/river_job AS j
    -- Looked up by key: a join with `u` may scan the whole table for the few
    -- rows (mostly none) left.
    WHERE j.id = ANY(ARRAY(SELECT id FROM u WHERE id NOT IN (SELECT id FROM updated)))
    FOR SHARE OF j
)
-- The caller's own attempts come back as what this statement changed (errors
-- only when it added one), and the caller keeps the rest: a batch's worth of
-- columns it already holds is neither sent nor decoded again.
SELECT id, state, attempt, finalized_at, scheduled_at, metadata,
    CASE WHEN errored THEN errors END AS errors, true AS persisted, true AS changes_only,
    {_UNCHANGED_NULLS}
FROM updated WHERE ours
UNION ALL
SELECT {_CHANGED}, true, false, {_UNCHANGED} FROM updated WHERE ours IS NOT TRUE
UNION ALL
SELECT {_CHANGED}, false, false, {_UNCHANGED} FROM others
"""


async def complete_jobs(
    conn: asyncpg.Connection,
    schema: str | None,
    ids: list[int],
    outcomes: list[str],
    retry_at: list[datetime | None] | None,
    delays: list[float | None] | None,
    errors: list[str | None] | None,
    metadata_updates: list[str | None] | None = None,
    held: list[bool] | None = None,
    attempted_at: list[datetime | None] | None = None,
) -> list[asyncpg.Record]:
    """Persist a batch of outcomes in one statement; see `COMPLETE`.

    Every list but `ids` and `outcomes` may be None, which stands for all NULL
    (false for `held`).

    `held` says which jobs rivertrio holds for a flow fetch (see
    `rivertrio._flow`): an outcome that is not final puts those back in
    ``pending`` rather than where any fetch could take them.

    Each record has ``persisted`` (false: someone else finished the row, which
    is returned as stored) and ``changes_only``: true for a row changed in the
    attempt whose ``attempted_at`` the caller gave, which comes back with only
    the columns the completion sets (``errors`` is NULL unless it added one);
    the other columns are NULL and the caller has them already.
    """
    # unnest() pads an array shorter than the others, a NULL one too, with NULLs.
    return await conn.fetch(
        qualify(COMPLETE, schema),
        ids,
        outcomes,
        retry_at,
        delays,
        errors,
        metadata_updates,
        held,
        attempted_at,
    )


# A worker completing its own job in its transaction: only while the row is
# still running this very attempt (not rescued and fetched again meanwhile).
# The row is returned either way, with whether it was completed here.
COMPLETE_IN_TX = f"""
WITH updated AS (
    UPDATE /*schema*/river_job
    SET state = 'completed', finalized_at = now(),
        metadata = metadata || coalesce($3::jsonb, '{{}}'::jsonb)
    WHERE id = $1 AND state = 'running' AND attempt = $2
    RETURNING {JOB_COLUMNS}
)
SELECT *, true AS completed FROM updated
UNION ALL
SELECT {JOB_COLUMNS}, false FROM /*schema*/river_job
WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM updated)
"""


async def complete_in_tx(
    conn: asyncpg.Connection,
    schema: str | None,
    job_id: int,
    attempt: int,
    metadata_updates: str | None,
) -> asyncpg.Record | None:
    """Complete a running job (this attempt) in the caller's transaction; see `COMPLETE_IN_TX`."""
    return await conn.fetchrow(qualify(COMPLETE_IN_TX, schema), job_id, attempt, metadata_updates)
