"""The subscription manager fed by hand, without a completer or a database.

Bad subscribe arguments raise at the call; a run ends every subscription it
served; the manager delivers until its input ends, whatever cancels around it.
"""

from __future__ import annotations

import pytest
import trio

from rivertrio import InvalidInputError
from rivertrio._events import Event, EventBatch, EventKind, Outcome, OutcomeKind, QueueEvent
from rivertrio._subscriptions import SubscriptionManager
from support.common import running_row
from support.completion import ALL_KINDS, read_all


@pytest.mark.parametrize(
    ("kinds", "kwargs", "message"),
    [
        (("job_exploded",), {}, "unknown event kind 'job_exploded'"),
        ((EventKind.JOB_COMPLETED, 42), {}, "unknown event kind 42"),
        ((), {}, "at least one event kind"),
        ((EventKind.JOB_COMPLETED,), {"buffer": -1}, "buffer must be an int, 0 or more; got -1"),
        ((EventKind.JOB_COMPLETED,), {"buffer": 1.5}, "buffer must be an int, 0 or more"),
        ((EventKind.JOB_COMPLETED,), {"buffer": True}, "buffer must be an int, 0 or more"),
        ((EventKind.JOB_COMPLETED,), {"overflow": "spill"}, "unknown overflow 'spill'"),
    ],
)
def test_bad_subscribe_arguments_raise_at_the_call(
    kinds: tuple[object, ...], kwargs: dict[str, object], message: str
) -> None:
    manager = SubscriptionManager()
    with pytest.raises(InvalidInputError, match=message):
        manager.subscribe(*kinds, **kwargs)  # type: ignore[arg-type]
    assert manager.subscriptions == []


async def test_kind_strings_and_a_zero_buffer_are_accepted() -> None:
    manager = SubscriptionManager()
    async with manager.subscribe("job_completed", buffer=0, overflow="drop"):
        [sub] = manager.subscriptions
        assert sub.kinds == {EventKind.JOB_COMPLETED}
        assert (sub.buffer, sub.overflow) == (0, "drop")
    assert manager.subscriptions == []


async def test_run_ending_closes_every_subscription_channel() -> None:
    manager = SubscriptionManager()
    send, receive = trio.open_memory_channel[list[Event]](0)
    with trio.fail_after(5):
        async with (
            manager.subscribe(*ALL_KINDS) as first,
            manager.subscribe("job_failed") as second,
        ):
            async with trio.open_nursery() as nursery:
                manager.attach(receive)
                await nursery.start(manager.run)
                await send.send([Event(EventKind.QUEUE_PAUSED, queue="q")])
                send.close()
            assert [e async for e in first] == [Event(EventKind.QUEUE_PAUSED, queue="q")]
            assert [e async for e in second] == []
    assert manager.subscriptions == []


async def test_subscription_opened_while_stopped_serves_the_next_run() -> None:
    manager = SubscriptionManager()
    received: list[Event] = []
    with trio.fail_after(5):
        async with manager.subscribe(EventKind.QUEUE_RESUMED) as events:
            assert len(manager.subscriptions) == 1
            for run in range(2):
                send, receive = trio.open_memory_channel[list[Event]](1)
                manager.attach(receive)
                async with trio.open_nursery() as nursery:
                    await nursery.start(manager.run)
                    with send:
                        await send.send([Event(EventKind.QUEUE_RESUMED, queue=f"q{run}")])
                if run == 0:
                    # The run that served it has ended: its channel is closed.
                    await read_all(events, received)
                    assert manager.subscriptions == []
    assert received == [Event(EventKind.QUEUE_RESUMED, queue="q0")]


async def test_run_without_a_source_fails_to_start() -> None:
    manager = SubscriptionManager()
    async with trio.open_nursery() as nursery:
        with pytest.raises(RuntimeError, match=r"attach\(completer.output\)"):
            await nursery.start(manager.run)
    assert manager.stopped


async def test_manager_is_shielded_and_ends_only_at_end_of_input() -> None:
    manager = SubscriptionManager()
    send, receive = trio.open_memory_channel[list[Event]](0)
    manager.attach(receive)
    cancelled = trio.Event()
    still_running: list[bool] = []

    async def late_completer() -> None:
        # Outside the cancelled scope, like a completer doing its final flush.
        with send:
            await cancelled.wait()
            still_running.append(manager.started)
            await send.send([Event(EventKind.QUEUE_PAUSED, queue="late")])

    with trio.fail_after(5):
        async with manager.subscribe(EventKind.QUEUE_PAUSED) as events:
            async with trio.open_nursery() as outer:
                outer.start_soon(late_completer)
                with trio.CancelScope() as scope:
                    async with trio.open_nursery() as nursery:
                        await nursery.start(manager.run)
                        scope.cancel()
                        manager.stop()
                        cancelled.set()
            assert [e.queue async for e in events] == ["late"]
    assert still_running == [True], "neither stop() nor cancellation cuts delivery short"
    assert manager.stopped


def _completed(job_id: int) -> Outcome:
    # An outcome whose event cannot be built: its record (below) lacks every column.
    return Outcome(job=running_row(id=job_id), kind=OutcomeKind.COMPLETED)


async def test_events_nobody_asked_for_are_counted_not_built() -> None:
    # The completer's batches build an event only when it is read: a job event
    # whose record could not even be read must pass through, counted, as long as
    # no subscription wants its kind.
    manager = SubscriptionManager()
    batch = EventBatch(
        [EventKind.JOB_COMPLETED, EventKind.QUEUE_PAUSED, EventKind.JOB_COMPLETED],
        [_completed(1), QueueEvent(EventKind.QUEUE_PAUSED, "q"), _completed(2)],
        [{}, None, {}],
        now=0.0,
    )
    send, receive = trio.open_memory_channel[EventBatch](1)
    with trio.fail_after(5):
        async with manager.subscribe(EventKind.QUEUE_PAUSED) as paused:
            async with trio.open_nursery() as nursery:
                manager.attach(receive)
                await nursery.start(manager.run)
                with send:
                    await send.send(batch)
            assert [e async for e in paused] == [Event(EventKind.QUEUE_PAUSED, queue="q")]
    assert manager.counts == {EventKind.JOB_COMPLETED: 2, EventKind.QUEUE_PAUSED: 1}
    assert manager.events_total == 3
    with pytest.raises(KeyError):
        batch[0]  # what reading it would have done


def test_event_batch_builds_each_event_once() -> None:
    row = running_row(id=7)
    record = {
        "state": "completed",
        "attempt": row.attempt,
        "finalized_at": row.attempted_at,
        "scheduled_at": row.scheduled_at,
        "metadata": '{"done": true}',
        "errors": None,
        "changes_only": True,
    }
    batch = EventBatch(
        [EventKind.JOB_COMPLETED],
        [Outcome(job=row, kind=OutcomeKind.COMPLETED, finished_at=1.0)],
        [record],
        now=3.0,
    )
    assert len(batch) == 1
    [event] = batch
    assert event is batch[0] is batch[-1] and batch[:] == [event]
    assert event.kind is EventKind.JOB_COMPLETED
    assert event.job is not None
    assert (event.job.id, event.job.state, event.job.metadata) == (7, "completed", {"done": True})
    assert event.job.errors == row.errors and event.job.tags == row.tags
    assert event.stats is not None and event.stats.complete_duration == 2.0
