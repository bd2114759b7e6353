"""The service lifecycle contract on toy services; no database.

Stop before start returns at once, a second stop does nothing, a failed start can
be retried, waiting for "started" before the start is legal, many tasks starting
and stopping one service neither raise nor deadlock, and a group whose second
service fails to start stops the first and raises the error.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from rivertrio import AlreadyRunningError
from rivertrio._service import Service, start_all, stop_all
from rivertrio.testing import stress_start_stop

# Hang guard for every wait in this module; nothing here should take more than a blink.
HANG = 5.0


class Toy(Service):
    """Starts after an optional gate, fails its first ``fail_starts`` starts, runs until stopped.

    It checkpoints while starting and while stopping so that concurrent callers interleave.
    """

    def __init__(self, *, fail_starts: int = 0, start_gate: trio.Event | None = None) -> None:
        super().__init__()
        self.fail_starts = fail_starts
        self.start_gate = start_gate
        self.start_attempts = 0
        self.runs = 0
        self.crash_after_start: Exception | None = None

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        self.start_attempts += 1
        await trio.lowlevel.checkpoint()
        if self.start_gate is not None:
            await self.start_gate.wait()
        if self.fail_starts > 0:
            self.fail_starts -= 1
            raise ConnectionError("toy: database unreachable")
        self.runs += 1
        task_status.started()
        if self.crash_after_start is not None:
            raise self.crash_after_start
        await self._stop_event.wait()
        await trio.lowlevel.checkpoint()


async def test_stop_never_started_returns_at_once() -> None:
    """stop() on a never-started service is a no-op; a later start works."""
    service = Toy()
    assert service.stopped
    assert not service.started
    service.stop()
    service.stop()
    with trio.fail_after(HANG):
        await service.wait_stopped()
        await stop_all(service)
    assert service.stopped
    assert service.start_attempts == 0

    # A stop before start does not latch: the next run is not stopped by it.
    async with trio.open_nursery() as nursery:
        with trio.fail_after(HANG):
            await nursery.start(service.run)
        await trio.testing.wait_all_tasks_blocked()
        assert service.started
        assert not service.stopped
        service.stop()


async def test_second_stop_is_a_no_op() -> None:
    """A second stop(), and a stop after stopped, change nothing."""
    service = Toy()
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            service.stop()
            service.stop()
            await service.wait_stopped()
            assert service.stopped
            service.stop()
            await service.wait_stopped()
    assert service.stopped
    assert not service.started
    assert service.runs == 1


async def test_failed_start_can_be_started_again() -> None:
    """The start error comes out of nursery.start as is; a retry works."""
    service = Toy(fail_starts=1)
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            with pytest.raises(ConnectionError, match="database unreachable"):
                await nursery.start(service.run)
            assert service.stopped
            assert not service.started
            service.stop()  # legal after a failed start
            await service.wait_stopped()

            await nursery.start(service.run)
            assert service.started
            assert service.start_attempts == 2
            service.stop()
            await service.wait_stopped()
    assert service.stopped


async def test_wait_started_before_start_fires_when_it_starts() -> None:
    """wait_started() is legal before start; a failed start does not wake it."""
    service = Toy(fail_starts=1)
    woken = trio.Event()

    async def waiter() -> None:
        await service.wait_started()
        woken.set()

    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert not woken.is_set()

            with pytest.raises(ConnectionError):
                await nursery.start(service.run)
            await trio.testing.wait_all_tasks_blocked()
            assert not woken.is_set()

            await nursery.start(service.run)
            await woken.wait()
            assert service.started
            await service.wait_started()  # started already: returns at once
            service.stop()


async def test_wait_started_after_a_restart_waits_for_the_new_start() -> None:
    """A run's started state does not leak into the next one."""
    service = Toy()
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            service.stop()
            await service.wait_stopped()

            woken = trio.Event()

            async def waiter() -> None:
                await service.wait_started()
                woken.set()

            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert not woken.is_set()
            await nursery.start(service.run)
            await woken.wait()
            service.stop()


async def test_stress_ten_tasks_fifty_rounds() -> None:
    """10 tasks x 50 start/stop rounds, no error, no deadlock, stops within 5 s."""
    with trio.fail_after(60):
        service = await stress_start_stop(Toy, tasks=10, rounds=50, stop_timeout=5.0)
    assert service.stopped
    assert 1 <= service.runs <= 10 * 50
    assert service.runs == service.start_attempts


async def test_start_all_stops_the_started_ones_when_one_fails() -> None:
    """Of three services the second fails to start: the first is stopped, the third never tried."""
    first, second, third = Toy(), Toy(fail_starts=1), Toy()
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            with pytest.raises(ConnectionError, match="database unreachable"):
                await start_all(nursery, first, second, third)
            assert first.runs == 1
            assert first.stopped
            assert second.stopped
            assert third.start_attempts == 0

            # Once the cause is gone the group starts, and stop_all stops it.
            await start_all(nursery, first, second, third)
            assert all(s.started for s in (first, second, third))
            await stop_all(first, second, third)
            assert all(s.stopped for s in (first, second, third))


async def test_start_all_cancelled_midway_stops_the_started_ones() -> None:
    """All or none also when the caller is cancelled while a later service starts."""
    gate = trio.Event()
    first, second = Toy(), Toy(start_gate=gate)
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()
            nursery.start_soon(_cancel_when_blocked, scope)
            with scope:
                await start_all(nursery, first, second)
            assert scope.cancelled_caught
            assert first.runs == 1
            assert first.stopped
            assert second.stopped
            assert second.runs == 0


async def _cancel_when_blocked(scope: trio.CancelScope) -> None:
    await trio.testing.wait_all_tasks_blocked()
    scope.cancel()


async def test_stop_while_starting_is_honoured_once_started() -> None:
    """A stop that arrives during start ends the run right after it has started."""
    gate = trio.Event()
    service = Toy(start_gate=gate)
    start_returned = trio.Event()

    async def starter(nursery: trio.Nursery) -> None:
        await nursery.start(service.run)
        start_returned.set()

    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(starter, nursery)
            await trio.testing.wait_all_tasks_blocked()
            assert not service.started  # starting: neither started nor stopped
            assert not service.stopped
            service.stop()
            gate.set()
            await service.wait_stopped()
            await start_returned.wait()
    assert service.runs == 1
    assert service.stopped


async def test_second_concurrent_run_raises_already_running() -> None:
    """run() while a run is in progress raises before started(); the first run is untouched."""
    service = Toy()
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            with pytest.raises(AlreadyRunningError, match="already running") as info:
                await nursery.start(service.run)
            assert isinstance(info.value, RuntimeError)
            assert service.started
            assert service.start_attempts == 1
            service.stop()


async def test_restart_gets_a_fresh_stop_request() -> None:
    """The stop of the first run does not stop the second one."""
    service = Toy()
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            for expected_runs in (1, 2, 3):
                await nursery.start(service.run)
                await trio.testing.wait_all_tasks_blocked()
                assert service.started, f"run {expected_runs} stopped without a stop()"
                assert service.runs == expected_runs
                service.stop()
                await service.wait_stopped()


async def test_cancelling_the_enclosing_scope_stops_it_cleanly() -> None:
    """Cancellation ends the run without an error; the service can run again."""
    service = Toy()
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            assert service.started
            nursery.cancel_scope.cancel()
        assert service.stopped
        assert not service.started

        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            assert service.started
            service.stop()
    assert service.runs == 2


async def test_error_after_start_propagates_and_leaves_it_restartable() -> None:
    """A crash after started() goes to the nursery; the service is stopped and can rerun."""
    service = Toy()
    service.crash_after_start = ValueError("toy crash")
    with trio.fail_after(HANG):
        with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="toy crash")):
            async with trio.open_nursery() as nursery:
                await nursery.start(service.run)
        assert service.stopped

        service.crash_after_start = None
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            assert service.started
            service.stop()


async def test_run_without_nursery_start() -> None:
    """Awaiting run() directly works: started() is then ignored."""
    service = Toy()
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(service.run)
            await service.wait_started()
            assert service.started
            service.stop()
            await service.wait_stopped()
    assert service.stopped


def test_stop_event_outside_a_run_is_an_error() -> None:
    """The per-run stop event only exists while a run is in progress."""
    service = Toy()
    assert not service._stop_requested
    with pytest.raises(RuntimeError, match="Toy is not running"):
        _ = service._stop_event


def test_service_without_serve_cannot_be_created() -> None:
    """_serve is abstract: forgetting it fails at construction, not at start."""

    class Incomplete(Service):
        pass

    with pytest.raises(TypeError, match="_serve"):
        Incomplete()  # type: ignore[abstract]
