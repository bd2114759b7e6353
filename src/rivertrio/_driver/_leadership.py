"""SQL for leadership: elect, re-elect, resign. Asyncio side of the driver.

Each function takes an asyncpg connection; callers run it through
``Driver.run`` so one call is one loop crossing. Every timestamp written comes
from the database clock (``now()``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ._liveness import CLIENT_ID_MARKER, LIVE_KEYS, liveness_key
from ._sql import qualify

__all__ = ["Election", "elect", "reelect", "resign"]

_LEADER = "SELECT leader_id, elected_at FROM /*schema*/river_leader"

# An expired term goes; so does the term ($1, $2) if its leader's liveness
# lock $3 is free (the client is gone) and the candidate's own lock $4 is held
# (a candidate that could not win leaves the leader be). Only that exact term:
# one won meanwhile is untouched. `expired` tells the two apart for the log.
_DELETE_EXPIRED_OR_DEAD = f"""
DELETE FROM /*schema*/river_leader
WHERE expires_at < now()
    OR (leader_id = $1 AND elected_at = $2
        AND $3::bigint NOT IN ({LIVE_KEYS}) AND $4::bigint IN ({LIVE_KEYS}))
RETURNING leader_id, expires_at < now() AS expired
"""

# With a lock key $3 the candidate stands only while that lock is held: its
# peers would remove a term whose lock is free at their next attempt.
_ELECT = f"""
INSERT INTO /*schema*/river_leader (leader_id, elected_at, expires_at)
SELECT $1::text, now(), now() + make_interval(secs => $2)
WHERE $3::bigint IS NULL OR $3::bigint IN ({LIVE_KEYS})
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
