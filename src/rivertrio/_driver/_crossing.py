"""The one crossing between Trio and asyncio: the trio-asyncio loop a driver runs asyncpg in.

Everything rivertrio asks of asyncpg goes through `Crossing.cross`, which runs
an asyncio coroutine and waits for it from Trio, and turns asyncpg's errors into
rivertrio's (`map_error`). A crossing costs about 60-130 us on top of the query
itself, which is why callers batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
import trio
import trio_asyncio

from .._util import collapse_single_groups
from ._errors import describe_url, map_error

__all__ = ["RELEASE_TIMEOUT", "Crossing", "open_crossing"]

log = logging.getLogger("rivertrio.driver")

T = TypeVar("T")

#: How long a connection may take to acknowledge a cancelled statement when it
# goes back to the pool. asyncpg waits for that without a bound, and a
# black-holed connection never answers: the pool slot would be lost for good
# and the cancelled caller would wait with it. Past this, it is dropped.
RELEASE_TIMEOUT = 5.0


class _CrossingTask(asyncio.Task[T]):
    """The asyncio task of one loop crossing; it can arm a watchdog when cancelled."""

    watchdog: Callable[[], None] | None = None

    def cancel(self, msg: Any | None = None) -> bool:
        if self.watchdog is not None and not self.done():
            watchdog = self.watchdog
            self.watchdog = None

            def check() -> None:
                if not self.done():
                    watchdog()

            self.get_loop().call_later(RELEASE_TIMEOUT, check)
        return super().cancel(msg)


class Crossing:
    """A driver's asyncio loop, and the server its connections go to.

    Create one with `open_crossing`.
    """

    def __init__(self, loop: Any, url: str, connect_kwargs: dict[str, Any]) -> None:
        self._loop = loop
        self._url = url
        self._connect_kwargs = connect_kwargs
        self.where = describe_url(url)
        """Where the server is, as ``host:port``, for messages."""

    async def cross(
        self, coro: Coroutine[Any, Any, T], watchdog: Callable[[], None] | None = None
    ) -> T:
        """Run `coro` on the asyncio side and wait for it: one loop crossing.

        Cancelling the caller cancels the coroutine, and the caller waits for it
        to finish (its cleanup included). `watchdog`, if given, is called if it
        has not finished `RELEASE_TIMEOUT` seconds after that.

        Raises:
            DatabaseConnectionError: The connection failed or could not be opened.
            DatabaseError: A statement failed.
        """
        try:
            task = _CrossingTask(coro, loop=self._loop)
        except BaseException:
            coro.close()  # avoid an "never awaited" warning
            raise
        task.watchdog = watchdog
        try:
            return await trio_asyncio.run_aio_future(task)  # type: ignore[no-any-return]
        except trio.Cancelled:
            raise
        except Exception as exc:
            mapped = map_error(exc, self.where)
            if mapped is exc:
                raise
            raise mapped from exc

    async def create_pool(self, *, min_size: int, max_size: int) -> asyncpg.Pool:
        """Create a connection pool on the server (asyncio side); no connection is opened yet."""
        # No idle-connection expiry: each release would arm a 300 s timer, and
        # trio-asyncio keeps cancelled timers until they are due, so a busy
        # client piled up thousands of them (+3-4 MiB).
        return await asyncpg.create_pool(
            self._url,
            min_size=min_size,
            max_size=max_size,
            max_inactive_connection_lifetime=0,
            **self._connect_kwargs,
        )

    async def connect(self, application_name: str) -> asyncpg.Connection:
        """Open a connection outside the pool (asyncio side).

        `application_name` tells it apart from the pool's connections in
        pg_stat_activity, for operators (and the fault tests' proxy).
        """
        kwargs = dict(self._connect_kwargs)
        kwargs["server_settings"] = {
            **kwargs.get("server_settings", {}),
            "application_name": application_name,
        }
        return await asyncpg.connect(self._url, **kwargs)


def _log_asyncio_error(_loop: Any, context: dict[str, Any]) -> None:
    log.debug("asyncio: %s", context.get("message"), exc_info=context.get("exception"))


@asynccontextmanager
async def open_crossing(url: str, connect_kwargs: dict[str, Any]) -> AsyncIterator[Crossing]:
    """Run an asyncio loop inside Trio for connections to `url`, closed on exit.

    `connect_kwargs` go to every connection asyncpg opens, pooled or not.
    """
    # trio-asyncio runs its loop in a nursery of its own (two levels deep), so any
    # error leaving this block, ours or the caller's, would arrive wrapped alone.
    with collapse_single_groups():
        async with trio_asyncio.open_loop() as loop:
            # A connect cancelled mid-handshake leaves an asyncio future whose
            # error nobody retrieves; trio-asyncio's default handler would raise
            # it into the loop's nursery and tear the whole driver down.
            loop.set_exception_handler(_log_asyncio_error)
            yield Crossing(loop, url, connect_kwargs)
