"""A batching service that owns its output channel, and the state machine that checks it.

Run with pytest (pytest-trio for the async parts); rivertrio's own test suite runs
this file as it is.
"""

from __future__ import annotations

import pytest
import trio
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from rivertrio.testing import LostItemError, PipelineMachine, SendOnClosedChannelError


# --8<-- [start:service]
class BatcherStopped(Exception):
    """The batcher is stopping or stopped: the item was not taken."""


class Batcher:
    """Groups items into batches of up to ``size`` and sends each batch out.

    ``batches = await nursery.start(batcher.run)`` starts it; ``batches`` is a
    channel the batcher owns and closes when its run ends. Once
    ``await batcher.submit(item)`` returns, the item comes out in exactly one
    batch, even if the run is cancelled. ``stop()`` ends the run.
    """

    def __init__(self, size: int = 3) -> None:
        self._size = size
        self._input, self._taken = trio.open_memory_channel[int](0)

    async def submit(self, item: int) -> None:
        try:
            await self._input.send(item)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise BatcherStopped("the batcher is stopped") from None

    def stop(self) -> None:
        self._input.close()  # fetching ends once the batcher has taken what it was handed

    async def run(
        self,
        *,
        task_status: trio.TaskStatus[
            trio.MemoryReceiveChannel[list[int]]
        ] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self._out, batches = trio.open_memory_channel[list[int]](0)
        # Shutdown by closing what the run owns: submitters blocked on a run that is
        # over are refused, and readers see the end of the batches.
        async with self._taken, self._out:
            task_status.started(batches)
            batch: list[int] = []
            try:
                async for item in self._taken:  # fetch: until stop() closes the input
                    batch.append(item)  # accepted: submit() returns now
                    while len(batch) < self._size:  # work: add what is already waiting
                        try:
                            batch.append(self._taken.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    await self._out.send(batch)  # may wait for a reader
                    batch = []
            finally:
                await self._complete(batch)

    async def _complete(self, batch: list[int]) -> None:
        # Completion: what was accepted goes out even when the run is cancelled,
        # shielded so the cancellation cannot interrupt it, and bounded.
        with trio.move_on_after(5, shield=True):
            if batch:
                await self._out.send(batch)


# --8<-- [end:service]


# --8<-- [start:machine]
class BatcherMachine(PipelineMachine[Batcher]):
    refusals = (BatcherStopped,)  # a submit that raises this did not take the item
    restartable = False  # stop() closes the input for good: each start makes a new one
    step_timeout = 2.0

    def make_service(self) -> Batcher:
        return Batcher(size=3)

    async def feed_item(self, service: Batcher, item: int) -> None:
        await service.submit(item)  # returned: accepted

    def items_in(self, received: list[int]) -> list[int]:
        return received  # a batch holds several items


TestBatcher = BatcherMachine.TestCase
# --8<-- [end:machine]


# --8<-- [start:bugs]
class NoShieldBatcher(Batcher):
    """Bug: the completion is not shielded, so a cancelled run drops its batch."""

    async def _complete(self, batch: list[int]) -> None:
        with trio.move_on_after(5):
            if batch:
                await self._out.send(batch)


class EarlyCloseBatcher(Batcher):
    """Bug: stop() closes the output at once, before the last batch went out."""

    def stop(self) -> None:
        super().stop()
        self._out.close()


# --8<-- [end:bugs]


def falsifying_steps(failure: BaseException) -> list[str]:
    """The steps Hypothesis printed for a failure, without the machine's set-up and teardown."""
    notes: list[str] = getattr(failure, "__notes__", [])
    return [
        n.removeprefix("state.") for n in notes if n.startswith("state.") and "teardown" not in n
    ]


# --8<-- [start:caught]
# The same examples on every run, and no failure database to replay from.
FIND_IT = settings(max_examples=200, stateful_step_count=20, derandomize=True, database=None)


def machine_for(service: type[Batcher]) -> type[BatcherMachine]:
    class Machine(BatcherMachine):
        def make_service(self) -> Batcher:
            return service(size=3)

    return Machine


def test_a_missing_shield_is_caught() -> None:
    with pytest.raises(LostItemError, match=r"item\(s\) 0 accepted") as caught:
        run_state_machine_as_test(machine_for(NoShieldBatcher), settings=FIND_IT)
    # An item waits in a batch nobody has read yet when the program shuts down.
    assert falsifying_steps(caught.value) == [
        "start()",
        "feed(count=1)",
        "cancel_enclosing_scope()",
    ]


def test_an_output_closed_too_early_is_caught() -> None:
    with pytest.raises(SendOnClosedChannelError, match="ClosedResourceError") as caught:
        run_state_machine_as_test(machine_for(EarlyCloseBatcher), settings=FIND_IT)
    # An item is taken just as stop() closes the output: its batch has nowhere to go.
    assert falsifying_steps(caught.value) == [
        "start()",
        "stop_while_feeding(count=1, passes=1)",
    ]


# --8<-- [end:caught]


# --8<-- [start:use]
async def test_batches_come_out() -> None:
    batcher = Batcher(size=2)
    async with trio.open_nursery() as nursery:
        batches = await nursery.start(batcher.run)
        nursery.start_soon(batcher.submit, 1)
        nursery.start_soon(batcher.submit, 2)
        async with batches:
            first = await batches.receive()
            batcher.stop()
            rest = [batch async for batch in batches]  # ends when the run closes its output
    assert (sorted(first), rest) == ([1, 2], [])


# --8<-- [end:use]
