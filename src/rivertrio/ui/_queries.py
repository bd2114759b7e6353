"""The dashboard's reads: what the client API has no call for, in SQL that uses River's indexes.

Each read runs in a short transaction of its own with a statement timeout (a
dashboard must never hold the database up) and custom plans only: the
selectivity of a state, queue or kind differs by orders of magnitude, and a
generic plan chosen for one would be wrong for the next: `reading` opens such
a transaction, for these reads and the overview's (`rivertrio.ui._overview`).
Here are the job lists, the bulk actions' counts, the known kinds and the
periodic jobs; which jobs they cover is a `Filter` (`rivertrio.ui._filter`).
The workflow list is read through `rivertrio.Workflows`, which has a call for it.
Actions are not here: the dashboard changes jobs and queues only through
`rivertrio.Client`.

The indexes these reads rely on (River's schema):

- ``river_job_pkey`` (id): the newest-first order of every job list.
- ``river_job_prioritized_fetching_index`` (state, queue, priority,
  scheduled_at, id): counts by state and queue, read index-only; lists of a rare
  state or queue.
- ``river_job_state_and_finalized_at_index`` (state, finalized_at), partial on
  finalized rows: throughput, and the clients seen recently.
- ``river_job_kind`` (kind), ``river_job_args_index`` and
  ``river_job_metadata_index`` (GIN): kind, args and periodic-job filters.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .._workflow import Workflows, WorkflowSummary
from ._filter import Filter

if TYPE_CHECKING:
    from .. import Client
    from .._driver import Tx

__all__ = [
    "PAGE_SIZE",
    "JobPage",
    "JobSummary",
    "PeriodicSummary",
    "WorkflowPage",
    "count_matching",
    "job_page",
    "job_page_sql",
    "known_kinds",
    "matching_ids",
    "periodic_jobs",
    "reading",
    "workflow_list",
]

#: Jobs per page of a list.
PAGE_SIZE = 50

# Every dashboard read: bounded, and planned for the values it is given.
_READ_SETTINGS = (
    "SET LOCAL statement_timeout = '15s'; SET LOCAL plan_cache_mode = force_custom_plan"
)


@asynccontextmanager
async def reading(client: Client) -> AsyncIterator[Tx]:
    """A transaction for dashboard reads: a statement timeout, custom plans."""
    async with client.transaction() as tx:
        await tx.execute(_READ_SETTINGS)
        yield tx


def _where(conditions: list[str]) -> str:
    return f"WHERE {' AND '.join(conditions)}" if conditions else ""


# Distinct kinds, one probe of the kind index each.
_KINDS = """
WITH RECURSIVE kinds AS (
    (SELECT kind FROM /*schema*/river_job ORDER BY kind LIMIT 1)
    UNION ALL
    SELECT later.kind FROM kinds, LATERAL (
        SELECT j.kind FROM /*schema*/river_job AS j
        WHERE j.kind > kinds.kind
        ORDER BY j.kind
        LIMIT 1
    ) AS later
)
SELECT kind FROM kinds LIMIT 500
"""

# Jobs a periodic schedule inserted carry metadata.periodic = true (River's
# mark too), found through the metadata GIN index.
_PERIODIC = """
SELECT kind, queue, metadata->>'river:periodic_job_id' AS periodic_id,
    count(*) AS total,
    count(*) FILTER (WHERE state = 'discarded') AS discarded,
    max(created_at) AS last_created,
    min(scheduled_at) FILTER (
        WHERE state IN ('available', 'scheduled', 'retryable', 'pending')
    ) AS next_at,
    max(id) AS last_id
FROM /*schema*/river_job
WHERE metadata @> '{"periodic": true}'
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
LIMIT 500
"""

_PERIODIC_LAST = """
SELECT id, state::text AS state, finalized_at FROM /*schema*/river_job WHERE id = ANY($1::bigint[])
"""

# One line of a job list. The last error only: a job may carry 25 attempts' traces.
_SUMMARY_COLUMNS = """id, state::text AS state, attempt, max_attempts, priority, queue, kind,
    args::text AS args, tags, created_at, scheduled_at, attempted_at, finalized_at,
    attempted_by[cardinality(attempted_by)] AS attempted_by_last,
    errors[cardinality(errors)]::text AS last_error"""


@dataclass(frozen=True, slots=True)
class JobSummary:
    """One line of a job list."""

    id: int
    state: str
    attempt: int
    max_attempts: int
    priority: int
    queue: str
    kind: str
    args: str
    tags: list[str]
    created_at: datetime
    scheduled_at: datetime
    attempted_at: datetime | None
    finalized_at: datetime | None
    attempted_by: str | None
    last_error: str | None
    """The message of the last recorded error."""

    @classmethod
    def from_record(cls, rec: Any) -> JobSummary:
        """Build from a row of the list query."""
        return cls(
            id=rec["id"],
            state=rec["state"],
            attempt=rec["attempt"],
            max_attempts=rec["max_attempts"],
            priority=rec["priority"],
            queue=rec["queue"],
            kind=rec["kind"],
            args=rec["args"],
            tags=list(rec["tags"] or ()),
            created_at=rec["created_at"],
            scheduled_at=rec["scheduled_at"],
            attempted_at=rec["attempted_at"],
            finalized_at=rec["finalized_at"],
            attempted_by=rec["attempted_by_last"],
            last_error=_error_message(rec["last_error"]),
        )


def _error_message(raw: str | None) -> str | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return raw
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return str(data["error"])
    return raw


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of a job list, newest first."""

    jobs: list[JobSummary]
    next_before: int | None
    """Pass as ``before`` for the next (older) page; None on the last page."""


@dataclass(frozen=True, slots=True)
class WorkflowPage:
    """One page of the workflow list, newest first."""

    workflows: list[WorkflowSummary]
    next_before: int | None
    """Pass as ``before`` for the next (older) page; None on the last page."""


@dataclass(frozen=True, slots=True)
class PeriodicSummary:
    """The jobs one periodic schedule inserted, as found in ``river_job``."""

    kind: str
    queue: str
    periodic_id: str | None
    total: int
    discarded: int
    last_created: datetime
    next_at: datetime | None
    last_id: int
    last_state: str
    last_finalized_at: datetime | None


# -- reads ---------------------------------------------------------------------------


async def known_kinds(client: Client) -> list[str]:
    """The job kinds in the table (at most 500), by a loose scan of the kind index."""
    async with reading(client) as tx:
        rows = await tx.fetch(_KINDS)
    return [r["kind"] for r in rows]


def _newest_first(
    columns: str, filter: Filter, id_bound: tuple[str, int] | None, limit: int
) -> tuple[str, list[Any]]:
    """The SELECT of `columns` of the newest `limit` jobs matching `filter` whose id
    is within `id_bound` (an operator and an id), and its arguments."""
    args: list[Any] = []
    conditions = filter.where(args)
    if id_bound is not None:
        operator, job_id = id_bound
        args.append(job_id)
        conditions.append(f"id {operator} ${len(args)}::bigint")
    args.append(limit)
    sql = (
        f"SELECT {columns} FROM /*schema*/river_job {_where(conditions)} "
        f"ORDER BY id DESC LIMIT ${len(args)}::bigint"
    )
    return sql, args


def job_page_sql(filter: Filter, before: int | None, limit: int) -> tuple[str, list[Any]]:
    """The SELECT of one page of a job list (one row more than `limit`), and its arguments."""
    bound = None if before is None else ("<", before)
    return _newest_first(_SUMMARY_COLUMNS, filter, bound, limit + 1)


async def job_page(
    client: Client, filter: Filter, *, before: int | None = None, limit: int = PAGE_SIZE
) -> JobPage:
    """One page of the jobs matching `filter`, newest first, older than job `before`.

    Keyset paging on the id: a page is found by an index, however deep it is,
    and jobs inserted meanwhile (newer, so before the first page) move no job
    from one page to another.
    """
    sql, args = job_page_sql(filter, before, limit)
    async with reading(client) as tx:
        rows = await tx.fetch(sql, *args)
    jobs = [JobSummary.from_record(r) for r in rows[:limit]]
    return JobPage(jobs, jobs[-1].id if len(rows) > limit else None)


async def count_matching(client: Client, filter: Filter, cap: int) -> tuple[int, int | None]:
    """How many jobs match `filter` (at most `cap` + 1), and the newest job's id then.

    A bulk action covers the jobs up to that id: ones inserted after the count
    was shown are not touched.
    """
    args: list[Any] = []
    conditions = filter.where(args)
    args.append(cap + 1)
    async with reading(client) as tx:
        newest = await tx.fetchval("SELECT max(id) FROM /*schema*/river_job")
        count = await tx.fetchval(
            f"SELECT count(*) FROM (SELECT 1 FROM /*schema*/river_job {_where(conditions)} "
            f"LIMIT ${len(args)}::bigint) AS matching",
            *args,
        )
    return count, newest


async def matching_ids(client: Client, filter: Filter, *, up_to: int, limit: int) -> list[int]:
    """The ids of the newest `limit` jobs matching `filter`, none newer than job `up_to`."""
    sql, args = _newest_first("id", filter, ("<=", up_to), limit)
    async with reading(client) as tx:
        rows = await tx.fetch(sql, *args)
    return [r["id"] for r in rows]


async def periodic_jobs(client: Client) -> list[PeriodicSummary]:
    """Each periodic schedule seen in the jobs table, by kind, queue and periodic id."""
    async with reading(client) as tx:
        rows = await tx.fetch(_PERIODIC)
        last = {
            r["id"]: r for r in await tx.fetch(_PERIODIC_LAST, [row["last_id"] for row in rows])
        }
    result = []
    for r in rows:
        latest = last.get(r["last_id"])
        result.append(
            PeriodicSummary(
                kind=r["kind"],
                queue=r["queue"],
                periodic_id=r["periodic_id"],
                total=r["total"],
                discarded=r["discarded"],
                last_created=r["last_created"],
                next_at=r["next_at"],
                last_id=r["last_id"],
                last_state=latest["state"] if latest else "deleted",
                last_finalized_at=latest["finalized_at"] if latest else None,
            )
        )
    return result


async def workflow_list(
    client: Client, *, before: int | None = None, limit: int = PAGE_SIZE
) -> WorkflowPage:
    """One page of the workflows, newest first, older than the cursor `before`.

    Keyset paging, as for jobs: the cursor is a workflow's first task's id.
    """
    found = await Workflows(client).list(limit=limit + 1, before=before)
    shown = found[:limit]
    return WorkflowPage(shown, shown[-1].cursor if len(found) > limit else None)
