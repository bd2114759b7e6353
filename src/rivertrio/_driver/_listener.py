"""The LISTEN connection: notifications on rivertrio's topics, as a Trio channel."""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import trio

from .._exceptions import DatabaseError
from ._dedicated import DedicatedConnection
from ._topics import channel

if TYPE_CHECKING:
    from ._crossing import Crossing
    from ._queryable import Queryable

__all__ = ["DELIVERY_PROBE_TIMEOUT", "Listener", "Notification"]

#: How long a probe notification may take to reach a new LISTEN connection.
#: Delivery takes milliseconds; a pooler in transaction mode never delivers.
DELIVERY_PROBE_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Notification:
    """A Postgres notification on one of rivertrio's topics."""

    topic: str
    payload: str


class Listener(DedicatedConnection):
    """A dedicated LISTEN connection; notifications arrive on `receive`.

    Notifications are a fast path only: if the consumer falls behind by more than
    the buffer, later ones are dropped (counted in `dropped`), since polling is the
    path correctness rests on. `broken` is set when the connection dies.
    """

    def __init__(
        self, crossing: Crossing, conn: asyncpg.Connection, schema: str, buffer: int
    ) -> None:
        super().__init__(crossing, conn, "LISTEN")
        self._schema = schema
        self._send, self.receive = trio.open_memory_channel[Notification](buffer)
        self.dropped = 0
        """Notifications dropped because `receive` was full."""

    def _on_notification(self, _conn: Any, _pid: int, name: str, payload: object) -> None:
        # Runs on the asyncio side of trio-asyncio, which is the Trio thread:
        # send_nowait is safe here and never blocks the loop.
        topic = name.removeprefix(channel(self._schema, ""))
        try:
            self._send.send_nowait(Notification(topic, str(payload)))
        except trio.WouldBlock:
            self.dropped += 1
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    async def listen(self, topic: str) -> None:
        """Start listening to a topic of the schema (again: no effect)."""
        await self.run(
            asyncpg.Connection.add_listener, channel(self._schema, topic), self._on_notification
        )

    async def check_delivery(self, sender: Queryable) -> None:
        """Send a notification from `sender` (the pool); return once it reaches this session.

        LISTEN needs a session of its own. Behind a pooler in transaction mode
        (PgBouncer ``pool_mode = transaction``) the LISTEN runs on whichever server
        connection is free, which then serves other clients, and nothing ever
        reaches this one; the statements themselves all succeed, so only a round
        trip can tell. Session pooling, and a direct connection, deliver.

        A checkpoint. Never returns if nothing arrives: wrap it in a deadline.
        """
        probe = f"rivertrio_probe_{secrets.token_hex(8)}"
        arrived = trio.Event()

        def on_probe(_conn: Any, _pid: int, _channel: str, _payload: object) -> None:
            arrived.set()  # on the Trio thread, as _on_notification

        await self.run(asyncpg.Connection.add_listener, probe, on_probe)
        try:
            await sender.execute("SELECT pg_notify($1, 'probe')", probe)
            await arrived.wait()
        finally:
            with trio.move_on_after(2, shield=True), contextlib.suppress(DatabaseError):
                await self.run(asyncpg.Connection.remove_listener, probe, on_probe)

    async def aclose(self) -> None:
        """Close the connection and the notification channel. Shielded, bounded."""
        self._send.close()
        await super().aclose()
