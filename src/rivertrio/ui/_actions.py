"""The dashboard's actions: every change goes through the client API, never its own SQL."""

from __future__ import annotations

from typing import Literal

import trio

from .._client import Client
from .._exceptions import NotFoundError, RivertrioError
from .._job import JobRow, JobState
from .._params import JobDeleteManyParams
from .._workflow import Workflows
from . import _queries
from ._filter import Filter

__all__ = ["BULK_CAP", "bulk", "job_action", "workflow_action"]

#: A bulk action (retry or delete every matching job) covers at most this many
#: jobs, the newest; the confirmation says so when more match.
BULK_CAP = 10_000
_DELETE_BATCH = 1_000
_RETRY_CONCURRENCY = 4


async def job_action(
    client: Client, action: Literal["retry", "cancel", "delete"], job_id: int
) -> JobRow:
    """Retry, cancel or delete one job; its row afterwards (the deleted row for delete)."""
    if action == "retry":
        return await client.job_retry(job_id)
    if action == "cancel":
        return await client.job_cancel(job_id)
    return await client.job_delete(job_id)


async def workflow_action(
    client: Client, action: Literal["retry", "cancel"], workflow_id: str
) -> list[JobRow]:
    """Retry or cancel a workflow's tasks as a whole; the rows of the tasks changed."""
    workflows = Workflows(client)
    if action == "retry":
        return await workflows.retry(workflow_id)
    return await workflows.cancel(workflow_id)


async def bulk(
    client: Client, action: Literal["retry", "delete"], filter: Filter, up_to: int
) -> tuple[int, int]:
    """Retry or delete the newest `BULK_CAP` jobs matching `filter`, none newer than `up_to`.

    Returns how many matched and how many were retried (made available) or
    deleted. Retries go one job at a time through `Client.job_retry`, a few
    at once; deletes through `Client.job_delete_many` by batches of ids, which
    checks the filter's states, kinds and queues again and never deletes a
    running job.
    """
    ids = await _queries.matching_ids(client, filter, up_to=up_to, limit=BULK_CAP)
    done = 0
    if action == "delete":
        for start in range(0, len(ids), _DELETE_BATCH):
            params = JobDeleteManyParams(
                ids=ids[start : start + _DELETE_BATCH],
                states=list(filter.states) or None,
                kinds=list(filter.kinds) or None,
                queues=list(filter.queues) or None,
            )
            done += len(await client.job_delete_many(params))
        return len(ids), done

    pending = iter(ids)
    failures: list[RivertrioError] = []

    async def retry_some(cancel: trio.CancelScope) -> None:
        nonlocal done
        for job_id in pending:
            try:
                row = await client.job_retry(job_id)
            except NotFoundError:
                continue  # deleted meanwhile
            except RivertrioError as exc:
                # The first failure is the one reported; the other retriers stop.
                failures.append(exc)
                cancel.cancel()
                return
            if row.state is JobState.AVAILABLE:
                done += 1

    async with trio.open_nursery() as nursery:
        for _ in range(_RETRY_CONCURRENCY):
            nursery.start_soon(retry_some, nursery.cancel_scope)
    if failures:
        raise failures[0]
    return len(ids), done
