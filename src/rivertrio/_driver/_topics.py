"""The notification topics rivertrio and River share, and the channel names they travel on."""

from __future__ import annotations

__all__ = [
    "CONTROL_TOPIC",
    "INSERT_TOPIC",
    "LEADERSHIP_TOPIC",
    "MAX_SCHEMA_BYTES",
    "channel",
    "channel_problem",
]

#: Jobs became available in a queue: ``{"queue": name}``.
INSERT_TOPIC = "river_insert"
#: An election's news: a leader resigned, or a client asks the leader to resign.
LEADERSHIP_TOPIC = "river_leadership"
#: Commands for running clients: cancel a running job, pause or resume a queue.
# Sent even by poll_only clients: they are rare, NOTIFY works through
# transaction poolers (only LISTEN does not), and listening clients elsewhere
# then react at once.
CONTROL_TOPIC = "river_control"


# Postgres refuses a longer channel name in pg_notify, and cuts it short in LISTEN.
_MAX_CHANNEL_BYTES = 63

#: The longest schema name (in bytes of UTF-8) whose channels all fit.
MAX_SCHEMA_BYTES = (
    _MAX_CHANNEL_BYTES - 1 - max(len(t) for t in (INSERT_TOPIC, LEADERSHIP_TOPIC, CONTROL_TOPIC))
)


def channel(schema: str, topic: str) -> str:
    """The Postgres channel of a topic in a schema: ``<schema>.<topic>``, as River names it.

    The channel is a plain string, passed to ``pg_notify`` as a parameter and
    quoted by asyncpg for LISTEN, so any schema name is safe in it.
    """
    return f"{schema}.{topic}"


def channel_problem(schema: str) -> str | None:
    """Why clients cannot notify each other in `schema`, or None if they can."""
    if len(schema.encode()) <= MAX_SCHEMA_BYTES:
        return None
    return (
        f"{schema!r} is too long for notifications: its channel names "
        f"({channel(schema, LEADERSHIP_TOPIC)!r} is the longest) must fit Postgres' "
        f"{_MAX_CHANNEL_BYTES} bytes, so a client's schema name has at most "
        f"{MAX_SCHEMA_BYTES} bytes"
    )
