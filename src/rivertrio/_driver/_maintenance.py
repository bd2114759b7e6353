"""SQL for leadership, maintenance and liveness locks. Asyncio side of the driver.

Each function takes an asyncpg connection and runs on the asyncio side; callers
run it through ``Driver.run`` so one call is one loop crossing. ``/*schema*/``
in the SQL is replaced by ``qualify``. Every timestamp written comes from the
database clock (``now()``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg
import trio

from .._exceptions import DatabaseError
from . import qualify
from ._jobs import JOB_COLUMNS

if TYPE_CHECKING:
    from . import Driver

__all__ = [
    "CLIENT_ID_MARKER",
    "Election",
    "LockConnection",
    "ScheduleResult",
    "client_liveness",
    "delete_finalized_jobs",
    "delete_idle_queues",
    "elect",
    "liveness_key",
    "open_lock_connection",
    "reelect",
    "rescue_jobs",
    "resign",
    "schedule_jobs",
    "stuck_jobs",
]

log = logging.getLogger("rivertrio.driver")

# --- advisory keys held now (leadership and the rescuer) ----------------------

# A bigint advisory key shows in pg_locks as classid = high 32 bits, objid = low
# 32 bits, objsubid = 1 (the (int4, int4) form has objsubid = 2). The shift
# rebuilds the signed key without an overflow check, as Postgres stores it.
_LIVE_KEYS = """
SELECT (l.classid::bigint << 32) | l.objid::bigint
FROM pg_locks AS l
WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""

# --- leadership ---------------------------------------------------------------

_LEADER = "SELECT leader_id, elected_at FROM /*schema*/river_leader"

# An expired term goes; so does the term ($1, $2) if its leader's liveness
# lock $3 is free (the client is gone) and the candidate's own lock $4 is held
# (a candidate that could not win leaves the leader be). Only that exact term:
# one won meanwhile is untouched. `expired` tells the two apart for the log.
_DELETE_EXPIRED_OR_DEAD = f"""
DELETE FROM /*schema*/river_leader
WHERE expires_at < now()
    OR (leader_id = $1 AND elected_at = $2
        AND $3::bigint NOT IN ({_LIVE_KEYS}) AND $4::bigint IN ({_LIVE_KEYS}))
RETURNING leader_id, expires_at < now() AS expired
"""

# With a lock key $3 the candidate stands only while that lock is held: its
# peers would remove a term whose lock is free at their next attempt.
_ELECT = f"""
INSERT INTO /*schema*/river_leader (leader_id, elected_at, expires_at)
SELECT $1::text, now(), now() + make_interval(secs => $2)
WHERE $3::bigint IS NULL OR $3::bigint IN ({_LIVE_KEYS})
ON CONFLICT (name) DO NOTHING
RETURNING elected_at
"""

# The term is (leader_id, elected_at): a row that expired and was won again by
# the same id is another term, and must not be extended by the old one.
_REELECT = """
UPDATE /*schema*/river_leader
SET expires_at = now() + make_interval(secs => $3)
WHERE leader_id = $1 AND elected_at = $2
RETURNING expires_at
"""

# Delete the term and announce it in the same statement (so the notification
# goes out only if the row really was ours). A NULL elected_at resigns any term
# held under this id: used when an election attempt was interrupted mid-flight.
_RESIGN = """
WITH resigned AS (
    DELETE FROM /*schema*/river_leader
    WHERE leader_id = $1 AND ($2::timestamptz IS NULL OR elected_at = $2)
    RETURNING leader_id
)
SELECT count(pg_notify($3, json_build_object('leader_id', leader_id, 'action', 'resigned')::text))
FROM resigned
"""


@dataclass(frozen=True, slots=True)
class Election:
    """What one election attempt did."""

    elected_at: datetime | None
    """The new term's ``elected_at``, or None if the candidate did not win."""
    deposed: str | None = None
    """The id of a leader whose term was removed because its liveness lock was free."""


async def elect(
    conn: asyncpg.Connection,
    schema: str | None,
    leader_id: str,
    ttl: float,
    liveness_schema: str | None = None,
) -> Election:
    """Delete an expired leader's term, then try to become leader.

    With `liveness_schema` (the resolved schema name) the candidate holds its
    liveness lock (``rivertrio._liveness``). It then also deletes the term of a
    leader whose id ends with `CLIENT_ID_MARKER` and whose lock is free, a dead
    client, instead of waiting for the term to expire; and it stands only while
    its own lock is held. Leaders with other ids (River's Go clients) keep the
    TTL rule.
    """
    own_key: int | None = None
    # The leader's term and lock key, when its lock tells whether it is alive.
    term: tuple[str | None, datetime | None, int | None] = (None, None, None)
    if liveness_schema is not None:
        own_key = liveness_key(liveness_schema, leader_id)
        row = await conn.fetchrow(qualify(_LEADER, schema))
        if row is not None and row["leader_id"].endswith(CLIENT_ID_MARKER):
            key = liveness_key(liveness_schema, row["leader_id"])
            term = (row["leader_id"], row["elected_at"], key)
    deleted = await conn.fetchrow(qualify(_DELETE_EXPIRED_OR_DEAD, schema), *term, own_key)
    deposed = None if deleted is None or deleted["expired"] else deleted["leader_id"]
    elected_at = await conn.fetchval(qualify(_ELECT, schema), leader_id, ttl, own_key)
    return Election(elected_at, deposed)


async def reelect(
    conn: asyncpg.Connection, schema: str | None, leader_id: str, elected_at: datetime, ttl: float
) -> bool:
    """Extend the term ``(leader_id, elected_at)``; False if the row no longer holds it."""
    row = await conn.fetchrow(qualify(_REELECT, schema), leader_id, elected_at, ttl)
    return row is not None


async def resign(
    conn: asyncpg.Connection,
    schema: str | None,
    leader_id: str,
    elected_at: datetime | None,
    channel: str,
) -> bool:
    """Delete the term and notify ``resigned`` on `channel`; False if it was not held."""
    count = await conn.fetchval(qualify(_RESIGN, schema), leader_id, elected_at, channel)
    return bool(count)


# --- scheduler ----------------------------------------------------------------

# A unique job whose key is held by a row outside this batch (in a state that
# row's bitmask covers) would violate river_job_unique_idx on becoming
# available, so it is discarded; among due jobs sharing a key, the first by
# fetch order wins and the others are discarded. SKIP LOCKED: a row another
# transaction holds (job_cancel, a delete) is left for the next pass.
_SCHEDULE = """
WITH due AS (
    SELECT id, unique_key, unique_states, priority, scheduled_at
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
    FROM (SELECT DISTINCT queue FROM updated WHERE state = 'available') AS q
    WHERE $2::text IS NOT NULL
)
SELECT
    (SELECT count(*) FROM updated) AS handled,
    (SELECT count(*) FROM updated WHERE state = 'discarded') AS discarded,
    (SELECT coalesce(array_agg(DISTINCT queue), '{}') FROM updated WHERE state = 'available')
        AS queues,
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


# --- liveness locks -------------------------------------------------------------

#: The suffix that marks a client id as a rivertrio client holding a liveness lock.
CLIENT_ID_MARKER = ".rt"

_KEY_PREFIX = "rivertrio-client:"

_LAST_CLIENT = "attempted_by[cardinality(attempted_by)]"

_MARKED_OWNERS = f"""
SELECT DISTINCT {_LAST_CLIENT} AS client_id
FROM /*schema*/river_job
WHERE state = 'running' AND right({_LAST_CLIENT}, $2) = $1
"""

_HELD_KEYS = f"SELECT k FROM unnest($1::bigint[]) AS k WHERE k IN ({_LIVE_KEYS})"


def liveness_key(schema: str, client_id: str) -> int:
    """The 64-bit advisory lock key a client holds while alive (signed, as Postgres takes it).

    The schema is part of the key: a client id only names a client within the
    schema its jobs live in.
    """
    digest = hashlib.sha256(f"{_KEY_PREFIX}{schema}:{client_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def client_liveness(
    conn: asyncpg.Connection, schema: str | None, resolved_schema: str, marker: str
) -> dict[str, bool]:
    """Which clients own running jobs, and whether each holds its liveness lock now.

    Only clients whose id ends with `marker` are considered: only those take a
    liveness lock.

    Returns:
        Client id -> True if its liveness lock is held now.
    """
    rows = await conn.fetch(qualify(_MARKED_OWNERS, schema), marker, len(marker))
    owners = [r["client_id"] for r in rows]
    if not owners:
        return {}
    keys = {liveness_key(resolved_schema, owner): owner for owner in owners}
    held = {r[0] for r in await conn.fetch(_HELD_KEYS, list(keys))}
    return {owner: key in held for key, owner in keys.items()}


@dataclass(slots=True)
class LockConnection:
    """A dedicated connection (outside the pool) holding one session advisory lock.

    Postgres releases the lock when the session ends, whether the process exits,
    crashes or loses its connection. `broken` is set when the connection dies.
    """

    driver: Driver
    conn: asyncpg.Connection
    key: int
    broken: trio.Event

    @property
    def backend_pid(self) -> int:
        """The server process id of the session holding the lock."""
        return self.conn.get_server_pid()

    async def ping(self) -> None:
        """Check that the session is alive; sets `broken` and raises DatabaseError if not."""
        try:
            await self.driver._cross(self.conn.execute("SELECT 1"))
        except Exception as exc:
            self.broken.set()
            raise DatabaseError(f"the liveness lock connection is broken: {exc}") from exc

    async def aclose(self) -> None:
        """Close the session, releasing the lock. Shielded and bounded."""
        if self.conn.is_closed():
            return
        with trio.move_on_after(2, shield=True) as scope:
            try:
                await self.driver._cross(self.conn.close())
            except DatabaseError:
                self.conn.terminate()
        if scope.cancelled_caught:
            self.conn.terminate()


# A peer that vanishes without closing its socket (host crash, network cut) is
# noticed within about 20 s instead of the kernel's two-hour default, so its
# lock, and with it its jobs, are released sooner. Set after connecting rather
# than sent as startup parameters, which PgBouncer refuses ("unsupported startup
# parameter") even in session mode.
_LOCK_SESSION_SETUP = (
    "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3"
)


async def open_lock_connection(driver: Driver, key: int) -> LockConnection | None:
    """Open a dedicated session and take the advisory lock `key` on it.

    Returns:
        The connection holding the lock, or None if another session holds it
        (the connection is then closed again).

    Raises:
        DatabaseConnectionError: The server cannot be reached.
    """
    kwargs = dict(driver._connect_kwargs)
    kwargs["server_settings"] = {
        **kwargs.get("server_settings", {}),
        "application_name": "rivertrio-liveness",
    }

    async def connect() -> asyncpg.Connection | None:
        conn: asyncpg.Connection = await asyncpg.connect(driver.url, **kwargs)
        try:
            await conn.execute(_LOCK_SESSION_SETUP)
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                return conn
        except BaseException:
            conn.terminate()
            raise
        await conn.close()
        return None

    conn = await driver._cross(connect())
    if conn is None:
        return None
    broken = trio.Event()
    conn.add_termination_listener(lambda _conn: broken.set())
    return LockConnection(driver, conn, key, broken)


# --- rescuer ------------------------------------------------------------------

_J_COLUMNS = ", ".join("j." + c.strip() for c in JOB_COLUMNS.split(","))

# Keyset pagination over id: rows the caller decides to skip (a worker timeout
# longer than rescue_stuck_jobs_after) cannot fill every batch and hide a
# rescuable row behind them.
_STUCK = f"""
SELECT {_J_COLUMNS}, now() AS db_now, c.orphaned
FROM /*schema*/river_job AS j
CROSS JOIN LATERAL (
    SELECT
        coalesce(j.{_LAST_CLIENT} = ANY($3::text[])
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
live AS ({_LIVE_KEYS})
UPDATE /*schema*/river_job AS j
SET state = u.state::/*schema*/river_job_state,
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
