"""SQL for workflows: recording dependencies, releasing waiting tasks, and managing
a workflow's tasks together. Asyncio side.

See `rivertrio._workflow` for what a workflow is and which metadata keys its
tasks carry. Callers run these functions through ``Driver.run``: one call is
one loop crossing. ``/*schema*/`` in the SQL is replaced by ``qualify``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import asyncpg

from ._admin import CANCEL_LOCKED
from ._sql import J_JOB_COLUMNS, JOB_COLUMNS, qualify

__all__ = [
    "Released",
    "release_tasks",
    "set_dependency_ids",
    "task_outputs",
    "workflow_cancel",
    "workflow_list",
    "workflow_retry",
    "workflow_tasks",
]

# A task's dependencies are recorded by job id once the whole workflow is
# inserted (the ids exist only then), in the same transaction.
_SET_DEPENDENCY_IDS = """
UPDATE /*schema*/river_job AS j
SET metadata = j.metadata || jsonb_build_object('rivertrio:dep_ids', u.deps)
FROM unnest($1::bigint[], $2::jsonb[]) AS u(id, deps)
WHERE j.id = u.id
"""

# Waiting tasks (of the given workflows, or of all) whose dependencies are
# settled: released when every one completed (or, for a task that runs
# whatever they did, when every one is finished); cancelled when one was
# discarded, cancelled or deleted and the task says so. A released task is
# available, or held for the flow fetch when its queue is flow-controlled. A
# cancelled one keeps its wait mark, so that a retry makes it wait again.
#
# A task another release holds is waited for, not skipped: that release may
# have read its dependencies before the last of them ended (and so leave it
# waiting), and this one, started after that end, is the one that must decide.
# Tasks are locked in id order, so two releases cannot deadlock.
_RELEASE = """
WITH waiting AS (
    SELECT j.id, j.metadata
    FROM /*schema*/river_job AS j
    WHERE j.state = 'pending' AND j.metadata ? 'rivertrio:wait'
        AND ($1::text[] IS NULL OR j.metadata ->> 'rivertrio:workflow' = ANY($1::text[]))
        AND j.id > $2
    ORDER BY j.id
    LIMIT $3
    FOR UPDATE
),
settled AS (
    SELECT w.id,
        count(*) AS needed,
        count(*) FILTER (WHERE d.state = 'completed') AS completed,
        count(*) FILTER (WHERE d.state IS NULL OR d.state IN ('cancelled', 'discarded'))
            AS failed,
        count(*) FILTER (
            WHERE d.state IS NULL OR d.state IN ('completed', 'cancelled', 'discarded'))
            AS finished
    FROM waiting AS w
    CROSS JOIN LATERAL jsonb_array_elements_text(
        coalesce(w.metadata -> 'rivertrio:dep_ids', '[]'::jsonb)) AS e(dep)
    LEFT JOIN /*schema*/river_job AS d ON d.id = e.dep::bigint
    GROUP BY w.id
),
decided AS (
    SELECT w.id,
        CASE
            WHEN s.completed = s.needed THEN 'release'
            WHEN s.failed > 0
                AND coalesce(w.metadata ->> 'rivertrio:on_dependency_failure', 'cancel')
                    = 'cancel'
                THEN 'cancel'
            WHEN s.finished = s.needed THEN 'release'
            ELSE 'wait'
        END AS action
    FROM waiting AS w
    JOIN settled AS s ON s.id = w.id
),
updated AS (
    UPDATE /*schema*/river_job AS j
    SET state = (CASE
            WHEN d.action = 'cancel' THEN 'cancelled'
            WHEN j.metadata ? 'rivertrio:flow' THEN 'pending'
            ELSE 'available' END)::/*schema*/river_job_state,
        finalized_at = CASE WHEN d.action = 'cancel' THEN now() END,
        metadata = CASE
            WHEN d.action = 'cancel'
            THEN j.metadata || '{"rivertrio:cancelled_by": "dependency"}'::jsonb
            ELSE j.metadata - 'rivertrio:wait' END
    FROM decided AS d
    WHERE j.id = d.id AND d.action <> 'wait'
    RETURNING j.id, j.queue, j.state::text AS state
),
notified AS (
    SELECT count(pg_notify($4::text, json_build_object('queue', q.queue)::text)) AS n
    FROM (SELECT DISTINCT queue FROM updated WHERE state <> 'cancelled') AS q
    WHERE $4::text IS NOT NULL
)
SELECT
    (SELECT count(*) FROM waiting) AS examined,
    (SELECT max(id) FROM waiting) AS last_id,
    (SELECT count(*) FROM updated WHERE state <> 'cancelled') AS released,
    (SELECT count(*) FROM updated WHERE state = 'cancelled') AS cancelled,
    (SELECT coalesce(array_agg(DISTINCT queue), '{}') FROM updated WHERE state <> 'cancelled')
        AS queues,
    (SELECT n FROM notified) AS notified
"""

# The most waiting tasks one release statement looks at.
_RELEASE_BATCH = 1000
# Cancelling a task may settle the tasks that wait for it: passes, at most.
_RELEASE_ROUNDS = 100


@dataclass(slots=True)
class Released:
    """What releasing waiting workflow tasks did."""

    released: int = 0
    cancelled: int = 0
    queues: set[str] = dataclasses.field(default_factory=set)
    """The queues that got tasks to fetch (their producers should be woken)."""


async def set_dependency_ids(
    conn: asyncpg.Connection, schema: str | None, ids: list[int], dep_ids: list[str]
) -> None:
    """Record each task's dependencies (`dep_ids`: JSON arrays of job ids)."""
    await conn.execute(qualify(_SET_DEPENDENCY_IDS, schema), ids, dep_ids)


async def release_tasks(
    conn: asyncpg.Connection,
    schema: str | None,
    workflow_ids: list[str] | None,
    channel: str | None,
) -> Released:
    """Release (or cancel) the waiting tasks of `workflow_ids` (None: of every workflow).

    Goes through them in batches, and again while cancelling tasks settles
    others (a chain of dependents is cancelled in one call). Each statement
    is its own transaction. With a `channel`, the queues that got tasks are
    notified in the same statement.
    """
    result = Released()
    sql = qualify(_RELEASE, schema)
    for _ in range(_RELEASE_ROUNDS):
        after = 0
        cancelled = 0
        while True:
            rec = await conn.fetchrow(sql, workflow_ids, after, _RELEASE_BATCH, channel)
            assert rec is not None
            result.released += rec["released"]
            result.cancelled += rec["cancelled"]
            cancelled += rec["cancelled"]
            result.queues.update(rec["queues"])
            if rec["examined"] < _RELEASE_BATCH:
                break
            after = rec["last_id"]
        if not cancelled:
            break
    return result


_TASKS = f"""
SELECT {JOB_COLUMNS}
FROM /*schema*/river_job
WHERE metadata @> jsonb_build_object('rivertrio:workflow', $1::text)
ORDER BY id
"""


async def workflow_tasks(
    conn: asyncpg.Connection, schema: str | None, workflow_id: str
) -> list[asyncpg.Record]:
    """Every task of a workflow, by id."""
    return await conn.fetch(qualify(_TASKS, schema), workflow_id)


_LIST = """
SELECT metadata ->> 'rivertrio:workflow' AS id,
    min(metadata ->> 'rivertrio:workflow_name') AS name,
    min(id) AS first_id,
    min(created_at) AS created_at,
    array_agg(state::text) AS states
FROM /*schema*/river_job
WHERE metadata ? 'rivertrio:workflow'
GROUP BY 1
HAVING $2::bigint IS NULL OR min(id) < $2::bigint
ORDER BY first_id DESC
LIMIT $1
"""


async def workflow_list(
    conn: asyncpg.Connection, schema: str | None, limit: int, before: int | None
) -> list[asyncpg.Record]:
    """Workflows, newest first (by their first task's id), before the first id `before`."""
    return await conn.fetch(qualify(_LIST, schema), limit, before)


# As job_cancel does, for every unfinished task at once: a running task is
# marked and its client told; any other becomes cancelled now.
_CANCEL = f"""
WITH locked AS (
    SELECT id, state FROM /*schema*/river_job
    WHERE metadata @> jsonb_build_object('rivertrio:workflow', $1::text)
        AND state NOT IN ('cancelled', 'completed', 'discarded')
    FOR UPDATE
),{CANCEL_LOCKED}
SELECT *, (SELECT count(*) FROM notified) AS notified FROM updated ORDER BY id
"""


async def workflow_cancel(
    conn: asyncpg.Connection, schema: str | None, workflow_id: str, control_channel: str
) -> list[asyncpg.Record]:
    """Cancel every unfinished task of a workflow; the rows changed."""
    return await conn.fetch(qualify(_CANCEL, schema), workflow_id, control_channel)


# Discarded and cancelled tasks run again: one with dependencies waits for them
# again (those that completed release it at once), one without is available
# (held, in a flow-controlled queue). As job_retry does, a task out of attempts
# gets one more, and a cancellation mark is cleared.
_RETRY = f"""
WITH locked AS (
    SELECT id FROM /*schema*/river_job
    WHERE metadata @> jsonb_build_object('rivertrio:workflow', $1::text)
        AND state IN ('cancelled', 'discarded')
    FOR UPDATE
),
updated AS (
    UPDATE /*schema*/river_job AS j
    SET state = (CASE
            WHEN j.metadata ? 'rivertrio:dep_ids' OR j.metadata ? 'rivertrio:flow' THEN 'pending'
            ELSE 'available' END)::/*schema*/river_job_state,
        scheduled_at = now(),
        finalized_at = NULL,
        max_attempts = CASE
            WHEN j.attempt >= j.max_attempts THEN j.attempt + 1 ELSE j.max_attempts END,
        metadata = (j.metadata - 'cancel_attempted_at' - 'rivertrio:cancelled_by')
            || CASE WHEN j.metadata ? 'rivertrio:dep_ids'
                THEN '{{"rivertrio:wait": true}}'::jsonb ELSE '{{}}'::jsonb END
    FROM locked
    WHERE j.id = locked.id
    RETURNING {J_JOB_COLUMNS}
),
notified AS (
    SELECT count(pg_notify($2::text, json_build_object('queue', q.queue)::text)) AS n
    FROM (SELECT DISTINCT queue FROM updated) AS q
    WHERE $2::text IS NOT NULL
)
SELECT *, (SELECT n FROM notified) AS notified FROM updated ORDER BY id
"""


async def workflow_retry(
    conn: asyncpg.Connection, schema: str | None, workflow_id: str, insert_channel: str | None
) -> tuple[list[asyncpg.Record], Released]:
    """Retry a workflow's discarded and cancelled tasks, then release what may run.

    Two statements, each its own transaction: a task retried but not yet
    released meanwhile is waiting, as it would be anyway.
    """
    rows = await conn.fetch(qualify(_RETRY, schema), workflow_id, insert_channel)
    released = await release_tasks(conn, schema, [workflow_id], insert_channel)
    return rows, released


_OUTPUTS = """
SELECT metadata ->> 'rivertrio:task' AS task, metadata -> 'output' AS output
FROM /*schema*/river_job
WHERE id = ANY($1::bigint[])
"""


async def task_outputs(
    conn: asyncpg.Connection, schema: str | None, ids: list[int]
) -> list[asyncpg.Record]:
    """The task name and recorded output (JSON text, or None) of the jobs `ids`."""
    return await conn.fetch(qualify(_OUTPUTS, schema), ids)
