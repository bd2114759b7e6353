"""The subscription manager behind the completer.

Every persisted outcome is delivered, then the channels close; kinds filter;
bad arguments raise at the call; ``drop`` and ``block`` overflow; and no event
is lost when the scope around the client is cancelled while jobs still report.
"""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from rivertrio._completer import Completer, CompletionItem
from rivertrio._driver import Driver
from rivertrio._events import Event, EventKind, OutcomeKind, QueueEvent
from rivertrio._subscriptions import SubscriptionManager
from support.completion import (
    ALL_KINDS,
    FAST,
    Pipeline,
    insert_running,
    outcome,
    read_all,
    send_all,
    states,
)


async def subscriber(
    manager: SubscriptionManager,
    kinds: tuple[EventKind, ...],
    into: list[Event],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A consumer that subscribes (started = registered) and reads until the run ends."""
    async with manager.subscribe(*kinds) as events:
        task_status.started()
        await read_all(events, into)


class Witness:
    """A lossless subscriber reading continuously; tests wait on how much it has seen."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = trio.Event()

    async def run(
        self, manager: SubscriptionManager, *, task_status: trio.TaskStatus[None]
    ) -> None:
        async with manager.subscribe(*ALL_KINDS) as events:
            task_status.started()
            async for event in events:
                self.events.append(event)
                self._changed.set()
                self._changed = trio.Event()

    async def wait_for(self, count: int) -> None:
        """Wait until it has received ``count`` events."""
        while len(self.events) < count:
            await self._changed.wait()


def job_ids(events: list[Event]) -> list[int]:
    return [e.job.id for e in events if e.job is not None]


# -- 77: N outcomes then stop -------------------------------------------------------------


async def test_n_outcomes_then_stop_deliver_exactly_n_then_close(driver: Driver) -> None:
    rows = await insert_running(driver, 25)
    pipeline = Pipeline(Completer(driver, batch_size=7, **FAST), SubscriptionManager())
    received: list[Event] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async with pipeline.manager.subscribe(*ALL_KINDS) as events:
                await nursery.start(pipeline.run)
                send_all(
                    pipeline.completer.input, [outcome(r, OutcomeKind.COMPLETED) for r in rows]
                )
                pipeline.stop()
                # Ends only because the run closed the channel after the last event.
                await read_all(events, received)
            await pipeline.wait_stopped()

    assert job_ids(received) == [r.id for r in rows]
    assert pipeline.manager.events_total == 25
    assert pipeline.manager.counts == {EventKind.JOB_COMPLETED: 25}
    assert pipeline.manager.subscriptions == []


# -- 78: only the kinds asked for, in order, with stats ----------------------------------------


async def test_subscription_receives_only_its_kinds_in_order_with_stats(driver: Driver) -> None:
    rows = await insert_running(driver, 6)
    kinds = [
        OutcomeKind.COMPLETED,
        OutcomeKind.SNOOZED,
        OutcomeKind.FAILED,
        OutcomeKind.CANCELLED,
        OutcomeKind.COMPLETED,
        OutcomeKind.INTERRUPTED,
    ]
    pipeline = Pipeline(Completer(driver, **FAST), SubscriptionManager())
    received: list[Event] = []
    with trio.fail_after(10):
        async with (
            trio.open_nursery() as nursery,
            pipeline.manager.subscribe(
                EventKind.JOB_COMPLETED, "job_failed", EventKind.QUEUE_PAUSED
            ) as events,
        ):
            await nursery.start(pipeline.run)
            items: list[CompletionItem] = [
                outcome(r, k, delay=3600.0, queue_wait=0.1 * i, run=0.2 * i)
                for i, (r, k) in enumerate(zip(rows, kinds, strict=True))
            ]
            items.insert(2, QueueEvent(EventKind.QUEUE_PAUSED, "default"))
            items.insert(4, QueueEvent(EventKind.QUEUE_RESUMED, "default"))
            send_all(pipeline.completer.input, items)
            pipeline.stop()
            await read_all(events, received)

    assert [(e.kind, e.job.id if e.job else e.queue) for e in received] == [
        (EventKind.JOB_COMPLETED, rows[0].id),
        (EventKind.QUEUE_PAUSED, "default"),
        (EventKind.JOB_FAILED, rows[2].id),
        (EventKind.JOB_COMPLETED, rows[4].id),
    ]
    for event, i in zip([received[0], received[2], received[3]], [0, 2, 4], strict=True):
        assert event.stats is not None
        assert event.stats.queue_wait_duration == pytest.approx(0.1 * i)
        assert event.stats.run_duration == pytest.approx(0.2 * i)
        assert event.stats.complete_duration >= 0
    assert received[1].stats is None
    assert pipeline.manager.counts[EventKind.JOB_SNOOZED] == 1
    assert pipeline.manager.counts[EventKind.QUEUE_RESUMED] == 1


# -- 80: drop versus block ---------------------------------------------------------------------


async def test_drop_with_full_buffer_drops_counts_and_logs(
    driver: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    rows = await insert_running(driver, 2)
    pipeline = Pipeline(Completer(driver, **FAST), SubscriptionManager())
    received: list[Event] = []
    with trio.fail_after(10), caplog.at_level(logging.WARNING, logger="rivertrio.subscriptions"):
        async with trio.open_nursery() as nursery:
            context = pipeline.manager.subscribe(EventKind.JOB_COMPLETED, buffer=1, overflow="drop")
            async with context as events:
                await nursery.start(pipeline.run)
                send_all(
                    pipeline.completer.input, [outcome(r, OutcomeKind.COMPLETED) for r in rows]
                )
                pipeline.stop()
                await pipeline.wait_stopped()  # both events delivered or dropped, unread
                await read_all(events, received)

    assert job_ids(received) == [rows[0].id]
    assert context.subscription is not None
    assert (context.subscription.delivered, context.subscription.dropped) == (1, 1)
    assert pipeline.manager.dropped == 1
    [record] = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert "buffer of 1 full: dropped 1 events" in record.getMessage()


async def test_block_with_full_buffer_drops_nothing(driver: Driver) -> None:
    rows = await insert_running(driver, 3)
    pipeline = Pipeline(Completer(driver, **FAST), SubscriptionManager())
    received: list[Event] = []
    witness = Witness()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            # Registered first, so it gets each event just before the subscriber under test.
            await nursery.start(witness.run, pipeline.manager)
            context = pipeline.manager.subscribe(EventKind.JOB_COMPLETED, buffer=1)
            async with context as events:
                await nursery.start(pipeline.run)
                send_all(
                    pipeline.completer.input, [outcome(r, OutcomeKind.COMPLETED) for r in rows]
                )
                pipeline.stop()
                # Event 1 fills the buffer; the manager then blocks on event 2, so the
                # run cannot end yet (nothing but memory channels past this point).
                await witness.wait_for(2)
                await trio.testing.wait_all_tasks_blocked()
                assert not pipeline.stopped
                assert events.statistics().tasks_waiting_send == 1
                await read_all(events, received)

    assert job_ids(received) == [r.id for r in rows]
    assert context.subscription is not None
    assert context.subscription.dropped == 0
    assert pipeline.manager.dropped == 0


# -- 81: leaving the block or the run ending closes the channel ------------------------------


async def test_leaving_the_block_removes_it_and_unblocks_a_send(driver: Driver) -> None:
    rows = await insert_running(driver, 3)
    pipeline = Pipeline(Completer(driver, **FAST), SubscriptionManager())
    witness = Witness()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(witness.run, pipeline.manager)
            async with pipeline.manager.subscribe(EventKind.JOB_COMPLETED, buffer=0) as stalled:
                await nursery.start(pipeline.run)
                pipeline.completer.input.send_nowait(outcome(rows[0], OutcomeKind.COMPLETED))
                # Nobody reads `stalled` (buffer 0): once the witness has the event, the
                # manager goes straight on to block on it.
                await witness.wait_for(1)
                await trio.testing.wait_all_tasks_blocked()
                assert stalled.statistics().tasks_waiting_send == 1
                assert len(pipeline.manager.subscriptions) == 2
            # Left: removed at once, and the blocked send ended without error.
            assert len(pipeline.manager.subscriptions) == 1
            send_all(
                pipeline.completer.input, [outcome(r, OutcomeKind.COMPLETED) for r in rows[1:]]
            )
            pipeline.stop()
            await pipeline.wait_stopped()

    assert job_ids(witness.events) == [r.id for r in rows]
    assert set((await states(driver, [r.id for r in rows])).values()) == {"completed"}


# -- the caller's scope cancelled mid-stream ----------------------------------------------------


async def test_cancelling_the_client_scope_while_outcomes_arrive_loses_nothing(
    driver: Driver,
) -> None:
    """The caller's scope is cancelled while job tasks are still sending.

    Job tasks hold producer clones; cancelled, they report an interruption with
    send_nowait (not a checkpoint, so it works in a cancelled scope) or, with the
    backlog full, a shielded send. Every outcome must persist and reach the block
    subscriber, and no channel may be used after it closed.
    """
    rows = await insert_running(driver, 60)
    pipeline = Pipeline(Completer(driver, backlog=5, batch_size=8, **FAST), SubscriptionManager())
    received: list[Event] = []
    errors: list[BaseException] = []
    finished_normally = 0
    all_running = trio.Event()
    running = 0

    async def job_task(row_index: int, clone: trio.MemorySendChannel[CompletionItem]) -> None:
        nonlocal finished_normally, running
        row = rows[row_index]
        running += 1
        if running == len(rows):
            all_running.set()
        try:
            if row_index % 2 == 0:
                # Half of the jobs finish before the cancellation and send normally.
                await clone.send(outcome(row, OutcomeKind.COMPLETED))
                finished_normally += 1
                return
            await trio.sleep_forever()
        except trio.Cancelled:
            item = outcome(row, OutcomeKind.INTERRUPTED)
            try:
                clone.send_nowait(item)
            except trio.WouldBlock:
                with trio.move_on_after(5, shield=True):
                    await clone.send(item)
            raise
        except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
            errors.append(exc)

    async def producer(start: int, stop: int, *, task_status: trio.TaskStatus[None]) -> None:
        clone = pipeline.completer.input.clone()
        try:
            async with trio.open_nursery() as jobs:
                for i in range(start, stop):
                    jobs.start_soon(job_task, i, clone)
                task_status.started()
        finally:
            clone.close()  # not a checkpoint: done even when cancelled

    with trio.fail_after(15):
        async with trio.open_nursery() as outer:
            # The user's consumer lives outside the cancelled scope; it ends when the
            # run closes its channel, after the last event.
            await outer.start(subscriber, pipeline.manager, ALL_KINDS, received)
            with trio.CancelScope() as client_scope:
                async with trio.open_nursery() as client:
                    await client.start(pipeline.run)
                    for start in range(0, len(rows), 20):
                        await client.start(producer, start, start + 20)
                    await all_running.wait()
                    client_scope.cancel()
            assert client_scope.cancelled_caught

    assert errors == []
    assert sorted(job_ids(received)) == sorted(r.id for r in rows)
    stored = await states(driver, [r.id for r in rows])
    assert "running" not in stored.values()
    completed = sum(e.kind is EventKind.JOB_COMPLETED for e in received)
    interrupted = sum(e.kind is EventKind.JOB_INTERRUPTED for e in received)
    assert completed == finished_normally
    assert completed + interrupted == len(rows)
    assert interrupted >= len(rows) // 2
    assert pipeline.completer.counters.events_undeliverable == 0
    assert pipeline.manager.subscriptions == []
