"""SQL that merges keys into a job's metadata: `job_update`, and progress reports. Asyncio side.

Callers run these through ``Driver.run`` or ``Tx.run``: one call is one loop
crossing. ``/*schema*/`` in the SQL is replaced by ``qualify``.
"""

from __future__ import annotations

import asyncpg

from ._sql import JOB_COLUMNS, qualify

__all__ = ["merge_metadata", "write_progress"]

# A top-level merge: each key given replaces the stored one, the others stay.
_MERGE = f"""
UPDATE /*schema*/river_job SET metadata = metadata || $2::jsonb
WHERE id = $1
RETURNING {JOB_COLUMNS}
"""

# Only while this attempt runs: a report that arrives after the completion (or
# after a rescue and a new attempt) must not overwrite what was stored since.
_PROGRESS = """
UPDATE /*schema*/river_job SET metadata = metadata || $3::jsonb
WHERE id = $1 AND attempt = $2 AND state = 'running'
"""


async def merge_metadata(
    conn: asyncpg.Connection, schema: str | None, job_id: int, metadata: str
) -> asyncpg.Record | None:
    """Merge a JSON object into a job's metadata; the row after, or None if no such job."""
    return await conn.fetchrow(qualify(_MERGE, schema), job_id, metadata)


async def write_progress(
    conn: asyncpg.Connection, schema: str | None, job_id: int, attempt: int, progress: str
) -> None:
    """Merge a progress report (a JSON object) into a running job's metadata."""
    await conn.execute(qualify(_PROGRESS, schema), job_id, attempt, progress)
