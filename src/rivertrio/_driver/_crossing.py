"""The one crossing between Trio and asyncio: the trio-asyncio loop a driver runs asyncpg in.

Everything rivertrio asks of asyncpg goes through `Crossing.cross`, which runs
an asyncio coroutine and waits for it from Trio, and turns asyncpg's errors into
rivertrio's (`map_error`). A crossing costs about 20 us of CPU by itself, and a
round trip inside it about 100 us more (each socket event passes through Trio's
scheduler and the asyncio loop's), which is why callers batch.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, NoReturn, TypeVar

import asyncpg
import outcome
import trio
import trio_asyncio

from .._util import collapse_single_groups
from ._errors import describe_url, map_error

__all__ = ["RELEASE_TIMEOUT", "Crossing", "hold_cancellation", "open_crossing"]

log = logging.getLogger("rivertrio.driver")

T = TypeVar("T")

#: How long a connection may take to acknowledge a cancelled statement when it
# goes back to the pool. asyncpg waits for that without a bound, and a
# black-holed connection never answers: the pool slot would be lost for good
# and the cancelled caller would wait with it. Past this, it is dropped.
RELEASE_TIMEOUT = 5.0


class _CrossingTask(asyncio.Task[T]):
    """The asyncio task of one loop crossing; it can arm a watchdog when cancelled.

    A held task is not interrupted by a cancellation: it runs to its end, and
    only if it has not ended `RELEASE_TIMEOUT` seconds later is it cancelled
    after all (the watchdog then follows as for any cancellation).
    """

    watchdog: Callable[[], None] | None = None
    held = False

    def cancel(self, msg: Any | None = None) -> bool:
        if self.held and not self.done():
            self.held = False
            self.get_loop().call_later(RELEASE_TIMEOUT, self._overdue, msg)
            return False
        if self.watchdog is not None and not self.done():
            watchdog = self.watchdog
            self.watchdog = None

            def check() -> None:
                if not self.done():
                    watchdog()

            self.get_loop().call_later(RELEASE_TIMEOUT, check)
        return super().cancel(msg)

    def _overdue(self, msg: Any | None) -> None:
        if not self.done():
            self.cancel(msg)


def hold_cancellation() -> None:
    """From now on, the current crossing runs to its end though its caller be cancelled.

    Asyncio side, inside a crossing: as if it had been started with ``hold=True``.
    """
    task = asyncio.current_task()
    if isinstance(task, _CrossingTask):
        task.held = True


class _Handoff:
    """Runs a crossing's coroutine and hands its outcome straight to the waiting Trio task.

    Rescheduling the Trio task from inside the asyncio task, rather than from
    the task's done callback, saves one pass of the asyncio loop (and of Trio's
    scheduler) per crossing.
    """

    __slots__ = ("coro", "started", "trio_task")

    def __init__(self, coro: Coroutine[Any, Any, Any], trio_task: trio.lowlevel.Task) -> None:
        self.coro = coro
        self.trio_task = trio_task
        self.started = False

    async def run(self) -> None:
        self.started = True
        try:
            value = await self.coro
        except BaseException as exc:
            trio.lowlevel.reschedule(self.trio_task, outcome.Error(exc))
            if not isinstance(exc, Exception):
                raise  # a cancelled task ends cancelled
            return
        trio.lowlevel.reschedule(self.trio_task, outcome.Value(value))


class Crossing:
    """A driver's asyncio loop, and the server its connections go to.

    Create one with `open_crossing`.
    """

    def __init__(self, loop: Any, url: str, connect_kwargs: dict[str, Any]) -> None:
        self._loop = loop
        self._url = url
        self._connect_kwargs = connect_kwargs
        self.where = describe_url(url)
        """Where the server is, as ``host:port``, for messages."""

    async def cross(
        self,
        coro: Coroutine[Any, Any, T],
        watchdog: Callable[[], None] | None = None,
        *,
        hold: bool = False,
    ) -> T:
        """Run `coro` on the asyncio side and wait for it: one loop crossing.

        Cancelling the caller cancels the coroutine, and the caller waits for it
        to finish (its cleanup included). `watchdog`, if given, is called if it
        has not finished `RELEASE_TIMEOUT` seconds after that.

        With `hold` (or from when `coro` calls `hold_cancellation`), a
        cancellation does not interrupt `coro`: the caller gets its result or
        its error, as if the cancellation had come later (the next checkpoint
        raises it). Only if `coro` has not ended `RELEASE_TIMEOUT` seconds after
        the cancellation is it cancelled, as without `hold`. For statements
        whose outcome the caller must know, and statements run on behalf of
        other tasks too.

        Raises:
            DatabaseConnectionError: The connection failed or could not be opened.
            DatabaseError: A statement failed.
        """
        handoff = _Handoff(coro, trio.lowlevel.current_task())
        try:
            task: _CrossingTask[None] = _CrossingTask(handoff.run(), loop=self._loop)
        except BaseException:
            coro.close()  # avoid an "never awaited" warning
            raise
        task.watchdog = watchdog
        task.held = hold
        raise_cancel: Callable[[], NoReturn] | None = None

        def abort(raise_cancel_arg: Callable[[], NoReturn]) -> trio.lowlevel.Abort:
            nonlocal raise_cancel
            if not handoff.started and not hold:
                # Not begun: it never will, and nothing needs cleaning up.
                task.cancel()
                coro.close()
                return trio.lowlevel.Abort.SUCCEEDED
            raise_cancel = raise_cancel_arg
            task.cancel()
            return trio.lowlevel.Abort.FAILED

        try:
            return await trio.lowlevel.wait_task_rescheduled(abort)  # type: ignore[no-any-return]
        except asyncio.CancelledError as exc:
            if raise_cancel is None:
                raise
            try:
                raise_cancel()
            finally:
                sys.exc_info()[1].__cause__ = exc  # type: ignore[union-attr]
        except trio.Cancelled:
            raise
        except Exception as exc:
            mapped = map_error(exc, self.where)
            if mapped is exc:
                raise
            raise mapped from exc

    async def create_pool(self, *, min_size: int, max_size: int) -> asyncpg.Pool:
        """Create a connection pool on the server (asyncio side); no connection is opened yet."""
        # No idle-connection expiry: each release would arm a 300 s timer, and
        # trio-asyncio keeps cancelled timers until they are due, so a busy
        # client piled up thousands of them (+3-4 MiB).
        return await asyncpg.create_pool(
            self._url,
            min_size=min_size,
            max_size=max_size,
            max_inactive_connection_lifetime=0,
            **self._connect_kwargs,
        )

    async def connect(self, application_name: str) -> asyncpg.Connection:
        """Open a connection outside the pool (asyncio side).

        `application_name` tells it apart from the pool's connections in
        pg_stat_activity, for operators (and the fault tests' proxy).
        """
        kwargs = dict(self._connect_kwargs)
        kwargs["server_settings"] = {
            **kwargs.get("server_settings", {}),
            "application_name": application_name,
        }
        return await asyncpg.connect(self._url, **kwargs)


def _log_asyncio_error(_loop: Any, context: dict[str, Any]) -> None:
    log.debug("asyncio: %s", context.get("message"), exc_info=context.get("exception"))


@asynccontextmanager
async def open_crossing(url: str, connect_kwargs: dict[str, Any]) -> AsyncIterator[Crossing]:
    """Run an asyncio loop inside Trio for connections to `url`, closed on exit.

    `connect_kwargs` go to every connection asyncpg opens, pooled or not.
    """
    # trio-asyncio runs its loop in a nursery of its own (two levels deep), so any
    # error leaving this block, ours or the caller's, would arrive wrapped alone.
    with collapse_single_groups():
        async with trio_asyncio.open_loop() as loop:
            # A connect cancelled mid-handshake leaves an asyncio future whose
            # error nobody retrieves; trio-asyncio's default handler would raise
            # it into the loop's nursery and tear the whole driver down.
            loop.set_exception_handler(_log_asyncio_error)
            yield Crossing(loop, url, connect_kwargs)
