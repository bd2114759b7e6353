"""The notification topics rivertrio and River share, and the channel names they travel on."""

from __future__ import annotations

__all__ = ["CONTROL_TOPIC", "INSERT_TOPIC", "LEADERSHIP_TOPIC", "channel"]

#: Jobs became available in a queue: ``{"queue": name}``.
INSERT_TOPIC = "river_insert"
#: An election's news: a leader resigned, or a client asks the leader to resign.
LEADERSHIP_TOPIC = "river_leadership"
#: Commands for running clients: cancel a running job, pause or resume a queue.
# Sent even by poll_only clients: they are rare, NOTIFY works through
# transaction poolers (only LISTEN does not), and listening clients elsewhere
# then react at once.
CONTROL_TOPIC = "river_control"


def channel(schema: str, topic: str) -> str:
    """The Postgres channel of a topic in a schema: ``<schema>.<topic>``, as River names it."""
    return f"{schema}.{topic}"
