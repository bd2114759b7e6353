"""The ``rivertrio_flow`` migration line: the schema flow control needs, beside River's.

River's ``river_migration`` table keys its rows by (line, version) so that
other lines can live next to ``main``; this is one. Its objects are indexes on
``river_job`` and a table of our own, all named ``rivertrio_flow_*``: River's
``main`` line is not changed by a byte, and a River client sharing the
database sees the same tables, columns and states it always did. Removing the
line (down to 0) leaves the schema exactly as ``main`` left it.

The line needs ``main`` at version 5 or later: its rows need the ``line``
column, and held jobs use the ``pending`` state (version 4).

Asyncio side, like `_migrations`: everything runs in one `Driver.run` crossing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg

from .._exceptions import DatabaseError, MigrationError
from ._migrations import (
    LINE_COLUMN_VERSION,
    Direction,
    Migration,
    SchemaState,
    Step,
    check_target,
    failed_step,
    migrators_lock,
    plan,
    plan_versions,
    render,
    run_migrations,
    script,
)
from ._migrations import read_state as read_main_state
from ._sql import quote_ident

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "FLOW_LATEST_VERSION",
    "FLOW_LINE",
    "FLOW_MIGRATIONS",
    "FlowState",
    "missing_flow_objects",
    "plan_flow",
    "read_flow_state",
    "render_flow_step",
    "run_flow_migrations",
    "run_lines",
]

#: The line's name in ``river_migration.line``.
FLOW_LINE = "rivertrio_flow"

# --------------------------------------------------------------------------
# Version 1: concurrency limits, partitions, rate limits and sequences.
# --------------------------------------------------------------------------

# IF NOT EXISTS, as River does for its big indexes: on a large river_job an
# operator can build them beforehand with CREATE INDEX CONCURRENTLY. Every
# predicate starts with a test of a plain column, so a row that is not held
# (nearly every row of a River schema) costs one comparison per index.
_V1_UP = """
-- Held jobs of flow-controlled queues, by queue and partition, in fetch order.
CREATE INDEX IF NOT EXISTS rivertrio_flow_held_idx ON /*schema*/river_job
    (queue, (metadata ->> 'rivertrio:flow'), priority, scheduled_at, id)
    WHERE state = 'pending' AND metadata ? 'rivertrio:flow' AND NOT metadata ? 'rivertrio:wait';

-- Sequence members not yet completed: a sequence's head is its first entry
-- that does not count as done.
CREATE INDEX IF NOT EXISTS rivertrio_flow_sequence_idx ON /*schema*/river_job
    (queue, (metadata ->> 'rivertrio:seq'), id)
    WHERE state <> 'completed' AND metadata ? 'rivertrio:seq';

-- One row per job start in a rate-limited queue, kept for one period.
CREATE TABLE /*schema*/rivertrio_flow_start (
    queue text NOT NULL,
    partition text NOT NULL,
    started_at timestamptz NOT NULL
);

CREATE INDEX rivertrio_flow_start_idx ON /*schema*/rivertrio_flow_start (queue, started_at);
"""

_V1_DOWN = """
DROP TABLE /*schema*/rivertrio_flow_start;
DROP INDEX IF EXISTS /*schema*/rivertrio_flow_sequence_idx;
DROP INDEX IF EXISTS /*schema*/rivertrio_flow_held_idx;
"""

# --------------------------------------------------------------------------
# Version 2: workflows.
# --------------------------------------------------------------------------

_V2_UP = """
-- Workflow tasks waiting for their dependencies, by workflow.
CREATE INDEX IF NOT EXISTS rivertrio_flow_waiting_idx ON /*schema*/river_job
    ((metadata ->> 'rivertrio:workflow'), id)
    WHERE state = 'pending' AND metadata ? 'rivertrio:wait';
"""

_V2_DOWN = """
DROP INDEX IF EXISTS /*schema*/rivertrio_flow_waiting_idx;
"""

# --------------------------------------------------------------------------
# Version 3: the flow fetch as a function.
# --------------------------------------------------------------------------

# Flow fetches of one queue take turns on an advisory lock and count what the
# fetch before them started, so each must read the database after taking the
# lock. A statement reads what was committed when it began; a volatile
# function's statements each read afresh. Taking the lock in here lets one
# round trip lock, count and start, and (outside an explicit transaction) commit
# and release: no reply to the client happens while other clients wait.
#
# Parameters: $1 queue, $2 most jobs to start, $3 client id, $4 the group the
# last fetch stopped at, $5/$6 (id, attempted_at) of the caller's running jobs
# whose work is over (not counted as running), $7 concurrency, $8 partition
# concurrency, $9 rate limit, $10 its period in seconds, $11 rate per
# partition, $12 whether a discarded or cancelled job lets its sequence go on,
# $13 the most groups to consider, $14 the lock key, $15 the ids of the jobs the
# caller has in hand, $16 when the caller started (the server's clock). A NULL
# limit is no limit.
#
# The caller's jobs running under its id, started since it started, that it
# does not have in hand were started by a fetch of its whose reply was lost:
# they are returned again (and take room from new ones), so a lost reply
# strands no job. Older ones are an earlier run's under the same id (a
# restarted process): left to the rescuer, which counts the attempt, so that a
# job that kills its process cannot loop without ever being discarded.
#
# Groups are partitions ("p:" + key) and sequences ("s:" + key), taken in key
# order from after $4 and going round, with a loose index scan: one probe per
# group. A partition offers its first due jobs, as many as it may start; a
# sequence its head (its first job by id that does not count as done) if that
# job is held and due. Each partition's first candidate goes before any
# partition's second. Only the jobs picked are locked, skipping any another
# transaction holds, and re-checked by the UPDATE.
_V3_UP = """
CREATE FUNCTION /*schema*/rivertrio_flow_fetch(
    text, int, text, text, bigint[], timestamptz[],
    int, int, int, float8, boolean, boolean, int, int, bigint[], timestamptz
)
RETURNS TABLE (
    job /*schema*/river_job,
    next_cursor text,
    window_full boolean,
    available boolean,
    wait_seconds float8
)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
AS $fetch$
#variable_conflict use_column
DECLARE
    -- When the jobs start: after the wait for the lock, which
    -- statement_timestamp() is not. Rate limits count starts by it.
    locked_at timestamptz;
BEGIN
PERFORM pg_advisory_xact_lock(5395526, $14);
locked_at := clock_timestamp();
-- The lock is released at commit, after the commit's WAL flush if it waits for
-- one: fetches would take turns on the disk. The caller waits for the flush
-- instead, outside the lock, before it runs a job (see flow_fetch_jobs).
PERFORM set_config('synchronous_commit', 'off', true);
RETURN QUERY
WITH RECURSIVE
stamp AS MATERIALIZED (SELECT locked_at AS t, $10 * interval '1 second' AS period),
running_jobs AS MATERIALIZED (
    SELECT j.id, coalesce(j.metadata ->> 'rivertrio:part', '') AS part,
        EXISTS (
            SELECT 1 FROM unnest($5, $6) AS f(id, attempted_at)
            WHERE f.id = j.id AND f.attempted_at = j.attempted_at
        ) AS finished,
        coalesce(
            j.attempted_by[cardinality(j.attempted_by)] = $3 AND j.attempted_at >= $16
                AND NOT j.id = ANY($15),
            false
        ) AS orphan
    FROM /*schema*/river_job AS j
    WHERE j.state = 'running' AND j.queue = $1
),
running AS MATERIALIZED (
    SELECT r.part, count(*) AS n FROM running_jobs AS r WHERE NOT r.finished GROUP BY 1
),
orphans AS MATERIALIZED (
    SELECT r.id FROM running_jobs AS r WHERE r.orphan ORDER BY r.id LIMIT $2
),
started AS MATERIALIZED (
    SELECT s.partition AS part, count(*) AS n
    FROM /*schema*/rivertrio_flow_start AS s
    WHERE $9 IS NOT NULL AND s.queue = $1
        AND s.started_at > (SELECT t - period FROM stamp)
    GROUP BY 1
),
room AS MATERIALIZED (
    SELECT greatest(0, least(
        $2 - (SELECT count(*) FROM orphans),
        coalesce($7 - (SELECT coalesce(sum(r.n), 0) FROM running AS r), $2),
        CASE WHEN $9 IS NOT NULL AND NOT $11
            THEN $9 - (SELECT coalesce(sum(s.n), 0) FROM started AS s) ELSE $2 END
    ))::bigint AS n
),
after_cursor(key, priority, scheduled_at, id, ord) AS (
    SELECT * FROM (
        SELECT j.metadata ->> 'rivertrio:flow', j.priority, j.scheduled_at, j.id, 1
        FROM /*schema*/river_job AS j
        WHERE j.state = 'pending' AND j.metadata ? 'rivertrio:flow'
            AND NOT j.metadata ? 'rivertrio:wait'
            AND j.queue = $1 AND j.metadata ->> 'rivertrio:flow' > $4
        ORDER BY j.metadata ->> 'rivertrio:flow', j.priority, j.scheduled_at, j.id
        LIMIT 1
    ) AS first
    UNION ALL
    SELECT n.*, a.ord + 1
    FROM after_cursor AS a
    CROSS JOIN LATERAL (
        SELECT j.metadata ->> 'rivertrio:flow', j.priority, j.scheduled_at, j.id
        FROM /*schema*/river_job AS j
        WHERE j.state = 'pending' AND j.metadata ? 'rivertrio:flow'
            AND NOT j.metadata ? 'rivertrio:wait'
            AND j.queue = $1 AND j.metadata ->> 'rivertrio:flow' > a.key
        ORDER BY j.metadata ->> 'rivertrio:flow', j.priority, j.scheduled_at, j.id
        LIMIT 1
    ) AS n
    WHERE a.ord < $13
),
from_start(key, priority, scheduled_at, id, ord) AS (
    SELECT * FROM (
        SELECT j.metadata ->> 'rivertrio:flow', j.priority, j.scheduled_at, j.id,
            (SELECT count(*) FROM after_cursor) + 1
        FROM /*schema*/river_job AS j
        WHERE j.state = 'pending' AND j.metadata ? 'rivertrio:flow'
            AND NOT j.metadata ? 'rivertrio:wait'
            AND j.queue = $1 AND ($4 IS NULL OR j.metadata ->> 'rivertrio:flow' <= $4)
        ORDER BY j.metadata ->> 'rivertrio:flow', j.priority, j.scheduled_at, j.id
        LIMIT 1
    ) AS first
    WHERE (SELECT count(*) FROM after_cursor) < $13
    UNION ALL
    SELECT n.*, s.ord + 1
    FROM from_start AS s
    CROSS JOIN LATERAL (
        SELECT j.metadata ->> 'rivertrio:flow', j.priority, j.scheduled_at, j.id
        FROM /*schema*/river_job AS j
        WHERE j.state = 'pending' AND j.metadata ? 'rivertrio:flow'
            AND NOT j.metadata ? 'rivertrio:wait'
            AND j.queue = $1 AND j.metadata ->> 'rivertrio:flow' > s.key
            AND ($4 IS NULL OR j.metadata ->> 'rivertrio:flow' <= $4)
        ORDER BY j.metadata ->> 'rivertrio:flow', j.priority, j.scheduled_at, j.id
        LIMIT 1
    ) AS n
    WHERE s.ord < $13
),
-- Each group with the position of its first held job in the index: a
-- partition's candidates are read from there, not from the group's start,
-- past the entries of jobs already started that VACUUM has not yet removed.
groups AS MATERIALIZED (
    SELECT g.key, g.priority, g.scheduled_at, g.id, g.ord,
        left(g.key, 2) AS sort, substr(g.key, 3) AS rest
    FROM (SELECT * FROM after_cursor UNION ALL SELECT * FROM from_start) AS g
),
candidates AS MATERIALIZED (
    SELECT c.id, c.part, g.ord, c.priority, c.scheduled_at
    FROM groups AS g
    CROSS JOIN LATERAL (
        SELECT j.id, coalesce(j.metadata ->> 'rivertrio:part', '') AS part, j.priority,
            j.scheduled_at
        FROM /*schema*/river_job AS j
        WHERE g.sort = 'p:' AND j.state = 'pending' AND j.metadata ? 'rivertrio:flow'
            AND NOT j.metadata ? 'rivertrio:wait'
            AND j.queue = $1 AND j.metadata ->> 'rivertrio:flow' = g.key
            AND (j.priority, j.scheduled_at, j.id) >= (g.priority, g.scheduled_at, g.id)
            AND j.scheduled_at <= now()
        ORDER BY j.priority, j.scheduled_at, j.id
        LIMIT greatest(0, least(
            (SELECT r.n FROM room AS r),
            coalesce($8 - coalesce(
                (SELECT p.n FROM running AS p WHERE p.part = g.rest), 0), 2147483647),
            CASE WHEN $9 IS NOT NULL AND $11 THEN $9 - coalesce(
                (SELECT p.n FROM started AS p WHERE p.part = g.rest), 0) ELSE 2147483647 END))
    ) AS c
    UNION ALL
    SELECT h.id, h.part, g.ord, h.priority, h.scheduled_at
    FROM groups AS g
    CROSS JOIN LATERAL (
        SELECT j.id, j.state, j.metadata, coalesce(j.metadata ->> 'rivertrio:part', '') AS part,
            j.priority, j.scheduled_at
        FROM /*schema*/river_job AS j
        WHERE g.sort = 's:' AND j.state <> 'completed' AND j.metadata ? 'rivertrio:seq'
            AND j.queue = $1 AND j.metadata ->> 'rivertrio:seq' = g.rest
            AND (NOT $12 OR j.state NOT IN ('discarded', 'cancelled'))
        ORDER BY j.id
        LIMIT 1
    ) AS h
    WHERE h.state = 'pending' AND h.metadata ? 'rivertrio:flow'
        AND NOT h.metadata ? 'rivertrio:wait' AND h.scheduled_at <= now()
),
ranked AS (
    SELECT c.*, row_number() OVER (
        PARTITION BY c.part ORDER BY c.ord, c.priority, c.scheduled_at, c.id) AS rank
    FROM candidates AS c
),
picked AS MATERIALIZED (
    SELECT r.id, r.ord
    FROM ranked AS r
    WHERE r.rank <= least(
        coalesce($8 - coalesce(
            (SELECT p.n FROM running AS p WHERE p.part = r.part), 0), 2147483647),
        CASE WHEN $9 IS NOT NULL AND $11 THEN $9 - coalesce(
            (SELECT p.n FROM started AS p WHERE p.part = r.part), 0) ELSE 2147483647 END)
    ORDER BY r.rank, r.ord, r.priority, r.scheduled_at, r.id
    LIMIT (SELECT r.n FROM room AS r)
),
locked AS MATERIALIZED (
    SELECT j.id
    FROM /*schema*/river_job AS j
    WHERE j.id = ANY(ARRAY(SELECT p.id FROM picked AS p)) AND j.state::text = 'pending'
    FOR UPDATE SKIP LOCKED
),
updated AS (
    UPDATE /*schema*/river_job AS j
    SET state = 'running',
        attempt = j.attempt + 1,
        attempted_at = (SELECT t FROM stamp),
        attempted_by = (array_append(coalesce(j.attempted_by, '{}'), $3))
            [greatest(1, cardinality(coalesce(j.attempted_by, '{}')) - 98):]
    WHERE j.id = ANY(ARRAY(SELECT l.id FROM locked AS l)) AND j.state::text = 'pending'
    RETURNING j AS job, j.metadata
),
logged AS (
    INSERT INTO /*schema*/rivertrio_flow_start (queue, partition, started_at)
    SELECT $1, coalesce(u.metadata ->> 'rivertrio:part', ''), (SELECT t FROM stamp)
    FROM updated AS u
    WHERE $9 IS NOT NULL
),
pruned AS (
    DELETE FROM /*schema*/rivertrio_flow_start AS s
    WHERE $9 IS NOT NULL AND s.queue = $1 AND s.started_at <= (SELECT t - period FROM stamp)
),
summary AS (
    SELECT
        coalesce(
            (SELECT g.key FROM groups AS g WHERE g.ord = (SELECT max(p.ord) FROM picked AS p)),
            (SELECT g.key FROM groups AS g ORDER BY g.ord DESC LIMIT 1)) AS next_cursor,
        (SELECT count(*) FROM groups) >= $13 AS window_full,
        EXISTS (
            SELECT 1 FROM /*schema*/river_job AS j WHERE j.state = 'available' AND j.queue = $1
        ) AS available,
        CASE WHEN $9 IS NOT NULL THEN extract(epoch FROM least(
            (SELECT min(s.started_at) FROM /*schema*/rivertrio_flow_start AS s
             WHERE s.queue = $1 AND s.started_at > (SELECT t - period FROM stamp)),
            CASE WHEN EXISTS (SELECT 1 FROM updated) THEN (SELECT t FROM stamp) END
        ) + (SELECT period FROM stamp) - (SELECT t FROM stamp))::float8 END AS wait_seconds
)
SELECT u.job, s.next_cursor, s.window_full, s.available, s.wait_seconds
FROM summary AS s
LEFT JOIN (
    SELECT n.job FROM updated AS n
    UNION ALL
    SELECT j FROM /*schema*/river_job AS j WHERE j.id = ANY(ARRAY(SELECT o.id FROM orphans AS o))
) AS u ON true;
END
$fetch$;
"""

_V3_DOWN = """
DROP FUNCTION /*schema*/rivertrio_flow_fetch(
    text, int, text, text, bigint[], timestamptz[],
    int, int, int, float8, boolean, boolean, int, int, bigint[], timestamptz
);
"""

#: The line, in order.
FLOW_MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "flow control", _V1_UP, _V1_DOWN),
    Migration(2, "workflows", _V2_UP, _V2_DOWN),
    Migration(3, "flow fetch function", _V3_UP, _V3_DOWN),
)

_BY_VERSION = {m.version: m for m in FLOW_MIGRATIONS}

# What a flow fetch uses of version 1: the table of starts (rate limits) and
# the indexes that find held jobs and a sequence's head.
_FETCH_NEEDS = ("rivertrio_flow_start", "rivertrio_flow_held_idx", "rivertrio_flow_sequence_idx")
# ... and of version 3, the fetch itself.
_FETCH_FUNCTION = (
    "rivertrio_flow_fetch(text, int, text, text, bigint[], timestamptz[], "
    "int, int, int, float8, boolean, boolean, int, int, bigint[], timestamptz)"
)

#: The newest version of the line.
FLOW_LATEST_VERSION = FLOW_MIGRATIONS[-1].version


class FlowState:
    """Which versions of the line a schema has, and whether it can have any."""

    __slots__ = ("applied", "main_version", "schema")

    def __init__(self, schema: str, main_version: int, applied: tuple[int, ...]) -> None:
        self.schema = schema
        self.main_version = main_version
        """The highest version of River's ``main`` line the schema has."""
        self.applied = applied
        """Versions of this line recorded in ``river_migration``, ascending."""


def render_flow_step(
    version: int, direction: Direction, schema: str | None, *, record: bool = True
) -> Step:
    """One version's SQL with its ``river_migration`` row (added up, removed down)."""
    migration = _BY_VERSION[version]
    if not record:
        book = ""
    elif direction == "up":
        book = (
            f"INSERT INTO /*schema*/river_migration (line, version) "
            f"VALUES ('{FLOW_LINE}', {version});"
        )
    else:
        book = (
            f"DELETE FROM /*schema*/river_migration "
            f"WHERE line = '{FLOW_LINE}' AND version = {version};"
        )
    return render(migration, direction, schema, f"rivertrio {FLOW_LINE}", book)


def check_flow_target(direction: str, target_version: int | None) -> None:
    """Reject a target version the line does not have.

    Raises:
        ConfigError: Not an int, or out of range; the message gives the range.
    """
    check_target(
        direction, target_version, FLOW_LATEST_VERSION, f"a version of the {FLOW_LINE} line"
    )


def plan_flow(
    applied: Sequence[int], direction: Direction, target_version: int | None
) -> list[int]:
    """The versions to run, in order, by the same rules as ``main`` (see `plan`).

    Raises:
        ConfigError: The target is out of range.
        MigrationError: A down target is not applied.
    """
    check_flow_target(direction, target_version)
    return plan_versions(_BY_VERSION, applied, direction, target_version, f"the {FLOW_LINE} line ")


async def read_flow_state(conn: asyncpg.Connection, schema: str | None) -> FlowState:
    """Read the line's applied versions (none while ``main`` is below version 5).

    Raises:
        MigrationError: As `read_state` of the ``main`` line.
    """
    main = await read_main_state(conn, schema)
    main_version = max(main.applied, default=0)
    if not main.has_line_column:
        return FlowState(main.schema, main_version, ())
    prefix = "" if schema is None else quote_ident(schema) + "."
    rows = await conn.fetch(
        f"SELECT version FROM {prefix}river_migration WHERE line = $1 ORDER BY version",
        FLOW_LINE,
    )
    return FlowState(main.schema, main_version, tuple(int(r["version"]) for r in rows))


async def missing_flow_objects(
    conn: asyncpg.Connection, schema: str | None
) -> tuple[str | None, list[str]]:
    """The schema the statements use, and which of the objects flow fetches need it lacks.

    Read from the catalog, not from ``river_migration``: the objects are what
    a fetch needs, however they were created.
    """
    prefix = "" if schema is None else quote_ident(schema) + "."
    row = await conn.fetchrow(
        "SELECT coalesce($1::text, current_schema()) AS schema, "
        "array(SELECT n FROM unnest($2::text[]) AS n WHERE to_regclass($3 || n) IS NULL) "
        "|| CASE WHEN to_regprocedure($3 || $4) IS NULL THEN ARRAY['rivertrio_flow_fetch'] "
        "ELSE '{}'::text[] END AS missing",
        schema,
        list(_FETCH_NEEDS),
        prefix,
        _FETCH_FUNCTION,
    )
    assert row is not None
    return row["schema"], list(row["missing"])


async def run_flow_migrations(
    conn: asyncpg.Connection,
    schema: str | None,
    direction: Direction,
    target_version: int | None,
    *,
    dry_run: bool = False,
    main_version: int | None = None,
) -> tuple[FlowState, list[Step]]:
    """Read the state, plan and run the plan (unless `dry_run`), under the migrators' lock.

    `main_version` stands for the ``main`` version the schema will have when
    this runs (a dry run of both lines); None reads it.

    Raises:
        MigrationError: An up while ``main`` is below version 5, or see `plan_flow`.
        DatabaseError: A version failed; it was rolled back (the message names it).
    """
    if dry_run:
        state = await read_flow_state(conn, schema)
        if main_version is not None:
            state = FlowState(state.schema, main_version, state.applied)
        return state, _steps(state, direction, target_version, schema)
    async with migrators_lock(conn, schema):
        state = await read_flow_state(conn, schema)
        steps = _steps(state, direction, target_version, schema)
        if steps:
            try:
                await conn.execute(script(steps))
            except asyncpg.PostgresError as exc:
                if conn.is_in_transaction():
                    await conn.execute("ROLLBACK")
                failed = failed_step(steps, set((await read_flow_state(conn, schema)).applied))
                raise DatabaseError(
                    f"{FLOW_LINE} migration {failed.version:03d} [{failed.direction}] "
                    f"({failed.name}) failed and was rolled back: {exc.sqlstate}: {exc}",
                    sqlstate=exc.sqlstate,
                ) from exc
        return state, steps


def _steps(
    state: FlowState, direction: Direction, target_version: int | None, schema: str | None
) -> list[Step]:
    versions = plan_flow(state.applied, direction, target_version)
    if versions and direction == "up" and state.main_version < LINE_COLUMN_VERSION:
        raise MigrationError(
            f"the {FLOW_LINE} line needs River's main line at version {LINE_COLUMN_VERSION} or "
            f"later (schema {state.schema!r} is at {state.main_version}): migrate main first"
        )
    return [render_flow_step(v, direction, schema) for v in versions]


async def run_lines(
    conn: asyncpg.Connection,
    schema: str | None,
    direction: Direction,
    target_version: int | None,
    *,
    dry_run: bool = False,
) -> tuple[SchemaState, list[Step], FlowState | None, list[Step]]:
    """Migrate ``main`` and, with it, this line: what ``rivertrio migrate`` does by default.

    Up runs ``main`` (through `target_version`), then, when ``main`` went all
    the way up (no target), every pending version of this line. Down runs
    ``main``'s plan; when that plan reaches version 5 or below, this line is
    removed first, since its rows and objects need what those versions give.

    Returns:
        ``main``'s state before and its steps, then this line's (None: not
        considered) state before and its steps.
    """
    if direction == "up":
        main_state, main_steps = await run_migrations(
            conn, schema, "up", target_version, dry_run=dry_run
        )
        if target_version is not None:
            return main_state, main_steps, None, []
        after = max({*main_state.applied, *(s.version for s in main_steps)}, default=0)
        flow_up = await run_flow_migrations(
            conn, schema, "up", None, dry_run=dry_run, main_version=after if dry_run else None
        )
        return main_state, main_steps, flow_up[0], flow_up[1]
    current = await read_main_state(conn, schema)
    versions = plan(current.applied, "down", target_version)
    flow_state: FlowState | None = None
    flow_steps: list[Step] = []
    if versions and min(versions) <= LINE_COLUMN_VERSION:
        flow_state, flow_steps = await run_flow_migrations(conn, schema, "down", 0, dry_run=dry_run)
    main_state, main_steps = await run_migrations(
        conn, schema, "down", target_version, dry_run=dry_run
    )
    return main_state, main_steps, flow_state, flow_steps
