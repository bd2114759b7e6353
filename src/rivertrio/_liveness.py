"""Liveness locks: how the leader tells a dead client's running jobs from a live one's.

Every running rivertrio client holds a session-level advisory lock, derived
from its schema and client id, on a dedicated connection outside the pool.
Postgres releases the lock when the process exits or dies, or when its
connection is lost, so the leader's rescuer can see within seconds that a
``running`` job's client (the last entry of ``attempted_by``) is gone.

Only ids ending with `CLIENT_ID_MARKER` are judged this way (rivertrio's
default ids end with it). A client id without it, such as a River Go client's,
holds no lock and is left to the time-based rule (``rescue_stuck_jobs_after``).
A client that sets its own ``Config.id`` gets fast rescue by ending the id with
the marker too.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from ._driver._liveness import CLIENT_ID_MARKER, liveness_key, open_lock_connection
from ._exceptions import ConfigError, DatabaseError, LivenessError
from ._service import Counter, Service, cancel_on
from ._validate import duration

if TYPE_CHECKING:
    from ._driver import DedicatedConnection, Driver

__all__ = ["CLIENT_ID_MARKER", "Liveness", "is_marked", "liveness_key"]

log = logging.getLogger("rivertrio.liveness")


def is_marked(client_id: str) -> bool:
    """Whether the rescuer treats `client_id` as a lock-holding rivertrio client."""
    return client_id.endswith(CLIENT_ID_MARKER)


class Liveness(Service):
    """Holds the client's liveness lock for as long as it runs.

    Starting takes the lock (an error if another process holds it: two live
    clients must not share an id). While running it pings the connection every
    `check_interval`; when the connection dies (or a ping hangs for a whole
    interval) the lock is lost: `held` turns False, `lost` is set and the
    ``on_lost`` callbacks run. The leader may then rescue the client's running
    jobs after the grace period, so the client should stop fetching; the
    completer's state-guarded UPDATE keeps a rescued job from being completed
    twice. Meanwhile it reconnects with backoff, and once the lock is back the
    ``on_regained`` callbacks run and `lost` is a fresh event. Stopping closes
    the connection, which releases the lock.

    Args:
        driver: The database (its URL and schema; the lock connection is its own).
        client_id: The client's id, as written to ``attempted_by``.
        check_interval: Seconds between pings of the lock connection.
        max_backoff: Longest wait between reconnection attempts; keep it well
            below the rescuer's grace so a database restart loses no jobs.

    Raises:
        ConfigError: A duration is not a finite number of seconds above 0.
    """

    def __init__(
        self,
        driver: Driver,
        client_id: str,
        *,
        check_interval: float = 2.0,
        max_backoff: float = 1.0,
    ) -> None:
        super().__init__()
        self._driver = driver
        self.client_id = client_id
        self.key = liveness_key(driver.schema, client_id)
        self._check_interval = duration("check_interval", check_interval, ConfigError)
        self._max_backoff = duration("max_backoff", max_backoff, ConfigError)
        self._lock: DedicatedConnection | None = None
        self._on_lost: list[Callable[[], None]] = []
        self._on_regained: list[Callable[[], None]] = []
        self.lost = trio.Event()
        """Set when the lock held now is lost; a fresh event once it is held again."""
        self.losses = Counter()
        self.regains = Counter()

    @property
    def held(self) -> bool:
        """Whether the lock is held right now."""
        return self._lock is not None

    @property
    def backend_pid(self) -> int | None:
        """The server process id of the session holding the lock, or None."""
        return None if self._lock is None else self._lock.backend_pid

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call `callback` (it must not block) each time the lock is lost while running."""
        self._on_lost.append(callback)

    def on_regained(self, callback: Callable[[], None]) -> None:
        """Call `callback` (it must not block) each time a lost lock is taken again."""
        self._on_regained.append(callback)

    async def _acquire(self) -> DedicatedConnection | None:
        return await open_lock_connection(self._driver, self.key)

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        lock = await self._acquire()
        if lock is None:
            raise LivenessError(
                f"client id {self.client_id!r} is in use: another live process holds its "
                "liveness lock; give every client a unique Config.id"
            )
        self._lock = lock
        self.lost = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_on, self._stop_event, nursery.cancel_scope)
                task_status.started()
                while True:
                    await self._hold(lock)
                    self._lock = None
                    lock.terminate()
                    log.warning(
                        "client %r lost its liveness lock (the connection to %s died): its "
                        "running jobs may be rescued by the leader; reconnecting",
                        self.client_id,
                        self._driver.where,
                    )
                    self.lost.set()
                    self.losses.increment()
                    for callback in self._on_lost:
                        callback()
                    lock = await self._reacquire()
                    self._lock = lock
                    self.lost = trio.Event()
                    self.regains.increment()
                    log.info("client %r holds its liveness lock again", self.client_id)
                    for callback in self._on_regained:
                        callback()
        finally:
            self._lock = None
            await lock.aclose()

    async def _hold(self, lock: DedicatedConnection) -> None:
        """Return once the lock connection is broken."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_on, lock.broken, nursery.cancel_scope)
            while True:
                await trio.sleep(self._check_interval)
                with trio.move_on_after(self._check_interval) as scope:
                    try:
                        await lock.ping()
                    except DatabaseError:
                        break
                if scope.cancelled_caught:
                    break
            nursery.cancel_scope.cancel()

    async def _reacquire(self) -> DedicatedConnection:
        failures = 0
        while True:
            backoff = min(self._max_backoff, 0.05 * 2**failures)
            await trio.sleep(backoff * random.uniform(1.0, 1.2))
            try:
                lock = await self._acquire()
            except DatabaseError as exc:
                lock = None
                if failures % 10 == 0:
                    log.warning("client %r cannot take its liveness lock: %s", self.client_id, exc)
            else:
                if lock is None and failures % 10 == 0:
                    # Usually our own old session, not yet gone on the server.
                    log.warning(
                        "client %r: its liveness lock is still held by another session",
                        self.client_id,
                    )
            if lock is not None:
                return lock
            failures += 1
