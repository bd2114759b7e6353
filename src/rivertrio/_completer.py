"""The completer: persists job outcomes in batches and hands the rows on as events.

Job tasks send their :class:`~rivertrio._events.Outcome` on clones of the
completer's input channel; the completer writes a whole batch with one
``UPDATE ... FROM unnest(...)`` statement (only rows still ``running`` change)
and sends the resulting events (an :class:`~rivertrio._events.EventBatch`, whose
events are built only when read) on its output channel, which the subscription
manager reads.

The completer is shielded and ends only when its input channel is closed, that
is when the client has closed the original send handle and every producer its
clone. Cancelling the scope around it cannot stop it early: River once had a
completer tied to its caller's context that stopped while producers were still
finishing, so a late outcome went to a closed channel and was lost.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import trio

from ._driver._completer import complete_jobs
from ._events import Event, EventBatch, EventKind, Outcome, OutcomeKind, QueueEvent
from ._exceptions import ConfigError, DatabaseConnectionError, DatabaseError
from ._flow import FLOW_KEY, WORKFLOW_KEY
from ._job import JobState
from ._service import Service
from ._validate import duration, integer

__all__ = ["Completer", "CompleterCounters", "CompletionDriver", "CompletionItem"]

log = logging.getLogger("rivertrio.completer")

T = TypeVar("T")

#: What travels on the completer's input channel.
CompletionItem = Outcome | QueueEvent

# Lists of events buffered between the completer and the subscription manager.
# Small on purpose: a slow lossless subscriber must back-pressure the completer
# (and through its backlog the job tasks), not grow a queue.
_OUTPUT_BUFFER = 4

# A statement that Postgres itself rejects (not a connection problem) will most
# likely be rejected again: it gets this many attempts at most, so that one bad
# batch cannot hold every other outcome back for the whole outage budget.
_STATEMENT_ATTEMPTS = 3

# A held job's outcome (flow control) frees room under its queue's limits only
# once persisted, and every client waits for that; a workflow task's may let
# the tasks waiting for it run. Either is batched for this long at most, not
# flush_interval.
_HELD_FLUSH_INTERVAL = 0.002


def _held(item: CompletionItem) -> bool:
    if not isinstance(item, Outcome):
        return False
    metadata = item.job.metadata
    return FLOW_KEY in metadata or WORKFLOW_KEY in metadata


_EVENT_BY_OUTCOME = {
    OutcomeKind.COMPLETED: EventKind.JOB_COMPLETED,
    OutcomeKind.FAILED: EventKind.JOB_FAILED,
    OutcomeKind.CANCELLED: EventKind.JOB_CANCELLED,
    OutcomeKind.SNOOZED: EventKind.JOB_SNOOZED,
    OutcomeKind.INTERRUPTED: EventKind.JOB_INTERRUPTED,
}

# A row someone else finished (River: completed in the worker's own transaction,
# cancelled, rescued) is reported as what it is, not as what the worker said.
_EVENT_BY_STORED_STATE: dict[str, EventKind] = {
    JobState.COMPLETED: EventKind.JOB_COMPLETED,
    JobState.CANCELLED: EventKind.JOB_CANCELLED,
    JobState.DISCARDED: EventKind.JOB_FAILED,
}


def _column(values: list[T | None]) -> list[T | None] | None:
    """`values`, or None if every one is None."""
    for value in values:
        if value is not None:
            return values
    return None


class CompletionDriver(Protocol):
    """What the completer needs of a driver: `rivertrio._driver.Driver` or a wrapper."""

    @property
    def configured_schema(self) -> str | None:
        """The schema to qualify table names with, or None for the search path."""
        ...

    async def run(self, fn: Callable[..., Coroutine[Any, Any, T]], /, *args: Any) -> T:
        """Run the asyncio function ``fn(conn, *args)`` on a pooled connection."""
        ...


@dataclass(slots=True)
class CompleterCounters:
    """Running totals over every run of one completer, for tests and benchmarks."""

    batches: int = 0
    """Statements that persisted a (sub-)batch."""
    failed_attempts: int = 0
    """Statements that failed (or timed out) and were retried or given up."""
    rows_persisted: int = 0
    """Outcomes that changed their row."""
    rows_finished_elsewhere: int = 0
    """Outcomes whose row someone else had finished: reported, not changed."""
    rows_missing: int = 0
    """Outcomes whose row was deleted: nothing persisted, no event."""
    rows_dropped: int = 0
    """Outcomes given up on (database failing, final flush deadline); rows stay running."""
    events_sent: int = 0
    """Events handed to the output channel."""
    events_undeliverable: int = 0
    """Events lost because the output's receiver was gone (a bug in the consumer)."""


class Completer(Service):
    """Batches job outcomes into one statement per batch; a shielded service.

    Each run creates a fresh input channel (:attr:`input`, bounded by
    ``backlog``: a full backlog makes senders wait) and a fresh output channel
    (:attr:`output`, one sequence of events per persisted sub-batch, in order).
    Publish both before ``started()``: the client clones :attr:`input` for each
    producer and closes the original when it stops; it hands :attr:`output` to
    the subscription manager.

    The run ends only when its input channel is closed (the original and every
    clone), then flushes what it holds and closes its output. :meth:`stop`
    closes the original input handle. Cancelling the enclosing scope does the
    same and nothing more: the run keeps draining, shielded, until every clone
    is closed too.

    Args:
        driver: Runs the completion statement (a `Driver`, or a wrapper of one).
        batch_size: Most outcomes persisted by one statement; a flush holding
            more is split into sub-batches of this size.
        flush_interval: Longest time an outcome waits to be batched, in seconds.
        backlog: Outcomes buffered in the input channel before senders wait.
        max_attempts: Statements tried per sub-batch while the database cannot
            be reached (or does not answer) before the sub-batch is given up on
            (its job ids are logged; the rows stay running for the rescuer). A
            statement that Postgres rejects gets at most 3 attempts.
        retry_backoff: Base delay between attempts, doubled each time, jittered
            by +-25%.
        max_backoff: The longest delay between two attempts. The defaults retry
            for about 30 s: a database restart or a failover is ridden out, and
            outcomes produced during it are persisted once it is back.
        attempt_timeout: Deadline of one statement, in seconds.
        final_flush_timeout: Bound on persisting what is left once the input has
            closed, so a dead database cannot hang shutdown. It also bounds
            retries in progress when the input closes (a stop during an outage).

    Raises:
        ConfigError: A setting is out of range (the message names it).
    """

    def __init__(
        self,
        driver: CompletionDriver,
        *,
        batch_size: int = 5000,
        flush_interval: float = 0.05,
        backlog: int = 20_000,
        max_attempts: int = 10,
        retry_backoff: float = 0.25,
        max_backoff: float = 5.0,
        attempt_timeout: float = 10.0,
        final_flush_timeout: float = 15.0,
    ) -> None:
        super().__init__()
        integer("Completer batch_size", batch_size, ConfigError)
        integer("Completer backlog", backlog, ConfigError, minimum=0)
        integer("Completer max_attempts", max_attempts, ConfigError)
        duration("Completer flush_interval", flush_interval, ConfigError)
        duration("Completer retry_backoff", retry_backoff, ConfigError, at_least=0)
        duration("Completer max_backoff", max_backoff, ConfigError, at_least=0)
        duration("Completer attempt_timeout", attempt_timeout, ConfigError)
        duration("Completer final_flush_timeout", final_flush_timeout, ConfigError)
        self._driver = driver
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.backlog = backlog
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self.max_backoff = max_backoff
        self.attempt_timeout = attempt_timeout
        self.final_flush_timeout = final_flush_timeout
        self.counters = CompleterCounters()
        self.on_flow_persisted: Callable[[list[Outcome]], None] | None = None
        """Called (it must not block) with the outcomes just persisted of jobs held
        by flow control or in a workflow (see `rivertrio._flow`): their end may let
        other jobs start."""
        self._input: trio.MemorySendChannel[CompletionItem] | None = None
        self._output: trio.MemoryReceiveChannel[Sequence[Event]] | None = None

    @property
    def input(self) -> trio.MemorySendChannel[CompletionItem]:
        """The current run's original input send handle; clone it for each producer.

        Raises:
            RuntimeError: The completer is not running.
        """
        if self._input is None:
            raise RuntimeError("the completer is not running: no input channel")
        return self._input

    @property
    def output(self) -> trio.MemoryReceiveChannel[Sequence[Event]]:
        """The current run's output receive handle, for the subscription manager.

        Raises:
            RuntimeError: The completer is not running.
        """
        if self._output is None:
            raise RuntimeError("the completer is not running: no output channel")
        return self._output

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        """One run: publish fresh channels, persist until the input closes, close the output.

        Cancelling the enclosing scope closes the original input handle (as
        :meth:`stop` does) and does not interrupt the run, which is shielded.
        """
        send_in, receive_in = trio.open_memory_channel[CompletionItem](self.backlog)
        send_out, receive_out = trio.open_memory_channel[Sequence[Event]](_OUTPUT_BUFFER)
        self._input, self._output = send_in, receive_out
        failure: Exception | None = None
        try:
            async with trio.open_nursery() as nursery:
                # Unshielded on purpose: it is what sees stop() and the enclosing
                # scope's cancellation, and turns both into closing the original.
                nursery.start_soon(self._close_input_when_asked, send_in)
                # The loop must outlive the caller's cancellation and end only at
                # end-of-channel, so no job task ever sends on a closed channel.
                with trio.CancelScope(shield=True):
                    task_status.started()
                    try:
                        await self._loop(receive_in, send_out)
                    except Exception as exc:
                        # Kept out of the nursery's group: a service error reaches
                        # the caller as itself.
                        failure = exc
                nursery.cancel_scope.cancel()
        finally:
            # Not a checkpoint. The loop closed both already unless it failed; then
            # job tasks still sending get BrokenResourceError rather than hang.
            receive_in.close()
            send_out.close()
            self._input = self._output = None
        if failure is not None:
            raise failure

    async def _close_input_when_asked(
        self, send_in: trio.MemorySendChannel[CompletionItem]
    ) -> None:
        try:
            await self._stop_event.wait()
        finally:
            # On stop() or on the enclosing scope's cancellation. Closing an already
            # closed handle (the client's own close) is a no-op.
            send_in.close()

    async def _loop(
        self,
        receive_in: trio.MemoryReceiveChannel[CompletionItem],
        send_out: trio.MemorySendChannel[Sequence[Event]],
    ) -> None:
        """Collect batches and flush them until end-of-channel, then flush what is left."""
        with receive_in, send_out:
            while True:
                try:
                    first = await receive_in.receive()
                except trio.EndOfChannel:
                    await trio.lowlevel.checkpoint()
                    return
                pending: list[CompletionItem] = [first]
                count = 1 if isinstance(first, Outcome) else 0
                closed = False
                # At low volume wait up to flush_interval for more; at high volume the
                # batch fills long before and is written at once.
                with trio.move_on_after(self.flush_interval) as window:
                    if _held(first):
                        window.deadline = trio.current_time() + _HELD_FLUSH_INTERVAL
                    while count < self.batch_size:
                        try:
                            item = await receive_in.receive()
                        except trio.EndOfChannel:
                            closed = True
                            break
                        pending.append(item)
                        count += isinstance(item, Outcome)
                        if _held(item):
                            window.deadline = min(
                                window.deadline, trio.current_time() + _HELD_FLUSH_INTERVAL
                            )
                        closed, count = self._drain(receive_in, pending, count, self.batch_size)
                        if closed:
                            break
                if not closed:
                    # Whatever is already waiting goes in this flush too, as
                    # sub-batches: a backlog is written at batch_size per statement.
                    closed, count = self._drain(receive_in, pending, count, math.inf)
                deadline = trio.current_time() + self.final_flush_timeout if closed else math.inf
                await self._flush(pending, send_out, deadline, receive_in)
                if closed:
                    return

    @staticmethod
    def _drain(
        receive_in: trio.MemoryReceiveChannel[CompletionItem],
        pending: list[CompletionItem],
        count: int,
        limit: float,
    ) -> tuple[bool, int]:
        """Move buffered items to ``pending`` without waiting; return (closed, outcomes)."""
        while count < limit:
            try:
                item = receive_in.receive_nowait()
            except trio.WouldBlock:
                return False, count
            except trio.EndOfChannel:
                return True, count
            pending.append(item)
            count += isinstance(item, Outcome)
        return False, count

    def _split(self, items: Sequence[CompletionItem]) -> list[list[CompletionItem]]:
        """Cut ``items`` into sub-batches of at most ``batch_size`` distinct jobs, in order."""
        chunks: list[list[CompletionItem]] = [[]]
        ids: set[int] = set()
        for item in items:
            if isinstance(item, Outcome):
                # A second outcome for one job in one statement would update the row
                # once and report it twice; in the next statement it is reported as
                # finished elsewhere, which is what it is.
                if len(ids) >= self.batch_size or item.job.id in ids:
                    chunks.append([])
                    ids = set()
                ids.add(item.job.id)
            chunks[-1].append(item)
        return chunks

    async def _flush(
        self,
        items: Sequence[CompletionItem],
        send_out: trio.MemorySendChannel[Sequence[Event]],
        deadline: float,
        receive_in: trio.MemoryReceiveChannel[CompletionItem] | None = None,
    ) -> None:
        """Persist ``items`` sub-batch by sub-batch and send each one's events.

        The database work is bounded by ``deadline`` (the final flush); sending the
        events is not, since a lossless subscriber is allowed to be slow. When the
        input closes while a sub-batch is being retried (the client stops during
        an outage), the final flush deadline starts then.
        """
        for chunk in self._split(items):
            outcomes = [item for item in chunk if isinstance(item, Outcome)]
            records: dict[int, Any] | None = {}
            if outcomes:
                records = None
                with trio.move_on_at(deadline) as scope:

                    def closing() -> None:
                        if (
                            scope.deadline == math.inf
                            and receive_in is not None
                            and receive_in.statistics().open_send_channels == 0
                        ):
                            scope.deadline = trio.current_time() + self.final_flush_timeout

                    records = await self._persist(outcomes, closing)
                deadline = scope.deadline
                if scope.cancelled_caught:
                    ids = [o.job.id for o in outcomes]
                    self.counters.rows_dropped += len(ids)
                    log.error(
                        "final flush deadline (%s s) passed: outcomes of %d jobs not persisted, "
                        "left running for the rescuer: job ids %s",
                        self.final_flush_timeout,
                        len(ids),
                        ids,
                    )
            events = self._events(chunk, records)
            if events:
                await self._send(send_out, events)
        # A flush of deleted rows only sends nothing: still one schedule point per batch.
        await trio.lowlevel.checkpoint()

    async def _persist(
        self, outcomes: list[Outcome], before_retry: Callable[[], None] | None = None
    ) -> dict[int, Any] | None:
        """Run the completion statement, retrying; return the rows by id, None if given up.

        `before_retry` is called after each failed attempt that will be retried.
        """
        ids = [o.job.id for o in outcomes]
        kinds: list[str] = [o.kind for o in outcomes]
        attempted_at = [o.job.attempted_at for o in outcomes]
        # A column with nothing in it (the common case: every job completed) is
        # sent as one NULL, not a batch's worth of them.
        retry_at = _column([o.retry_at for o in outcomes])
        delays = _column([o.delay for o in outcomes])
        errors = _column([o.error for o in outcomes])
        updates = _column([o.metadata_updates for o in outcomes])
        held = [FLOW_KEY in o.job.metadata for o in outcomes]
        limit = self.max_attempts
        for attempt in range(1, self.max_attempts + 1):
            problem: str
            with trio.move_on_after(self.attempt_timeout) as scope:
                try:
                    rows = await self._driver.run(
                        complete_jobs,
                        self._driver.configured_schema,
                        ids,
                        kinds,
                        retry_at,
                        delays,
                        errors,
                        updates,
                        held if any(held) else None,
                        attempted_at,
                    )
                except DatabaseError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                    if not isinstance(exc, DatabaseConnectionError):
                        limit = min(limit, _STATEMENT_ATTEMPTS)
                else:
                    self.counters.batches += 1
                    if self.on_flow_persisted is not None:
                        flow = [
                            o
                            for o in outcomes
                            if FLOW_KEY in o.job.metadata or WORKFLOW_KEY in o.job.metadata
                        ]
                        if flow:
                            self.on_flow_persisted(flow)
                    return {row["id"]: row for row in rows}
            if scope.cancelled_caught:
                problem = f"no answer within attempt_timeout={self.attempt_timeout} s"
            self.counters.failed_attempts += 1
            if attempt >= limit:
                self.counters.rows_dropped += len(ids)
                log.error(
                    "giving up persisting the outcomes of %d jobs after %d attempts (%s); "
                    "they stay running for the rescuer: job ids %s",
                    len(ids),
                    attempt,
                    problem,
                    ids,
                )
                await trio.lowlevel.checkpoint()
                return None
            delay = min(self.max_backoff, self.retry_backoff * 2 ** (attempt - 1))
            delay *= random.uniform(0.75, 1.25)
            log.warning(
                "persisting the outcomes of %d jobs failed (attempt %d of %d, %s); "
                "retrying in %.2f s",
                len(ids),
                attempt,
                limit,
                problem,
                delay,
            )
            if before_retry is not None:
                before_retry()
            await trio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _events(
        self, chunk: Sequence[CompletionItem], records: dict[int, Any] | None
    ) -> EventBatch:
        """The events of one sub-batch, in the order its items arrived.

        ``records`` holds the returned rows by job id; None if the sub-batch was
        not persisted, and then only its queue events are reported. Each event's
        kind is decided here; the event itself is built only if read.
        """
        now = trio.current_time()
        kinds: list[EventKind] = []
        items: list[CompletionItem] = []
        stored: list[Any] = []
        counters = self.counters
        for item in chunk:
            if isinstance(item, QueueEvent):
                kinds.append(item.kind)
                items.append(item)
                stored.append(None)
                continue
            if records is None:
                continue
            record = records.get(item.job.id)
            if record is None:
                # Deleted while running: nothing persisted, nothing to report.
                counters.rows_missing += 1
                continue
            state = record["state"]
            if record["persisted"]:
                counters.rows_persisted += 1
                if state == "cancelled":
                    # The database turned the outcome into a cancellation
                    # (cancel_attempted_at was set while the job ran).
                    kind = EventKind.JOB_CANCELLED
                else:
                    kind = _EVENT_BY_OUTCOME[item.kind]
            else:
                counters.rows_finished_elsewhere += 1
                kind = _EVENT_BY_STORED_STATE.get(state, _EVENT_BY_OUTCOME[item.kind])
            kinds.append(kind)
            items.append(item)
            stored.append(record)
        return EventBatch(kinds, items, stored, now)

    async def _send(
        self, send_out: trio.MemorySendChannel[Sequence[Event]], events: Sequence[Event]
    ) -> None:
        try:
            await send_out.send(events)
        except trio.BrokenResourceError:
            broken = True
            await trio.lowlevel.checkpoint()
        else:
            broken = False
            self.counters.events_sent += len(events)
        if broken:
            # The consumer closed its end first, which it must never do. Persisting
            # matters more than reporting: keep going, but say so.
            self.counters.events_undeliverable += len(events)
            log.error(
                "the subscription manager's channel is closed: %d events not delivered",
                len(events),
            )
