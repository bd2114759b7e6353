"""What the service checks ask of a service: the Trio way of starting and stopping.

:class:`TrioService` and :class:`StoppableService` are the protocols the
checks accept (any object with the methods fits, no base class needed);
`call_stop` and `WatchedStatus` are what every check uses to stop a service and
to see it start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import trio

__all__ = ["S", "StoppableService", "TrioService", "WatchedStatus", "call_stop"]


class TrioService(Protocol):
    """What the service checks need from a service: a ``run`` for ``nursery.start``.

    Any object with this method fits; no base class is needed. The contract:

    - ``await nursery.start(service.run)`` starts it: ``run`` calls
      ``task_status.started()`` once the service is ready, optionally with a value
      (the channel its results come out of, the port it listens on...), which
      ``nursery.start`` returns. An exception raised before ``started()`` is a
      start error, and ``nursery.start`` raises it.
    - Once asked to stop, ``run`` finishes its work and returns, promptly. How it
      is asked is up to the service: usually a ``stop()`` method
      (:class:`StoppableService`), which is what the checks call unless told
      otherwise; closing a channel it reads; or only cancellation.
    - Cancelling the scope around ``run`` ends it too, promptly and without an
      exception other than ``trio.Cancelled``.
    - When ``run`` has returned, no task it started is still running.
    """

    async def run(self, *, task_status: trio.TaskStatus[Any]) -> None:
        """Run until asked to stop; call ``task_status.started()`` once ready.

        Trio's convention gives ``task_status`` the default
        ``trio.TASK_STATUS_IGNORED``, so ``run`` can also be awaited directly; the
        checks always pass one.
        """
        ...


class StoppableService(TrioService, Protocol):
    """A :class:`TrioService` asked to stop by calling its ``stop()`` method."""

    def stop(self) -> None:
        """Ask the current run to return soon; not a checkpoint.

        Legal at any time: before the first run, during one (also while it is
        starting), twice, and after the run has ended.
        """
        ...


S = TypeVar("S", bound=TrioService)


def call_stop(service: object, *, hint: str) -> None:
    stop = getattr(service, "stop", None)
    if not callable(stop):
        raise TypeError(f"{type(service).__name__} has no stop() method: {hint}")
    stop()


class WatchedStatus(trio.TaskStatus[Any]):
    """Forwards ``started()`` to the real task status, then tells the checker."""

    def __init__(self, inner: trio.TaskStatus[Any], on_started: Callable[[Any], None]) -> None:
        self._inner = inner
        self._on_started = on_started

    def started(self, value: Any = None) -> None:
        """Report the task as started to the nursery, then to the checker."""
        # Forward first: a second started() raises there and must not count twice.
        self._inner.started(value)
        self._on_started(value)
