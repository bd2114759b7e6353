"""The notifier: delivery, reconnection with backoff, liveness pings."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest
import trio

import rivertrio
from rivertrio import EventKind
from rivertrio._driver import Driver, Listener, Notification
from rivertrio._exceptions import DatabaseConnectionError
from rivertrio._notifier import Notifier
from support.common import Noop, config, next_event, running

pytestmark = pytest.mark.timeout(60)


class Inbox:
    """Collects one callback's payloads and lets a test wait for the n-th."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self._changed = trio.Event()

    def __call__(self, payload: dict[str, Any]) -> None:
        self.payloads.append(payload)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, count: int, within: float = 10) -> list[dict[str, Any]]:
        with trio.fail_after(within):
            while len(self.payloads) < count:
                await self._changed.wait()
        return self.payloads


@asynccontextmanager
async def started(notifier: Notifier) -> AsyncIterator[Notifier]:
    async with trio.open_nursery() as nursery:
        with trio.fail_after(10):
            await nursery.start(notifier.run)
        try:
            yield notifier
        finally:
            notifier.stop()


def listener_pid(notifier: Notifier) -> int:
    """The server pid of the notifier's current LISTEN connection."""
    listener: Any = notifier._listener
    assert listener is not None, "the notifier is not connected"
    listener = getattr(listener, "_inner", listener)  # unwrap _DeafListener
    return int(listener.backend_pid)


async def kill_listener(driver: Driver, notifier: Notifier) -> None:
    with trio.fail_after(10):
        await notifier.connected.wait()
        pid = listener_pid(notifier)
        assert await driver.fetchval("SELECT pg_terminate_backend($1)", pid)


async def test_each_notification_reaches_every_listener_of_its_topic(
    driver: Driver, migrated_schema: str
) -> None:
    a1, a2, b = Inbox(), Inbox(), Inbox()
    notifier = Notifier(driver, ping_interval=3600)
    notifier.subscribe("topic_a", a1)
    notifier.subscribe("topic_a", a2)
    notifier.subscribe("topic_b", b)
    async with started(notifier):
        assert notifier.connected.is_set()
        await driver.notify("topic_a", json.dumps({"n": 1}))
        await driver.notify("topic_b", json.dumps({"n": 2}))
        await driver.notify("topic_a", json.dumps({"n": 3}))
        assert await a1.wait_for(2) == [{"n": 1}, {"n": 3}]
        assert await a2.wait_for(2) == [{"n": 1}, {"n": 3}]
        assert await b.wait_for(1) == [{"n": 2}]
        # Topics are per schema: the same topic of another schema is not ours.
        await driver.execute("SELECT pg_notify('public.topic_a', '{\"n\": 99}')")
        await driver.notify("topic_b", json.dumps({"n": 4}))
        assert await b.wait_for(2) == [{"n": 2}, {"n": 4}]
        assert a1.payloads == [{"n": 1}, {"n": 3}]


async def test_reconnects_after_the_connection_is_killed(
    driver: Driver, migrated_schema: str
) -> None:
    a, b = Inbox(), Inbox()
    reconnected = trio.Event()
    notifier = Notifier(driver, ping_interval=3600)
    notifier.subscribe("topic_a", a)
    notifier.subscribe("topic_b", b)
    notifier.on_reconnect(reconnected.set)
    async with started(notifier):
        await driver.notify("topic_a", '{"before": true}')
        await a.wait_for(1)
        for round_ in (1, 2):
            await kill_listener(driver, notifier)
            with trio.fail_after(10):
                await notifier.wait_reconnected(round_)
                await reconnected.wait()
            reconnected = trio.Event()
            notifier.on_reconnect(reconnected.set)
            assert notifier.connected.is_set()
            # Listening again on every topic, and delivering.
            await driver.notify("topic_a", json.dumps({"after": round_}))
            await driver.notify("topic_b", json.dumps({"after": round_}))
            assert (await a.wait_for(1 + round_))[-1] == {"after": round_}
            assert (await b.wait_for(round_))[-1] == {"after": round_}
        assert notifier.reconnects == 2


class _DeafListener:
    """A real listener whose termination is never reported: as on a dead network."""

    def __init__(self, inner: Listener) -> None:
        self._inner = inner
        self.broken = trio.Event()  # never set
        self.receive: trio.MemoryReceiveChannel[Notification] = inner.receive

    async def listen(self, topic: str) -> None:
        await self._inner.listen(topic)

    async def ping(self) -> None:
        await self._inner.ping()

    async def aclose(self) -> None:
        await self._inner.aclose()


class _FaultyDriver:
    """Wraps the real driver: listeners can be made deaf, and connecting can fail."""

    def __init__(self, driver: Driver) -> None:
        self._driver = driver
        self.where = driver.where
        self.deaf = False
        self.refuse = 0
        self.attempts: list[float] = []

    async def open_listener(self) -> Any:
        self.attempts.append(trio.current_time())
        if self.refuse > 0:
            self.refuse -= 1
            await trio.lowlevel.checkpoint()
            raise DatabaseConnectionError("injected: cannot connect")
        listener = await self._driver.open_listener()
        return _DeafListener(listener) if self.deaf else listener


async def test_a_ping_detects_a_dead_connection(driver: Driver, migrated_schema: str) -> None:
    faulty = _FaultyDriver(driver)
    faulty.deaf = True
    a = Inbox()
    notifier = Notifier(cast(Driver, faulty), ping_interval=0.05, ping_timeout=5)
    notifier.subscribe("topic_a", a)
    async with started(notifier):
        await kill_listener(driver, notifier)
        # Nothing reports the kill: only the failing ping can reveal it.
        with trio.fail_after(10):
            await notifier.wait_reconnected(1)
        await driver.notify("topic_a", "{}")
        await a.wait_for(1)


async def test_reconnection_backs_off_exponentially(driver: Driver, migrated_schema: str) -> None:
    faulty = _FaultyDriver(driver)
    a = Inbox()
    notifier = Notifier(cast(Driver, faulty), ping_interval=3600, max_backoff=0.4)
    notifier.subscribe("topic_a", a)
    async with started(notifier):
        faulty.refuse = 5
        faulty.attempts.clear()
        await kill_listener(driver, notifier)
        with trio.fail_after(20):
            await notifier.wait_reconnected(1)
        # Six attempts: five refused, then one that worked.
        assert len(faulty.attempts) == 6
        gaps = [b - a for a, b in zip(faulty.attempts, faulty.attempts[1:], strict=False)]
        # Each wait is at least the doubled backoff (50 ms doubling, capped at 0.4 s).
        for i, gap in enumerate(gaps):
            assert gap >= min(0.4, 0.05 * 2 ** (i + 1)) * 0.99, gaps
        await driver.notify("topic_a", "{}")
        await a.wait_for(1)


async def test_a_raising_callback_does_not_cut_off_the_others(
    driver: Driver, migrated_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(payload: dict[str, Any]) -> None:
        raise RuntimeError("subscriber bug")

    good = Inbox()
    notifier = Notifier(driver, ping_interval=3600)
    notifier.subscribe("topic_a", broken)
    notifier.subscribe("topic_a", good)
    async with started(notifier):
        await driver.notify("topic_a", '{"n": 1}')
        await driver.notify("topic_a", '{"n": 2}')
        assert await good.wait_for(2) == [{"n": 1}, {"n": 2}]
    assert "subscriber bug" in caplog.text


async def test_payloads_that_are_not_json_objects_are_skipped(
    driver: Driver, migrated_schema: str
) -> None:
    a = Inbox()
    notifier = Notifier(driver, ping_interval=3600)
    notifier.subscribe("topic_a", a)
    async with started(notifier):
        await driver.notify("topic_a", "not json")
        await driver.notify("topic_a", "[1, 2]")
        await driver.notify("topic_a", '{"ok": 1}')
        assert await a.wait_for(1) == [{"ok": 1}]
        assert notifier.delivered == 1


async def test_a_topic_subscribed_while_running_is_listened_to(
    driver: Driver, migrated_schema: str
) -> None:
    a, late = Inbox(), Inbox()
    notifier = Notifier(driver, ping_interval=3600)
    notifier.subscribe("topic_a", a)
    async with started(notifier):
        notifier.subscribe("topic_late", late)
        # Round trips until the LISTEN has gone through: notify, and see it arrive.
        with trio.fail_after(10):
            n = 0
            while not late.payloads:
                n += 1
                await driver.notify("topic_late", json.dumps({"n": n}))
                await driver.notify("topic_a", json.dumps({"n": n}))
                await a.wait_for(n)
        assert late.payloads[0]["n"] >= 1


async def test_start_fails_when_it_cannot_listen(driver: Driver) -> None:
    faulty = _FaultyDriver(driver)
    faulty.refuse = 1
    notifier = Notifier(cast(Driver, faulty))
    notifier.subscribe("topic_a", Inbox())
    async with trio.open_nursery() as nursery:
        with pytest.raises(DatabaseConnectionError, match="injected"):
            await nursery.start(notifier.run)
    assert notifier.stopped
    # The cause gone, it starts.
    async with started(notifier):
        assert notifier.connected.is_set()


async def test_stop_ends_the_run_and_closes_the_connection(
    driver: Driver, migrated_schema: str
) -> None:
    notifier = Notifier(driver, ping_interval=3600)
    notifier.subscribe("topic_a", Inbox())
    async with trio.open_nursery() as nursery:
        await nursery.start(notifier.run)
        listener: Any = notifier._listener
        assert listener is not None and not listener._conn.is_closed()
        notifier.stop()
        with trio.fail_after(5):
            await notifier.wait_stopped()
    assert not notifier.connected.is_set()
    assert notifier._listener is None
    assert listener._conn.is_closed()


async def test_the_client_fetches_at_once_after_a_reconnection(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    # A long poll interval: only the reconnection's wake-up can start the job soon.
    cfg = config(migrated_schema, fetch_poll_interval=30.0)
    silent = rivertrio.Config(schema=migrated_schema, poll_only=True)  # sends no notification
    async with (
        running(cfg, database_url) as client,
        running(silent, database_url) as inserter,
        client.subscribe(EventKind.JOB_COMPLETED) as events,
    ):
        assert client._tree.notifier is not None
        res = await inserter.insert(Noop())
        await kill_listener(driver, client._tree.notifier)
        with trio.fail_after(10):
            await client._tree.notifier.wait_reconnected(1)
        event = await next_event(events, within=10)
        assert event.job is not None and event.job.id == res.job.id
