"""SQL for managing jobs and queues. Asyncio side of the driver.

Every function runs ONE statement on the connection it is given (through
``Driver.run`` / ``Tx.run``: one loop crossing). Notifications a statement
sends (``pg_notify`` inside it) are delivered when its transaction commits: at
once on the pool, with the caller's commit on a ``Tx``. ``/*schema*/`` in the
SQL is replaced by ``qualify``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, Protocol

import asyncpg

from ._sql import J_JOB_COLUMNS, JOB_COLUMNS, qualify

__all__ = [
    "CANCEL_LOCKED",
    "job_cancel",
    "job_delete",
    "job_delete_many",
    "job_get",
    "job_list",
    "job_retry",
    "queue_get",
    "queue_list",
    "queue_set_paused",
    "queue_update",
]


class JobFilter(Protocol):
    """The filters of a job listing or deletion (``rivertrio.JobListParams``'s)."""

    @property
    def ids(self) -> Sequence[int] | None: ...
    @property
    def kinds(self) -> Sequence[str] | None: ...
    @property
    def queues(self) -> Sequence[str] | None: ...
    @property
    def states(self) -> Sequence[str] | None: ...
    @property
    def priorities(self) -> Sequence[int] | None: ...
    @property
    def tags(self) -> Sequence[str] | None: ...
    @property
    def tags_match(self) -> Literal["any", "all"]: ...
    @property
    def metadata(self) -> Mapping[str, Any] | None: ...


class ListCursor(Protocol):
    """Where a page of a job listing starts: after this row (``rivertrio.JobListCursor``)."""

    @property
    def id(self) -> int: ...
    @property
    def time(self) -> datetime | None: ...


class JobListQuery(JobFilter, Protocol):
    """One page of a job listing (``rivertrio.JobListParams``)."""

    @property
    def order_by(self) -> str: ...
    @property
    def order(self) -> Literal["asc", "desc"]: ...
    @property
    def after(self) -> ListCursor | None: ...
    @property
    def limit(self) -> int: ...


class JobDeleteQuery(JobFilter, Protocol):
    """A bulk deletion (``rivertrio.JobDeleteManyParams``)."""

    @property
    def limit(self) -> int | None: ...


JOB_GET = f"SELECT {JOB_COLUMNS} FROM /*schema*/river_job WHERE id = $1"

#: The cancellation of the rows of a CTE ``locked`` (their id and state, locked
#: FOR UPDATE), as two CTEs, ``updated`` (the rows changed) and ``notified``: a
#: finished row is left as it is; any other is marked ``cancel_attempted_at``
#: and becomes ``cancelled`` now, except a running one, which is left to the
#: producer running it, told on the control channel ``$2``. The mark makes its
#: end, whatever it is but completion, a cancellation, and tells the rescuer not
#: to retry it. `job_cancel` and `workflow_cancel` both cancel this way.
CANCEL_LOCKED = f"""
updated AS (
    UPDATE /*schema*/river_job AS j
    SET
        state = CASE WHEN j.state = 'running' THEN j.state ELSE 'cancelled' END,
        finalized_at = CASE WHEN j.state = 'running' THEN j.finalized_at ELSE now() END,
        metadata = jsonb_set(j.metadata, '{{cancel_attempted_at}}', to_jsonb(
            to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')))
    FROM locked
    WHERE j.id = locked.id AND locked.state NOT IN ('cancelled', 'completed', 'discarded')
    RETURNING {J_JOB_COLUMNS}
),
notified AS (
    SELECT pg_notify($2::text, json_build_object(
        'action', 'cancel', 'job_id', id, 'queue', queue)::text) AS sent
    FROM updated
    WHERE state = 'running'
)"""

# River's shape: lock the row, change it if its state allows, and return it
# either way (the main query's read of river_job sees the row as it was before
# this statement, which is the row as stored when nothing changed).
JOB_CANCEL = f"""
WITH locked AS (
    SELECT id, state FROM /*schema*/river_job WHERE id = $1 FOR UPDATE
),{CANCEL_LOCKED}
SELECT *, (SELECT count(*) FROM notified) AS notified FROM updated
UNION ALL
SELECT {JOB_COLUMNS}, 0 FROM /*schema*/river_job
WHERE id = $1 AND id NOT IN (SELECT id FROM updated)
"""

JOB_RETRY = f"""
WITH locked AS (
    SELECT id FROM /*schema*/river_job WHERE id = $1 FOR UPDATE
),
updated AS (
    UPDATE /*schema*/river_job AS j
    SET
        -- A job rivertrio holds (flow control, or a workflow task waiting for
        -- its dependencies) goes back to being held, not where any fetch takes it.
        state = CASE
            WHEN j.metadata ? 'rivertrio:flow' OR j.metadata ? 'rivertrio:wait' THEN 'pending'
            ELSE 'available' END::/*schema*/river_job_state,
        scheduled_at = now(),
        finalized_at = NULL,
        max_attempts = CASE
            WHEN j.attempt >= j.max_attempts THEN j.attempt + 1 ELSE j.max_attempts END,
        -- An earlier job_cancel's mark would cancel the new run at its first
        -- failure (and make its producer cancel it at once): a retry clears it.
        metadata = j.metadata - 'cancel_attempted_at'
    FROM locked
    WHERE j.id = locked.id
        AND j.state <> 'running'
        -- Already available and due: leave it (and its place in line) alone, as River does.
        AND NOT (j.state = 'available' AND j.scheduled_at <= now())
    RETURNING {J_JOB_COLUMNS}
),
notified AS (
    SELECT pg_notify($2::text, json_build_object('queue', queue)::text) AS sent
    FROM updated
    WHERE $2::text IS NOT NULL
)
SELECT *, (SELECT count(*) FROM notified) AS notified, true AS changed FROM updated
UNION ALL
SELECT {JOB_COLUMNS}, 0, false FROM /*schema*/river_job
WHERE id = $1 AND id NOT IN (SELECT id FROM updated)
"""

JOB_DELETE = f"""
WITH locked AS (
    SELECT id FROM /*schema*/river_job WHERE id = $1 FOR UPDATE
),
deleted AS (
    DELETE FROM /*schema*/river_job AS j
    USING locked
    WHERE j.id = locked.id AND j.state <> 'running'
    RETURNING {J_JOB_COLUMNS}
)
SELECT *, true AS deleted FROM deleted
UNION ALL
SELECT {JOB_COLUMNS}, false FROM /*schema*/river_job
WHERE id = $1 AND id NOT IN (SELECT id FROM deleted)
"""

QUEUE_COLUMNS = "name, created_at, metadata, paused_at, updated_at"

QUEUE_GET = f"SELECT {QUEUE_COLUMNS} FROM /*schema*/river_queue WHERE name = $1"

QUEUE_LIST = f"SELECT {QUEUE_COLUMNS} FROM /*schema*/river_queue ORDER BY name LIMIT $1::bigint"

# Pause and resume change only rows not already in the wanted state, and
# notify only if one changed: pausing a paused queue keeps its paused_at and
# tells nobody. Rows are locked in name order so that two '*' calls cannot deadlock.
_QUEUE_SET_PAUSED = """
WITH target AS (
    SELECT name FROM /*schema*/river_queue
    WHERE $1::text = '*' OR name = $1::text
    ORDER BY name
    FOR UPDATE
),
changed AS (
    UPDATE /*schema*/river_queue AS q
    SET paused_at = {paused_at}, updated_at = now()
    FROM target
    WHERE q.name = target.name AND q.paused_at IS {unchanged}
    RETURNING q.name
),
notified AS (
    SELECT pg_notify($2::text, $3::text) AS sent
    WHERE EXISTS (SELECT 1 FROM changed)
)
SELECT (SELECT count(*) FROM target) AS matched,
    (SELECT count(*) FROM changed) AS changed,
    (SELECT count(*) FROM notified) AS notified
"""
QUEUE_PAUSE = _QUEUE_SET_PAUSED.format(paused_at="now()", unchanged="NULL")

# River's QueueUpdate: the metadata is replaced (not merged) when given, and
# updated_at is refreshed either way. Clients working the queue are told of a
# real change (jsonb equality: key order does not count) on the control topic,
# in River's payload.
QUEUE_UPDATE = f"""
WITH old AS (
    SELECT name, metadata FROM /*schema*/river_queue WHERE name = $1::text FOR UPDATE
),
updated AS (
    UPDATE /*schema*/river_queue AS q
    SET metadata = CASE WHEN $2::boolean THEN $3::jsonb ELSE q.metadata END, updated_at = now()
    FROM old
    WHERE q.name = old.name
    RETURNING {", ".join("q." + c for c in QUEUE_COLUMNS.split(", "))},
        q.metadata IS DISTINCT FROM old.metadata AS changed
),
notified AS (
    SELECT pg_notify($4::text, json_build_object(
        'action', 'metadata_changed', 'metadata', u.metadata, 'queue', u.name)::text)
    FROM updated u
    WHERE u.changed
)
SELECT updated.*, (SELECT count(*) FROM notified) AS notified FROM updated
"""
QUEUE_RESUME = _QUEUE_SET_PAUSED.format(paused_at="NULL", unchanged="NOT NULL")


def _filters(params: JobFilter, args: list[Any]) -> list[str]:
    """SQL conditions for `params`' filters; their values are appended to `args`."""
    conditions: list[str] = []

    def add(template: str, value: Any) -> None:
        args.append(value)
        conditions.append(template.replace("?", f"${len(args)}"))

    if params.ids is not None:
        add("id = ANY(?::bigint[])", list(params.ids))
    if params.kinds is not None:
        add("kind = ANY(?::text[])", list(params.kinds))
    if params.queues is not None:
        add("queue = ANY(?::text[])", list(params.queues))
    if params.states is not None:
        add(
            "state = ANY(?::text[]::/*schema*/river_job_state[])",
            [str(s) for s in params.states],
        )
    if params.priorities is not None:
        add("priority = ANY(?::smallint[])", list(params.priorities))
    if params.tags is not None:
        op = "&&" if params.tags_match == "any" else "@>"
        add(f"tags {op} ?::varchar(255)[]", list(params.tags))
    if params.metadata is not None:
        add("metadata @> ?::jsonb", json.dumps(params.metadata))
    return conditions


def job_list_sql(params: JobListQuery) -> tuple[str, list[Any]]:
    """The SELECT for one `job_list` page, and its arguments."""
    args: list[Any] = []
    conditions = _filters(params, args)
    desc = params.order == "desc"
    direction = "DESC" if desc else "ASC"
    if params.order_by == "id":
        order = f"id {direction}"
        if params.after is not None:
            args.append(params.after.id)
            conditions.append(f"id {'<' if desc else '>'} ${len(args)}::bigint")
    else:
        # Rows with a null time sort after the others (before them, descending);
        # the key is a row value, so the keyset comparison covers the nulls too.
        col = params.order_by
        parts = [f"({col} IS NULL)", f"coalesce({col}, '-infinity'::timestamptz)", "id"]
        key = ", ".join(parts)
        order = ", ".join(f"{part} {direction}" for part in parts)
        if params.after is not None:
            args.extend([params.after.time is None, params.after.time, params.after.id])
            n = len(args)
            conditions.append(
                f"({key}) {'<' if desc else '>'} (${n - 2}::boolean, "
                f"coalesce(${n - 1}::timestamptz, '-infinity'::timestamptz), ${n}::bigint)"
            )
    args.append(params.limit)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    sql = (
        f"SELECT {JOB_COLUMNS} FROM /*schema*/river_job {where} "
        f"ORDER BY {order} LIMIT ${len(args)}::bigint"
    )
    return sql, args


def job_delete_many_sql(params: JobDeleteQuery) -> tuple[str, list[Any]]:
    """The DELETE of `job_delete_many`, and its arguments."""
    args: list[Any] = []
    # Running jobs are never deleted. The lock makes a row being fetched right
    # now either skipped by the fetch or re-checked (and skipped) here once it is
    # running.
    conditions = [*_filters(params, args), "state <> 'running'"]
    args.append(params.limit)
    sql = f"""
WITH doomed AS (
    SELECT id FROM /*schema*/river_job
    WHERE {" AND ".join(conditions)}
    ORDER BY id
    LIMIT ${len(args)}::bigint
    FOR UPDATE
)
DELETE FROM /*schema*/river_job AS j
USING doomed
WHERE j.id = doomed.id AND j.state <> 'running'
RETURNING {J_JOB_COLUMNS}
"""
    return sql, args


# -- the asyncio functions, each one statement --


async def job_get(conn: asyncpg.Connection, schema: str | None, job_id: int) -> Any:
    """The job's row, or None."""
    return await conn.fetchrow(qualify(JOB_GET, schema), job_id)


async def job_list(
    conn: asyncpg.Connection, schema: str | None, params: JobListQuery
) -> list[asyncpg.Record]:
    """One page of jobs."""
    sql, args = job_list_sql(params)
    return await conn.fetch(qualify(sql, schema), *args)


async def job_cancel(
    conn: asyncpg.Connection, schema: str | None, job_id: int, control_channel: str
) -> Any:
    """Cancel a job (see `JOB_CANCEL`); the row as stored afterwards, or None."""
    return await conn.fetchrow(qualify(JOB_CANCEL, schema), job_id, control_channel)


async def job_retry(
    conn: asyncpg.Connection, schema: str | None, job_id: int, insert_channel: str | None
) -> Any:
    """Make a job available again (see `JOB_RETRY`); the row afterwards, or None."""
    return await conn.fetchrow(qualify(JOB_RETRY, schema), job_id, insert_channel)


async def job_delete(conn: asyncpg.Connection, schema: str | None, job_id: int) -> Any:
    """Delete a job unless it is running; the row with ``deleted``, or None."""
    return await conn.fetchrow(qualify(JOB_DELETE, schema), job_id)


async def job_delete_many(
    conn: asyncpg.Connection, schema: str | None, params: JobDeleteQuery
) -> list[asyncpg.Record]:
    """Delete the matching non-running jobs; their rows."""
    sql, args = job_delete_many_sql(params)
    return await conn.fetch(qualify(sql, schema), *args)


async def queue_get(conn: asyncpg.Connection, schema: str | None, name: str) -> Any:
    """The queue's row, or None."""
    return await conn.fetchrow(qualify(QUEUE_GET, schema), name)


async def queue_list(
    conn: asyncpg.Connection, schema: str | None, limit: int | None
) -> list[asyncpg.Record]:
    """Queue rows by name."""
    return await conn.fetch(qualify(QUEUE_LIST, schema), limit)


async def queue_update(
    conn: asyncpg.Connection,
    schema: str | None,
    name: str,
    metadata: str | None,
    control_channel: str,
) -> Any:
    """Update a queue's row (metadata replaced when not None); the row, or None."""
    return await conn.fetchrow(
        qualify(QUEUE_UPDATE, schema), name, metadata is not None, metadata, control_channel
    )


async def queue_set_paused(
    conn: asyncpg.Connection,
    schema: str | None,
    name: str,
    paused: bool,
    control_channel: str,
    payload: str,
) -> Any:
    """Pause or resume a queue (or ``'*'``); a record (matched, changed, notified)."""
    sql = QUEUE_PAUSE if paused else QUEUE_RESUME
    return await conn.fetchrow(qualify(sql, schema), name, control_channel, payload)
