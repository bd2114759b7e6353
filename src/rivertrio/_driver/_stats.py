"""SQL for the leader's queue measurements: depth and lag of every queue. Asyncio side.

Callers run `queue_stats` through ``Driver.run``: one call is one loop
crossing. ``/*schema*/`` in the SQL is replaced by ``qualify``.
"""

from __future__ import annotations

import asyncpg

from ._sql import qualify

__all__ = ["queue_stats"]

# Each queue's available jobs and how long the oldest has been due, by the
# database's clock. Queues with a river_queue row but nothing available are
# reported too (0 jobs, no lag), so a gauge falls back to zero once a backlog
# is worked off. The count walks the available part of the fetch index.
_STATS = """
WITH stats AS (
    SELECT queue, count(*) AS available, min(scheduled_at) AS oldest
    FROM /*schema*/river_job
    WHERE state = 'available'
    GROUP BY queue
)
SELECT coalesce(s.queue, q.name) AS queue,
    coalesce(s.available, 0) AS available,
    greatest(0, extract(epoch FROM now() - s.oldest))::float8 AS oldest_age
FROM stats AS s
FULL JOIN /*schema*/river_queue AS q ON q.name = s.queue
ORDER BY 1
"""


async def queue_stats(conn: asyncpg.Connection, schema: str | None) -> list[asyncpg.Record]:
    """Every queue's available count and oldest available age (seconds; 0 when none)."""
    return await conn.fetch(qualify(_STATS, schema))
