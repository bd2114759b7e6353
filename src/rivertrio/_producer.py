"""The producer: fetches one queue's jobs and runs each in a task of its work scope."""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import trio

from ._driver._flow import FlowFetch, flow_adopt, flow_fetch_jobs, server_clock
from ._driver._producer import FetchAttempt, confirm_fetch, fetch_jobs, queue_refresh
from ._events import EventKind, Outcome, OutcomeKind, QueueEvent
from ._exceptions import DatabaseError
from ._executor import RunningJob, WorkConfig, execute
from ._service import Service

if TYPE_CHECKING:
    from asyncpg import Record

    from ._driver import Driver

__all__ = ["QUEUE_REFRESH_INTERVAL", "Producer", "ProducerConfig"]

log = logging.getLogger("rivertrio.producer")

# A fetch already sent is shielded (its rows are `running` in the database and
# must be worked or handed back), but bounded, so a dead server cannot hang stop.
# A local round trip takes a millisecond; ten seconds is an unhealthy server.
_FETCH_SHIELD_TIMEOUT = 10.0
# How long an outcome may wait for room in the completer's backlog during
# shutdown before it is left to the rescuer.
_SEND_SHIELD_TIMEOUT = 60.0

_REFRESH_TIMEOUT = 10.0

# Jobs of one fetch started together before Trio next looks at I/O (see
# `Producer._start_in_slices`).
_START_SLICE = 32

#: Seconds between refreshes of a producer's queue row (see `Producer`); read when
#: a producer is built.
QUEUE_REFRESH_INTERVAL = 5.0


@dataclass(frozen=True, slots=True)
class ProducerConfig:
    """What a producer needs from its client, which builds one per queue.

    The fetch settings are the queue's own where it has them, else the client's
    (``Config.queue_fetch_cooldown`` and ``Config.queue_fetch_poll_interval``).
    """

    driver: Driver
    client_id: str
    """Recorded in ``attempted_by`` of every job this producer fetches."""
    queue: str
    max_workers: int
    fetch_cooldown: float
    fetch_poll_interval: float
    work: WorkConfig
    """How each fetched job is worked."""
    flow: FlowFetch | None = None
    """The queue's flow rules (``Config.flow``): fetch with the flow fetch. None: the
    plain fetch."""


def _fetch_order(record: Record) -> tuple[Any, ...]:
    # The order a fetch's jobs start in (its UPDATE returns them in any order).
    return (record["priority"], record["scheduled_at"], record["id"])


class Producer(Service):
    """Fetches jobs of one queue with `FOR UPDATE SKIP LOCKED` and runs them.

    It never holds more jobs than `max_workers`. It fetches when woken (an insert
    notification, a local insert, a freed slot after a fetch that filled every
    slot) or when its jittered poll interval passes. Two fetches are at least
    `fetch_cooldown` apart, except a fetch for at least half the slots: that one
    is worth a round trip at once, which keeps latency low on an idle queue while
    still batching under load. One fetch takes at most half the slots (rounded
    up, and never fewer than 32), so that under load the next fetch is in
    flight while the jobs of the last one run: the database's work overlaps
    this process's.

    Three scopes: fetching stops on `stop()`; job tasks live in the work scope,
    cancelled by `cancel_work()` or its deadline; outcomes go to the completer
    through a channel clone that the producer closes when its last job is done.

    Its queue's ``river_queue`` row is registered at start and refreshed every
    `refresh_interval` seconds (recreated if it was deleted). The refresh also
    reads the row's ``paused_at`` and which of its running jobs were marked by
    ``job_cancel``: the paths by which pause, resume and cancellation reach it
    without notifications (``poll_only``, a lost notification, a ``*_tx`` call).
    """

    def __init__(self, config: ProducerConfig) -> None:
        super().__init__()
        self._config = config
        self.queue = config.queue
        self.max_workers = config.max_workers
        self.fetch_cooldown = config.fetch_cooldown
        self.fetch_poll_interval = config.fetch_poll_interval
        self._outcomes: trio.MemorySendChannel[Outcome | QueueEvent] | None = None
        self._live: trio.MemorySendChannel[Outcome | QueueEvent] | None = None
        self._running: dict[int, RunningJob] = {}
        self._changed = trio.Event()
        self._woken = False
        self._paused = False
        self._suspended = False
        self._work_scope: trio.CancelScope | None = None
        self._cancel_work = False
        self._work_deadline = math.inf
        self.fetches = 0
        self.refresh_interval = QUEUE_REFRESH_INTERVAL
        self._refresh_requested = trio.Event()
        self._refresh_starts = 0
        self._last_refresh_ok = 0  # the start number of the last refresh that succeeded
        self._refreshed = trio.Event()
        # Bumped by each pause/resume from a notification or a direct call, so a
        # refresh that read the row before it cannot undo it.
        self._control_seq = 0
        self._fetching = False
        self._early_cancels: set[int] = set()
        # The flow fetch goes round the queue's partitions from where it stopped.
        self._flow_cursor: str | None = None
        self._flow_more = False
        self._flow_wait: float | None = None
        # When this producer started, by the server's clock: jobs running under
        # the client's id since then that it does not have are its own lost
        # fetch's (see flow_fetch_jobs).
        self._flow_since: datetime | None = None
        # Held jobs whose work is over but whose outcome the completer has not
        # written yet, by id, with the attempt's attempted_at: see `persisted`.
        self._finishing: dict[int, datetime] = {}

    # -- control, all synchronous (callable from notification callbacks) --

    def attach(self, outcomes: trio.MemorySendChannel[Outcome | QueueEvent]) -> None:
        """Give the next run its own clone of the completer's input; the run closes it."""
        self._outcomes = outcomes

    def wake(self) -> None:
        """Fetch soon: jobs may be available (subject to the cooldown)."""
        self._woken = True
        self._changed.set()

    def stop(self) -> None:
        """Stop fetching; running jobs go on to the end (or the work deadline)."""
        super().stop()
        self._changed.set()

    def cancel_work(self) -> None:
        """Stop fetching and cancel every running job now (a hard stop)."""
        self._cancel_work = True
        self.stop()
        if self._work_scope is not None:
            self._work_scope.cancel()

    def set_work_deadline(self, deadline: float) -> None:
        """Cancel running jobs still running at `deadline` (Trio clock): soft stop timeout."""
        self._work_deadline = min(self._work_deadline, deadline)
        if self._work_scope is not None:
            self._work_scope.deadline = self._work_deadline

    def cancel_job(self, job_id: int) -> bool:
        """Cancel one running job's task (a `job_cancel`); False if this producer does not run it.

        The job's `work` is cancelled; its outcome becomes ``cancelled`` (it does
        not count as a failure). A cancellation that arrives while a fetch is in
        flight is kept for the rows that fetch returns: the notification can
        overtake the fetch's own result.
        """
        handle = self._running.get(job_id)
        if handle is None:
            if self._fetching:
                self._early_cancels.add(job_id)
            return False
        handle.cancel()
        return True

    def set_paused(self, paused: bool) -> None:
        """Pause (no new fetches; running jobs go on) or resume fetching.

        Emits `QUEUE_PAUSED` / `QUEUE_RESUMED` when the state changes.
        """
        self._control_seq += 1
        self._set_paused(paused)

    def suspend_fetching(self, suspended: bool) -> None:
        """Stop fetching (True) or fetch again (False), apart from pause state.

        The client suspends fetching while its liveness lock is lost: the leader
        may be rescuing its running jobs, so it must not take more under its id.
        """
        self._suspended = suspended
        self.wake()

    def persisted(self, job_ids: Iterable[int]) -> None:
        """The outcomes of these jobs are written: their rows say they ended.

        Until then, this producer's flow fetch tells the database which of its
        running rows have finished their work (the exact attempts), so that they
        do not count against the queue's limits. Only ever this producer's own
        jobs, and only those attempts: a job run again is counted again.
        """
        for job_id in job_ids:
            self._finishing.pop(job_id, None)

    def request_refresh(self) -> None:
        """Refresh the queue row soon (e.g. after notifications may have been lost)."""
        self._refresh_requested.set()

    async def wait_refreshed(self) -> None:
        """Wait until a refresh of the queue row that starts after this call succeeds.

        A checkpoint; cancel-safe.
        """
        after = self._refresh_starts
        while self._last_refresh_ok <= after:
            await self._refreshed.wait()

    def _set_paused(self, paused: bool) -> None:
        if paused == self._paused:
            return
        self._paused = paused
        kind = EventKind.QUEUE_PAUSED if paused else EventKind.QUEUE_RESUMED
        if self._live is not None:
            try:
                self._live.send_nowait(QueueEvent(kind, self.queue))
            except (trio.WouldBlock, trio.ClosedResourceError):
                log.warning("could not report %s for queue %s", kind, self.queue)
        self.wake()

    @property
    def paused(self) -> bool:
        """Whether the queue is paused for this producer."""
        return self._paused

    # -- the run --

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        outcomes, self._outcomes = self._outcomes, None
        if outcomes is None:
            raise RuntimeError("Producer.attach(outcomes) must be called before each run")
        self._cancel_work = False
        self._work_deadline = math.inf
        self._finishing.clear()  # a past run's: counted again, to be safe
        with outcomes:
            self._live = outcomes
            try:
                # Registering is part of starting: a queue paused before start
                # must not fetch even once.
                await self._refresh(initial=True)
                # The refreshes go on while running jobs finish after a stop: the
                # row stays fresh and a job_cancel still reaches them (poll_only).
                async with trio.open_nursery() as refresher:
                    refresher.start_soon(self._refresh_loop)
                    async with trio.open_nursery() as work:
                        self._work_scope = work.cancel_scope
                        work.cancel_scope.deadline = self._work_deadline
                        if self._cancel_work:
                            work.cancel_scope.cancel()
                        task_status.started()
                        await self._fetch_loop(work, outcomes)
                    # Every job is done: a refresh in flight is not worth waiting for.
                    refresher.cancel_scope.cancel()
            finally:
                self._work_scope = None
                self._live = None

    async def _refresh(self, *, initial: bool = False) -> None:
        self._refresh_starts += 1
        started = self._refresh_starts
        seq = self._control_seq
        driver = self._config.driver
        running = list(self._running)
        rec = None
        # Bounded: a connection that stopped answering must not stop the refreshes
        # (and with them pause, resume and cancellation without notifications).
        with trio.move_on_after(_REFRESH_TIMEOUT):
            rec = await driver.run(queue_refresh, driver.configured_schema, self.queue, running)
        if rec is None:
            raise DatabaseError(f"no answer within {_REFRESH_TIMEOUT:g} s")
        if seq == self._control_seq:
            if initial:
                self._paused = bool(rec["paused"])  # no event for the state at start
            else:
                self._set_paused(bool(rec["paused"]))
        for job_id in rec["cancel_ids"]:
            handle = self._running.get(job_id)
            if handle is not None and not handle.cancel_requested:
                log.info("job %d was cancelled while running; cancelling its task", job_id)
                handle.cancel()
        self._last_refresh_ok = started
        self._refreshed.set()
        self._refreshed = trio.Event()

    async def _refresh_loop(self) -> None:
        failures = 0
        while True:
            with trio.move_on_after(self.refresh_interval):
                await self._refresh_requested.wait()
            self._refresh_requested = trio.Event()
            try:
                await self._refresh()
            except DatabaseError as exc:
                failures += 1
                if failures == 1 or failures % 20 == 0:
                    log.warning(
                        "refreshing queue %s failed (%d in a row): %s", self.queue, failures, exc
                    )
            else:
                failures = 0

    def _poll_delay(self) -> float:
        # Jitter (up to +10%) keeps many producers from polling in lockstep.
        return self.fetch_poll_interval * (1 + random.uniform(0, 0.1))

    async def _fetch_loop(
        self, work: trio.Nursery, outcomes: trio.MemorySendChannel[Outcome | QueueEvent]
    ) -> None:
        next_poll = trio.current_time() + self._poll_delay()
        self._flow_since = None  # a run's own start: see flow_fetch_jobs
        # Fetch at once on start: jobs may be waiting already (a restart, a queue
        # added at runtime, jobs inserted while no client worked the queue).
        self._woken = True
        last_fetch = -math.inf
        more = False  # the last fetch got all it asked for: more jobs are likely waiting
        failures = 0
        half = max(1, self.max_workers // 2)
        # A fetch's limit: half the slots, so that the next fetch can be in flight
        # while its jobs run; but at least a slice, whose jobs all start at once
        # (a small pool gains more from fewer round trips than from overlap).
        most = max((self.max_workers + 1) // 2, _START_SLICE)
        while not self._stop_requested:
            now = trio.current_time()
            free = self.max_workers - len(self._running)
            due = self._woken or more or now >= next_poll
            idle = self._paused or self._suspended
            if free > 0 and due and not idle:
                not_before = last_fetch + self.fetch_cooldown if free < half else now
                if now < not_before:
                    with trio.move_on_at(not_before):
                        await self._stop_event.wait()
                    continue
                self._woken = False
                limit = min(free, most)
                try:
                    rows = await self._fetch(limit)
                except DatabaseError as exc:
                    self._early_cancels.clear()
                    failures += 1
                    if failures == 1 or failures % 20 == 0:
                        log.warning(
                            "fetching queue %s failed (%d in a row): %s", self.queue, failures, exc
                        )
                    last_fetch = trio.current_time()
                    next_poll = last_fetch + min(self.fetch_poll_interval, 0.1 * 2**failures)
                    more = False
                    continue
                failures = 0
                last_fetch = trio.current_time()
                next_poll = last_fetch + self._poll_delay()
                if self._flow_wait is not None and len(rows) < limit:
                    # A rate limit held jobs back: fetch again when it lets one go.
                    next_poll = min(next_poll, last_fetch + max(self._flow_wait, 0.001))
                more = len(rows) == limit or self._flow_more
                early, self._early_cancels = self._early_cancels, set()
                handles = []
                for record in rows:
                    handle = RunningJob.fetched(record)
                    if handle.id in early:
                        handle.cancel()
                    self._running[handle.id] = handle
                    handles.append(handle)
                if len(handles) <= _START_SLICE:
                    self._start(work, handles, outcomes)
                else:
                    work.start_soon(self._start_in_slices, work, handles, outcomes)
                continue
            self._changed = trio.Event()
            with trio.move_on_at(next_poll if free > 0 and not idle else math.inf):
                await self._changed.wait()

    def _start(
        self,
        work: trio.Nursery,
        handles: list[RunningJob],
        outcomes: trio.MemorySendChannel[Outcome | QueueEvent],
    ) -> None:
        for handle in handles:
            work.start_soon(self._job_task, handle, outcomes, name=f"job {handle.id}")

    async def _start_in_slices(
        self,
        work: trio.Nursery,
        handles: list[RunningJob],
        outcomes: trio.MemorySendChannel[Outcome | QueueEvent],
    ) -> None:
        """Start a large fetch's jobs a slice at a time, letting I/O in between.

        The next fetch is in flight meanwhile, and each of its round trips is
        answered only when Trio looks at I/O, between two runs of every task
        ready to run: started at once, the whole fetch's jobs would run before
        its first reply is read, and the database would sit idle until then.
        Never cancelled half way: every job of the fetch gets its task.
        """
        for first in range(0, len(handles), _START_SLICE):
            if first:
                await trio.lowlevel.cancel_shielded_checkpoint()
            self._start(work, handles[first : first + _START_SLICE], outcomes)

    async def _fetch(self, limit: int) -> list[Record]:
        driver = self._config.driver
        self.fetches += 1
        self._fetching = True
        attempt = FetchAttempt()
        try:
            problem: DatabaseError | None = None
            with trio.move_on_after(_FETCH_SHIELD_TIMEOUT, shield=True) as scope:
                try:
                    if self._config.flow is None:
                        records = await driver.run(
                            fetch_jobs,
                            driver.configured_schema,
                            self.queue,
                            limit,
                            self._config.client_id,
                            attempt,
                        )
                    else:
                        # A failure leaves nothing in doubt here: jobs a lost
                        # reply started come back with the next flow fetch.
                        records = await self._flow_fetch(limit, self._config.flow)
                except DatabaseError as exc:
                    problem = exc
            if scope.cancelled_caught:
                problem = DatabaseError(f"fetching queue {self.queue} timed out")
            if problem is not None:
                if not attempt.rows:
                    raise problem  # nothing was taken
                records = await self._confirm(attempt.rows, problem)
        finally:
            self._fetching = False
        records.sort(key=_fetch_order)
        return records

    async def _flow_fetch(self, limit: int, flow: FlowFetch) -> list[Record]:
        driver = self._config.driver
        self._flow_more = False
        if self._flow_since is None:
            self._flow_since = await driver.run(server_clock)
        fetched = await driver.run(
            flow_fetch_jobs,
            driver.configured_schema,
            self.queue,
            limit,
            self._config.client_id,
            flow,
            self._flow_cursor,
            [*self._running, *self._finishing],
            list(self._finishing.items()),
            self._flow_since,
        )
        self._flow_cursor = fetched.cursor
        self._flow_wait = fetched.wait
        # Fetch again at once when partitions past this fetch's window may have room.
        self._flow_more = fetched.window_full and bool(fetched.rows)
        if fetched.available:
            # Jobs inserted without the queue's rules (by a River client, say):
            # held now, taken by the next fetch, at once.
            try:
                adopted = await driver.run(flow_adopt, driver.configured_schema, self.queue, flow)
                self._flow_more = self._flow_more or adopted > 0
            except DatabaseError as exc:
                log.warning("holding available jobs of queue %s failed: %s", self.queue, exc)
        return fetched.rows

    async def _confirm(self, taken: list[Record], problem: DatabaseError) -> list[Record]:
        """A fetch's COMMIT went unanswered: return those of its rows that are ours.

        Unworked, they would stay `running` under this live client until
        ``rescue_stuck_jobs_after``. Asked until the database answers; given up
        (and said, with the ids) only when the producer stops meanwhile.
        """
        driver = self._config.driver
        ids = [r["id"] for r in taken]
        log.warning(
            "fetching queue %s: the commit of %d jobs got no answer (%s); checking which are ours",
            self.queue,
            len(ids),
            problem,
        )
        failures = 0
        mine: list[Record] | None = None
        try:
            while True:
                with (
                    trio.move_on_after(_FETCH_SHIELD_TIMEOUT, shield=True),
                    contextlib.suppress(DatabaseError),
                ):
                    mine = await driver.run(
                        confirm_fetch, driver.configured_schema, taken, self._config.client_id
                    )
                if mine is not None or self._stop_requested:
                    break
                failures += 1
                with trio.move_on_after(min(self.fetch_poll_interval, 0.1 * 2**failures)):
                    await self._stop_event.wait()
        finally:
            if mine is None:
                log.error(
                    "fetching queue %s: stopping before the database could say whether jobs "
                    "%s are ours; any that are stay running for the rescuer",
                    self.queue,
                    ids,
                )
        if mine is None:
            return []
        log.info("fetching queue %s: %d of the %d jobs are ours", self.queue, len(mine), len(ids))
        return mine

    async def _job_task(
        self, handle: RunningJob, outcomes: trio.MemorySendChannel[Outcome | QueueEvent]
    ) -> None:
        # Anything but a completed run of `execute` (cancellation from outside:
        # hard stop, soft stop timeout, the enclosing scope) is an interruption.
        outcome: Outcome | None = None
        try:
            outcome = await execute(self._config.work, handle)
        finally:
            if outcome is None:
                outcome = Outcome(job=handle.row, kind=OutcomeKind.INTERRUPTED)
            if self._config.flow is not None and handle.row.attempted_at is not None:
                # Its row stays running until the outcome is written, but the
                # work is over: this producer may start another in its place now.
                self._finishing[handle.row.id] = handle.row.attempted_at
                self._woken = True
            del self._running[handle.id]
            try:
                # Not a checkpoint: works even in a cancelled scope.
                outcomes.send_nowait(outcome)
            except trio.WouldBlock:
                # Backlog full: wait for room, shielded, since this outcome must not be lost.
                with trio.move_on_after(_SEND_SHIELD_TIMEOUT, shield=True) as scope:
                    await outcomes.send(outcome)
                if scope.cancelled_caught:
                    log.error(
                        "the completer took no outcome for %s s; job %d stays running "
                        "for the rescuer",
                        _SEND_SHIELD_TIMEOUT,
                        handle.id,
                    )
            self._changed.set()
