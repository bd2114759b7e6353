"""Checks that a service follows the lifecycle contract of :mod:`rivertrio._service`.

Two tools, for rivertrio's own services and users' alike: :func:`stress_start_stop`
(many tasks starting and stopping one service at once) and
:class:`ServiceLifecycleMachine` (a Hypothesis state machine driving start, stop,
restart and cancellation in every order).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import ClassVar, Generic, TypeVar

import trio
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from rivertrio._exceptions import AlreadyRunningError
from rivertrio._service import SupportsLifecycle, _ObservedTaskStatus

__all__ = ["ServiceLifecycleMachine", "stress_start_stop"]

S = TypeVar("S", bound=SupportsLifecycle)
T = TypeVar("T")


async def stress_start_stop(
    make_service: Callable[[], S],
    *,
    tasks: int = 10,
    rounds: int = 50,
    stop_timeout: float = 5.0,
    start_timeout: float = 5.0,
) -> S:
    """Start and stop one service from many tasks at once; return the service.

    ``make_service()`` is called once. Each of ``tasks`` tasks then runs ``rounds``
    rounds of: ``await nursery.start(service.run)`` in a nursery of its own,
    ``service.stop()``, ``await service.wait_stopped()``, leave the nursery.

    Only one run of a service can be live, so concurrent starts conflict: a start
    that raises :class:`~rivertrio._service.AlreadyRunningError` is a legal outcome,
    and that task goes on to stop the other task's run. This drives stops that race
    starts, stops of a run another task started, and restarts right after a stop.
    Any other start error, and any error from a run, is a failure. So is a start
    slower than ``start_timeout`` or a stop (until the round's run has exited)
    slower than ``stop_timeout``, and a service not stopped at the end.

    Cancelling it cancels every task and the runs they started.

    Raises:
        ValueError: ``tasks`` or ``rounds`` below 1, or a timeout not above 0.
        AssertionError: the first failure, naming the task and the round; the
            original exception is its ``__cause__``.
    """
    if tasks < 1:
        raise ValueError(f"tasks must be at least 1, got {tasks}")
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    if not stop_timeout > 0:
        raise ValueError(f"stop_timeout must be above 0 s, got {stop_timeout}")
    if not start_timeout > 0:
        raise ValueError(f"start_timeout must be above 0 s, got {start_timeout}")

    service = make_service()
    failures: list[AssertionError] = []

    async def one_round(where: str) -> None:
        start_error: Exception | None = None
        phase, bound = "start", start_timeout
        try:
            with trio.CancelScope() as guard:
                async with trio.open_nursery() as nursery:
                    guard.deadline = trio.current_time() + bound
                    try:
                        await nursery.start(service.run)
                    except AlreadyRunningError:
                        pass  # another task's run is live: a legal outcome, stop that one
                    except Exception as exc:
                        start_error = exc  # stop() stays legal after a failed start
                    phase, bound = "stop", stop_timeout
                    guard.deadline = trio.current_time() + bound
                    service.stop()
                    await service.wait_stopped()
        except Exception as exc:
            raise AssertionError(f"{where}: a run raised {exc!r}") from exc
        if guard.cancelled_caught:
            raise AssertionError(f"{where}: {phase} did not complete within {bound} s")
        if start_error is not None:
            raise AssertionError(f"{where}: start failed: {start_error!r}") from start_error

    async def one_task(task: int, cancel_all: trio.CancelScope) -> None:
        for round_ in range(rounds):
            try:
                await one_round(f"stress_start_stop: task {task}, round {round_}")
            except AssertionError as failure:
                failures.append(failure)
                cancel_all.cancel()
                return

    async with trio.open_nursery() as nursery:
        for task in range(tasks):
            nursery.start_soon(one_task, task, nursery.cancel_scope)
    if failures:
        raise failures[0]
    if not service.stopped:
        raise AssertionError("stress_start_stop: every task stopped the service, yet it runs")
    return service


class ServiceLifecycleMachine(RuleBasedStateMachine, Generic[S]):
    """Hypothesis state machine checking the lifecycle contract of any service.

    Rules: start; start while running (must raise
    :class:`~rivertrio._service.AlreadyRunningError`); stop; double stop; stop
    while stopped (before the first start, after a stop, after a failed start);
    stop as the service reports started; restart; cancel the scope around the
    run; wait for "started" before a start and while running. After every step:
    no exception escaped a run and ``started`` / ``stopped`` match the model
    (never started counts as stopped). Every stop must end the run within
    ``stop_timeout`` and every start within ``start_timeout``.

    One ``trio.run`` lives in a helper thread for the whole example; rules call
    into it with :meth:`call`, and the service's runs are tasks of its nursery.
    Teardown cancels that nursery, so the service must also end on cancellation.

    Subclass it, implement :meth:`make_service`, and turn it into a test::

        class TickerMachine(ServiceLifecycleMachine[Ticker]):
            stop_timeout = 1.0
            allowed_start_errors = (ConnectionError,)  # if start may fail

            def make_service(self) -> Ticker:
                return Ticker(interval=0.01)

            @precondition(lambda self: self.expect_running)
            @rule()
            def ticks_while_running(self) -> None:
                self.call(self.service.wait_tick)

        TestTicker = TickerMachine.TestCase
        TestTicker.settings = hypothesis.settings(max_examples=100, deadline=None)
    """

    stop_timeout: ClassVar[float] = 5.0
    """Bound on each stop, until the run has exited."""
    start_timeout: ClassVar[float] = 10.0
    """Bound on each start."""
    allowed_start_errors: ClassVar[tuple[type[Exception], ...]] = ()
    """Start errors that are legal outcomes; the service must then be stopped."""

    _token: trio.lowlevel.TrioToken
    _nursery: trio.Nursery

    def __init__(self) -> None:
        super().__init__()
        self._expect_running = False
        self._escaped: list[Exception] = []
        self._run_scope: trio.CancelScope | None = None
        self._run_exited: trio.Event | None = None
        self._thread_error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=self._thread_main, name=f"{type(self).__name__} trio", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._thread_error is not None:
            raise RuntimeError("the machine's Trio thread failed") from self._thread_error
        try:
            self.service: S = trio.from_thread.run_sync(self.make_service, trio_token=self._token)
        except BaseException:
            self._shutdown()
            raise

    def make_service(self) -> S:
        """Return a new, never-started service; called in the Trio thread."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_service()")

    @property
    def expect_running(self) -> bool:
        """Whether the model says the service is started now."""
        return self._expect_running

    def call(self, step: Callable[[], Awaitable[T]]) -> T:
        """Run ``await step()`` in the machine's Trio thread and return its result."""
        return trio.from_thread.run(step, trio_token=self._token)

    def teardown(self) -> None:
        """Cancel the scope around everything, join the thread, check nothing escaped."""
        self._shutdown()
        self._check_nothing_escaped()

    # -- Trio thread ---------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            trio.run(self._trio_main)
        except BaseException as exc:
            self._thread_error = exc
        finally:
            self._ready.set()

    async def _trio_main(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await trio.sleep_forever()

    def _shutdown(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._nursery.cancel_scope.cancel, trio_token=self._token)
        self._thread.join(self.stop_timeout)
        if self._thread.is_alive():
            raise AssertionError(
                f"the service did not end within stop_timeout={self.stop_timeout} s "
                "of the scope around it being cancelled"
            )
        if self._thread_error is not None:
            raise AssertionError("the machine's Trio run failed") from self._thread_error

    # -- steps, run in the Trio thread ---------------------------------------------

    async def _supervise(
        self, stop_on_started: bool, *, task_status: trio.TaskStatus[None]
    ) -> None:
        """One run of the service, in a cancel scope of its own; records what escapes."""
        reported = False
        exited = trio.Event()

        def on_started() -> None:
            nonlocal reported
            reported = True
            self._run_scope, self._run_exited = scope, exited
            if stop_on_started:
                self.service.stop()

        try:
            with trio.CancelScope() as scope:
                await self.service.run(task_status=_ObservedTaskStatus(task_status, on_started))
        except Exception as exc:
            if not reported:
                raise  # a start error: nursery.start raises it in the rule
            self._escaped.append(exc)
        finally:
            exited.set()

    async def _start(self, *, stop_on_started: bool = False) -> bool:
        """Start the service; False if it failed with one of ``allowed_start_errors``."""
        try:
            with trio.fail_after(self.start_timeout):
                await self._nursery.start(self._supervise, stop_on_started)
        except trio.TooSlowError:
            raise AssertionError(
                f"start did not complete within start_timeout={self.start_timeout} s"
            ) from None
        except self.allowed_start_errors:
            if not self.service.stopped:
                raise AssertionError("the service is not stopped after a failed start") from None
            return False
        if not stop_on_started and not self.service.started:
            raise AssertionError("the service is not started after nursery.start returned")
        return True

    async def _stop(self, what: str, request: Callable[[], None]) -> None:
        """``request()`` a stop, then wait, bounded, until the run has exited."""
        try:
            with trio.fail_after(self.stop_timeout):
                request()
                await self.service.wait_stopped()
                if self._run_exited is not None:
                    await self._run_exited.wait()
        except trio.TooSlowError:
            raise AssertionError(
                f"{what}: the service did not stop within stop_timeout={self.stop_timeout} s"
            ) from None
        self._run_scope = self._run_exited = None
        if not self.service.stopped or self.service.started:
            raise AssertionError(f"{what}: the service's flags do not say stopped")

    def _check_nothing_escaped(self) -> None:
        if self._escaped:
            exc = self._escaped[0]
            raise AssertionError(f"an exception escaped the service's run: {exc!r}") from exc

    # -- rules -------------------------------------------------------------------------

    @precondition(lambda self: not self._expect_running)
    @rule()
    def start(self) -> None:
        """Start a stopped service."""
        self._expect_running = self.call(self._start)

    @precondition(lambda self: self._expect_running)
    @rule()
    def start_while_running(self) -> None:
        """A second run of a running service raises AlreadyRunningError."""

        async def step() -> None:
            try:
                with trio.fail_after(self.start_timeout):
                    await self._nursery.start(self._supervise, False)
            except AlreadyRunningError:
                return
            raise AssertionError("a second run of a running service did not raise")

        self.call(step)

    @precondition(lambda self: self._expect_running)
    @rule()
    def stop(self) -> None:
        """Stop a running service."""
        self.call(lambda: self._stop("stop()", self.service.stop))
        self._expect_running = False

    @precondition(lambda self: self._expect_running)
    @rule()
    def double_stop(self) -> None:
        """stop() twice, then once more once stopped: all legal."""

        def request() -> None:
            self.service.stop()
            self.service.stop()

        self.call(lambda: self._stop("stop(); stop()", request))
        self._expect_running = False
        self.call(lambda: self._stop("stop() after stopped", self.service.stop))

    @precondition(lambda self: not self._expect_running)
    @rule()
    def stop_while_stopped(self) -> None:
        """stop() before any start, after a stop or after a failed start is a no-op."""
        self.call(lambda: self._stop("stop() while stopped", self.service.stop))

    @precondition(lambda self: not self._expect_running)
    @rule()
    def stop_as_it_starts(self) -> None:
        """A stop issued while the service reports started, before start returns."""

        async def step() -> None:
            if await self._start(stop_on_started=True):
                await self._stop("stop() during start", lambda: None)

        self.call(step)

    @precondition(lambda self: self._expect_running)
    @rule()
    def restart(self) -> None:
        """Stop, then start again at once."""
        self.call(lambda: self._stop("stop() before restart", self.service.stop))
        self._expect_running = False
        self._expect_running = self.call(self._start)

    @precondition(lambda self: self._expect_running)
    @rule()
    def cancel_enclosing_scope(self) -> None:
        """Cancelling the scope around a run stops the service without error."""

        def request() -> None:
            assert self._run_scope is not None
            self._run_scope.cancel()

        self.call(lambda: self._stop("cancelling the enclosing scope", request))
        self._expect_running = False

    @precondition(lambda self: not self._expect_running)
    @rule()
    def wait_started_then_start(self) -> None:
        """wait_started() before a start fires when it starts (not on a failed start)."""

        async def step() -> bool:
            fired = trio.Event()
            waiter_scope = trio.CancelScope()

            async def waiter(*, task_status: trio.TaskStatus[None]) -> None:
                with waiter_scope:
                    task_status.started()
                    await self.service.wait_started()
                    fired.set()

            await self._nursery.start(waiter)
            try:
                started = await self._start()
                if not started and fired.is_set():
                    raise AssertionError("wait_started() fired on a failed start")
                if started:
                    with trio.move_on_after(self.start_timeout):
                        await fired.wait()
                    if not fired.is_set():
                        raise AssertionError("wait_started() did not fire on start")
            finally:
                waiter_scope.cancel()
            return started

        self._expect_running = self.call(step)

    @precondition(lambda self: self._expect_running)
    @rule()
    def wait_started_while_running(self) -> None:
        """wait_started() on a started service returns at once."""

        async def step() -> None:
            try:
                with trio.fail_after(self.start_timeout):
                    await self.service.wait_started()
            except trio.TooSlowError:
                raise AssertionError("wait_started() on a started service blocked") from None

        self.call(step)

    @invariant()
    def contract_holds(self) -> None:
        """No exception escaped a run, and the flags match the model."""
        self._check_nothing_escaped()
        started, stopped = trio.from_thread.run_sync(
            lambda: (self.service.started, self.service.stopped), trio_token=self._token
        )
        expected = self._expect_running
        if (started, stopped) != (expected, not expected):
            raise AssertionError(
                f"expected started={expected}, stopped={not expected}; "
                f"the service says started={started}, stopped={stopped}"
            )
