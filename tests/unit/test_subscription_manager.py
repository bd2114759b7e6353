"""The subscription manager fed by hand, without a completer or a database.

Bad subscribe arguments raise at the call; a run ends every subscription it
served; the manager delivers until its input ends, whatever cancels around it.
"""

from __future__ import annotations

import pytest
import trio

from rivertrio import InvalidInputError
from rivertrio._events import Event, EventKind
from rivertrio._subscriptions import SubscriptionManager
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
