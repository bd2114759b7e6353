"""One Trio run in a helper thread, for Hypothesis state machines (whose rules are sync).

Each example of a machine gets a host of its own: a fresh ``trio.run`` whose root
nursery holds everything the example starts, so one example's leftovers never
reach the next. Rules call in with :meth:`TrioHost.call`, one at a time.
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio
import trio.testing

from ._failures import HangError, TaskLeftRunningError

T = TypeVar("T")

# The generator Trio shuffles each batch of runnable tasks with, when Hypothesis is
# imported (Trio makes its scheduling deterministic then, for replays). Private to
# Trio, hence the guard: without it the checks still work, they shrink less well.
_SCHEDULER_RANDOM: random.Random | None = getattr(trio._core._run, "_r", None)
if not isinstance(_SCHEDULER_RANDOM, random.Random):
    _SCHEDULER_RANDOM = None


class TrioHost:
    """A ``trio.run`` in a daemon thread, with a root nursery rules can start tasks in."""

    nursery: trio.Nursery
    """The root nursery: cancelling its scope ends the example."""

    def __init__(self, name: str, *, virtual_time: bool = False) -> None:
        # On virtual time the clock stands still between steps, so timers fire at
        # the same point of every replay. During a step it jumps to the next deadline
        # whenever every task is blocked, and also follows real time, so a task that
        # never blocks still meets the step's bound.
        self._clock = trio.testing.MockClock(autojump_threshold=math.inf) if virtual_time else None
        self._token: trio.lowlevel.TrioToken
        self._baseline: frozenset[trio.lowlevel.Task] = frozenset()
        self._helpers: set[trio.lowlevel.Task] = set()
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"{name} trio", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise RuntimeError("the machine's Trio thread failed to start") from self._error

    def call(self, step: Callable[[], Awaitable[T]]) -> T:
        """Run ``await step()`` in the Trio thread and return its result.

        Trio's scheduler order is reset at the start of each step (when Trio exposes
        it), so a step's interleaving depends on the state it starts from, not on how
        many scheduling decisions the steps before it made. Otherwise deleting an
        early step changes every later interleaving, and Hypothesis shrinks failures
        to stories padded with steps that only advance a random generator.
        """

        async def reseeded() -> T:
            if _SCHEDULER_RANDOM is not None:
                _SCHEDULER_RANDOM.seed(0)
            self._time_runs(True)
            try:
                return await step()
            finally:
                self._time_runs(False)

        return trio.from_thread.run(reseeded, trio_token=self._token)

    def call_sync(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` in the Trio thread and return its result."""
        return trio.from_thread.run_sync(fn, trio_token=self._token)

    def close(self, timeout: float) -> None:
        """Cancel the root nursery and wait for the Trio run to end.

        Raises:
            HangError: the run did not end within ``timeout`` seconds of the cancel
                (something shielded itself without a bound); its thread is abandoned.
            RuntimeError: the Trio run itself failed.
        """

        def cancel_all() -> None:
            self._time_runs(True)
            self.nursery.cancel_scope.cancel()

        if self._thread.is_alive():
            with contextlib.suppress(trio.RunFinishedError):
                self.call_sync(cancel_all)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise HangError(
                f"hung: the service did not end within {timeout} s of the scope around "
                "everything being cancelled (a shielded wait without a bound?)"
            )
        if self._error is not None:
            raise RuntimeError("the machine's Trio run failed") from self._error

    def helper_task(self) -> None:
        """Mark the calling task as the machine's own, not the service's."""
        self._helpers.add(trio.lowlevel.current_task())

    def check_no_task_left(self, what: str) -> None:
        """Fail if a task started since the host began is still running; call in its thread.

        Raises:
            TaskLeftRunningError: naming the tasks left behind.
        """
        ignored = self._baseline | self._helpers | {trio.lowlevel.current_task()}
        left = [t for t in _all_tasks() if t not in ignored]
        if left:
            names = ", ".join(sorted(t.name for t in left))
            raise TaskLeftRunningError(
                f"{what}: task(s) still running after the run ended: {names}"
            )

    def _time_runs(self, runs: bool) -> None:
        if self._clock is not None:
            self._clock.rate = 1.0 if runs else 0.0
            self._clock.autojump_threshold = 0 if runs else math.inf

    def _main(self) -> None:
        try:
            trio.run(self._trio_main, clock=self._clock)
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    async def _trio_main(self) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self._token = trio.lowlevel.current_trio_token()
            self._baseline = frozenset(_all_tasks())
            self._ready.set()
            await trio.sleep_forever()


async def settle(limit: float, what: str) -> None:
    """Wait until every other task is blocked: the step's effects are complete.

    Settling after each rule makes a step's outcome depend on the steps before it,
    not on how fast threads ran, so Hypothesis can replay and shrink a failure.

    Raises:
        HangError: some task kept running for ``limit`` seconds.
    """
    with trio.move_on_after(limit) as bound:
        await trio.testing.wait_all_tasks_blocked()
    if bound.cancelled_caught:
        raise HangError(f"hung: {what}: some task kept running for {limit} s without blocking")


def _all_tasks() -> list[trio.lowlevel.Task]:
    tasks: list[trio.lowlevel.Task] = []
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task is None:
            continue
        tasks.append(task)
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return tasks
