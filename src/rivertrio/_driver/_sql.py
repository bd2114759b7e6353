"""SQL text shared by the driver's statements: the schema placeholder and the job columns."""

from __future__ import annotations

import functools

__all__ = ["JOB_COLUMNS", "J_JOB_COLUMNS", "SCHEMA", "qualify", "quote_ident"]

#: Placeholder for the schema prefix in SQL text; see `qualify`.
SCHEMA = "/*schema*/"

#: The columns every statement returning jobs returns, in river_job's order.
JOB_COLUMNS = (
    "id, state, attempt, max_attempts, attempted_at, attempted_by, created_at, finalized_at, "
    "scheduled_at, priority, queue, kind, tags, metadata, errors, args, unique_key, unique_states"
)

#: `JOB_COLUMNS` of river_job aliased ``j``, for statements that join it.
J_JOB_COLUMNS = ", ".join("j." + column.strip() for column in JOB_COLUMNS.split(","))


def quote_ident(name: str) -> str:
    """`name` as a quoted SQL identifier: any text (but NUL) names exactly itself.

    Doubling the double quotes is all Postgres needs: inside a quoted identifier
    nothing else is special, so no name can end it early and inject SQL.
    """
    return '"' + name.replace('"', '""') + '"'


@functools.lru_cache(maxsize=1024)
def qualify(sql: str, schema: str | None) -> str:
    """Replace the schema placeholder in `sql` with a quoted schema prefix (or nothing)."""
    prefix = "" if schema is None else quote_ident(schema) + "."
    return sql.replace(SCHEMA, prefix)
