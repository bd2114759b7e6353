"""Lending the pool's connections: bounded waits, reserved connections, resets.

`Lender` hands out asyncpg's pooled connections and takes them back. Which
connections skip the pool's reset on their way back is decided here: see
`Lender.keep` and `Lender.give_back`. Everything but `block_slot` and `size`
runs on the asyncio side of the crossing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import asyncpg
import trio

from .._exceptions import DatabaseConnectionError, DatabaseError
from ._crossing import RELEASE_TIMEOUT

__all__ = ["Lender", "as_connection"]

log = logging.getLogger("rivertrio.driver")


def _open(proxy: Any) -> bool:
    """Whether a pooled connection is still open and lent to us."""
    try:
        return not proxy.is_closed()
    except asyncpg.InterfaceError:
        # asyncpg takes back the slot of a connection that closed while lent,
        # and the proxy refuses every call from then on.
        return False


def as_connection(proxy: Any) -> asyncpg.Connection:
    """A pooled connection, typed as the connection it wraps."""
    # A pooled connection is a proxy that behaves as the connection it wraps.
    return cast(asyncpg.Connection, proxy)


class Lender:
    """The connections of one asyncpg pool: who holds them, and how they come back."""

    def __init__(
        self, pool: asyncpg.Pool, *, where: str, reserved: int, acquire_timeout: float
    ) -> None:
        self.pool = pool
        self.where = where
        self.reserved = reserved
        self.acquire_timeout = acquire_timeout
        # transaction() and connection() blocks hold a connection for as long as
        # the caller likes; they may hold all but `reserved` of them, which stay
        # for single statements (the client's fetches, completions, elections).
        self._block_slots = trio.Semaphore(pool.get_max_size() - reserved)
        self._in_use = 0
        self._held_by_blocks = 0
        self._unresponsive = 0
        self._releasing: set[asyncio.Task[None]] = set()
        # Connections that only ever ran rivertrio's own statements, kept out of
        # asyncpg's pool between them: taking one back costs nothing, where a
        # round trip through the pool costs an acquire, a reset query (a whole
        # round trip) and two asyncio tasks. A connection handed to a user's
        # block, or left by a failed or cancelled statement, goes back through
        # the pool and its reset instead.
        self._idle: list[Any] = []
        self._waiting = 0  # tasks waiting in asyncpg's pool for a connection

    @property
    def size(self) -> int:
        """How many connections the pool may hold."""
        return self.pool.get_max_size()

    def exhausted(self, waited: float, *, blocks_only: bool = False) -> DatabaseError:
        """The error for a wait of `waited` s that found no connection free."""
        what = (
            f"all {self.size - self.reserved} connections that transaction blocks may hold "
            f"({self.reserved} more are kept for single statements)"
            if blocks_only
            else f"all {self.size} pooled connections"
        )
        return DatabaseError(
            f"no connection to {self.where} was free for {waited:g} s: {what} are in use, "
            f"{self._held_by_blocks} of them held open by transaction blocks "
            "(client.transaction(), driver.connection()). Hold transactions for shorter "
            "times or open fewer at once, or size the pool for them (Config.pool_size)"
        )

    @asynccontextmanager
    async def block_slot(self) -> AsyncIterator[None]:
        """Hold one of the connections blocks may hold; bounded by `acquire_timeout`."""
        with trio.move_on_after(self.acquire_timeout) as scope:
            await self._block_slots.acquire()
        if scope.cancelled_caught:
            raise self.exhausted(self.acquire_timeout, blocks_only=True)
        self._held_by_blocks += 1
        try:
            yield
        finally:
            self._held_by_blocks -= 1
            self._block_slots.release()

    async def acquire(self) -> Any:
        """Take a pooled connection: an idle one, else one from the pool.

        Waiting for the pool is bounded by `acquire_timeout`.
        """
        idle = self._idle
        while idle:
            proxy = idle.pop()
            if _open(proxy):
                self._in_use += 1
                return proxy
            # It died while idle (a server restart, a cut connection): asyncpg
            # has already taken its slot back, or does so now.
            self._discard(proxy)
        self._waiting += 1
        try:
            proxy = await self.pool.acquire(timeout=self.acquire_timeout)
        except TimeoutError as exc:
            if self._in_use >= self.size:
                raise self.exhausted(self.acquire_timeout) from exc
            raise DatabaseConnectionError(
                f"cannot reach Postgres at {self.where}: no connection within "
                f"{self.acquire_timeout:g} s"
            ) from exc
        finally:
            self._waiting -= 1
        self._in_use += 1
        return proxy

    def keep(self, proxy: Any) -> None:
        """Take back a connection that ran only our own statements (no I/O).

        It stays out of the pool, with no reset, unless a task is waiting in the
        pool for a connection: then it goes back there.
        """
        if self._waiting or proxy.is_in_transaction():
            self.release_later(proxy)
            return
        self._in_use -= 1
        self._idle.append(proxy)

    def _discard(self, proxy: Any) -> None:
        """Hand a dead idle connection back to asyncpg, in the background."""
        task = asyncio.get_running_loop().create_task(
            self.pool.release(proxy, timeout=RELEASE_TIMEOUT)
        )
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    def _renew_idle(self) -> None:
        """Send every idle connection back to the pool, which closes the expired ones."""
        idle, self._idle = self._idle, []
        for proxy in idle:
            self._discard(proxy)

    def release_later(self, proxy: Any) -> asyncio.Task[None]:
        """Release through the pool's reset, in the background: a cancelled caller
        must not wait for it.

        The release waits for the server to acknowledge the cancelled statement
        (bounded, see `_release`); the caller's deadline has passed already.
        """
        task = asyncio.get_running_loop().create_task(self._release(proxy))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)
        return task

    async def give_back(self, proxy: Any) -> None:
        """Release through the pool's reset; if the caller is cancelled meanwhile,
        the release goes on alone."""
        await asyncio.shield(self.release_later(proxy))

    async def _release(self, proxy: Any) -> None:
        """Give a connection back; a dead one is dropped, never waited on."""
        self._in_use -= 1
        try:
            await self.pool.release(proxy, timeout=RELEASE_TIMEOUT)
        except TimeoutError:
            # asyncpg terminated it. A connection that does not answer at all is a
            # black hole (a dead route, a hung proxy): its idle siblings most
            # likely lead there too, and each would hang the next statement that
            # takes it until that one's deadline. Renew them all instead.
            await self.pool.expire_connections()
            self._renew_idle()
            self._unresponsive += 1
            if self._unresponsive == 1 or self._unresponsive % 100 == 0:
                log.warning(
                    "a connection to %s did not answer within %g s after its statement was "
                    "cancelled (%d so far): dropped it, and renewing the pool's connections",
                    self.where,
                    RELEASE_TIMEOUT,
                    self._unresponsive,
                )
        except Exception as exc:
            # asyncpg has terminated the connection; the pool opens a new one.
            log.debug("dropped a pooled connection on release: %r", exc)

    async def close(self) -> None:
        """Close the pool; it waits for every connection it lent, the idle ones included."""
        idle, self._idle = self._idle, []
        for proxy in idle:
            await self.pool.release(proxy, timeout=RELEASE_TIMEOUT)
        await self.pool.close()
