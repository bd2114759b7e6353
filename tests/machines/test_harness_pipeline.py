"""rivertrio.testing.PipelineMachine passes a correct service and finds each planted bug.

Every kind of failure the machine claims to find has a service here with that bug
planted; each must be found, reported as its own exception class, and shrunk to
the shortest story that shows it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import trio
from hypothesis import Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from rivertrio.testing import (
    DuplicateItemError,
    HangError,
    LostItemError,
    PipelineMachine,
    SendOnClosedChannelError,
    ServiceCheckError,
    TaskLeftRunningError,
    UncaughtError,
    UnexpectedItemError,
)

# Deterministic, one failure reported, and no example database: a stored failure
# would be replayed into the next run of the machines that must pass.
FIND = settings(
    max_examples=300,
    stateful_step_count=20,
    database=None,
    derandomize=True,
    deadline=None,
    report_multiple_bugs=False,
)
PASS = settings(
    max_examples=100, stateful_step_count=20, database=None, derandomize=True, deadline=None
)

Status = trio.TaskStatus[trio.MemoryReceiveChannel[int]]


class Stopped(Exception):
    """The relay refused an item: it is stopping or stopped."""


class Relay:
    """Forwards each item it takes to an output channel it owns (the correct version).

    Fetch: read the input until ``stop()`` closes it. Completion: items taken but not
    yet sent go out shielded, also when the run is cancelled. Closing: the run owns
    the output and the input's receiving end, and closes both when it ends.
    """

    def __init__(self) -> None:
        self._input, self._taken = trio.open_memory_channel[int](0)
        self.pending: list[int] = []
        self.stopping = False

    async def submit(self, item: int) -> None:
        try:
            await self._input.send(item)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise Stopped from None

    def stop(self) -> None:
        self.stopping = True
        self._input.close()

    async def run(self, *, task_status: Status = trio.TASK_STATUS_IGNORED) -> None:
        self._out, output = trio.open_memory_channel[int](0)
        async with contextlib.AsyncExitStack() as owned:
            for channel in self._owned():
                await owned.enter_async_context(channel)
            task_status.started(output)
            try:
                async for item in self._taken:
                    self._take(item)
                    await self._out.send(item)
                    self._sent(item)
            finally:
                await self._complete()

    def _owned(self) -> list[trio.abc.AsyncResource]:
        return [self._taken, self._out]

    def _take(self, item: int) -> None:
        self.pending.append(item)

    def _sent(self, item: int) -> None:
        self.pending.remove(item)

    async def _complete(self) -> None:
        with trio.move_on_after(5, shield=True):
            for item in list(self.pending):
                await self._out.send(item)
                self.pending.remove(item)


class LosesItems(Relay):
    """Planted bug: the completion is not shielded, so cancellation drops what is pending."""

    async def _complete(self) -> None:
        with trio.move_on_after(5):
            for item in list(self.pending):
                await self._out.send(item)
                self.pending.remove(item)


class DuplicatesItems(Relay):
    """Planted bug: forgets that an item went out, so the completion sends it again."""

    def _sent(self, item: int) -> None:
        pass


class ClosesEarly(Relay):
    """Planted bug: stop() closes the output at once, while an item may be on its way."""

    def stop(self) -> None:
        super().stop()
        self._out.close()


class LosesStop(Relay):
    """Planted bug: stop() only sets a flag, which the run never looks at while it waits."""

    def stop(self) -> None:
        self.stopping = True


class LeavesTask(Relay):
    """Planted bug: starts a reporter as a system task, which outlives the run."""

    async def run(self, *, task_status: Status = trio.TASK_STATUS_IGNORED) -> None:
        trio.lowlevel.spawn_system_task(trio.sleep_forever, name="LeavesTask.reporter")
        await super().run(task_status=task_status)


class RefusesTakenItems(Relay):
    """Planted bug: a submit that lands as stop() is called says "refused", yet was taken."""

    async def submit(self, item: int) -> None:
        await super().submit(item)
        if self.stopping:
            raise Stopped


class CrashesOnTwo(Relay):
    """Planted bug: the run raises on one particular item."""

    def _take(self, item: int) -> None:
        if item == 2:
            raise ValueError("two")
        super()._take(item)


class KeepsOutputOpen(Relay):
    """Planted bug: the output is never closed, so a reader waits for it forever."""

    def _owned(self) -> list[trio.abc.AsyncResource]:
        return [self._taken]


class KeepsInputOpen(Relay):
    """Planted bug: the input is never closed, so submitters blocked on a dead run hang."""

    def _owned(self) -> list[trio.abc.AsyncResource]:
        return [self._out]


class EndsByItself(Relay):
    """Planted bug: the run returns as soon as it has started."""

    async def run(self, *, task_status: Status = trio.TASK_STATUS_IGNORED) -> None:
        self._out, output = trio.open_memory_channel[int](0)
        async with self._out:
            task_status.started(output)


class RelayMachine(PipelineMachine[Relay]):
    refusals = (Stopped,)
    restartable = False
    step_timeout = 2.0
    relay: type[Relay] = Relay

    def make_service(self) -> Relay:
        return self.relay()

    async def feed_item(self, service: Relay, item: int) -> None:
        await service.submit(item)


def _machine(relay: type[Relay], *, virtual_time: bool = False) -> type[RelayMachine]:
    attributes = {"relay": relay, "virtual_time": virtual_time}
    return type(f"{relay.__name__}Machine", (RelayMachine,), attributes)


def story(failure: BaseException) -> list[str]:
    """The steps Hypothesis printed for a failure, without the teardown."""
    notes: list[str] = getattr(failure, "__notes__", [])
    return [n.removeprefix("state.") for n in notes if n.startswith("state.")][:-1]


def test_a_correct_relay_passes() -> None:
    run_state_machine_as_test(RelayMachine, settings=PASS)


#: Each planted bug, whether it runs on virtual time (the hangs: found at once), what
#: must report it, and how many steps the story it shrinks to may have.
PLANTED: list[tuple[type[Relay], bool, type[ServiceCheckError], str, int]] = [
    (
        LosesItems,
        False,
        LostItemError,
        r"item\(s\) 0 accepted \(the feed returned\) but never came out",
        3,
    ),
    (DuplicatesItems, False, DuplicateItemError, r"item 0 came out 2 times", 3),
    (ClosesEarly, False, SendOnClosedChannelError, r"ClosedResourceError\(\) escaped the run", 3),
    (LosesStop, True, HangError, r"hung: stop: the run did not return within 2\.0 s", 2),
    (
        LeavesTask,
        False,
        TaskLeftRunningError,
        r"still running after the run ended: LeavesTask\.reporter",
        2,
    ),
    (
        RefusesTakenItems,
        False,
        UnexpectedItemError,
        r"item 0 came out, but its feed was refused",
        2,
    ),
    (CrashesOnTwo, False, UncaughtError, r"an exception escaped the run: .*ValueError\('two'\)", 4),
    (KeepsOutputOpen, False, HangError, "the run returned without closing its output channel", 2),
    (
        KeepsInputOpen,
        True,
        HangError,
        r"the run returned, but feeding item\(s\) \d was still blocked",
        3,
    ),
    (EndsByItself, False, ServiceCheckError, "run 1 returned although nobody asked it to stop", 1),
]


@pytest.mark.parametrize(
    ("relay", "virtual_time", "failure", "message", "steps"),
    PLANTED,
    ids=[relay.__name__ for relay, *_ in PLANTED],
)
def test_a_planted_bug_is_found(
    relay: type[Relay],
    virtual_time: bool,
    failure: type[ServiceCheckError],
    message: str,
    steps: int,
) -> None:
    with pytest.raises(failure, match=message) as caught:
        run_state_machine_as_test(_machine(relay, virtual_time=virtual_time), settings=FIND)
    assert type(caught.value) is failure
    told = story(caught.value)
    assert told[0] == "start()"
    assert len(told) <= steps, told


def test_a_hang_on_real_time_is_found_within_the_step_timeout() -> None:
    machine = _machine(LosesStop)
    machine.step_timeout = 0.2
    find_once = settings(FIND, phases=[Phase.generate])
    with pytest.raises(HangError, match=r"did not return within 0\.2 s"):
        run_state_machine_as_test(machine, settings=find_once)


def test_virtual_time_makes_timers_free() -> None:
    """Feeds that each take a second pass on virtual time, in no real time to speak of."""

    class SlowSubmit(Relay):
        async def submit(self, item: int) -> None:
            await trio.sleep(1)
            await super().submit(item)

    run_state_machine_as_test(_machine(SlowSubmit, virtual_time=True), settings=PASS)


def test_the_default_output_must_be_a_receive_channel() -> None:
    class PortOnly(Relay):
        async def run(
            self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
        ) -> None:
            task_status.started(8080)
            await trio.sleep_forever()

    with pytest.raises(TypeError, match=r"passed 8080 to task_status\.started\(\), not a receive"):
        run_state_machine_as_test(_machine(PortOnly), settings=FIND)


def test_feed_item_is_required() -> None:
    class NoFeed(PipelineMachine[Relay]):
        def make_service(self) -> Relay:
            return Relay()

    with pytest.raises(NotImplementedError, match="NoFeed must implement feed_item"):
        NoFeed()


def test_a_bad_step_timeout_is_refused() -> None:
    machine = _machine(Relay)
    machine.step_timeout = 0.0
    with pytest.raises(ValueError, match="step_timeout must be a finite number of seconds"):
        machine()
