"""The client: inserts jobs and, with queues configured, runs the service tree that works them."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal

import trio

from ._completer import Completer
from ._config import Config, QueueConfig, queue_name_problem
from ._driver import Driver, Tx, _admin, open_driver
from ._elector import LEADERSHIP_TOPIC, Elector
from ._events import Event, EventKind
from ._exceptions import (
    AlreadyRunningError,
    ConfigError,
    InvalidInputError,
    JobRunningError,
    NotFoundError,
    QueueAlreadyAddedError,
    QueueNotFoundError,
)
from ._insert import INSERT_TOPIC, Inserter, InsertOpts, InsertResult
from ._job import JobArgs, JobRow, JobState
from ._liveness import Liveness, is_marked
from ._maintenance import Maintainer, PeriodicJobs
from ._notifier import Notifier
from ._params import JobDeleteManyParams, JobListCursor, JobListParams, JobListResult, Queue
from ._producer import Producer
from ._service import stop_all
from ._subscriptions import SubscriptionManager
from ._util import collapse_single_groups
from .embedded import resolve_database_url

if TYPE_CHECKING:
    from ._events import Outcome, QueueEvent

__all__ = ["Client", "QueueBundle", "open_client"]

log = logging.getLogger("rivertrio.client")

InsertParams = JobArgs | tuple[JobArgs, InsertOpts | None]

# Control notifications (pause, resume, cancel) are sent even by poll_only
# clients: they are rare, NOTIFY works through transaction poolers (only LISTEN
# does not), and listening clients elsewhere then react at once.
CONTROL_TOPIC = "river_control"
_BIGINT_MAX = 2**63 - 1


def _check_job_id(job_id: object) -> int:
    if not isinstance(job_id, int) or isinstance(job_id, bool) or not 1 <= job_id <= _BIGINT_MAX:
        raise InvalidInputError(f"job id must be a positive int, got {job_id!r}")
    return job_id


def _check_queue_target(name: object) -> str:
    if name == "*":
        return "*"
    problem = queue_name_problem(name)
    if problem is not None:
        raise InvalidInputError(f"{problem} (or '*' for every queue)")
    return name  # type: ignore[return-value]


def _job_not_found(job_id: int) -> NotFoundError:
    return NotFoundError(f"job {job_id} not found")


class QueueBundle:
    """Add and remove queues of a running client (``client.queues``)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def add(self, name: str, queue_config: QueueConfig) -> None:
        """Start working a new queue now (or at the next start, when stopped).

        Raises:
            QueueAlreadyAddedError: The client already works that queue.
            ConfigError: The name or the queue config is invalid.
        """
        await self._client._add_queue(name, queue_config)

    async def remove(self, name: str) -> None:
        """Stop working a queue; waits for its running jobs to finish. A checkpoint.

        Raises:
            QueueNotFoundError: The client does not work that queue.
        """
        await self._client._remove_queue(name)


class Client:
    """Inserts jobs and, when its config has queues, works them.

    Use `open_client` for the usual case. The lower-level form, for programs
    that manage their own nursery: ``client = Client(config, driver)`` then
    ``await nursery.start(client.run)``.
    """

    def __init__(self, config: Config, driver: Driver) -> None:
        self.config = config
        self.driver = driver
        self.id = config.id
        self.queues = QueueBundle(self)
        self._queue_configs: dict[str, QueueConfig] = dict(config.queues)
        self._producers: dict[str, Producer] = {}
        self._completer = Completer(driver)
        self._subscriptions = SubscriptionManager()
        self._notifier: Notifier | None = None
        self._inserter = Inserter(driver, config, on_available=self._wake_local)
        # Fast rescue: a client whose id carries the marker holds a liveness lock
        # while it may have jobs running (see _liveness).
        self._liveness: Liveness | None = None
        if is_marked(config.id) and not config.poll_only:
            self._liveness = Liveness(driver, config.id)
            self._liveness.on_lost(self._on_liveness_lost)
            self._liveness.on_regained(self._on_liveness_regained)
        self._elector = Elector(driver, config.id, liveness_lock=self._liveness is not None)
        self.periodic_jobs = PeriodicJobs(config.periodic_jobs)
        """The periodic jobs the leader enqueues; ``add(job)`` / ``remove(id)`` at runtime."""
        self._maintainer = Maintainer.for_config(
            driver,
            config,
            self._elector,
            inserter=self._inserter,
            periodic_jobs=self.periodic_jobs,
            on_available=self._wake_local,
        )
        self._nursery: trio.Nursery | None = None
        self._outcomes: trio.MemorySendChannel[Outcome | QueueEvent] | None = None
        self._stop_requested = trio.Event()
        self._stopped = trio.Event()
        self._stopped.set()
        self._started = trio.Event()

    # -- lifecycle --

    @property
    def started(self) -> bool:
        """Whether the client is running (started and not yet stopped)."""
        return self._started.is_set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the service tree until stopped; use as ``await nursery.start(client.run)``.

        Cancelling the enclosing scope hard-stops the client: running jobs are
        interrupted (back to `available`), and their outcomes are still persisted
        and delivered before `run` returns.

        Raises:
            DatabaseError: A service could not start.
        """
        if not self._stopped.is_set():
            raise AlreadyRunningError("the client is already running: stop it first")
        self._stopped = trio.Event()
        self._stop_requested = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                # The completion pipeline starts first and ends last: it runs
                # shielded and ends only when every outcome channel is closed.
                await nursery.start(self._completer.run)
                outcomes = self._completer.input
                try:
                    self._subscriptions.attach(self._completer.output)
                    await nursery.start(self._subscriptions.run)
                    await self._start_workers(nursery, outcomes)
                    task_status.started()
                    self._started.set()
                    await self._stop_requested.wait()
                    self._stop_maintenance()
                    if self.config.soft_stop_timeout is not None:
                        deadline = trio.current_time() + self.config.soft_stop_timeout
                        for producer in self._producers.values():
                            producer.set_work_deadline(deadline)
                    await stop_all(*self._producers.values())
                finally:
                    self._started = trio.Event()
                    self._nursery = None
                    self._outcomes = None
                    # On an error or a cancellation the producers must not wait for
                    # their jobs: interrupt them (their outcomes still flow).
                    for producer in self._producers.values():
                        if not producer.stopped:
                            producer.cancel_work()
                    self._stop_maintenance()
                    if self._notifier is not None:
                        self._notifier.stop()
                    # Closing our handle lets the completer end once every producer
                    # has closed its clone; it flushes, then closes its output.
                    outcomes.close()
                    if self._liveness is not None and self._queue_configs:
                        nursery.start_soon(self._release_liveness, self._liveness)
        finally:
            self._stopped.set()

    async def _start_workers(
        self, nursery: trio.Nursery, outcomes: trio.MemorySendChannel[Outcome | QueueEvent]
    ) -> None:
        if not self._queue_configs:
            return
        if not self.config.poll_only:
            self._notifier = Notifier(self.driver)
            self._notifier.subscribe(INSERT_TOPIC, self._on_insert_notification)
            self._notifier.subscribe(CONTROL_TOPIC, self._on_control_notification)
            self._notifier.on_reconnect(self._on_reconnect)
            self._notifier.subscribe(LEADERSHIP_TOPIC, self._elector.handle_notification)
            await nursery.start(self._notifier.run)
        if self._liveness is not None:
            # Before any fetch: no job may run under this id without the lock.
            await nursery.start(self._hold_liveness, self._liveness)
        self._producers = {}
        for name, queue_config in self._queue_configs.items():
            producer = Producer(self, name, queue_config)
            producer.attach(outcomes.clone())
            self._producers[name] = producer
            await nursery.start(producer.run)
        self._nursery = nursery
        self._outcomes = outcomes
        await nursery.start(self._maintainer.run)
        await nursery.start(self._elector.run)

    def _stop_maintenance(self) -> None:
        # Idempotent: the leader resigns (deleting its term) as the client stops.
        self._maintainer.stop()
        self._elector.stop()

    async def _hold_liveness(
        self, liveness: Liveness, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        # Shielded like the completer: the lock must outlive a cancelled scope
        # until every outcome is persisted, or the leader could rescue jobs that
        # are still `running` in the database. `_release_liveness` ends it.
        with trio.CancelScope(shield=True):
            await liveness.run(task_status=task_status)

    async def _release_liveness(self, liveness: Liveness) -> None:
        with trio.CancelScope(shield=True):
            await self._completer.wait_stopped()
        liveness.stop()

    def _on_liveness_lost(self) -> None:
        # The leader may now rescue our running jobs: take no more under this id.
        for producer in self._producers.values():
            producer.suspend_fetching(True)

    def _on_liveness_regained(self) -> None:
        for producer in self._producers.values():
            producer.suspend_fetching(False)

    async def stop(self) -> None:
        """Stop fetching, let running jobs finish, persist every outcome, then return.

        A checkpoint. Cancelling the wait does not cancel the stop: the client goes
        on stopping, and a later `stop` waits again. With `soft_stop_timeout`, jobs
        still running after it are cancelled (as by `stop_and_cancel`).
        """
        self._stop_requested.set()
        await self._stopped.wait()

    async def stop_and_cancel(self) -> None:
        """Stop fetching and cancel running jobs now; they go back to `available`.

        A checkpoint; returns once every outcome is persisted and delivered.
        """
        for producer in self._producers.values():
            producer.cancel_work()
        self._stop_requested.set()
        await self._stopped.wait()

    # -- notifications and local wake-ups (synchronous, never block) --

    def _wake_local(self, queues: frozenset[str]) -> None:
        for queue in queues:
            producer = self._producers.get(queue)
            if producer is not None:
                producer.wake()

    def _on_reconnect(self) -> None:
        # Notifications sent while the LISTEN connection was down are lost: fetch,
        # and re-read pause state and cancellations, at once.
        for producer in self._producers.values():
            producer.wake()
            producer.request_refresh()

    def _on_insert_notification(self, payload: dict[str, Any]) -> None:
        producer = self._producers.get(str(payload.get("queue")))
        if producer is not None:
            producer.wake()

    def _on_control_notification(self, payload: dict[str, Any]) -> None:
        action = payload.get("action")
        queue = payload.get("queue")
        if action in ("pause", "resume"):
            self._set_local_paused(str(queue), action == "pause")
        elif action == "cancel":
            job_id = payload.get("job_id")
            owner = self._producers.get(str(queue))
            if isinstance(job_id, int) and owner is not None:
                owner.cancel_job(job_id)

    def _set_local_paused(self, queue: str, paused: bool) -> None:
        targets = (
            list(self._producers.values())
            if queue == "*"
            else [p for n, p in self._producers.items() if n == queue]
        )
        for producer in targets:
            producer.set_paused(paused)

    # -- queues --

    async def _add_queue(self, name: str, queue_config: QueueConfig) -> None:
        if name in self._queue_configs:
            raise QueueAlreadyAddedError(f"queue {name!r} is already added to this client")
        Config(queues={name: queue_config}, workers=self.config.workers)  # validates
        self._queue_configs[name] = queue_config
        if self._nursery is None or self._outcomes is None:
            await trio.lowlevel.checkpoint()
            return
        producer = Producer(self, name, queue_config)
        producer.attach(self._outcomes.clone())
        self._producers[name] = producer
        await self._nursery.start(producer.run)

    async def _remove_queue(self, name: str) -> None:
        if name not in self._queue_configs:
            raise QueueNotFoundError(f"queue {name!r} is not worked by this client")
        del self._queue_configs[name]
        producer = self._producers.pop(name, None)
        if producer is None:
            await trio.lowlevel.checkpoint()
            return
        producer.stop()
        await producer.wait_stopped()

    # -- inserting --

    async def insert(self, args: JobArgs, opts: InsertOpts | None = None) -> InsertResult:
        """Insert one job. A checkpoint; if cancelled, the job may or may not be inserted.

        Raises:
            InvalidInputError: The args or options are invalid (nothing is written).
            UnknownJobKindError: Workers are configured and none handles this kind.
        """
        return await self._inserter.insert(self.driver, args, opts)

    async def insert_many(self, params: Sequence[InsertParams]) -> list[InsertResult]:
        """Insert many jobs in one statement; all or none."""
        return await self._inserter.insert_many(self.driver, params)

    async def insert_many_fast(self, params: Sequence[InsertParams]) -> int:
        """Insert many jobs with COPY and return how many; all or none."""
        return await self._inserter.insert_many_fast(self.driver, params)

    async def insert_tx(
        self, tx: Tx, args: JobArgs, opts: InsertOpts | None = None
    ) -> InsertResult:
        """Insert one job inside the caller's transaction (visible and notified on commit)."""
        return await self._inserter.insert(tx, args, opts)

    async def insert_many_tx(self, tx: Tx, params: Sequence[InsertParams]) -> list[InsertResult]:
        """Insert many jobs inside the caller's transaction."""
        return await self._inserter.insert_many(tx, params)

    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        """A transaction on this client's database, for ``*_tx`` calls and your own SQL."""
        return self.driver.transaction()

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

    async def _job_get(self, executor: Driver | Tx, job_id: int) -> JobRow:
        job_id = _check_job_id(job_id)
        rec = await executor.run(_admin.job_get, self.driver.configured_schema, job_id)
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

    async def _job_list(self, executor: Driver | Tx, params: JobListParams | None) -> JobListResult:
        if params is None:
            params = JobListParams()
        elif not isinstance(params, JobListParams):
            raise InvalidInputError(
                f"job_list takes a rivertrio.JobListParams, not {type(params).__name__}"
            )
        recs = await executor.run(_admin.job_list, self.driver.configured_schema, params)
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
            producer = self._producers.get(row.queue)
            if producer is not None:
                producer.cancel_job(row.id)
        return row

    async def job_cancel_tx(self, tx: Tx, job_id: int) -> JobRow:
        """`job_cancel` inside the caller's transaction.

        A running job's producer is told on commit (by notification, or by its
        next queue refresh in ``poll_only`` mode).
        """
        return await self._job_cancel(tx, job_id)

    async def _job_cancel(self, executor: Driver | Tx, job_id: int) -> JobRow:
        job_id = _check_job_id(job_id)
        rec = await executor.run(
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
            self._wake_local(frozenset({row.queue}))
        return row

    async def job_retry_tx(self, tx: Tx, job_id: int) -> JobRow:
        """`job_retry` inside the caller's transaction."""
        row, _ = await self._job_retry(tx, job_id)
        return row

    async def _job_retry(self, executor: Driver | Tx, job_id: int) -> tuple[JobRow, bool]:
        job_id = _check_job_id(job_id)
        channel = None if self.config.poll_only else self.driver.channel(INSERT_TOPIC)
        rec = await executor.run(_admin.job_retry, self.driver.configured_schema, job_id, channel)
        if rec is None:
            raise _job_not_found(job_id)
        return JobRow.from_record(rec), bool(rec["changed"])

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

    async def _job_delete(self, executor: Driver | Tx, job_id: int) -> JobRow:
        job_id = _check_job_id(job_id)
        rec = await executor.run(_admin.job_delete, self.driver.configured_schema, job_id)
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

    async def _job_delete_many(
        self, executor: Driver | Tx, params: JobDeleteManyParams
    ) -> list[JobRow]:
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
        recs = await executor.run(_admin.job_delete_many, self.driver.configured_schema, params)
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

    async def _queue_get(self, executor: Driver | Tx, name: str) -> Queue:
        problem = queue_name_problem(name)
        if problem is not None:
            raise InvalidInputError(problem)
        rec = await executor.run(_admin.queue_get, self.driver.configured_schema, name)
        if rec is None:
            raise NotFoundError(f"queue {name!r} not found")
        return Queue.from_record(rec)

    async def queue_list(self, *, limit: int | None = None) -> list[Queue]:
        """Every queue's row (at most `limit`), by name. A checkpoint."""
        return await self._queue_list(self.driver, limit)

    async def queue_list_tx(self, tx: Tx, *, limit: int | None = None) -> list[Queue]:
        """`queue_list` inside the caller's transaction."""
        return await self._queue_list(tx, limit)

    async def _queue_list(self, executor: Driver | Tx, limit: int | None) -> list[Queue]:
        if limit is not None and (
            not isinstance(limit, int) or isinstance(limit, bool) or limit < 1
        ):
            raise InvalidInputError(f"limit must be a positive int or None, got {limit!r}")
        recs = await executor.run(_admin.queue_list, self.driver.configured_schema, limit)
        return [Queue.from_record(r) for r in recs]

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

    async def _queue_set_paused(self, executor: Driver | Tx, name: str, *, paused: bool) -> None:
        name = _check_queue_target(name)
        action = "pause" if paused else "resume"
        payload = json.dumps({"action": action, "queue": name}, separators=(",", ":"))
        rec = await executor.run(
            _admin.queue_set_paused,
            self.driver.configured_schema,
            name,
            paused,
            self.driver.channel(CONTROL_TOPIC),
            payload,
        )
        if name != "*" and rec["matched"] == 0:
            raise NotFoundError(f"queue {name!r} not found")
        if executor is self.driver and self._notifier is None:
            # No notification reaches this client (poll_only): apply it here now;
            # other poll_only clients see it at their next queue refresh.
            self._set_local_paused(name, paused)

    # -- events --

    def subscribe(
        self,
        *kinds: EventKind,
        buffer: int = 1000,
        overflow: Literal["block", "drop"] = "block",
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[Event]]:
        """Receive events of the given kinds; the channel ends when the client stops.

        ``overflow="block"`` never drops an event (a slow subscriber slows job
        completion); ``overflow="drop"`` drops and counts events when the buffer
        is full, as River does. Leaving the block unsubscribes at once.

        Raises:
            ConfigError: The client has no queues (it produces no events).
            InvalidInputError: No kinds, an unknown kind, or a bad buffer/overflow.
        """
        if not self._queue_configs:
            raise ConfigError(
                "subscribe: this is an insert-only client (no queues), so it works no jobs "
                "and emits no events; subscribe on a client that has queues"
            )
        return self._subscriptions.subscribe(*kinds, buffer=buffer, overflow=overflow)


@asynccontextmanager
async def open_client(config: Config, *, database_url: str | None = None) -> AsyncIterator[Client]:
    """Open the database, start a client, and stop it when the block ends.

    Leaving the block normally is a soft stop (running jobs finish); leaving it
    by an exception or a cancellation is a hard stop (running jobs are
    interrupted and go back to `available`). Either way every outcome is
    persisted and delivered before this returns.

    Args:
        config: The client's configuration.
        database_url: A ``postgresql://`` URL; default ``RIVERTRIO_DATABASE_URL``,
            else the embedded Postgres.
    """
    url = await resolve_database_url(database_url)
    with collapse_single_groups():
        async with (
            open_driver(
                url,
                schema=config.schema,
                max_size=config.effective_pool_size,
                # User transactions may not take these: they would starve the
                # client's own fetches and completions (issue 7, scenario 5).
                reserved=config.reserved_connections,
                poll_only=config.poll_only,
            ) as driver,
            trio.open_nursery() as nursery,
        ):
            client = Client(config, driver)
            await nursery.start(client.run)
            try:
                yield client
            except BaseException:
                for producer in client._producers.values():
                    producer.cancel_work()
                client._stop_requested.set()
                raise
            await client.stop()
