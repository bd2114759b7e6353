"""A Hypothesis state machine checking a service that owns the channel its results leave by.

The service takes items in (a send, a ``submit()``...), works on them, and sends
results out on a channel it owns and closes when its run ends. The machine feeds
numbered items, reads what comes out, and ends runs every way a Trio program can:
a stop request, cancelling the service's own scope, cancelling the scope around
the service and the tasks feeding it. It checks that every accepted item comes
out exactly once, that nothing is sent on a closed channel, that nothing hangs,
and that no task outlives a run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import trio
import trio.testing
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from rivertrio._validate import duration

from ._failures import (
    HangError,
    LostItemError,
    SendOnClosedChannelError,
    ServiceCheckError,
    UncaughtError,
)
from ._host import TrioHost, settle
from ._ledger import Item, Ledger, number_list, split_exception
from ._protocols import TrioService, WatchedStatus, call_stop

__all__ = ["PipelineMachine"]

S = TypeVar("S", bound=TrioService)
T = TypeVar("T")

_CLOSED = (trio.ClosedResourceError, trio.BrokenResourceError)


@dataclass(eq=False)
class _Run:
    number: int
    service: Any
    enclosing: trio.CancelScope = field(default_factory=trio.CancelScope)
    """Around the service and the tasks feeding it."""
    own: trio.CancelScope = field(default_factory=trio.CancelScope)
    """Around the service's run only."""
    nursery: trio.Nursery | None = None
    output: trio.abc.ReceiveChannel[Any] | None = None
    started: bool = False
    start_error: Exception | None = None
    closed: bool = False
    """Whether the output channel ended (``EndOfChannel``)."""
    done: trio.Event = field(default_factory=trio.Event)
    """The service's run returned."""
    all_done: trio.Event = field(default_factory=trio.Event)
    """The service's run and every feed of this run returned."""


class PipelineMachine(RuleBasedStateMachine, Generic[S]):
    """Hypothesis state machine checking a service that owns its output channel.

    Subclass it and say how to build the service, feed it an item, and read what
    comes out:

    - :meth:`make_service` builds the service (a :class:`TrioService`).
    - :meth:`feed_item` hands item ``n`` (an int, numbered from 0 in each example)
      to the service. If it returns, the item is *accepted* and must come out
      exactly once before the run has ended. If it raises one of
      :attr:`refusals`, the item was refused and must never come out. Any other
      exception is a failure. A feed cancelled by the scope around it did not
      happen (Trio's rule), so its item must not come out either.
    - :meth:`output` returns the channel results come out of (by default, the
      value ``run`` passed to ``task_status.started()``). The run must close it
      when it ends: that is how readers learn the service is done.
    - :meth:`items_in` says which items one received value holds (by default, the
      value is one item; override it for batches).
    - :meth:`request_stop` asks the service to stop (by default, ``stop()``).

    Every example begins with ``start``. Then the rules: ``feed(count)`` (each item
    from a task of its own, so feeds blocked by back-pressure stay in flight across
    steps); ``read(most)``; and four ways to end the run: ``stop``,
    ``stop_while_feeding(count, passes)`` (the stop races the feeds), ``hard_stop``
    (cancel the scope around the service's run) and ``cancel_enclosing_scope``
    (cancel the scope around the service and its feeds, as when the whole program
    shuts down). Ending a run checks it, then starts the next run at once: a
    restart, so there is always a live run to act on. Every step settles (every
    task blocked) before the next, so a failure replays and shrinks to a short
    story such as ``start(); feed(count=1); cancel_enclosing_scope()``.

    To end a run the machine reads the output until it closes, and waits (up to
    :attr:`step_timeout`) for the run and its feeds to return. Then it checks. Each
    kind of failure has its own exception: :class:`LostItemError`,
    :class:`DuplicateItemError`, :class:`UnexpectedItemError`,
    :class:`SendOnClosedChannelError` (``trio.ClosedResourceError`` or
    ``trio.BrokenResourceError`` escaped the run), :class:`HangError` (including
    a run that closed no output, on which a reader would wait forever),
    :class:`TaskLeftRunningError` and :class:`UncaughtError`. A run that returns
    without being asked to is a :class:`ServiceCheckError`.

    Each example runs in a Trio run of its own, in a helper thread. Teardown ends
    a live run by cancellation (reading its output meanwhile), without checks.

    Example::

        class BatcherMachine(PipelineMachine[Batcher]):
            refusals = (BatcherStopped,)
            restartable = False

            def make_service(self) -> Batcher:
                return Batcher(size=3)

            async def feed_item(self, service: Batcher, item: int) -> None:
                await service.submit(item)

            def items_in(self, received: list[int]) -> list[int]:
                return received

        TestBatcher = BatcherMachine.TestCase
    """

    step_timeout: ClassVar[float] = 5.0
    """Bound on each step: a start, a run's end, a feed after the run ended, a settle."""
    refusals: ClassVar[tuple[type[Exception], ...]] = ()
    """Exceptions from :meth:`feed_item` that mean the service refused the item."""
    restartable: ClassVar[bool] = True
    """Whether a service may run again once its run has ended; if not, each run
    after the first uses a new one from :meth:`make_service`."""
    virtual_time: ClassVar[bool] = False
    """Run each example on Trio's ``MockClock``: time moves only when every task is
    blocked, jumping to the next deadline, so timers and :attr:`step_timeout` take
    no real time and a hang is found at once. Only for services that do no real
    I/O and start no threads (their waits would look like hangs)."""

    def __init__(self) -> None:
        super().__init__()
        duration("step_timeout", self.step_timeout, ValueError)
        if type(self).feed_item is PipelineMachine.feed_item:
            raise NotImplementedError(f"{type(self).__name__} must implement feed_item()")
        self._host = TrioHost(type(self).__name__, virtual_time=self.virtual_time)
        self._ledger = Ledger()
        self._run: _Run | None = None
        self._runs = 0
        self._has_run = False
        try:
            self.service: S = self._host.call_sync(self.make_service)
        except BaseException:
            self._host.close(self.step_timeout)
            raise

    # -- what the user says --------------------------------------------------------------

    def make_service(self) -> S:
        """Return a new, never-started service; called in the machine's Trio thread."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_service()")

    async def feed_item(self, service: S, item: int) -> None:
        """Hand ``item`` to ``service``; return once it is accepted.

        Raise one of :attr:`refusals` if the service refused it.
        """
        raise NotImplementedError

    def output(self, service: S, started: Any) -> trio.abc.ReceiveChannel[Any]:
        """The channel results come out of; ``started`` is what ``run`` passed to
        ``task_status.started()``, which is the channel by default."""
        if not isinstance(started, trio.abc.ReceiveChannel):
            raise TypeError(
                f"{type(service).__name__}.run passed {started!r} to task_status.started(), "
                "not a receive channel: override output() to say where results come out"
            )
        return started

    def items_in(self, received: Any) -> Iterable[int]:
        """The items one value received from the output holds; by default, itself."""
        return (received,)

    def request_stop(self, service: S) -> None:
        """Ask ``service`` to stop: calls its ``stop()`` method; called in the Trio thread."""
        call_stop(service, hint="override request_stop() to say how to stop it")

    # -- the Trio side --------------------------------------------------------------------

    def _step(self, step: Callable[[], Awaitable[T]]) -> T:
        """Run one step in the Trio thread, then fail on what went wrong during it."""

        async def checked() -> T:
            result = await step()
            run = self._run
            if not self._ledger.problems and run is not None and run.done.is_set():
                raise ServiceCheckError(
                    f"run {run.number} returned although nobody asked it to stop"
                )
            return result

        result = self._host.call(checked)
        self._ledger.raise_problems()
        return result

    def _came_out(self, received: Any) -> None:
        self._ledger.came_out(self.items_in(received))

    def _reader_failed(self, run: _Run, exc: Exception) -> None:
        self._ledger.problem(
            UncaughtError(
                f"run {run.number}: reading its output raised {exc!r}: the service closed "
                "the receiving end it handed out"
            ),
            exc,
        )

    async def _supervise(self, run: _Run, *, task_status: trio.TaskStatus[Any]) -> None:
        def on_started(value: Any) -> None:
            run.started = True

        try:
            with run.own:
                await run.service.run(task_status=WatchedStatus(task_status, on_started))
        except Exception as exc:
            if not run.started:
                raise  # a start error: nursery.start raises it
            closed, other = split_exception(exc, _CLOSED)
            if closed is not None:
                self._ledger.problem(
                    SendOnClosedChannelError(
                        f"run {run.number}: {closed!r} escaped the run: it used a channel "
                        "after it, or its other end, was closed"
                    ),
                    closed,
                )
            if other is not None:
                self._ledger.problem(
                    UncaughtError(f"run {run.number}: an exception escaped the run: {other!r}"),
                    other,
                )
        finally:
            run.done.set()

    async def _feeder(self, run: _Run, item: Item) -> None:
        outcome = "cancelled"
        try:
            await self.feed_item(run.service, item.number)
            outcome = "accepted"
        except self.refusals:
            outcome = "refused"
        except Exception as exc:
            outcome = "failed"
            self._ledger.problem(
                UncaughtError(
                    f"feeding item {item.number} raised {exc!r}, which is not one of "
                    f"refusals={_names(self.refusals)}"
                ),
                exc,
            )
        finally:
            self._ledger.fed(item, outcome)

    async def _host_run(self, run: _Run, *, task_status: trio.TaskStatus[Any]) -> None:
        """The scope around the service and its feeds; starts the service in it."""
        try:
            with run.enclosing:
                async with trio.open_nursery() as nursery:
                    run.nursery = nursery
                    try:
                        started = await nursery.start(self._supervise, run)
                    except Exception as exc:
                        run.start_error = exc
                        started = None
                    task_status.started(started)
        finally:
            run.all_done.set()

    async def _start(self, what: str) -> None:
        if self._has_run and not self.restartable:
            self.service = self.make_service()
        self._has_run = True
        self._runs += 1
        run = _Run(self._runs, self.service)
        with trio.move_on_after(self.step_timeout) as bound:
            started = await self._host.nursery.start(self._host_run, run)
        if bound.cancelled_caught:
            raise HangError(f"hung: {what}: did not complete within {self.step_timeout} s")
        if run.start_error is not None:
            raise UncaughtError(f"{what}: failed: {run.start_error!r}") from run.start_error
        run.output = self.output(run.service, started)
        self._run = run
        await settle(self.step_timeout, what)

    def _feed_soon(self, run: _Run, count: int) -> None:
        assert run.nursery is not None
        for _ in range(count):
            item = self._ledger.new_item(run.number)
            run.nursery.start_soon(self._feeder, run, item, name=f"feed item {item.number}")

    async def _receive_settled(self, run: _Run) -> tuple[bool, Any]:
        """Receive one value, unless none comes before every task is blocked."""
        assert run.output is not None
        output = run.output
        got: list[Any] = []

        async def receive(done: trio.CancelScope) -> None:
            try:
                got.append(await output.receive())
            except trio.EndOfChannel:
                run.closed = True
            except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
                self._reader_failed(run, exc)
            done.cancel()

        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive, scope)
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()
        return (True, got[0]) if got else (False, None)

    def _live_run(self) -> _Run:
        assert self._run is not None, "no live run: an earlier step failed"
        return self._run

    async def _end(self, how: str, request: Callable[[_Run], None], *, check: bool = True) -> None:
        """End the current run with ``request``, read its output until it closes, check
        the run, and (when checking) start the next one."""
        run = self._live_run()
        assert run.output is not None
        output = run.output
        request(run)

        async def drain(*, task_status: trio.TaskStatus[None]) -> None:
            task_status.started()
            try:
                async for received in output:
                    self._came_out(received)
            except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
                self._reader_failed(run, exc)
            run.closed = True

        with trio.move_on_after(self.step_timeout) as bound:
            async with trio.open_nursery() as nursery:
                await nursery.start(drain)
                await run.all_done.wait()
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
        self._run = None
        if not check:
            return
        if bound.cancelled_caught:
            if not run.done.is_set():
                raise HangError(f"hung: {how}: the run did not return within {self.step_timeout} s")
            stuck = self._ledger.in_flight(run.number)
            raise HangError(
                f"hung: {how}: the run returned, but feeding item(s) {number_list(stuck)} "
                f"was still blocked {self.step_timeout} s later"
            )
        self._ledger.raise_problems()
        if not run.closed:
            raise HangError(
                f"hung: {how}: the run returned without closing its output channel, "
                "so a reader would wait for it forever"
            )
        lost = self._ledger.lost(run.number)
        if lost:
            raise LostItemError(
                f"{how}: item(s) {number_list(lost)} accepted (the feed returned) "
                "but never came out"
            )
        await settle(self.step_timeout, how)
        self._host.check_no_task_left(how)
        await self._start(f"start after {how}")

    def _stop_request(self, run: _Run) -> None:
        self.request_stop(run.service)

    # -- rules --------------------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        """Start the service: every example begins with a live run."""
        self._step(lambda: self._start("start"))

    @rule(count=st.integers(1, 3))
    def feed(self, count: int) -> None:
        """Feed ``count`` new items, each from a task of its own."""

        async def step() -> None:
            self._feed_soon(self._live_run(), count)
            await settle(self.step_timeout, "feed")

        self._step(step)

    @precondition(lambda self: self._run is not None and not self._run.closed)
    @rule(most=st.integers(1, 3))
    def read(self, most: int) -> None:
        """Read up to ``most`` values from the output, as far as they come without waiting."""

        async def step() -> None:
            run = self._live_run()
            for _ in range(most):
                got, received = await self._receive_settled(run)
                if not got:
                    break
                self._came_out(received)
            await settle(self.step_timeout, "read")

        self._step(step)

    @rule()
    def stop(self) -> None:
        """Ask the service to stop; check the run; start the next one."""
        self._step(lambda: self._end("stop", self._stop_request))

    @rule(count=st.integers(1, 3), passes=st.integers(0, 3))
    def stop_while_feeding(self, count: int, passes: int) -> None:
        """Feed ``count`` items and, ``passes`` scheduling passes later, with the feeds
        still in flight, ask the service to stop; check the run; start the next one."""

        async def step() -> None:
            self._feed_soon(self._live_run(), count)
            for _ in range(passes):
                await trio.lowlevel.checkpoint()
            await self._end("stop while feeding", self._stop_request)

        self._step(step)

    @rule()
    def hard_stop(self) -> None:
        """Cancel the scope around the service's run (its feeds carry on); check the
        run; start the next one."""
        self._step(lambda: self._end("hard stop", lambda run: run.own.cancel()))

    @rule()
    def cancel_enclosing_scope(self) -> None:
        """Cancel the scope around the service and the tasks feeding it, as when the
        whole program shuts down; check the run; start the next one."""
        self._step(lambda: self._end("cancel enclosing scope", lambda run: run.enclosing.cancel()))

    def teardown(self) -> None:
        """End a live run by cancellation, reading its output meanwhile; end the Trio run."""
        try:
            if self._run is not None and self._run.output is not None:
                self._host.call(
                    lambda: self._end("teardown", lambda run: run.enclosing.cancel(), check=False)
                )
        finally:
            self._host.close(self.step_timeout)


def _names(types: tuple[type[BaseException], ...]) -> str:
    return "(" + ", ".join(t.__name__ for t in types) + ")"
