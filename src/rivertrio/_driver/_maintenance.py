"""SQL for maintenance: the scheduler, the rescuer and the cleaners. Asyncio side of the driver.

Each function takes an asyncpg connection; callers run it through
``Driver.run`` so one call is one loop crossing. ``/*schema*/`` in the SQL is
replaced by ``qualify``. Every timestamp written comes from the database clock
(``now()``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ._liveness import LAST_CLIENT, LIVE_KEYS
from ._sql import J_JOB_COLUMNS, qualify

__all__ = [
    "RescueRows",
    "ScheduleResult",
    "delete_finalized_jobs",
    "delete_idle_queues",
    "rescue_jobs",
    "schedule_jobs",
    "stuck_jobs",
]

# --- scheduler ----------------------------------------------------------------

# A unique job whose key is held by a row outside this batch (in a state that
# row's bitmask covers) would violate river_job_unique_idx on becoming
# available, so it is discarded; among due jobs sharing a key, the first by
# fetch order wins and the others are discarded. SKIP LOCKED: a row another
# transaction holds (job_cancel, a delete) is left for the next pass.
_SCHEDULE = """
WITH due AS (
    SELECT id, unique_key, unique_states, priority, scheduled_at,
        metadata ? 'rivertrio:flow' AS held
    FROM /*schema*/river_job
    WHERE state IN ('retryable', 'scheduled') AND scheduled_at <= now()
    ORDER BY priority, scheduled_at, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
),
ranked AS (
    SELECT due.*,
        CASE WHEN unique_key IS NOT NULL AND unique_states IS NOT NULL THEN
            row_number() OVER (PARTITION BY unique_key ORDER BY priority, scheduled_at, id)
        END AS rank
    FROM due
),
decided AS (
    SELECT r.id,
        CASE
            -- Held by rivertrio (flow control): only its flow fetch may take it.
            WHEN r.held THEN 'pending'
            WHEN r.rank IS NULL THEN 'available'
            WHEN r.rank > 1 THEN 'discarded'
            WHEN EXISTS (
                SELECT 1
                FROM /*schema*/river_job AS o
                WHERE o.unique_key = r.unique_key
                    AND o.id NOT IN (SELECT id FROM due)
                    AND o.unique_states IS NOT NULL
                    AND /*schema*/river_job_state_in_bitmask(o.unique_states, o.state)
            ) THEN 'discarded'
            ELSE 'available'
        END AS state
    FROM ranked AS r
),
updated AS (
    UPDATE /*schema*/river_job AS j
    SET state = d.state::/*schema*/river_job_state,
        finalized_at = CASE WHEN d.state = 'discarded' THEN now() ELSE j.finalized_at END,
        metadata = CASE
            WHEN d.state = 'discarded'
            THEN j.metadata || '{"unique_key_conflict": "scheduler_discarded"}'::jsonb
            ELSE j.metadata END
    FROM decided AS d
    WHERE j.id = d.id
    RETURNING j.id, j.queue, d.state
),
notified AS (
    SELECT count(pg_notify($2, json_build_object('queue', q.queue)::text)) AS n
    FROM (SELECT DISTINCT queue FROM updated WHERE state IN ('available', 'pending')) AS q
    WHERE $2::text IS NOT NULL
)
SELECT
    (SELECT count(*) FROM updated) AS handled,
    (SELECT count(*) FROM updated WHERE state = 'discarded') AS discarded,
    (SELECT coalesce(array_agg(DISTINCT queue), '{}') FROM updated
        WHERE state IN ('available', 'pending')) AS queues,
    (SELECT n FROM notified) AS notified
"""


@dataclass(frozen=True, slots=True)
class ScheduleResult:
    """What one scheduler statement did."""

    handled: int
    """Rows it moved (made available or discarded)."""
    discarded: int
    """Rows discarded for a unique key conflict."""
    queues: frozenset[str]
    """Queues that got newly available jobs."""


async def schedule_jobs(
    conn: asyncpg.Connection, schema: str | None, limit: int, channel: str | None
) -> ScheduleResult:
    """Move up to `limit` due scheduled/retryable jobs to available, in one statement.

    With a `channel`, one insert notification per queue that got available jobs is
    sent in the same statement (so it is delivered only if the change commits).
    """
    rec = await conn.fetchrow(qualify(_SCHEDULE, schema), limit, channel)
    assert rec is not None
    return ScheduleResult(
        handled=rec["handled"], discarded=rec["discarded"], queues=frozenset(rec["queues"])
    )


# --- rescuer ------------------------------------------------------------------

# Keyset pagination over id: rows the caller decides to skip (a worker timeout
# longer than rescue_stuck_jobs_after) cannot fill every batch and hide a
# rescuable row behind them.
_STUCK = f"""
SELECT {J_JOB_COLUMNS}, now() AS db_now, c.orphaned
FROM /*schema*/river_job AS j
CROSS JOIN LATERAL (
    SELECT
        coalesce(j.{LAST_CLIENT} = ANY($3::text[])
            AND j.attempted_at < now() - make_interval(secs => $4), false) AS orphaned,
        coalesce(j.attempted_at < now() - make_interval(secs => $2), false) AS stuck
) AS c
WHERE j.state = 'running' AND j.id > $1 AND (c.orphaned OR c.stuck)
ORDER BY j.id
LIMIT $5
"""

# Only rows still running and still stuck in the same attempt change (a job
# that finished, or was fetched again, since it was selected is left alone);
# an orphan's owner must still hold no lock.
_RESCUE = f"""
WITH u AS (
    SELECT *
    FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::timestamptz[], $5::float8[],
        $6::jsonb[], $7::bigint[])
        AS u(id, attempted_at, state, retry_at, delay, error, owner_key)
),
live AS ({LIVE_KEYS})
UPDATE /*schema*/river_job AS j
SET state = (CASE
        -- Held by rivertrio (flow control): retried by its flow fetch only.
        WHEN u.state = 'retryable' AND j.metadata ? 'rivertrio:flow' THEN 'pending'
        ELSE u.state END)::/*schema*/river_job_state,
    finalized_at = CASE WHEN u.state IN ('cancelled', 'discarded') THEN now() END,
    scheduled_at = CASE
        WHEN u.state = 'retryable'
        THEN coalesce(u.retry_at, now() + make_interval(secs => u.delay))
        ELSE j.scheduled_at END,
    errors = array_append(j.errors, u.error || jsonb_build_object('at', now())),
    metadata = j.metadata || jsonb_build_object('river:rescue_count', coalesce(
        CASE WHEN jsonb_typeof(j.metadata -> 'river:rescue_count') = 'number'
            THEN (j.metadata ->> 'river:rescue_count')::numeric::int END, 0) + 1)
FROM u
WHERE j.id = u.id
    AND j.state = 'running'
    AND j.attempted_at = u.attempted_at
    AND (u.owner_key IS NULL OR u.owner_key NOT IN (SELECT * FROM live))
RETURNING j.id, u.state
"""


async def stuck_jobs(
    conn: asyncpg.Connection,
    schema: str | None,
    *,
    after_id: int,
    rescue_after: float | None,
    dead_clients: Sequence[str],
    grace: float,
    limit: int,
) -> list[asyncpg.Record]:
    """Running jobs after `after_id` (by id) that are stuck or orphaned.

    A job is stuck when attempted more than `rescue_after` seconds ago (None:
    none is), orphaned when its last ``attempted_by`` is in `dead_clients` and it
    was attempted more than `grace` seconds ago. Rows carry ``db_now`` and
    ``orphaned``.
    """
    return await conn.fetch(
        qualify(_STUCK, schema), after_id, rescue_after, list(dead_clients), grace, limit
    )


@dataclass(slots=True)
class RescueRows:
    """Column arrays for one rescue statement."""

    ids: list[int]
    attempted_at: list[datetime]
    states: list[str]
    retry_at: list[datetime | None]
    delays: list[float | None]
    errors: list[str]
    owner_keys: list[int | None]


async def rescue_jobs(
    conn: asyncpg.Connection, schema: str | None, rows: RescueRows
) -> list[asyncpg.Record]:
    """Apply a batch of rescue decisions; returns ``(id, state)`` of the rows changed."""
    return await conn.fetch(
        qualify(_RESCUE, schema),
        rows.ids,
        rows.attempted_at,
        rows.states,
        rows.retry_at,
        rows.delays,
        rows.errors,
        rows.owner_keys,
    )


# --- cleaners -------------------------------------------------------------------

_DELETE_FINALIZED = """
WITH doomed AS (
    SELECT id
    FROM /*schema*/river_job
    WHERE (state = 'completed' AND finalized_at < now() - make_interval(secs => $1))
        OR (state = 'cancelled' AND finalized_at < now() - make_interval(secs => $2))
        OR (state = 'discarded' AND finalized_at < now() - make_interval(secs => $3))
    LIMIT $4
    FOR UPDATE SKIP LOCKED
),
deleted AS (
    DELETE FROM /*schema*/river_job AS j USING doomed WHERE j.id = doomed.id RETURNING j.id
)
SELECT count(*) FROM deleted
"""

_DELETE_IDLE_QUEUES = """
WITH doomed AS (
    SELECT name
    FROM /*schema*/river_queue
    WHERE updated_at < now() - make_interval(secs => $1)
    ORDER BY name
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
DELETE FROM /*schema*/river_queue AS q USING doomed
WHERE q.name = doomed.name
RETURNING q.name
"""


async def delete_finalized_jobs(
    conn: asyncpg.Connection,
    schema: str | None,
    completed: float | None,
    cancelled: float | None,
    discarded: float | None,
    limit: int,
) -> int:
    """Delete up to `limit` finalized jobs past their state's retention (None keeps them)."""
    count = await conn.fetchval(
        qualify(_DELETE_FINALIZED, schema), completed, cancelled, discarded, limit
    )
    return int(count)


async def delete_idle_queues(
    conn: asyncpg.Connection, schema: str | None, idle_for: float, limit: int
) -> list[str]:
    """Delete up to `limit` queue rows not updated for `idle_for` seconds; returns their names."""
    rows = await conn.fetch(qualify(_DELETE_IDLE_QUEUES, schema), idle_for, limit)
    return [r["name"] for r in rows]
