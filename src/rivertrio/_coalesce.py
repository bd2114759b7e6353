"""Coalesced inserts: concurrent single inserts of one client gathered into one statement.

A web app that enqueues one job per request calls ``client.insert()`` from many
tasks at once. Each call alone costs a loop crossing and a round trip; gathered,
a batch of them costs one of each. The rules, for each caller:

- A caller finding nothing in flight and no batch open sends its job at once,
  alone: a lone caller never waits for a window.
- Otherwise it joins the open batch (opening one if needed). The batch is sent
  when it is full (`max_size`), or once `window` seconds have passed since it
  opened and fewer than `max_in_flight` batches are in flight, by whichever of
  its callers notices first; that caller runs the statement for all of them
  and hands each its own outcome. Under load batches grow rather than
  multiply: the statements in flight stay few, each carrying more jobs.
- Cancelled before its batch is sent, a caller leaves the batch: its job is not
  inserted, and it gets `trio.Cancelled`. Once the batch is sent, the job's
  fate is decided by the statement: the caller waits for it (at most
  `settle_timeout`, shielded) and gets its result or its error, so it knows
  which; the cancellation is raised at its next checkpoint. Only if no answer
  comes within that bound does it get `trio.Cancelled` with the outcome unknown.
- Every outcome is the caller's own: `send` returns one result or error per job.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import trio

__all__ = ["Coalescer"]

J = TypeVar("J")
R = TypeVar("R")


class _Entry(Generic[J, R]):
    __slots__ = ("error", "job", "result")

    def __init__(self, job: J) -> None:
        self.job = job
        self.result: R | None = None
        self.error: BaseException | None = None


class _Batch(Generic[J, R]):
    __slots__ = ("deadline", "done", "entries", "sealed", "sent", "slot", "waiting", "watcher")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.entries: list[_Entry[J, R]] = []
        self.sealed = False
        self.sent = trio.Event()  # set once sealed: the entries are on their way
        self.done = trio.Event()  # set once every entry has its outcome
        # One caller watches the window (and then waits in `slot` for a
        # statement in flight to end) for all; the others wait in `waiting`
        # until the outcome, or until the watch passes to one of them. So each
        # caller is woken once, not once per deadline and once per outcome.
        self.watcher: _Entry[J, R] | None = None
        self.slot = trio.lowlevel.ParkingLot()
        self.waiting = trio.lowlevel.ParkingLot()


class Coalescer(Generic[J, R]):
    """Gathers concurrent `submit` calls into batches for `send`.

    Args:
        send_one: Sends one job alone, for its own caller; returns its result.
        send: Sends a batch; returns one outcome per job, in order (a result,
            or the exception for that job alone). An exception it raises is
            every job's outcome. It must see each batch through even if the
            task running it is cancelled (the batch is other tasks' too).
        window: How long, in seconds, a batch waits for more jobs (greater than 0).
        max_size: Most jobs in one batch.
        max_in_flight: Most batches sent and not yet answered (but for full ones).
        settle_timeout: Longest wait, after a cancellation, for the outcome of a
            job already sent.
        interrupted: The error for the other jobs of a batch whose `send` was
            itself interrupted (by a cancellation it could not hold off): their
            outcome is unknown.
    """

    def __init__(
        self,
        send_one: Callable[[J], Awaitable[R]],
        send: Callable[[list[J]], Awaitable[list[R | Exception]]],
        *,
        window: float,
        max_size: int,
        max_in_flight: int,
        settle_timeout: float,
        interrupted: Callable[[], Exception],
    ) -> None:
        self._send_one = send_one
        self._send = send
        self._interrupted = interrupted
        self._window = window
        self._max_size = max_size
        self._max_in_flight = max_in_flight
        self._settle_timeout = settle_timeout
        self._open: _Batch[J, R] | None = None
        self._in_flight = 0

    async def submit(self, job: J) -> R:
        """Insert `job`, alone or in a batch; return its result or raise its error. A checkpoint."""
        await trio.lowlevel.checkpoint_if_cancelled()
        batch = self._open
        if batch is None:
            if not self._in_flight:
                # Nothing to wait for: a lone caller pays no window.
                return await self._solo(job)
            batch = self._open = _Batch(trio.current_time() + self._window)
        entry: _Entry[J, R] = _Entry(job)
        batch.entries.append(entry)
        if len(batch.entries) >= self._max_size:
            await self._run(batch)
        else:
            await self._wait(batch, entry)
        if entry.error is not None:
            raise entry.error
        return entry.result  # type: ignore[return-value]

    async def _solo(self, job: J) -> R:
        self._in_flight += 1
        try:
            return await self._send_one(job)
        finally:
            self._in_flight -= 1
            if self._open is not None:
                self._open.slot.unpark_all()

    async def _wait(self, batch: _Batch[J, R], entry: _Entry[J, R]) -> None:
        try:
            while not batch.sealed:
                if batch.watcher is None:
                    batch.watcher = entry
                if batch.watcher is not entry:
                    await batch.waiting.park()
                elif await self._watch(batch):
                    await self._run(batch)
                    return
        except trio.Cancelled:
            if not batch.sealed:
                self._leave(batch, entry)
                raise
            # Sealed as the cancellation came: the job is on its way.
            await self._settle(batch)
            return
        try:
            await batch.done.wait()
        except trio.Cancelled:
            await self._settle(batch)

    async def _watch(self, batch: _Batch[J, R]) -> bool:
        """Wait out the window, then for room among the statements in flight.

        Returns whether the batch is still to be sent (by the watcher), or was
        sealed meanwhile (by a caller that filled it).
        """
        with trio.move_on_at(batch.deadline):
            await batch.sent.wait()
        while not batch.sealed and self._in_flight >= self._max_in_flight:
            await batch.slot.park()
        return not batch.sealed

    def _leave(self, batch: _Batch[J, R], entry: _Entry[J, R]) -> None:
        """Take a cancelled caller's job out of a batch not yet sent."""
        batch.entries.remove(entry)
        if not batch.entries:
            if self._open is batch:
                self._open = None
        elif batch.watcher is entry:
            batch.watcher = None
            batch.waiting.unpark(count=1)  # the watch passes on

    async def _settle(self, batch: _Batch[J, R]) -> None:
        """Wait, though cancelled, for the outcome of a job already sent; bounded."""
        with trio.move_on_after(self._settle_timeout, shield=True):
            await batch.done.wait()
        if not batch.done.is_set():
            await trio.lowlevel.checkpoint()  # raises the cancellation: outcome unknown

    async def _run(self, batch: _Batch[J, R]) -> None:
        """Seal `batch`, send it, and hand each entry its outcome."""
        batch.sealed = True
        if self._open is batch:
            self._open = None
        batch.sent.set()
        batch.slot.unpark_all()
        entries = batch.entries
        self._in_flight += 1
        try:
            outcomes = await self._send([e.job for e in entries])
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else self._interrupted()
            for e in entries:
                e.error = error
            raise
        else:
            for e, outcome in zip(entries, outcomes, strict=True):
                if isinstance(outcome, Exception):
                    e.error = outcome
                else:
                    e.result = outcome
        finally:
            self._in_flight -= 1
            batch.done.set()
            batch.waiting.unpark_all()
            if self._open is not None:
                self._open.slot.unpark_all()
