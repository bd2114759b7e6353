"""Liveness locks: the lock connection each client holds, and which clients hold theirs.

A client holds a session advisory lock, derived from its schema and id, on a
dedicated connection for as long as it runs; Postgres releases it when the
session ends. The leader reads the locks held now (`client_liveness`,
`LIVE_KEYS`) to tell a dead client's jobs and leadership from a live one's.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import asyncpg

from ._dedicated import DedicatedConnection, connect_dedicated
from ._sql import qualify

if TYPE_CHECKING:
    from ._pool import Driver

__all__ = [
    "CLIENT_ID_MARKER",
    "LAST_CLIENT",
    "LIVE_KEYS",
    "client_liveness",
    "liveness_key",
    "open_lock_connection",
]

#: The suffix that marks a client id as a rivertrio client holding a liveness lock.
CLIENT_ID_MARKER = ".rt"

_KEY_PREFIX = "rivertrio-client:"

#: The advisory keys held now, in this database (a subquery).
# A bigint advisory key shows in pg_locks as classid = high 32 bits, objid = low
# 32 bits, objsubid = 1 (the (int4, int4) form has objsubid = 2). The shift
# rebuilds the signed key without an overflow check, as Postgres stores it.
LIVE_KEYS = """
SELECT (l.classid::bigint << 32) | l.objid::bigint
FROM pg_locks AS l
WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""

#: The client that attempted a job last: the owner of a running job.
LAST_CLIENT = "attempted_by[cardinality(attempted_by)]"

_MARKED_OWNERS = f"""
SELECT DISTINCT {LAST_CLIENT} AS client_id
FROM /*schema*/river_job
WHERE state = 'running' AND right({LAST_CLIENT}, $2) = $1
"""

_HELD_KEYS = f"SELECT k FROM unnest($1::bigint[]) AS k WHERE k IN ({LIVE_KEYS})"

# A peer that vanishes without closing its socket (host crash, network cut) is
# noticed within about 20 s instead of the kernel's two-hour default, so its
# lock, and with it its jobs, are released sooner. Set after connecting rather
# than sent as startup parameters, which PgBouncer refuses ("unsupported startup
# parameter") even in session mode.
_LOCK_SESSION_SETUP = (
    "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3"
)


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
    liveness lock. Asyncio side.

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


async def open_lock_connection(driver: Driver, key: int) -> DedicatedConnection | None:
    """Open a dedicated session and take the session advisory lock `key` on it.

    Returns:
        The connection holding the lock, or None if another session holds it
        (the connection is then closed again).

    Raises:
        DatabaseConnectionError: The server cannot be reached.
    """

    async def take_lock(conn: asyncpg.Connection) -> bool:
        await conn.execute(_LOCK_SESSION_SETUP)
        return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", key))

    conn = await connect_dedicated(driver.crossing, "rivertrio-liveness", take_lock)
    if conn is None:
        return None
    return DedicatedConnection(driver.crossing, conn, "liveness lock")
