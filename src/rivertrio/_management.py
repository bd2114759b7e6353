"""Managing jobs and queues: the calls of `Client` that read and change rows.

Jobs: get, list, cancel, retry, update, delete. Queues: get, list, update,
pause and resume. `Client` inherits them from `Management`, whose methods need
only the client's driver, its config and its service tree (to tell its own
producers at once what a notification would tell them later).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._args import encode_metadata
from ._driver import Driver, Queryable, Tx, _admin
from ._driver._metadata import merge_metadata
from ._driver._topics import CONTROL_TOPIC, INSERT_TOPIC
from ._exceptions import InvalidInputError, JobRunningError, NotFoundError
from ._job import JobRow, JobState
from ._params import JobDeleteManyParams, JobListCursor, JobListParams, JobListResult, Queue
from ._validate import BIGINT_MAX, integer, queue_name
from ._validate import job_id as check_job_id

if TYPE_CHECKING:
    from ._config import Config
    from ._service_tree import ServiceTree

__all__ = ["Management"]


def _check_queue_target(name: object) -> str:
    if name == "*":
        return "*"
    return queue_name(name, InvalidInputError, hint=" (or '*' for every queue)")


def _job_not_found(job_id: int) -> NotFoundError:
    return NotFoundError(f"job {job_id} not found")


class Management:
    """The job and queue management calls of `Client` (see the module docstring)."""

    config: Config
    driver: Driver
    _tree: ServiceTree

    # -- managing jobs --
    #
    # Each call is one statement (one loop crossing). The ``_tx`` forms run in the
    # caller's transaction: their changes, and the notifications they send, take
    # effect when it commits. Every call is a checkpoint; a call on the pool that
    # is cancelled has either committed entirely or not at all.

    async def job_get(self, job_id: int) -> JobRow:
        """The job's row as stored now. A checkpoint.

        Raises:
            NotFoundError: No job has that id.
        """
        return await self._job_get(self.driver, job_id)

    async def job_get_tx(self, tx: Tx, job_id: int) -> JobRow:
        """`job_get` inside the caller's transaction."""
        return await self._job_get(tx, job_id)

    async def _job_get(self, conn: Queryable, job_id: int) -> JobRow:
        job_id = check_job_id(job_id, InvalidInputError)
        rec = await conn.run(_admin.job_get, self.driver.configured_schema, job_id)
        if rec is None:
            raise _job_not_found(job_id)
        return JobRow.from_record(rec)

    async def job_list(self, params: JobListParams | None = None) -> JobListResult:
        """One page of jobs matching `params` (default: the first 100 by id). A checkpoint.

        For the next page pass ``params.next_page(result)`` (the same params with
        ``after=result.last_cursor``): keyset pagination lists every row exactly once.

        Raises:
            InvalidInputError: `params` is not a JobListParams.
        """
        return await self._job_list(self.driver, params)

    async def job_list_tx(self, tx: Tx, params: JobListParams | None = None) -> JobListResult:
        """`job_list` inside the caller's transaction."""
        return await self._job_list(tx, params)

    async def _job_list(self, conn: Queryable, params: JobListParams | None) -> JobListResult:
        if params is None:
            params = JobListParams()
        elif not isinstance(params, JobListParams):
            raise InvalidInputError(
                f"job_list takes a rivertrio.JobListParams, not {type(params).__name__}"
            )
        recs = await conn.run(_admin.job_list, self.driver.configured_schema, params)
        jobs = [JobRow.from_record(r) for r in recs]
        cursor = JobListCursor.from_job(jobs[-1], params.order_by) if jobs else None
        return JobListResult(jobs=jobs, last_cursor=cursor)

    async def job_cancel(self, job_id: int) -> JobRow:
        """Cancel a job; returns its row as stored afterwards.

        A job not yet running (available, scheduled, retryable, pending) becomes
        ``cancelled`` at once. A running job stays ``running``: it is marked
        (``metadata.cancel_attempted_at``) and the client running it, in this
        process or another, cancels its task (its `work` sees `trio.Cancelled`);
        its row then ends ``cancelled`` (``completed`` if it returned first), and
        any outcome but completion of a marked job becomes a cancellation. A
        finished job is returned unchanged.

        A checkpoint; if cancelled, the job is cancelled entirely or not at all.

        Raises:
            NotFoundError: No job has that id.
        """
        row = await self._job_cancel(self.driver, job_id)
        if row.state is JobState.RUNNING:
            # Committed: tell our own producer directly, which also covers poll_only
            # (this client does not LISTEN, so its own notification never reaches it).
            self._tree.cancel_job(row.queue, row.id)
        return row

    async def job_cancel_tx(self, tx: Tx, job_id: int) -> JobRow:
        """`job_cancel` inside the caller's transaction.

        A running job's producer is told on commit (by notification, or by its
        next queue refresh in ``poll_only`` mode).
        """
        return await self._job_cancel(tx, job_id)

    async def _job_cancel(self, conn: Queryable, job_id: int) -> JobRow:
        job_id = check_job_id(job_id, InvalidInputError)
        rec = await conn.run(
            _admin.job_cancel,
            self.driver.configured_schema,
            job_id,
            self.driver.channel(CONTROL_TOPIC),
        )
        if rec is None:
            raise _job_not_found(job_id)
        return JobRow.from_record(rec)

    async def job_retry(self, job_id: int) -> JobRow:
        """Make a job available to run again now; returns its row afterwards.

        A finished, scheduled, retryable or pending job becomes ``available``
        with ``scheduled_at`` now and ``finalized_at`` null; if its attempts are
        used up it gets one more (``max_attempts`` = ``attempt + 1``); a mark left
        by an earlier `job_cancel` is cleared. A running job, or one already
        available and due, is returned unchanged.

        A checkpoint; if cancelled, the retry happened entirely or not at all.

        Raises:
            NotFoundError: No job has that id.
        """
        row, changed = await self._job_retry(self.driver, job_id)
        if changed:
            self._tree.wake(frozenset({row.queue}))
        return row

    async def job_retry_tx(self, tx: Tx, job_id: int) -> JobRow:
        """`job_retry` inside the caller's transaction."""
        row, _ = await self._job_retry(tx, job_id)
        return row

    async def _job_retry(self, conn: Queryable, job_id: int) -> tuple[JobRow, bool]:
        job_id = check_job_id(job_id, InvalidInputError)
        channel = None if self.config.poll_only else self.driver.channel(INSERT_TOPIC)
        rec = await conn.run(_admin.job_retry, self.driver.configured_schema, job_id, channel)
        if rec is None:
            raise _job_not_found(job_id)
        return JobRow.from_record(rec), bool(rec["changed"])

    async def job_update(self, job_id: int, *, metadata: Mapping[str, Any]) -> JobRow:
        """Merge `metadata` into a job's metadata; returns the row afterwards. A checkpoint.

        Each key given replaces the stored one (top level only); the other keys
        stay. Any state is fine, running included, but River's own keys
        (``output``, ``river:log``, ``snoozes``, ...) are better left to it.

        Raises:
            NotFoundError: No job has that id.
            InvalidInputError: `metadata` is not a JSON object of storable values.
        """
        return await self._job_update(self.driver, job_id, metadata)

    async def job_update_tx(self, tx: Tx, job_id: int, *, metadata: Mapping[str, Any]) -> JobRow:
        """`job_update` inside the caller's transaction."""
        return await self._job_update(tx, job_id, metadata)

    async def _job_update(
        self, conn: Queryable, job_id: int, metadata: Mapping[str, Any]
    ) -> JobRow:
        job_id = check_job_id(job_id, InvalidInputError)
        encoded = encode_metadata(metadata, "job_update: metadata")
        rec = await conn.run(merge_metadata, self.driver.configured_schema, job_id, encoded)
        if rec is None:
            raise _job_not_found(job_id)
        return JobRow.from_record(rec)

    async def job_delete(self, job_id: int) -> JobRow:
        """Delete a job that is not running; returns the deleted row.

        A checkpoint; if cancelled, the job is deleted or left as it was.

        Raises:
            NotFoundError: No job has that id.
            JobRunningError: The job is running (cancel it first).
        """
        return await self._job_delete(self.driver, job_id)

    async def job_delete_tx(self, tx: Tx, job_id: int) -> JobRow:
        """`job_delete` inside the caller's transaction."""
        return await self._job_delete(tx, job_id)

    async def _job_delete(self, conn: Queryable, job_id: int) -> JobRow:
        job_id = check_job_id(job_id, InvalidInputError)
        rec = await conn.run(_admin.job_delete, self.driver.configured_schema, job_id)
        if rec is None:
            raise _job_not_found(job_id)
        if not rec["deleted"]:
            raise JobRunningError(f"job {job_id} is running and cannot be deleted; cancel it first")
        return JobRow.from_record(rec)

    async def job_delete_many(self, params: JobDeleteManyParams) -> list[JobRow]:
        """Delete the jobs matching `params`, never running ones; returns them by id.

        One statement: a checkpoint; if cancelled, all of them are deleted or none.

        Raises:
            InvalidInputError: `params` has no filter and not ``unsafe_all=True``.
        """
        return await self._job_delete_many(self.driver, params)

    async def job_delete_many_tx(self, tx: Tx, params: JobDeleteManyParams) -> list[JobRow]:
        """`job_delete_many` inside the caller's transaction."""
        return await self._job_delete_many(tx, params)

    async def _job_delete_many(self, conn: Queryable, params: JobDeleteManyParams) -> list[JobRow]:
        if not isinstance(params, JobDeleteManyParams):
            raise InvalidInputError(
                f"job_delete_many takes a rivertrio.JobDeleteManyParams, "
                f"not {type(params).__name__}"
            )
        if not params.has_filter and not params.unsafe_all:
            raise InvalidInputError(
                "job_delete_many: no filter given, which would delete every job; set a "
                "filter, or pass JobDeleteManyParams(unsafe_all=True) to really delete all"
            )
        recs = await conn.run(_admin.job_delete_many, self.driver.configured_schema, params)
        return sorted((JobRow.from_record(r) for r in recs), key=lambda r: r.id)

    # -- managing queues --

    async def queue_get(self, name: str) -> Queue:
        """The queue's ``river_queue`` row. A checkpoint.

        Raises:
            NotFoundError: No such row (a queue has one once a client has worked it).
        """
        return await self._queue_get(self.driver, name)

    async def queue_get_tx(self, tx: Tx, name: str) -> Queue:
        """`queue_get` inside the caller's transaction."""
        return await self._queue_get(tx, name)

    async def _queue_get(self, conn: Queryable, name: str) -> Queue:
        queue_name(name, InvalidInputError)
        rec = await conn.run(_admin.queue_get, self.driver.configured_schema, name)
        if rec is None:
            raise NotFoundError(f"queue {name!r} not found")
        return Queue.from_record(rec)

    async def queue_list(self, *, limit: int | None = None) -> list[Queue]:
        """Every queue's row (at most `limit`), by name. A checkpoint."""
        return await self._queue_list(self.driver, limit)

    async def queue_list_tx(self, tx: Tx, *, limit: int | None = None) -> list[Queue]:
        """`queue_list` inside the caller's transaction."""
        return await self._queue_list(tx, limit)

    async def _queue_list(self, conn: Queryable, limit: int | None) -> list[Queue]:
        integer("limit", limit, InvalidInputError, maximum=BIGINT_MAX, none="for no limit")
        recs = await conn.run(_admin.queue_list, self.driver.configured_schema, limit)
        return [Queue.from_record(r) for r in recs]

    async def queue_update(self, name: str, *, metadata: Mapping[str, Any] | None = None) -> Queue:
        """Update a queue's row and return it (River's ``QueueUpdate``). A checkpoint.

        `metadata` replaces the queue's metadata (it is not merged); None leaves
        it as it is. Either way ``updated_at`` is refreshed. Clients working the
        queue are notified when the metadata really changed.

        Raises:
            NotFoundError: No such queue row.
            InvalidInputError: `metadata` is not a JSON object.
        """
        return await self._queue_update(self.driver, name, metadata)

    async def queue_update_tx(
        self, tx: Tx, name: str, *, metadata: Mapping[str, Any] | None = None
    ) -> Queue:
        """`queue_update` inside the caller's transaction (notified on commit)."""
        return await self._queue_update(tx, name, metadata)

    async def _queue_update(
        self, conn: Queryable, name: str, metadata: Mapping[str, Any] | None
    ) -> Queue:
        queue_name(name, InvalidInputError)
        encoded = None if metadata is None else encode_metadata(metadata, "queue metadata")
        rec = await conn.run(
            _admin.queue_update,
            self.driver.configured_schema,
            name,
            encoded,
            self.driver.channel(CONTROL_TOPIC),
        )
        if rec is None:
            raise NotFoundError(f"queue {name!r} not found")
        return Queue.from_record(rec)

    async def queue_pause(self, name: str) -> None:
        """Pause a queue (``"*"``: every queue): no client fetches its jobs until resumed.

        Running jobs go on. Every client working the queue stops fetching (told by
        notification, or by its next queue refresh) and emits ``queue_paused``.
        Pausing a paused queue changes nothing and notifies nobody. A checkpoint;
        if cancelled, the pause happened entirely (row and notification) or not at all.

        Raises:
            NotFoundError: No such queue row (not raised for ``"*"``).
        """
        await self._queue_set_paused(self.driver, name, paused=True)

    async def queue_pause_tx(self, tx: Tx, name: str) -> None:
        """`queue_pause` inside the caller's transaction (clients learn of it on commit)."""
        await self._queue_set_paused(tx, name, paused=True)

    async def queue_resume(self, name: str) -> None:
        """Resume a paused queue (``"*"``: every queue); clients emit ``queue_resumed``.

        A checkpoint; if cancelled, the resume happened entirely or not at all.

        Raises:
            NotFoundError: No such queue row (not raised for ``"*"``).
        """
        await self._queue_set_paused(self.driver, name, paused=False)

    async def queue_resume_tx(self, tx: Tx, name: str) -> None:
        """`queue_resume` inside the caller's transaction (clients learn of it on commit)."""
        await self._queue_set_paused(tx, name, paused=False)

    async def _queue_set_paused(self, conn: Queryable, name: str, *, paused: bool) -> None:
        name = _check_queue_target(name)
        action = "pause" if paused else "resume"
        payload = json.dumps({"action": action, "queue": name}, separators=(",", ":"))
        rec = await conn.run(
            _admin.queue_set_paused,
            self.driver.configured_schema,
            name,
            paused,
            self.driver.channel(CONTROL_TOPIC),
            payload,
        )
        if name != "*" and rec["matched"] == 0:
            raise NotFoundError(f"queue {name!r} not found")
        if conn is self.driver and self._tree.notifier is None:
            # No notification reaches this client (poll_only): apply it here now;
            # other poll_only clients see it at their next queue refresh.
            self._tree.set_paused(name, paused)
