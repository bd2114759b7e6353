"""Queue rows and control: registration, pause and resume, runtime queues, poll_only."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

import rivertrio
import rivertrio._producer
from rivertrio import EventKind, JobState
from rivertrio._driver import Driver, Tx
from rivertrio._notifier import Notifier
from rivertrio._producer import Producer
from support.common import (
    Blocker,
    Noop,
    Task,
    config,
    events_until,
    next_event,
    row,
    running,
    task_workers,
)

pytestmark = pytest.mark.timeout(60)

TWO_QUEUES = {
    "default": rivertrio.QueueConfig(max_workers=5),
    "other": rivertrio.QueueConfig(max_workers=5),
}


@pytest.fixture
def fast_refresh(monkeypatch: pytest.MonkeyPatch) -> float:
    """Producers refresh their queue row every 50 ms instead of every 5 s."""
    monkeypatch.setattr(rivertrio._producer, "QUEUE_REFRESH_INTERVAL", 0.05)
    return 0.05


def producer(client: rivertrio.Client, queue: str = "default") -> Producer:
    return client._tree.producers[queue]


async def refreshes(p: Producer, count: int) -> None:
    """Let `count` full refreshes of the producer's queue row go by (time passes, on its clock)."""
    with trio.fail_after(10):
        for _ in range(count):
            await p.wait_refreshed()


class Rollback(Exception):
    """Raised inside a transaction to roll it back."""


async def rolled_back(client: rivertrio.Client, body: Callable[[Tx], Awaitable[None]]) -> None:
    """Run `body` in a transaction, then roll it back by raising `Rollback`."""
    async with client.transaction() as tx:
        await body(tx)
        raise Rollback


def insert_only(schema: str, **fields: Any) -> rivertrio.Config:
    return rivertrio.Config(schema=schema, **fields)


# -- 47: the queue row --


async def test_a_producer_registers_its_queue_row_and_recreates_it(
    database_url: str, migrated_schema: str, driver: Driver, fast_refresh: float
) -> None:
    async with running(config(migrated_schema), database_url) as client:
        first = await client.queue_get("default")
        assert first.name == "default"
        assert first.paused_at is None and not first.paused
        assert first.metadata == {}
        await refreshes(producer(client), 2)
        assert (await client.queue_get("default")).updated_at > first.updated_at
        deleted = await driver.fetchval(
            "DELETE FROM /*schema*/river_queue WHERE name = 'default' RETURNING name"
        )
        assert deleted == "default"
        await refreshes(producer(client), 1)
        again = await client.queue_get("default")
        assert again.created_at > first.created_at


async def test_queue_list_and_get(database_url: str, migrated_schema: str) -> None:
    async with running(config(migrated_schema, queues=TWO_QUEUES), database_url) as client:
        queues = await client.queue_list()
        assert [q.name for q in queues] == ["default", "other"]
        assert [q.name for q in await client.queue_list(limit=1)] == ["default"]
        await client.queue_pause("other")
        other = await client.queue_get("other")
        assert other.paused and other.paused_at is not None
        assert other.updated_at >= other.paused_at
        async with client.transaction() as tx:
            assert [q.name for q in await client.queue_list_tx(tx)] == ["default", "other"]
            assert (await client.queue_get_tx(tx, "other")).paused
        with pytest.raises(rivertrio.NotFoundError, match="'nope'"):
            await client.queue_get("nope")
        with pytest.raises(rivertrio.InvalidInputError, match="queue name"):
            await client.queue_get("Not A Queue")
        with pytest.raises(rivertrio.InvalidInputError, match="limit"):
            await client.queue_list(limit=0)
        # The limit is sent as a bigint: a larger one is refused before the query
        # (it used to fail in Postgres).
        assert len(await client.queue_list(limit=2**63 - 1)) == 2
        with pytest.raises(rivertrio.InvalidInputError, match=r"^limit must be an int from 1 to"):
            await client.queue_list(limit=2**63)


# -- 44: paused before start --


async def test_a_queue_paused_before_start_works_none_of_its_jobs(
    database_url: str, migrated_schema: str, driver: Driver, fast_refresh: float
) -> None:
    cfg = config(migrated_schema, queues=TWO_QUEUES, fetch_cooldown=0.01, fetch_poll_interval=0.05)
    async with running(cfg, database_url) as client:
        pass  # registers both queue rows
    async with running(insert_only(migrated_schema), database_url) as admin:
        await admin.queue_pause("default")
        paused = await admin.insert_many([Noop(n=i) for i in range(3)])
        control = await admin.insert(Noop(), rivertrio.InsertOpts(queue="other"))
    async with (
        running(cfg, database_url) as client,
        client.subscribe(*EventKind) as events,
    ):
        assert producer(client).paused
        event = await next_event(events)
        assert event.kind == EventKind.JOB_COMPLETED
        assert event.job is not None and event.job.id == control.job.id
        await client.insert(Noop())  # a local insert wakes the producer: still nothing
        await refreshes(producer(client), 3)  # many poll intervals go by
        assert producer(client).fetches == 0
        for res in paused:
            assert (await row(driver, res.job.id)).state == JobState.AVAILABLE
        await client.queue_resume("default")
        got = await events_until(events, 5)
    assert got[0] == rivertrio.Event(EventKind.QUEUE_RESUMED, queue="default")
    assert {e.kind for e in got[1:]} == {EventKind.JOB_COMPLETED}


# -- 45: pause and resume a running queue --


async def test_pausing_a_running_queue_stops_new_work_and_resuming_restarts_it(
    database_url: str, migrated_schema: str, driver: Driver, fast_refresh: float
) -> None:
    cfg = config(migrated_schema, fetch_cooldown=0.01, fetch_poll_interval=0.05)
    async with (
        running(cfg, database_url) as client,
        running(insert_only(migrated_schema), database_url) as admin,
        client.subscribe(*EventKind) as events,
    ):
        await admin.queue_pause("default")  # another client: reaches this one by notification
        assert await next_event(events) == rivertrio.Event(EventKind.QUEUE_PAUSED, queue="default")
        assert producer(client).paused
        fetches = producer(client).fetches
        res = await client.insert(Noop())
        await refreshes(producer(client), 3)
        assert producer(client).fetches == fetches
        assert (await row(driver, res.job.id)).state == JobState.AVAILABLE
        await admin.queue_resume("default")
        resumed, completed = await events_until(events, 2)
    assert resumed == rivertrio.Event(EventKind.QUEUE_RESUMED, queue="default")
    assert completed.kind == EventKind.JOB_COMPLETED
    assert completed.job is not None and completed.job.id == res.job.id


async def test_pause_and_resume_star_covers_every_queue(
    database_url: str, migrated_schema: str
) -> None:
    cfg = config(migrated_schema, queues=TWO_QUEUES)
    async with (
        running(cfg, database_url) as client,
        client.subscribe(EventKind.QUEUE_PAUSED, EventKind.QUEUE_RESUMED) as events,
    ):
        await client.queue_pause("*")
        paused = await events_until(events, 2)
        assert {(e.kind, e.queue) for e in paused} == {
            (EventKind.QUEUE_PAUSED, "default"),
            (EventKind.QUEUE_PAUSED, "other"),
        }
        assert all(q.paused for q in await client.queue_list())
        await client.queue_resume("*")
        resumed = await events_until(events, 2)
        assert {(e.kind, e.queue) for e in resumed} == {
            (EventKind.QUEUE_RESUMED, "default"),
            (EventKind.QUEUE_RESUMED, "other"),
        }
        assert not any(q.paused for q in await client.queue_list())


async def test_running_jobs_go_on_while_their_queue_is_paused(
    database_url: str, migrated_schema: str
) -> None:
    started, release = trio.Event(), trio.Event()

    async def work(job: rivertrio.Job[Task]) -> None:
        started.set()
        await release.wait()

    cfg = config(migrated_schema, workers=task_workers(work))
    async with running(cfg, database_url) as client, client.subscribe(*EventKind) as events:
        await client.insert(Task())
        with trio.fail_after(10):
            await started.wait()
        await client.queue_pause("default")
        assert (await next_event(events)).kind == EventKind.QUEUE_PAUSED
        release.set()
        assert (await next_event(events)).kind == EventKind.JOB_COMPLETED


# -- 46 --


async def test_pausing_an_unknown_queue_raises_and_pausing_twice_changes_nothing(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    control: list[dict[str, Any]] = []
    got_two = trio.Event()

    def on_control(payload: dict[str, Any]) -> None:
        control.append(payload)
        if len(control) == 2:
            got_two.set()

    watcher = Notifier(driver, ping_interval=3600)
    watcher.subscribe("river_control", on_control)
    async with (
        running(config(migrated_schema), database_url) as client,
        client.subscribe(EventKind.QUEUE_PAUSED, EventKind.QUEUE_RESUMED) as events,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(watcher.run)
        with pytest.raises(rivertrio.NotFoundError, match="'nope'"):
            await client.queue_pause("nope")
        with pytest.raises(rivertrio.NotFoundError, match="'nope'"):
            await client.queue_resume("nope")
        with pytest.raises(rivertrio.InvalidInputError, match="'\\*' for every queue"):
            await client.queue_pause("No Such")
        await client.queue_pause("*")  # no error for '*', whatever exists

        first = await client.queue_get("default")
        await client.queue_pause("default")
        second = await client.queue_get("default")
        assert second == first  # paused_at and updated_at kept
        await client.queue_resume("default")
        await client.queue_resume("default")  # resuming a running queue: nothing either
        with trio.fail_after(10):
            await got_two.wait()
        # One pause (the first '*'), one resume: the repeated calls sent nothing.
        assert control == [
            {"action": "pause", "queue": "*"},
            {"action": "resume", "queue": "default"},
        ]
        kinds = [e.kind for e in await events_until(events, 2)]
        assert kinds == [EventKind.QUEUE_PAUSED, EventKind.QUEUE_RESUMED]
        watcher.stop()


async def test_queue_pause_tx_takes_effect_on_commit_only(
    database_url: str, migrated_schema: str
) -> None:
    async with (
        running(config(migrated_schema), database_url) as client,
        client.subscribe(EventKind.QUEUE_PAUSED, EventKind.QUEUE_RESUMED) as events,
    ):

        async def pause(tx: Tx) -> None:
            await client.queue_pause_tx(tx, "default")
            assert (await client.queue_get_tx(tx, "default")).paused

        with pytest.raises(Rollback):
            await rolled_back(client, pause)
        assert not (await client.queue_get("default")).paused
        async with client.transaction() as tx:
            await client.queue_pause_tx(tx, "default")
        first = await next_event(events)
        # Had the rolled-back pause been notified, the first event would have come from it
        # and the committed pause would have produced none; only the commit notifies.
        assert first == rivertrio.Event(EventKind.QUEUE_PAUSED, queue="default")
        async with client.transaction() as tx:
            await client.queue_resume_tx(tx, "default")
        assert await next_event(events) == rivertrio.Event(EventKind.QUEUE_RESUMED, queue="default")


# -- 48: adding and removing queues at runtime --


async def test_queues_added_and_removed_at_runtime(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    started, release = trio.Event(), trio.Event()
    finished = False

    async def work(job: rivertrio.Job[Task]) -> None:
        nonlocal finished
        if job.args.name == "block":
            started.set()
            await release.wait()
            finished = True

    cfg = config(migrated_schema, workers=task_workers(work))
    async with (
        running(cfg, database_url) as client,
        client.subscribe(EventKind.JOB_COMPLETED) as events,
    ):
        await client.queues.add("extra", rivertrio.QueueConfig(max_workers=2))
        assert (await client.queue_get("extra")).name == "extra"
        res = await client.insert(Task(), rivertrio.InsertOpts(queue="extra"))
        event = await next_event(events)
        assert event.job is not None and event.job.id == res.job.id

        # remove waits for the queue's running job.
        blocking = await client.insert(Task(name="block"), rivertrio.InsertOpts(queue="extra"))
        with trio.fail_after(10):
            await started.wait()
        removed = False
        finished_when_removed: bool | None = None

        async def remove() -> None:
            nonlocal removed, finished_when_removed
            await client.queues.remove("extra")
            removed = True
            finished_when_removed = finished

        async with trio.open_nursery() as nursery:
            nursery.start_soon(remove)
            await trio.testing.wait_all_tasks_blocked()
            assert not removed
            release.set()
        assert finished_when_removed is True
        event = await next_event(events)
        assert event.job is not None and event.job.id == blocking.job.id

        # Removed: its jobs are left alone (the default queue's job is the control).
        left = await client.insert(Task(), rivertrio.InsertOpts(queue="extra"))
        control = await client.insert(Task())
        event = await next_event(events)
        assert event.job is not None and event.job.id == control.job.id
        assert (await row(driver, left.job.id)).state == JobState.AVAILABLE

        # Re-added: works it again.
        await client.queues.add("extra", rivertrio.QueueConfig(max_workers=2))
        event = await next_event(events)
        assert event.job is not None and event.job.id == left.job.id

        with pytest.raises(rivertrio.QueueAlreadyAddedError, match="'extra'"):
            await client.queues.add("extra", rivertrio.QueueConfig(max_workers=2))
        with pytest.raises(rivertrio.QueueAlreadyAddedError, match="'default'"):
            await client.queues.add("default", rivertrio.QueueConfig(max_workers=2))
        with pytest.raises(rivertrio.QueueNotFoundError, match="'nope'"):
            await client.queues.remove("nope")
        with pytest.raises(rivertrio.ConfigError, match="queue name"):
            await client.queues.add("Bad Name", rivertrio.QueueConfig(max_workers=2))


async def test_a_queue_added_at_runtime_is_checked_and_set_up_as_the_configs_are(
    database_url: str, migrated_schema: str
) -> None:
    cfg = config(migrated_schema, fetch_cooldown=0.2, fetch_poll_interval=3.0)
    async with running(cfg, database_url) as client:
        # Its own poll interval below the client's cooldown: refused, as in a Config.
        with pytest.raises(rivertrio.ConfigError, match=r"queues\['fast'\]\.fetch_poll_interval"):
            await client.queues.add(
                "fast", rivertrio.QueueConfig(max_workers=1, fetch_poll_interval=0.1)
            )
        await client.queues.add("own", rivertrio.QueueConfig(max_workers=3, fetch_cooldown=0.5))
        await client.queues.add("inherits", rivertrio.QueueConfig(max_workers=1))
        for name, expected in {
            "default": (10, 0.2, 3.0),
            "own": (3, 0.5, 3.0),
            "inherits": (1, 0.2, 3.0),
        }.items():
            p = producer(client, name)
            assert (p.max_workers, p.fetch_cooldown, p.fetch_poll_interval) == expected, name


async def test_a_client_whose_queues_were_all_removed_still_stops(
    database_url: str, migrated_schema: str
) -> None:
    async with running(config(migrated_schema), database_url) as client:
        liveness = client._tree.liveness
        assert liveness is not None and liveness.started
        await client.queues.remove("default")
        with trio.fail_after(10):
            await client.stop()
        # The liveness lock taken at start is released all the same.
        assert liveness.stopped
        assert not client.started


# -- 50: poll_only --


async def test_poll_only_works_jobs_and_follows_pause_and_resume(
    database_url: str, migrated_schema: str, driver: Driver, fast_refresh: float
) -> None:
    cfg = config(migrated_schema, poll_only=True, fetch_cooldown=0.01, fetch_poll_interval=0.05)
    other = insert_only(migrated_schema, poll_only=True)
    async with (
        running(cfg, database_url) as client,
        running(other, database_url) as admin,
        client.subscribe(*EventKind) as events,
    ):
        assert client._tree.notifier is None
        res = await admin.insert(Noop())
        event = await next_event(events)
        assert event.kind == EventKind.JOB_COMPLETED
        assert event.job is not None and event.job.id == res.job.id

        # Paused and resumed from another client: seen at the queue row's refresh.
        await admin.queue_pause("default")
        assert await next_event(events) == rivertrio.Event(EventKind.QUEUE_PAUSED, queue="default")
        held = await admin.insert(Noop())
        await refreshes(producer(client), 3)
        assert (await row(driver, held.job.id)).state == JobState.AVAILABLE
        await admin.queue_resume("default")
        resumed, completed = await events_until(events, 2)
        assert resumed == rivertrio.Event(EventKind.QUEUE_RESUMED, queue="default")
        assert completed.job is not None and completed.job.id == held.job.id

        # Paused and resumed by this client itself: at once.
        await client.queue_pause("*")
        assert await next_event(events) == rivertrio.Event(EventKind.QUEUE_PAUSED, queue="default")
        assert producer(client).paused
        await client.queue_resume("default")
        assert await next_event(events) == rivertrio.Event(EventKind.QUEUE_RESUMED, queue="default")


async def _cancel_running_in_poll_only(
    database_url: str, schema: str, driver: Driver, *, from_other_client: bool
) -> None:
    blocker = Blocker()
    cfg = config(schema, workers=blocker.workers(), poll_only=True)
    async with (
        running(cfg, database_url) as client,
        running(insert_only(schema, poll_only=True), database_url) as admin,
        client.subscribe(*EventKind) as events,
    ):
        res = await client.insert(Task())
        await blocker.wait_started()
        canceller = admin if from_other_client else client
        marked = await canceller.job_cancel(res.job.id)
        assert marked.state == JobState.RUNNING
        event = await next_event(events)
    assert blocker.cancelled
    assert event.kind == EventKind.JOB_CANCELLED
    stored = await row(driver, res.job.id)
    assert stored.state == JobState.CANCELLED
    assert stored.finalized_at is not None


async def test_poll_only_cancels_a_running_job_in_the_same_process(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    # The default (5 s) refresh: the cancellation must not wait for it.
    with trio.fail_after(4):
        await _cancel_running_in_poll_only(
            database_url, migrated_schema, driver, from_other_client=False
        )


async def test_poll_only_cancels_a_job_running_in_another_client(
    database_url: str, migrated_schema: str, driver: Driver, fast_refresh: float
) -> None:
    await _cancel_running_in_poll_only(
        database_url, migrated_schema, driver, from_other_client=True
    )


async def test_control_notifications_have_river_payloads(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    """River's clients share the database: our control payloads are theirs."""
    got: list[dict[str, Any]] = []
    two = trio.Event()

    def on_control(payload: dict[str, Any]) -> None:
        got.append(payload)
        if len(got) == 2:
            two.set()

    watcher = Notifier(driver, ping_interval=3600)
    watcher.subscribe("river_control", on_control)
    async with (
        running(config(migrated_schema), database_url) as client,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(watcher.run)
        await client.queue_pause("default")
        await client.queue_resume("*")
        with trio.fail_after(10):
            await two.wait()
        watcher.stop()
    assert got == [{"action": "pause", "queue": "default"}, {"action": "resume", "queue": "*"}]
