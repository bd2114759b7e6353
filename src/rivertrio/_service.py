"""The lifecycle contract every long-running rivertrio component follows.

A service is started with ``await nursery.start(service.run)``, asked to stop
with ``service.stop()`` and awaited with ``await service.wait_stopped()``.
:class:`Service` implements the bookkeeping once; a subclass writes only
:meth:`Service._serve`.

States, as the ``started`` and ``stopped`` properties report them:

- *stopped*: no run in progress. A never-started service, one whose run
  returned, raised or was cancelled, and one whose start failed are all
  stopped, and ``wait_stopped()`` returns at once for them.
- *starting*: ``run`` has begun but ``task_status.started()`` has not been
  called yet (neither flag is true).
- *started*: ``started()`` was called and ``run`` has not returned yet; this
  includes the time between ``stop()`` and the end of the run.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Protocol

import trio

from ._exceptions import AlreadyRunningError

__all__ = ["Counter", "Service", "SupportsLifecycle", "cancel_on", "start_all", "stop_all"]

# Backstop for the shielded cleanup in start_all: services bound their own stop,
# so this only matters for one that hangs; its nursery then cancels it.
_START_ALL_CLEANUP_TIMEOUT = 10.0


class SupportsLifecycle(Protocol):
    """The lifecycle contract, for services that do not subclass :class:`Service`.

    Semantics are those of :class:`Service`; in particular a second concurrent
    ``run`` must raise :class:`AlreadyRunningError` before calling ``started()``.
    """

    @property
    def started(self) -> bool:
        """True from ``task_status.started()`` until the run ends."""
        ...

    @property
    def stopped(self) -> bool:
        """True when no run is in progress."""
        ...

    async def run(self, *, task_status: trio.TaskStatus[None] = ...) -> None:
        """Run until stopped; an error before ``started()`` is the start error."""
        ...

    def stop(self) -> None:
        """Ask the current run, if any, to stop; idempotent, not a checkpoint."""
        ...

    async def wait_started(self) -> None:
        """Wait until started (now, or when the next run calls ``started()``)."""
        ...

    async def wait_stopped(self) -> None:
        """Wait until the run in progress, if any, has ended."""
        ...


class _ObservedTaskStatus(trio.TaskStatus[None]):
    """Forwards ``started()`` to the real task status, then calls ``on_started``."""

    def __init__(self, inner: trio.TaskStatus[None], on_started: Callable[[], None]) -> None:
        self._inner = inner
        self._on_started = on_started

    def started(self, value: None = None) -> None:
        """Report the task as started to the nursery, then to the observer."""
        # Forward first: a second started() raises there and must not count twice.
        self._inner.started(value)
        self._on_started()


class _Run:
    """The state of one run; each run gets a fresh one so restarts begin clean."""

    __slots__ = ("done", "started", "stop_event")

    def __init__(self) -> None:
        self.stop_event = trio.Event()
        self.done = trio.Event()
        self.started = False


class Service(abc.ABC):
    """Base class for a restartable service following the lifecycle contract.

    A subclass implements :meth:`_serve` and calls ``super().__init__()``::

        class Ticker(Service):
            async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._tick_forever)
                    task_status.started()
                    await self._stop_event.wait()
                    nursery.cancel_scope.cancel()
    """

    def __init__(self) -> None:
        self._run: _Run | None = None
        # Set while the service is started; replaced by a fresh event when a run that
        # started ends, so waiters parked before a start are woken by that start.
        self._started_event = trio.Event()

    @abc.abstractmethod
    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        """Run the service: call ``task_status.started()`` once ready, return once stopped.

        Return soon after :attr:`_stop_event` is set (also when it was set before
        ``started()`` was called). An exception raised before ``started()`` is the
        start error that ``nursery.start`` raises.
        """

    @property
    def _stop_event(self) -> trio.Event:
        """The current run's stop request; only valid inside :meth:`_serve`."""
        if self._run is None:
            raise RuntimeError(f"{type(self).__name__} is not running: no stop event")
        return self._run.stop_event

    @property
    def _stop_requested(self) -> bool:
        """Whether :meth:`stop` was called during the current run."""
        return self._run is not None and self._run.stop_event.is_set()

    @property
    def started(self) -> bool:
        """True from ``task_status.started()`` until the run ends."""
        return self._run is not None and self._run.started

    @property
    def stopped(self) -> bool:
        """True when no run is in progress (including never started and failed start)."""
        return self._run is None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the service until it is stopped; use as ``await nursery.start(service.run)``.

        Cancelling the enclosing scope ends the run; the service is then stopped.

        Raises:
            AlreadyRunningError: a previous run has not ended yet (raised before
                ``started()``, so ``nursery.start`` raises it as is).
            Exception: whatever :meth:`_serve` raises.
        """
        if self._run is not None:
            raise AlreadyRunningError(
                f"{type(self).__name__} is already running: call stop() and await "
                "wait_stopped() before running it again"
            )
        run = self._run = _Run()

        def on_started() -> None:
            run.started = True
            self._started_event.set()

        try:
            await self._serve(_ObservedTaskStatus(task_status, on_started))
        finally:
            # No checkpoint here: the service is stopped as soon as the run unwinds.
            self._run = None
            if run.started:
                self._started_event = trio.Event()
            run.done.set()

    def stop(self) -> None:
        """Ask the current run to stop; not a checkpoint, never raises.

        Idempotent. With no run in progress (never started, already stopped, failed
        start) it does nothing. A stop that arrives while the service is starting is
        honoured as soon as it has started.
        """
        if self._run is not None:
            self._run.stop_event.set()

    async def wait_started(self) -> None:
        """Wait until the service is started; a checkpoint.

        Returns at once if it is started; otherwise waits for the next run to call
        ``started()``. A start that fails does not wake it. Cancel-safe.
        """
        await self._started_event.wait()

    async def wait_stopped(self) -> None:
        """Wait until the run in progress, if any, has ended; a checkpoint.

        Returns at once if the service is stopped (including never started). Does not
        ask the service to stop. Cancel-safe.
        """
        run = self._run
        if run is None:
            await trio.lowlevel.checkpoint()
            return
        await run.done.wait()


async def start_all(nursery: trio.Nursery, *services: SupportsLifecycle) -> None:
    """Start ``services`` in order in ``nursery``; all of them or none.

    If one fails to start (or the call is cancelled), the ones already started are
    stopped and awaited (shielded, bounded) and the error is raised unchanged.

    Raises:
        Exception: the start error of the first service that failed.
    """
    if not services:
        await trio.lowlevel.checkpoint()
    started: list[SupportsLifecycle] = []
    try:
        for service in services:
            await nursery.start(service.run)
            started.append(service)
    except BaseException:
        with trio.move_on_after(_START_ALL_CLEANUP_TIMEOUT, shield=True):
            await stop_all(*started)
        raise


async def stop_all(*services: SupportsLifecycle) -> None:
    """Ask every service to stop at once, then wait until all have stopped; a checkpoint.

    Cancelling it stops the waiting, not the stop requests already made.
    """
    if not services:
        await trio.lowlevel.checkpoint()
    for service in services:
        service.stop()
    for service in services:
        await service.wait_stopped()


class Counter:
    """A count that tasks can wait on: how many passes, firings or elections happened.

    Services bump it after each unit of work; tests await ``wait_for(n)`` instead
    of sleeping.
    """

    def __init__(self) -> None:
        self.value = 0
        self._changed = trio.Event()

    def increment(self) -> None:
        """Add one and wake the waiters; not a checkpoint."""
        self.value += 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, target: int) -> None:
        """Wait until the count reaches `target`; a checkpoint, cancel-safe."""
        while self.value < target:
            await self._changed.wait()
        await trio.lowlevel.checkpoint()


async def cancel_on(event: trio.Event, scope: trio.CancelScope) -> None:
    """Cancel `scope` once `event` is set (a service's stop request)."""
    await event.wait()
    scope.cancel()
