"""`stress_start_stop`: many quick rounds of start and stop on one service, stops racing starts.

It works on any :class:`TrioService`; see `rivertrio.testing._protocols` for
the contract it checks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from rivertrio._exceptions import AlreadyRunningError
from rivertrio._service import Service
from rivertrio._validate import duration, integer

from ._failures import HangError
from ._protocols import S, WatchedStatus, call_stop

__all__ = ["stress_start_stop"]


def _stop_method(service: object) -> None:
    call_stop(service, hint="pass stop=... saying how to stop it, or stop=None to cancel its run")


async def stress_start_stop(
    make_service: Callable[[], S],
    *,
    stop: Callable[[S], object] | None = _stop_method,
    tasks: int = 1,
    rounds: int = 50,
    stop_timeout: float = 5.0,
    start_timeout: float = 5.0,
    allowed_start_errors: tuple[type[Exception], ...] = (AlreadyRunningError,),
) -> S:
    """Start and stop one service many times, stops racing starts; return the service.

    ``make_service()`` is called once. Each of ``tasks`` tasks then runs ``rounds``
    rounds, each in a nursery of its own: start a run with ``nursery.start``, end it,
    and wait until it has returned. Rounds take turns ending the run three ways:
    ``stop(service)`` once started; ``stop(service)`` called from inside
    ``task_status.started()``, before ``nursery.start`` returns; and cancelling the
    scope around the run. ``stop`` is the service's ``stop()`` method by default;
    ``stop=None`` means the service is stopped by cancellation only.

    With ``tasks`` above 1 the tasks share the one service, so their runs overlap:
    the service must either allow that or refuse a run while another is live, by
    raising one of ``allowed_start_errors`` before ``started()`` (rivertrio's
    services raise :class:`~rivertrio.AlreadyRunningError`). A task whose start was
    refused asks the live run to stop instead.

    A failure is: a start error not in ``allowed_start_errors``, an exception from
    a run, a start slower than ``start_timeout``, an end (from the request until
    the run has returned) slower than ``stop_timeout``, and, for rivertrio's
    services, the service not reporting itself stopped at the end.

    Cancelling it cancels every task and the runs they started.

    Raises:
        ValueError: ``tasks`` or ``rounds`` is not an int of 1 or more, or a
            timeout is not a finite number of seconds above 0.
        AssertionError: the first failure, naming the task and the round; the
            original exception is its ``__cause__``. A hang is a
            :class:`HangError`.
    """
    integer("tasks", tasks, ValueError)
    integer("rounds", rounds, ValueError)
    duration("stop_timeout", stop_timeout, ValueError)
    duration("start_timeout", start_timeout, ValueError)

    service = make_service()
    if stop is _stop_method and not callable(getattr(service, "stop", None)):
        _stop_method(service)  # raises the TypeError that says what to pass
    failures: list[AssertionError] = []

    async def one_round(where: str, how: str) -> None:
        run_scope = trio.CancelScope()

        def end_run() -> None:
            if stop is None or how == "cancel":
                run_scope.cancel()
            else:
                stop(service)

        async def supervise(*, task_status: trio.TaskStatus[Any]) -> None:
            def on_started(value: Any) -> None:
                if how == "stop as it starts":
                    end_run()

            with run_scope:
                await service.run(task_status=WatchedStatus(task_status, on_started))

        start_error: Exception | None = None
        phase, bound = "start", start_timeout
        try:
            with trio.CancelScope() as guard:
                async with trio.open_nursery() as nursery:
                    guard.deadline = trio.current_time() + bound
                    refused = False
                    try:
                        await nursery.start(supervise)
                    except allowed_start_errors:
                        refused = True  # another task's run is live: a legal outcome
                    except Exception as exc:
                        start_error = exc
                    phase, bound = "stop", stop_timeout
                    guard.deadline = trio.current_time() + bound
                    if refused or start_error is not None:
                        # Stop the live run instead; and stopping is legal after a failed start.
                        if stop is not None:
                            stop(service)
                    elif how != "stop as it starts":
                        end_run()
        except Exception as exc:
            raise AssertionError(f"{where}: a run raised {exc!r} (ending by {how})") from exc
        if guard.cancelled_caught:
            raise HangError(f"{where}: {phase} did not complete within {bound} s (ending by {how})")
        if start_error is not None:
            raise AssertionError(f"{where}: start failed: {start_error!r}") from start_error

    async def one_task(task: int, cancel_all: trio.CancelScope) -> None:
        for round_ in range(rounds):
            how = ("stop", "stop as it starts", "cancel")[round_ % 3]
            try:
                await one_round(f"stress_start_stop: task {task}, round {round_}", how)
            except AssertionError as failure:
                failures.append(failure)
                cancel_all.cancel()
                return

    async with trio.open_nursery() as nursery:
        for task in range(tasks):
            nursery.start_soon(one_task, task, nursery.cancel_scope)
    if failures:
        raise failures[0]
    if isinstance(service, Service) and not service.stopped:
        raise AssertionError("stress_start_stop: every task stopped the service, yet it runs")
    return service
