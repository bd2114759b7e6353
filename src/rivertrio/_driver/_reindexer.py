"""SQL for the reindexer: which indexes exist, their leftovers, and rebuilding one. Asyncio side.

``REINDEX INDEX CONCURRENTLY`` builds a copy of the index named
``<index>_ccnew`` (``_ccnew1``, ``_ccnew2``... when that name is taken), swaps
it in, and leaves the old one as ``<index>_ccold`` until it is dropped. A
rebuild that is interrupted leaves these behind, as invalid indexes that
still cost every write; they are the "leftovers" here.

Neither REINDEX CONCURRENTLY nor DROP INDEX CONCURRENTLY may run inside a
transaction block, so each statement here is sent alone, in autocommit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from ._sql import qualify, quote_ident

__all__ = ["IndexState", "drop_leftovers", "index_states", "reindex"]


@dataclass(frozen=True, slots=True)
class IndexState:
    """One index the reindexer was asked to rebuild, as the catalog has it."""

    name: str
    exists: bool
    leftovers: tuple[str, ...]
    """Indexes an interrupted rebuild of this one left (``_ccnew``/``_ccold``, numbered or not)."""


# In the schema given, or the search path's first one, like every other statement.
# Index names are compared as text, so no pattern in a name can widen the match.
_STATES = """
WITH ns AS (
    SELECT oid FROM pg_namespace WHERE nspname = coalesce($2::text, current_schema())
)
SELECT n.name,
    EXISTS (
        SELECT 1 FROM pg_class c
        WHERE c.relnamespace = (SELECT oid FROM ns) AND c.relkind = 'i' AND c.relname = n.name
    ) AS exists,
    ARRAY(
        SELECT c.relname::text FROM pg_class c
        WHERE c.relnamespace = (SELECT oid FROM ns) AND c.relkind = 'i'
            AND left(c.relname, length(n.name)) = n.name
            AND substr(c.relname, length(n.name) + 1) ~ '^_cc(new|old)[0-9]*$'
        ORDER BY 1
    ) AS leftovers
FROM unnest($1::text[]) WITH ORDINALITY AS n(name, i)
ORDER BY n.i
"""


async def index_states(
    conn: asyncpg.Connection, schema: str | None, names: Sequence[str]
) -> list[IndexState]:
    """Whether each index exists, and what earlier rebuilds of it left; in the order given."""
    rows = await conn.fetch(_STATES, list(names), schema)
    return [IndexState(r["name"], r["exists"], tuple(r["leftovers"])) for r in rows]


def _qualified(schema: str | None, name: str) -> str:
    return qualify("/*schema*/", schema) + quote_ident(name)


async def reindex(
    conn: asyncpg.Connection, schema: str | None, name: str, seconds: float | None
) -> None:
    """Rebuild one index with ``REINDEX INDEX CONCURRENTLY``, within `seconds` (None: no limit).

    The server enforces the timeout (``statement_timeout``): a rebuild that
    runs past it fails with SQLSTATE 57014 and may leave leftovers.
    """
    limit = "0" if seconds is None else f"{max(1, round(seconds * 1000))}ms"
    await conn.execute("SELECT set_config('statement_timeout', $1, false)", limit)
    await conn.execute(f"REINDEX INDEX CONCURRENTLY {_qualified(schema, name)}")
    # Only on success: after a failure the pool's reset on release (RESET ALL)
    # restores it, as it does for a connection whose statement was cancelled.
    await conn.execute("RESET statement_timeout")


async def drop_leftovers(conn: asyncpg.Connection, schema: str | None, name: str) -> list[str]:
    """Drop what an interrupted rebuild of index `name` left; returns their names.

    First waits for any rebuild of it still running: a cancelled statement
    may still be under way on the server (its connection is released in the
    background), and could create a leftover after it was looked for.
    """
    table = await conn.fetchval(
        "SELECT indrelid::regclass::text FROM pg_index WHERE indexrelid = to_regclass($1)",
        _qualified(schema, name),
    )
    if table is not None:
        # A rebuild holds this lock on the table from start to end: taking it
        # (and letting go at once) waits for the rebuild to be over.
        async with conn.transaction():
            await conn.execute(f"LOCK TABLE {table} IN SHARE UPDATE EXCLUSIVE MODE")
    (state,) = await index_states(conn, schema, [name])
    for leftover in state.leftovers:
        await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_qualified(schema, leftover)}")
    return list(state.leftovers)
