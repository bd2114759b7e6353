"""The notifier: one LISTEN connection per client, its topics multiplexed to services."""

from __future__ import annotations

import json
import logging
import random
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import trio

from ._driver import Driver, Listener
from ._exceptions import ConfigError, DatabaseError
from ._service import Service
from ._validate import duration

__all__ = ["Notifier"]

log = logging.getLogger("rivertrio.notifier")

#: A subscriber's callback: called on the notifier's task with the decoded payload.
#: It must not block (set an event, send_nowait).
Callback = Callable[[dict[str, Any]], None]


class Notifier(Service):
    """Listens on one dedicated connection and hands each notification to its topic's callbacks.

    After the connection breaks (the server closed it, or a ping got no answer
    within `ping_timeout`) it reconnects with exponential backoff (from 50 ms up
    to `max_backoff`, jittered), listens to every topic again, and calls the
    ``on_reconnect`` callbacks: notifications sent while it was down are lost, so
    those services should poll at once.

    Args:
        driver: The database; the notifier opens its own connection outside the pool.
        ping_interval: Seconds between liveness pings of an idle connection.
        ping_timeout: A ping unanswered this long means the connection is dead.
        max_backoff: The longest wait between two reconnection attempts.

    Raises:
        ConfigError: A duration is not a finite number of seconds above 0.
    """

    def __init__(
        self,
        driver: Driver,
        *,
        ping_interval: float = 5.0,
        ping_timeout: float = 10.0,
        max_backoff: float = 5.0,
    ) -> None:
        super().__init__()
        self._driver = driver
        self._ping_interval = duration("ping_interval", ping_interval, ConfigError)
        self._ping_timeout = duration("ping_timeout", ping_timeout, ConfigError)
        self._max_backoff = duration("max_backoff", max_backoff, ConfigError)
        self._callbacks: defaultdict[str, list[Callback]] = defaultdict(list)
        self._on_reconnect: list[Callable[[], None]] = []
        self._listener: Listener | None = None
        self._nursery: trio.Nursery | None = None
        self._reconnected = trio.Event()
        self.connected = trio.Event()
        """Set while a LISTEN connection is up (replaced by a fresh event when it breaks)."""
        self.reconnects = 0
        """How many times the connection was re-established after breaking."""
        self.delivered = 0
        """How many notifications were handed to callbacks."""

    def subscribe(self, topic: str, callback: Callback) -> None:
        """Deliver `topic`'s notifications to `callback`.

        Best registered before the run starts; registered later, the topic is
        listened to on the current connection within a moment (notifications sent
        before that are missed).
        """
        new = topic not in self._callbacks
        self._callbacks[topic].append(callback)
        listener, nursery = self._listener, self._nursery
        if new and listener is not None and nursery is not None:
            nursery.start_soon(self._listen_late, listener, topic)

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call `callback` after each reconnection (not after the first connection)."""
        self._on_reconnect.append(callback)

    async def wait_reconnected(self, count: int) -> None:
        """Wait until the connection has been re-established `count` times in all.

        A checkpoint; cancel-safe.
        """
        while self.reconnects < count:
            await self._reconnected.wait()
        await trio.lowlevel.checkpoint()

    async def _listen_late(self, listener: Listener, topic: str) -> None:
        try:
            await listener.listen(topic)
        except DatabaseError as exc:
            # The connection is breaking; the reconnection listens to every topic.
            log.debug("could not LISTEN to %s on the current connection: %s", topic, exc)

    async def _connect(self) -> Listener:
        listener = await self._driver.open_listener()
        try:
            for topic in list(self._callbacks):
                await listener.listen(topic)
        except BaseException:
            await listener.aclose()
            raise
        return listener

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        # The first connection is part of starting: a client that cannot listen
        # reports it at once instead of silently polling.
        listener = await self._connect()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._stop_on_request, nursery.cancel_scope)
                task_status.started()
                while True:
                    self._listener = listener
                    self.connected.set()
                    try:
                        why = await self._pump(listener)
                    finally:
                        self._listener = None
                        self.connected = trio.Event()
                        with trio.move_on_after(2, shield=True):
                            await listener.aclose()
                    # One line per break, whatever revealed it.
                    log.warning(
                        "the LISTEN connection to %s broke (%s); reconnecting (notifications "
                        "sent meanwhile are lost, polling covers them)",
                        self._driver.where,
                        why,
                    )
                    listener = await self._reconnect()
                    self.reconnects += 1
                    self._reconnected.set()
                    self._reconnected = trio.Event()
                    log.info("the LISTEN connection is back")
                    for callback in self._on_reconnect:
                        try:
                            callback()
                        except Exception:
                            log.exception("an on_reconnect callback raised; ignored")
        finally:
            self._nursery = None

    async def _reconnect(self) -> Listener:
        """Open and set up a new connection, retrying with exponential backoff."""
        failures = 0
        while True:
            backoff = min(self._max_backoff, 0.05 * 2**failures)
            await trio.sleep(backoff * random.uniform(1, 1.2))
            try:
                return await self._connect()
            except DatabaseError as exc:
                failures += 1
                if failures == 1 or failures % 10 == 0:
                    log.warning("still cannot LISTEN (%d attempts): %s", failures, exc)

    async def _stop_on_request(self, scope: trio.CancelScope) -> None:
        await self._stop_event.wait()
        scope.cancel()

    async def _pump(self, listener: Listener) -> str:
        """Deliver notifications until the connection breaks; returns what showed it."""
        why = "the connection was closed"
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                await listener.broken.wait()
                nursery.cancel_scope.cancel()

            async def ping() -> None:
                # The server closing the connection is seen at once (`broken`); a
                # dead network is not, and only an unanswered ping reveals it.
                nonlocal why
                while True:
                    await trio.sleep(self._ping_interval)
                    with trio.move_on_after(self._ping_timeout) as scope:
                        try:
                            await listener.ping()
                        except DatabaseError as exc:
                            why = f"it failed its ping: {exc}"
                            nursery.cancel_scope.cancel()
                            return
                    if scope.cancelled_caught:
                        why = f"it did not answer a ping within {self._ping_timeout:g} s"
                        nursery.cancel_scope.cancel()
                        return

            nursery.start_soon(watch)
            nursery.start_soon(ping)
            async for note in listener.receive:
                try:
                    payload = json.loads(note.payload) if note.payload else {}
                except ValueError:
                    log.warning("ignoring a %s notification that is not JSON", note.topic)
                    continue
                if not isinstance(payload, dict):
                    log.warning("ignoring a %s notification that is not an object", note.topic)
                    continue
                self.delivered += 1
                for callback in list(self._callbacks.get(note.topic, ())):
                    try:
                        callback(payload)
                    except Exception:
                        # One faulty subscriber must not cut the others off.
                        log.exception("a %s notification callback raised; ignored", note.topic)
        return why
