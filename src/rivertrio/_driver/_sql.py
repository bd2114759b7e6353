"""SQL text shared by the driver's statements: the schema placeholder and the job columns."""

from __future__ import annotations

import functools

__all__ = ["JOB_COLUMNS", "J_JOB_COLUMNS", "SCHEMA", "qualify"]

#: Placeholder for the schema prefix in SQL text; see `qualify`.
SCHEMA = "/*schema*/"

#: The columns every statement returning jobs returns, in river_job's order.
JOB_COLUMNS = (
    "id, state, attempt, max_attempts, attempted_at, attempted_by, created_at, finalized_at, "
    "scheduled_at, priority, queue, kind, tags, metadata, errors, args, unique_key, unique_states"
)

#: `JOB_COLUMNS` of river_job aliased ``j``, for statements that join it.
J_JOB_COLUMNS = ", ".join("j." + column.strip() for column in JOB_COLUMNS.split(","))


@functools.lru_cache(maxsize=1024)
def qualify(sql: str, schema: str | None) -> str:
    """Replace the schema placeholder in `sql` with a quoted schema prefix (or nothing)."""
    prefix = "" if schema is None else '"' + schema.replace('"', '""') + '".'
    return sql.replace(SCHEMA, prefix)
