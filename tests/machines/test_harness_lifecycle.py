"""rivertrio.testing's lifecycle tools pass good services and catch broken ones.

Both kinds of service: rivertrio's own (subclasses of its private Service base class,
checked against its stricter contract) and plain Trio services, which only have a
``run(task_status=...)`` and maybe a ``stop()``.
"""

from __future__ import annotations

import pytest
import trio
from hypothesis import Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from rivertrio._service import Service
from rivertrio.testing import (
    HangError,
    ServiceLifecycleMachine,
    TaskLeftRunningError,
    stress_start_stop,
)

# Settings for the runs that must fail: find it fast, no shrinking, no example database
# (a stored failure would be replayed into the next run of the passing machines).
FIND_FAILURE = settings(
    max_examples=50,
    stateful_step_count=10,
    deadline=None,
    phases=[Phase.generate],
    database=None,
    derandomize=True,
)


class Toy(Service):
    """A well-behaved service that checkpoints while starting and while stopping."""

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        await trio.lowlevel.checkpoint()
        task_status.started()
        await self._stop_event.wait()
        await trio.lowlevel.checkpoint()


class FlakyStart(Toy):
    """Fails every other start, as a service does whose database comes and goes."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        self.attempts += 1
        if self.attempts % 2 == 1:
            await trio.lowlevel.checkpoint()
            raise ConnectionError("flaky: database unreachable")
        await super()._serve(task_status)


class NeverStops(Service):
    """Broken: ignores stop() (it does end on cancellation)."""

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        await trio.sleep_forever()


class HangsOnStart(Service):
    """Broken: never reports started."""

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        await trio.sleep_forever()


class LeaksError(Service):
    """Broken: lets an exception escape when asked to stop."""

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        await self._stop_event.wait()
        raise RuntimeError("leaked from run")


class NotRestartable(Service):
    """Broken: keeps one stop event for its whole life, so a restart stops at once."""

    def __init__(self) -> None:
        super().__init__()
        self._once = trio.Event()

    def stop(self) -> None:
        self._once.set()
        super().stop()

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        await self._once.wait()


class LosesStopDuringStart(Toy):
    """Broken: drops a stop() that arrives before it reports started."""

    def stop(self) -> None:
        if self.started:
            super().stop()


class ToyMachine(ServiceLifecycleMachine[Toy]):
    """The contract on the well-behaved toy."""

    def make_service(self) -> Toy:
        return Toy()


TestToyLifecycle = ToyMachine.TestCase
TestToyLifecycle.settings = settings(max_examples=100, stateful_step_count=20, deadline=None)


class FlakyStartMachine(ServiceLifecycleMachine[FlakyStart]):
    """The contract on a service whose start fails every other time."""

    allowed_start_errors = (ConnectionError,)

    def make_service(self) -> FlakyStart:
        return FlakyStart()


TestFlakyStartLifecycle = FlakyStartMachine.TestCase
TestFlakyStartLifecycle.settings = settings(max_examples=100, stateful_step_count=20, deadline=None)


def _machine_for(
    factory: type[Service], stop_timeout: float = 0.05
) -> type[ServiceLifecycleMachine[Service]]:
    class BrokenMachine(ServiceLifecycleMachine[Service]):
        def make_service(self) -> Service:
            return factory()

    BrokenMachine.stop_timeout = stop_timeout
    return BrokenMachine


def test_machine_catches_a_service_that_never_stops() -> None:
    """A stop that never completes is reported with the bound it exceeded."""
    with pytest.raises(AssertionError, match=r"did not stop within stop_timeout=0\.05 s"):
        run_state_machine_as_test(_machine_for(NeverStops), settings=FIND_FAILURE)


def test_machine_catches_an_exception_escaping_the_run() -> None:
    """An exception raised by a run after start is reported, with it as the cause."""
    with pytest.raises(AssertionError, match="escaped the service's run") as info:
        run_state_machine_as_test(_machine_for(LeaksError), settings=FIND_FAILURE)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert str(info.value.__cause__) == "leaked from run"


def test_machine_catches_a_service_that_cannot_restart() -> None:
    """A second run that stops by itself breaks the started flag invariant."""
    with pytest.raises(
        AssertionError, match=r"not started after nursery\.start returned|expected started=True"
    ):
        run_state_machine_as_test(_machine_for(NotRestartable), settings=FIND_FAILURE)


def test_machine_catches_a_stop_lost_during_start() -> None:
    """A stop that arrives while starting must still end the run."""
    with pytest.raises(HangError, match=r"stop during start: .*did not stop"):
        run_state_machine_as_test(_machine_for(LosesStopDuringStart), settings=FIND_FAILURE)


def test_machine_rejects_a_start_error_that_is_not_allowed() -> None:
    """Without allowed_start_errors, a failing start is a failure of the machine."""
    with pytest.raises(ConnectionError, match="flaky: database unreachable"):
        run_state_machine_as_test(_machine_for(FlakyStart), settings=FIND_FAILURE)


def test_machine_needs_make_service() -> None:
    """Forgetting make_service() says so."""
    with pytest.raises(NotImplementedError, match="must implement make_service"):
        run_state_machine_as_test(ServiceLifecycleMachine, settings=FIND_FAILURE)


async def test_stress_catches_a_service_that_never_stops() -> None:
    """The first stop over the bound fails the run, naming the task and the round."""
    with (
        trio.fail_after(10),
        pytest.raises(
            AssertionError, match=r"task \d+, round 0: stop did not complete within 0\.05 s"
        ),
    ):
        await stress_start_stop(NeverStops, tasks=3, rounds=5, stop_timeout=0.05)


async def test_stress_catches_a_start_that_never_completes() -> None:
    """A start over its bound is reported as such."""
    with (
        trio.fail_after(10),
        pytest.raises(AssertionError, match=r"round 0: start did not complete within 0\.05 s"),
    ):
        await stress_start_stop(HangsOnStart, tasks=1, rounds=2, start_timeout=0.05)


async def test_stress_catches_an_exception_escaping_the_run() -> None:
    """An error from a run fails the run, with the error as the cause."""
    with (
        trio.fail_after(10),
        pytest.raises(AssertionError, match=r"task \d+, round 0: a run raised") as info,
    ):
        await stress_start_stop(LeaksError, tasks=3, rounds=5)
    assert isinstance(info.value.__cause__, ExceptionGroup)


async def test_stress_catches_a_start_error() -> None:
    """Start errors other than AlreadyRunningError are failures."""
    with trio.fail_after(10), pytest.raises(AssertionError, match="start failed") as info:
        await stress_start_stop(FlakyStart, tasks=2, rounds=2)
    assert isinstance(info.value.__cause__, ConnectionError)


async def test_stress_returns_the_service() -> None:
    """A good service passes, and the helper hands it back for further checks."""
    with trio.fail_after(30):
        service = await stress_start_stop(Toy, tasks=4, rounds=20, stop_timeout=5.0)
    assert isinstance(service, Toy)
    assert service.stopped


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tasks": 0}, "tasks must be an int, 1 or more; got 0"),
        ({"rounds": 0}, "rounds must be an int, 1 or more; got 0"),
        (
            {"stop_timeout": 0.0},
            "stop_timeout must be a finite number of seconds, greater than 0; got 0.0",
        ),
        (
            {"start_timeout": -1.0},
            "start_timeout must be a finite number of seconds, greater than 0; got -1.0",
        ),
    ],
)
async def test_stress_rejects_bad_arguments(kwargs: dict[str, float], message: str) -> None:
    """Bad arguments name the argument and the value."""
    with pytest.raises(ValueError, match=message):
        await stress_start_stop(Toy, **kwargs)  # type: ignore[arg-type]


# -- plain Trio services ---------------------------------------------------------------


class Ticker:
    """A plain Trio service, restartable: counts ticks until stop() (the correct version)."""

    def __init__(self) -> None:
        self.ticks = 0
        self._stopping: trio.Event | None = None

    def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._stopping = stopping = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._tick)
                task_status.started()
                await stopping.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._stopping = None

    async def _tick(self) -> None:
        while True:
            self.ticks += 1
            await trio.sleep(0.001)


class StaleStop(Ticker):
    """Broken: a stop() while stopped is kept, and ends the next run at once."""

    def __init__(self) -> None:
        super().__init__()
        self._stopped_early = False

    def stop(self) -> None:
        self._stopped_early = self._stopping is None
        super().stop()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self._stopped_early:
            task_status.started()
            return
        await super().run(task_status=task_status)


class LateStopEvent(Ticker):
    """Broken: makes its stop event only after started(), losing a stop sent then."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        self._stopping = stopping = trio.Event()
        await stopping.wait()
        self._stopping = None


class LeakyTicker(Ticker):
    """Broken: ticks in a system task, which outlives the run."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        trio.lowlevel.spawn_system_task(self._tick, name="LeakyTicker.tick")
        await super().run(task_status=task_status)


class Forever:
    """A plain service with no stop(): it ends only by cancellation."""

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started(42)
        await trio.sleep_forever()


class OneShot:
    """A plain service that runs once: stop() closes its input for good."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[int](0)

    def stop(self) -> None:
        self._send.close()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self._receive:
            task_status.started()
            async for _ in self._receive:
                pass


class TickerMachine(ServiceLifecycleMachine[Ticker]):
    stop_timeout = 1.0
    ticker: type[Ticker] = Ticker

    def make_service(self) -> Ticker:
        return self.ticker()


TestTickerLifecycle = TickerMachine.TestCase
TestTickerLifecycle.settings = settings(max_examples=50, stateful_step_count=20, deadline=None)


class ForeverMachine(ServiceLifecycleMachine[Forever]):
    """A service stopped by cancellation: request_stop cancels its run."""

    def make_service(self) -> Forever:
        return Forever()

    def request_stop(self, service: Forever) -> None:
        self.cancel_run()


TestForeverLifecycle = ForeverMachine.TestCase
TestForeverLifecycle.settings = settings(max_examples=50, stateful_step_count=20, deadline=None)


class OneShotMachine(ServiceLifecycleMachine[OneShot]):
    restartable = False

    def make_service(self) -> OneShot:
        return OneShot()


TestOneShotLifecycle = OneShotMachine.TestCase
TestOneShotLifecycle.settings = settings(max_examples=50, stateful_step_count=20, deadline=None)


def _ticker_machine(ticker: type[Ticker]) -> type[TickerMachine]:
    return type(
        f"{ticker.__name__}Machine", (TickerMachine,), {"ticker": ticker, "stop_timeout": 0.2}
    )


def test_machine_catches_a_stale_stop_on_a_plain_service() -> None:
    """A stop while stopped must not end the next run."""
    with pytest.raises(AssertionError, match="returned although nobody asked it to stop"):
        run_state_machine_as_test(_ticker_machine(StaleStop), settings=FIND_FAILURE)


def test_machine_catches_a_stop_lost_during_start_on_a_plain_service() -> None:
    with pytest.raises(HangError, match=r"stop during start: .*did not stop within"):
        run_state_machine_as_test(_ticker_machine(LateStopEvent), settings=FIND_FAILURE)


def test_machine_catches_a_task_left_running_by_a_plain_service() -> None:
    with pytest.raises(
        TaskLeftRunningError, match=r"still running after the run ended: LeakyTicker\.tick"
    ):
        run_state_machine_as_test(_ticker_machine(LeakyTicker), settings=FIND_FAILURE)


def test_machine_says_how_to_stop_a_service_without_stop() -> None:
    class Unstoppable(ServiceLifecycleMachine[Forever]):
        def make_service(self) -> Forever:
            return Forever()

    with pytest.raises(TypeError, match=r"Forever has no stop\(\) method: override request_stop"):
        run_state_machine_as_test(Unstoppable, settings=FIND_FAILURE)


async def test_stress_on_a_plain_service() -> None:
    """Stops after start, from inside started(), and cancellation: all end the run."""
    with trio.fail_after(30):
        ticker = await stress_start_stop(Ticker, rounds=30, stop_timeout=5.0)
    assert ticker.ticks > 0
    assert ticker._stopping is None


async def test_stress_on_a_service_stopped_by_cancellation() -> None:
    with trio.fail_after(30):
        service = await stress_start_stop(Forever, stop=None, rounds=30)
    assert isinstance(service, Forever)


async def test_stress_with_a_stop_of_its_own() -> None:
    """A service stopped some other way: here, by closing its input."""
    stops: list[OneShot] = []

    def stop(service: OneShot) -> None:
        stops.append(service)
        service.stop()

    with trio.fail_after(30):
        await stress_start_stop(OneShot, stop=stop, rounds=1)
    assert len(stops) == 1


async def test_stress_catches_a_stop_lost_as_a_plain_service_starts() -> None:
    with (
        trio.fail_after(10),
        pytest.raises(
            HangError,
            match=(
                r"task 0, round 1: stop did not complete within 0\.05 s "
                r"\(ending by stop as it starts\)"
            ),
        ),
    ):
        await stress_start_stop(LateStopEvent, rounds=3, stop_timeout=0.05)


async def test_stress_says_how_to_stop_a_service_without_stop() -> None:
    with pytest.raises(TypeError, match=r"Forever has no stop\(\) method: pass stop="):
        await stress_start_stop(Forever)
