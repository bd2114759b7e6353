"""A Hypothesis state machine checking that a service starts and stops cleanly.

:class:`ServiceLifecycleMachine` drives start, stop, restart and cancellation
in every order on any service written the Trio way (:class:`TrioService`: an
object whose ``run`` is started with ``await nursery.start(service.run)`` and
ends when asked to stop, or when the scope around it is cancelled).
:func:`stress_start_stop` (in ``_stress``) checks the same contract by brute
force.

rivertrio's own services (subclasses of ``rivertrio._service.Service``) follow a
stricter contract: ``started`` / ``stopped`` flags, ``wait_started()``, and a
second concurrent run refused with :class:`~rivertrio.AlreadyRunningError`. The
machine checks that too when the service is one of them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import trio
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from rivertrio._exceptions import AlreadyRunningError
from rivertrio._service import Service
from rivertrio._validate import duration

from ._failures import HangError, UncaughtError
from ._host import TrioHost, settle
from ._protocols import S, WatchedStatus, call_stop

__all__ = ["ServiceLifecycleMachine"]

T = TypeVar("T")


@dataclass(eq=False)
class _Run:
    """One run of the service, as the machine tracks it."""

    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)
    started: bool = False
    value: Any = None


class ServiceLifecycleMachine(RuleBasedStateMachine, Generic[S]):
    """Hypothesis state machine checking that a service starts and stops cleanly.

    Works on any :class:`TrioService`. Rules: start; stop; stop twice, then once
    more once stopped; stop while stopped (before the first start, after a stop,
    after a failed start); stop from inside ``task_status.started()``; restart;
    cancel the scope around the run. Every start must complete within
    ``start_timeout`` and every stop (until the run has returned) within
    ``stop_timeout``, or it fails with :class:`HangError`. After every step no
    exception escaped a run (:class:`UncaughtError`) and a run ends only when asked
    to; after every run no task it started is left running
    (:class:`TaskLeftRunningError`).

    For rivertrio's own services it also checks the ``started`` / ``stopped``
    flags, ``wait_started()``, and that a second run while one is live raises
    :class:`~rivertrio.AlreadyRunningError`.

    Each example runs in a Trio run of its own, in a helper thread; rules call into
    it with :meth:`call`. The service is asked to stop with :meth:`request_stop`
    (its ``stop()`` method, by default). Teardown cancels the scope around
    everything, so the service must also end on cancellation.

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
    """

    stop_timeout: ClassVar[float] = 5.0
    """Bound on each stop, until the run has returned."""
    start_timeout: ClassVar[float] = 10.0
    """Bound on each start."""
    allowed_start_errors: ClassVar[tuple[type[Exception], ...]] = ()
    """Start errors that are legal outcomes (a database that is down, say)."""
    restartable: ClassVar[bool] = True
    """Whether a service may run again once its run has ended; if not, each start
    after the first uses a new one from :meth:`make_service`."""

    def __init__(self) -> None:
        super().__init__()
        duration("stop_timeout", self.stop_timeout, ValueError)
        duration("start_timeout", self.start_timeout, ValueError)
        self._host = TrioHost(type(self).__name__)
        self._run: _Run | None = None
        self._has_run = False
        self._escaped: list[Exception] = []
        try:
            self.service: S = self._host.call_sync(self.make_service)
        except BaseException:
            self._host.close(self.stop_timeout)
            raise
        self._flags = isinstance(self.service, Service)

    def make_service(self) -> S:
        """Return a new, never-started service; called in the machine's Trio thread."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_service()")

    def request_stop(self, service: S) -> None:
        """Ask ``service`` to stop: calls its ``stop()`` method; called in the Trio thread.

        Override it for a service stopped another way, for instance by closing its
        input channel, or with ``self.cancel_run()`` for one stopped by cancellation.
        """
        call_stop(service, hint="override request_stop() to say how to stop it")

    def cancel_run(self) -> None:
        """Cancel the scope around the current run, if any; call in the Trio thread."""
        if self._run is not None:
            self._run.scope.cancel()

    @property
    def expect_running(self) -> bool:
        """Whether the model says the service is started now."""
        return self._run is not None

    @property
    def started_value(self) -> Any:
        """What the current run passed to ``task_status.started()`` (a port, say)."""
        if self._run is None:
            raise RuntimeError("the service is not running: no started value")
        return self._run.value

    def call(self, step: Callable[[], Awaitable[T]]) -> T:
        """Run ``await step()`` in the machine's Trio thread and return its result."""
        return self._host.call(step)

    def teardown(self) -> None:
        """Cancel the scope around everything, wait for the Trio run to end, check it."""
        self._host.close(self.stop_timeout)
        self._check_nothing_escaped()

    # -- steps, run in the Trio thread ---------------------------------------------

    async def _supervise(
        self, run: _Run, stop_on_started: bool, *, task_status: trio.TaskStatus[None]
    ) -> None:
        """One run of the service, in a cancel scope of its own; records what escapes."""

        def on_started(value: Any) -> None:
            run.started, run.value = True, value
            if stop_on_started:
                self._run = run
                self.request_stop(self.service)

        try:
            with run.scope:
                await self.service.run(task_status=WatchedStatus(task_status, on_started))
        except Exception as exc:
            if not run.started:
                raise  # a start error: nursery.start raises it in the rule
            self._escaped.append(exc)
        finally:
            run.done.set()

    async def _start(self, *, stop_on_started: bool = False) -> _Run | None:
        """Start the service; None if it failed with one of ``allowed_start_errors``."""
        if self._has_run and not self.restartable:
            self.service = self.make_service()
        self._has_run = True
        run = _Run()
        try:
            with trio.fail_after(self.start_timeout):
                await self._host.nursery.start(self._supervise, run, stop_on_started)
        except trio.TooSlowError:
            raise HangError(
                f"start did not complete within start_timeout={self.start_timeout} s"
            ) from None
        except self.allowed_start_errors:
            if self._flags and not self._service.stopped:
                raise AssertionError("the service is not stopped after a failed start") from None
            await self._check_no_task_left("a failed start")
            return None
        if self._flags and not stop_on_started and not self._service.started:
            raise AssertionError("the service is not started after nursery.start returned")
        return run

    async def _stop(self, what: str, request: Callable[[], None]) -> None:
        """``request()`` a stop, then wait, bounded, until the run has returned."""
        run = self._run
        try:
            with trio.fail_after(self.stop_timeout):
                request()
                if run is not None:
                    await run.done.wait()
                if self._flags:
                    await self._service.wait_stopped()
        except trio.TooSlowError:
            raise HangError(
                f"{what}: the service did not stop within stop_timeout={self.stop_timeout} s"
            ) from None
        self._run = None
        if self._flags and (not self._service.stopped or self._service.started):
            raise AssertionError(f"{what}: the service's flags do not say stopped")
        await self._check_no_task_left(what)

    async def _check_no_task_left(self, what: str) -> None:
        await settle(self.stop_timeout, what)
        self._host.check_no_task_left(what)

    @property
    def _service(self) -> Service:
        assert isinstance(self.service, Service)
        return self.service

    def _check_nothing_escaped(self) -> None:
        if self._escaped:
            exc = self._escaped[0]
            raise UncaughtError(f"an exception escaped the service's run: {exc!r}") from exc

    def _request(self) -> None:
        self.request_stop(self.service)

    # -- rules -------------------------------------------------------------------------

    @precondition(lambda self: self._run is None)
    @rule()
    def start(self) -> None:
        """Start a stopped service."""
        self._run = self.call(self._start)

    @precondition(lambda self: self._run is None)
    @rule()
    def stop_while_stopped(self) -> None:
        """A stop before any start, after a stop or after a failed start does nothing.

        Except to a service that is not restartable: it is spent, and the next start
        uses a new one.
        """
        self.call(lambda: self._stop("stop while stopped", self._request))
        self._has_run = True

    @precondition(lambda self: self._run is None)
    @rule()
    def stop_as_it_starts(self) -> None:
        """A stop requested from inside ``started()``, before ``nursery.start`` returns."""

        async def step() -> None:
            if await self._start(stop_on_started=True) is not None:
                await self._stop("stop during start", lambda: None)

        self.call(step)

    @precondition(lambda self: self._run is not None)
    @rule()
    def stop(self) -> None:
        """Stop a running service."""
        self.call(lambda: self._stop("stop", self._request))

    @precondition(lambda self: self._run is not None)
    @rule()
    def double_stop(self) -> None:
        """Two stop requests at once, then one more once stopped: all legal."""

        def request() -> None:
            self._request()
            self._request()

        self.call(lambda: self._stop("stop; stop", request))
        self.call(lambda: self._stop("stop after stopped", self._request))

    @precondition(lambda self: self._run is not None)
    @rule()
    def restart(self) -> None:
        """Stop, then start again at once."""
        self.call(lambda: self._stop("stop before restart", self._request))
        self._run = self.call(self._start)

    @precondition(lambda self: self._run is not None)
    @rule()
    def cancel_enclosing_scope(self) -> None:
        """Cancelling the scope around a run ends it without an error."""
        self.call(lambda: self._stop("cancelling the enclosing scope", self.cancel_run))

    # -- rules for rivertrio's own services ----------------------------------------------

    @precondition(lambda self: self._flags and self._run is not None)
    @rule()
    def start_while_running(self) -> None:
        """A second run of a running service raises AlreadyRunningError."""

        async def step() -> None:
            try:
                with trio.fail_after(self.start_timeout):
                    await self._host.nursery.start(self._supervise, _Run(), False)
            except AlreadyRunningError:
                return
            raise AssertionError("a second run of a running service did not raise")

        self.call(step)

    @precondition(lambda self: self._flags and self._run is None)
    @rule()
    def wait_started_then_start(self) -> None:
        """wait_started() before a start fires when it starts (not on a failed start)."""

        async def step() -> _Run | None:
            fired = trio.Event()
            waiter_scope = trio.CancelScope()

            async def waiter(*, task_status: trio.TaskStatus[None]) -> None:
                self._host.helper_task()
                with waiter_scope:
                    task_status.started()
                    await self._service.wait_started()
                    fired.set()

            await self._host.nursery.start(waiter)
            try:
                run = await self._start()
                if run is None and fired.is_set():
                    raise AssertionError("wait_started() fired on a failed start")
                if run is not None:
                    with trio.move_on_after(self.start_timeout):
                        await fired.wait()
                    if not fired.is_set():
                        raise AssertionError("wait_started() did not fire on start")
            finally:
                waiter_scope.cancel()
            return run

        self._run = self.call(step)

    @precondition(lambda self: self._flags and self._run is not None)
    @rule()
    def wait_started_while_running(self) -> None:
        """wait_started() on a started service returns at once."""

        async def step() -> None:
            try:
                with trio.fail_after(self.start_timeout):
                    await self._service.wait_started()
            except trio.TooSlowError:
                raise HangError("wait_started() on a started service blocked") from None

        self.call(step)

    @invariant()
    def contract_holds(self) -> None:
        """No exception escaped a run, the flags match the model, no run ended by itself."""
        self._check_nothing_escaped()

        def observe() -> tuple[bool, bool, bool]:
            ended = self._run is not None and self._run.done.is_set()
            if not self._flags:
                return ended, False, False
            return ended, self._service.started, self._service.stopped

        ended, started, stopped = self._host.call_sync(observe)
        expected = self._run is not None
        if self._flags and (started, stopped) != (expected, not expected):
            raise AssertionError(
                f"expected started={expected}, stopped={not expected}; "
                f"the service says started={started}, stopped={stopped}"
            )
        if ended:
            raise AssertionError("the run returned although nobody asked it to stop")
