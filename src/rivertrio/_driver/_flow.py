"""SQL for flow control: the flow fetch, which starts held jobs under a queue's rules.
Asyncio side.

See `rivertrio._flow` for what the metadata keys mean (the workflows' SQL is in
`_driver._workflow`). Callers run these functions through ``Driver.run``: one
call is one loop crossing. ``/*schema*/`` in the SQL is replaced by ``qualify``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ._producer import _BEGIN_FETCH, FetchAttempt
from ._sql import J_JOB_COLUMNS, qualify

__all__ = ["FlowFetch", "FlowFetched", "flow_fetch_jobs", "held_in_text"]

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


# Session-independent advisory lock class of flow fetches (first key); the second
# is a hash of the schema and the queue. Flow fetches of one queue take turns on
# it, so each counts running jobs and starts after the one before committed.
_LOCK_CLASS = 0x52_54_46  # "RTF"

# A held job, as rivertrio_flow_held_idx's predicate says it (the planner proves
# the index usable from this very text).
_HELD = (
    "@A@state = 'pending' AND @A@metadata ? 'rivertrio:flow' AND NOT @A@metadata ? 'rivertrio:wait'"
)
# Jobs of the queue found available (inserted by a River client, or by a client
# not given the queue's rules) are adopted, at most this many per fetch.
_ADOPT_BATCH = 1000
# No limit, where the SQL needs a number.
_NONE = 2_147_483_647


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
    def sql(self) -> str:
        """The fetch statement (with the schema placeholder); built once per rules."""
        return _fetch_sql(self)


@dataclass(slots=True)
class FlowFetched:
    """What one flow fetch took, and where the next should go on from."""

    rows: list[asyncpg.Record]
    cursor: str | None
    """The last group this fetch served (else considered): the next one starts after it."""
    window_full: bool
    """It considered as many groups as it may: others may be waiting past them."""
    adopted: int
    """Jobs found available and held, for the next fetch to take."""
    wait: float | None
    """Seconds until a start leaves the rate limit's window (None: no rate limit, or
    no start in the window)."""


def _held(alias: str) -> str:
    return _HELD.replace("@A@", alias)


def _room(rules: FlowFetch, part: str) -> str:
    """SQL: how many more jobs of partition `part` (an SQL text expression) may start."""
    terms = []
    if rules.partition_concurrency is not None:
        terms.append(
            f"{rules.partition_concurrency} - coalesce("
            f"(SELECT room_r.n FROM running AS room_r WHERE room_r.part = {part}), 0)"
        )
    if rules.rate_limit is not None and rules.rate_per_partition:
        terms.append(
            f"{rules.rate_limit} - coalesce("
            f"(SELECT room_s.n FROM started AS room_s WHERE room_s.part = {part}), 0)"
        )
    if not terms:
        return str(_NONE)
    return f"greatest(0, least({', '.join(terms)}))"


@functools.lru_cache(maxsize=256)
def _fetch_sql(rules: FlowFetch) -> str:
    rate = rules.rate_limit is not None
    window = f"interval '{rules.rate_period!r} seconds'"
    queue_room = ["$2::int"]
    if rules.concurrency is not None:
        queue_room.append(f"{rules.concurrency} - (SELECT coalesce(sum(n), 0) FROM running)")
    if rate and not rules.rate_per_partition:
        queue_room.append(f"{rules.rate_limit} - (SELECT coalesce(sum(n), 0) FROM started)")
    if rules.part_sql is None:
        adopt_flow = "'p:'"
        adopt_part = ""
    else:
        adopt_flow = f"'p:' || {rules.part_sql}"
        adopt_part = (
            " || CASE WHEN j.metadata ? 'rivertrio:flow' THEN '{}'::jsonb "
            f"ELSE jsonb_build_object('rivertrio:part', {rules.part_sql}) END"
        )
    started = (
        f"""
started AS MATERIALIZED (
    SELECT partition AS part, count(*) AS n
    FROM /*schema*/rivertrio_flow_start
    WHERE queue = $1 AND started_at > (SELECT t FROM stamp) - {window}
    GROUP BY 1
),"""
        if rate
        else ""
    )
    ledger = (
        f"""
logged AS (
    INSERT INTO /*schema*/rivertrio_flow_start (queue, partition, started_at)
    SELECT $1, coalesce(u.metadata ->> 'rivertrio:part', ''), (SELECT t FROM stamp)
    FROM updated AS u
),
pruned AS (
    DELETE FROM /*schema*/rivertrio_flow_start
    WHERE queue = $1 AND started_at <= (SELECT t FROM stamp) - {window}
),"""
        if rate
        else ""
    )
    # Seconds until the oldest start in the window (this fetch's included) leaves it.
    wait = (
        f"""extract(epoch FROM least(
            (SELECT min(s.started_at) FROM /*schema*/rivertrio_flow_start AS s
             WHERE s.queue = $1 AND s.started_at > (SELECT t FROM stamp) - {window}),
            CASE WHEN EXISTS (SELECT 1 FROM updated) THEN (SELECT t FROM stamp) END
        ) + {window} - (SELECT t FROM stamp))::float8"""
        if rate
        else "NULL::float8"
    )
    skip_done = " AND j.state NOT IN ('discarded', 'cancelled')" if rules.sequence_continue else ""
    group = "j.metadata ->> 'rivertrio:flow'"
    return f"""
WITH RECURSIVE
stamp AS MATERIALIZED (SELECT statement_timestamp() AS t),
-- Available jobs of a flow-controlled queue were inserted without its rules
-- (by a River client, say): they are held now, and fetched from the next fetch on.
adopted AS (
    UPDATE /*schema*/river_job AS j
    SET state = 'pending',
        metadata = j.metadata
            || jsonb_build_object('rivertrio:flow',
                coalesce(j.metadata ->> 'rivertrio:flow', {adopt_flow})){adopt_part}
    WHERE j.id IN (
        SELECT id FROM /*schema*/river_job
        WHERE state = 'available' AND queue = $1
        ORDER BY priority, scheduled_at, id
        LIMIT {_ADOPT_BATCH}
        FOR UPDATE SKIP LOCKED
    )
    RETURNING j.id
),
-- Running jobs, but for those of the fetching producer whose work is over
-- (their outcome not written yet): those exact attempts, $5 and $6.
running AS MATERIALIZED (
    SELECT coalesce(j.metadata ->> 'rivertrio:part', '') AS part, count(*) AS n
    FROM /*schema*/river_job AS j
    WHERE j.state = 'running' AND j.queue = $1
        AND NOT EXISTS (
            SELECT 1 FROM unnest($5::bigint[], $6::timestamptz[]) AS f(id, attempted_at)
            WHERE f.id = j.id AND f.attempted_at = j.attempted_at)
    GROUP BY 1
),{started}
room AS MATERIALIZED (
    SELECT greatest(0, least({", ".join(queue_room)})) AS n
),
-- The groups (partitions, sequences) with held jobs, in key order, starting
-- after the last group the previous fetch considered and going round: a loose
-- index scan, one index probe per group, at most {rules.max_groups} groups.
after_cursor(key, ord) AS (
    SELECT * FROM (
        SELECT {group}, 1
        FROM /*schema*/river_job AS j
        WHERE {_held("j.")} AND j.queue = $1 AND {group} > $4::text
        ORDER BY {group}
        LIMIT 1
    ) AS first
    UNION ALL
    SELECT (
        SELECT {group}
        FROM /*schema*/river_job AS j
        WHERE {_held("j.")} AND j.queue = $1 AND {group} > a.key
        ORDER BY {group}
        LIMIT 1
    ), a.ord + 1
    FROM after_cursor AS a
    WHERE a.key IS NOT NULL AND a.ord < {rules.max_groups}
),
from_start(key, ord) AS (
    SELECT * FROM (
        SELECT {group}, (SELECT count(key) FROM after_cursor) + 1
        FROM /*schema*/river_job AS j
        WHERE {_held("j.")} AND j.queue = $1
            AND ($4::text IS NULL OR {group} <= $4::text)
        ORDER BY {group}
        LIMIT 1
    ) AS first
    WHERE (SELECT count(key) FROM after_cursor) < {rules.max_groups}
    UNION ALL
    SELECT (
        SELECT {group}
        FROM /*schema*/river_job AS j
        WHERE {_held("j.")} AND j.queue = $1 AND {group} > s.key
            AND ($4::text IS NULL OR {group} <= $4::text)
        ORDER BY {group}
        LIMIT 1
    ), s.ord + 1
    FROM from_start AS s
    WHERE s.key IS NOT NULL AND s.ord < {rules.max_groups}
),
groups AS MATERIALIZED (
    SELECT key, ord, left(key, 2) AS sort, substr(key, 3) AS rest
    FROM (SELECT * FROM after_cursor UNION ALL SELECT * FROM from_start) AS g
    WHERE key IS NOT NULL
),
-- A partition's group offers its first due jobs, as many as the partition may
-- start; a sequence's group offers its head (its first job, by id, that does not
-- count as done) if that job is held and due.
candidates AS MATERIALIZED (
    SELECT c.id, c.part, g.ord, c.priority, c.scheduled_at
    FROM groups AS g
    CROSS JOIN LATERAL (
        SELECT j.id, coalesce(j.metadata ->> 'rivertrio:part', '') AS part, j.priority,
            j.scheduled_at
        FROM /*schema*/river_job AS j
        WHERE g.sort = 'p:' AND {_held("j.")} AND j.queue = $1 AND {group} = g.key
            AND j.scheduled_at <= now()
        ORDER BY j.priority, j.scheduled_at, j.id
        LIMIT least((SELECT n FROM room), {_room(rules, "g.rest")})
    ) AS c
    UNION ALL
    SELECT h.id, h.part, g.ord, h.priority, h.scheduled_at
    FROM groups AS g
    CROSS JOIN LATERAL (
        SELECT j.id, j.state, j.metadata, coalesce(j.metadata ->> 'rivertrio:part', '') AS part,
            j.priority, j.scheduled_at
        FROM /*schema*/river_job AS j
        WHERE g.sort = 's:' AND j.state <> 'completed' AND j.metadata ? 'rivertrio:seq'
            AND j.queue = $1 AND j.metadata ->> 'rivertrio:seq' = g.rest{skip_done}
        ORDER BY j.id
        LIMIT 1
    ) AS h
    WHERE {_held("h.")} AND h.scheduled_at <= now()
),
-- Fair shares: each partition's first candidate before any partition's second.
ranked AS (
    SELECT c.*, row_number() OVER (
        PARTITION BY c.part ORDER BY c.ord, c.priority, c.scheduled_at, c.id) AS rank
    FROM candidates AS c
),
picked AS MATERIALIZED (
    SELECT r.id, r.ord
    FROM ranked AS r
    WHERE r.rank <= {_room(rules, "r.part")}
    ORDER BY r.rank, r.ord, r.priority, r.scheduled_at, r.id
    LIMIT (SELECT n FROM room)
),
-- Only the jobs picked are locked (a row lock is a write): one that another
-- transaction holds (a job_cancel, say) is skipped, not waited for, and one that
-- changed meanwhile is re-checked.
locked AS MATERIALIZED (
    SELECT j.id
    FROM /*schema*/river_job AS j
    WHERE j.id = ANY(ARRAY(SELECT id FROM picked)) AND j.state::text = 'pending'
    FOR UPDATE SKIP LOCKED
),
updated AS (
    UPDATE /*schema*/river_job AS j
    SET state = 'running',
        attempt = j.attempt + 1,
        attempted_at = (SELECT t FROM stamp),
        -- keep the last 100 client ids, as River does
        attempted_by = (array_append(coalesce(j.attempted_by, '{{}}'), $3::text))
            [greatest(1, cardinality(coalesce(j.attempted_by, '{{}}')) - 98):]
    -- The cast keeps the planner on the primary key.
    WHERE j.id = ANY(ARRAY(SELECT id FROM locked)) AND j.state::text = 'pending'
    RETURNING {J_JOB_COLUMNS}
),{ledger}
-- The next fetch starts after the last group served here (else after the last
-- one considered): turns go round even when each fetch starts one job.
summary AS (
    SELECT coalesce(
            (SELECT g.key FROM groups AS g WHERE g.ord = (SELECT max(ord) FROM picked)),
            (SELECT key FROM groups ORDER BY ord DESC LIMIT 1)) AS flow_cursor,
        (SELECT count(*) FROM groups) >= {rules.max_groups} AS flow_window_full,
        (SELECT count(*) FROM adopted) AS flow_adopted,
        {wait} AS flow_wait
)
SELECT u.*, s.flow_cursor, s.flow_window_full, s.flow_adopted, s.flow_wait
FROM summary AS s
LEFT JOIN updated AS u ON true
"""


def _lock_sql(schema: str | None, queue: str) -> str:
    # Keyed by the schema the statements really use, whether named or found on
    # the search path, so every client of one queue takes the same lock.
    named = "NULL" if schema is None else "'" + schema.replace("'", "''") + "'"
    return (
        f"SELECT pg_advisory_xact_lock({_LOCK_CLASS}, "
        f"hashtext(coalesce({named}::text, current_schema()) || '/' || '{queue}'))"
    )


async def flow_fetch_jobs(
    conn: asyncpg.Connection,
    schema: str | None,
    queue: str,
    limit: int,
    client_id: str,
    rules: FlowFetch,
    cursor: str | None,
    attempt: FetchAttempt | None = None,
    finished: Sequence[tuple[int, datetime]] = (),
) -> FlowFetched:
    """Start up to `limit` held jobs of `queue` that its rules allow, by `client_id`.

    One transaction, as `fetch_jobs`, and the same round trips: its first
    message also takes the queue's flow lock, so flow fetches of one queue (in
    any process) take turns, and each counts what the ones before it started.
    `attempt` records the rows before the COMMIT, for `confirm_fetch`.

    `finished` are (id, attempted_at) of the caller's own running jobs whose
    work has ended, their outcome not yet written: not counted as running.
    """
    if attempt is None:
        attempt = FetchAttempt()
    # `queue` passed queue_name's check: letters, digits, '_' and '-' only. The
    # statement is planned while the lock is held: a plan made once (it does not
    # depend on the values) keeps that time out of every fetch of the queue.
    await conn.execute(
        _BEGIN_FETCH
        + "; SET LOCAL plan_cache_mode = force_generic_plan; "
        + _lock_sql(schema, queue)
    )
    records = await conn.fetch(
        qualify(rules.sql, schema),
        queue,
        limit,
        client_id,
        cursor,
        [job_id for job_id, _ in finished],
        [attempted_at for _, attempted_at in finished],
    )
    attempt.rows = [r for r in records if r["id"] is not None]
    await conn.execute("COMMIT")
    summary = records[0]
    return FlowFetched(
        rows=attempt.rows,
        cursor=summary["flow_cursor"],
        window_full=bool(summary["flow_window_full"]),
        adopted=int(summary["flow_adopted"]),
        wait=summary["flow_wait"],
    )
