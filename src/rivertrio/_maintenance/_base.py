"""What the maintenance services share: bounded statements and the run-every-interval loop."""

from __future__ import annotations

import abc
import logging
import random
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from .._exceptions import ConfigError, DatabaseConnectionError, DatabaseError
from .._service import Counter, Service, cancel_on
from .._validate import duration

if TYPE_CHECKING:
    from .._driver import Driver

__all__ = ["STATEMENT_TIMEOUT", "IntervalService", "run_bounded"]

T = TypeVar("T")

log = logging.getLogger("rivertrio.maintenance")

#: Deadline of one maintenance statement, in seconds. Each is a bounded batch
#: that takes milliseconds; one that gets no answer for this long is on a
#: connection that went dark, and must not hold a pooled connection, and its
#: service, for as long as that connection lives.
STATEMENT_TIMEOUT = 10.0
# The same for a whole pass (its statements are bounded one by one; this also
# covers what is not, such as the periodic enqueuer's inserts).
_PASS_TIMEOUT_FLOOR = 60.0


async def run_bounded(
    driver: Driver, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any
) -> T:
    """``driver.run(fn, *args)`` within `STATEMENT_TIMEOUT`. A checkpoint.

    Raises:
        DatabaseConnectionError: No answer in time (the statement is cancelled:
            each one is atomic, so nothing is left half done).
    """
    with trio.move_on_after(STATEMENT_TIMEOUT):
        return await driver.run(fn, *args, **kwargs)
    raise DatabaseConnectionError(
        f"a statement to {driver.where} got no answer within {STATEMENT_TIMEOUT:g} s"
    )


class IntervalService(Service):
    """A maintenance service that runs :meth:`run_once` at start, then every `interval`.

    A failing pass (the database is down, a statement fails) is logged and
    retried at the next interval: maintenance never takes the client down. A
    run of failures is logged once (then every 20th), and the recovery once.
    A pass that takes more than `pass_timeout` (60 s, or twice the interval if
    longer) is cancelled and counts as failed. Stopping cancels a pass in flight;
    each pass is made of atomic statements, so nothing is left half done.
    `passes` counts the passes that ended, successfully or not; `failures`
    those that raised or timed out.
    """

    name = "maintenance service"

    def __init__(self, *, interval: float) -> None:
        super().__init__()
        self.interval = duration(f"{type(self).__name__} interval", interval, ConfigError)
        self.passes = Counter()
        self.failures = 0
        self.pass_timeout = max(_PASS_TIMEOUT_FLOOR, 2 * self.interval)
        self._wake = trio.Event()

    @abc.abstractmethod
    async def run_once(self) -> object:
        """Do one full pass; a checkpoint. Returns what it did (for logs and tests)."""

    async def _tick(self) -> object:
        """One pass of the service loop; a subclass may vary it between passes."""
        return await self.run_once()

    def wake(self) -> None:
        """Run the next pass now instead of at the end of the interval; not a checkpoint."""
        self._wake.set()

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_on, self._stop_event, nursery.cancel_scope)
            task_status.started()
            in_a_row = 0
            while True:
                self._wake = trio.Event()
                failed = True
                with trio.move_on_after(self.pass_timeout) as scope:
                    try:
                        result = await self._tick()
                    except DatabaseError as exc:
                        in_a_row += 1
                        # Once per run of failures (an outage fails every pass).
                        level = logging.WARNING if in_a_row % 20 == 1 else logging.DEBUG
                        log.log(
                            level,
                            "%s: pass failed (%d in a row), retrying every %.1f s: %s",
                            self.name,
                            in_a_row,
                            self.interval,
                            exc,
                        )
                    except Exception:
                        in_a_row += 1
                        log.exception(
                            "%s: pass failed, retrying in %.1f s", self.name, self.interval
                        )
                    else:
                        failed = False
                        if result:
                            log.debug("%s: %s", self.name, result)
                if scope.cancelled_caught:
                    in_a_row += 1
                    log.warning(
                        "%s: pass cancelled after %.0f s without finishing (a statement got "
                        "no answer); retrying in %.1f s",
                        self.name,
                        self.pass_timeout,
                        self.interval,
                    )
                if failed:
                    self.failures += 1
                elif in_a_row:
                    log.info("%s: passes succeed again after %d failures", self.name, in_a_row)
                    in_a_row = 0
                self.passes.increment()
                # Up to 10% jitter, so that services started together do not
                # hit the database together forever after.
                with trio.move_on_after(self.interval * random.uniform(1.0, 1.1)):
                    await self._wake.wait()
