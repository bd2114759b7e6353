"""The dashboard's overview: jobs by queue and state, throughput, the leader, the clients.

Counts are read index-only and stop at `COUNT_CAP` per (queue, state), so the
page costs the same on a table of ten thousand jobs as on one of a hundred
million; a full count, a scan of the table, is made in the background (see
`rivertrio.ui._state`) for the counts that reached the cap. Each read follows
the rules of `rivertrio.ui._queries` (`reading`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .._liveness import is_marked, liveness_key
from ._queries import reading

if TYPE_CHECKING:
    from .. import Client

__all__ = [
    "CHART_MINUTES",
    "COUNT_CAP",
    "Leader",
    "Overview",
    "QueueSummary",
    "SeenClient",
    "exact_counts",
    "overview",
    "state_counts",
]

#: Counts by queue and state stop at this many rows each (read index-only, so a
#: queue with millions of completed jobs costs no more than one with ten
#: thousand); larger counts come from a full count made in the background.
COUNT_CAP = 10_000
#: At most this many (queue, state) pairs on the overview.
MAX_PAIRS = 2_000
#: The throughput chart covers this many minutes, the current one last.
CHART_MINUTES = 60
#: Clients are "seen" when they ran a job that is running or ended this recently.
SEEN_WINDOW_MINUTES = 10


# A loose index scan: each (state, queue) pair present, one index probe each,
# then a count of its rows stopped at the cap, read from the same index.
_COUNTS = f"""
WITH RECURSIVE pairs AS (
    (SELECT state, queue FROM /*schema*/river_job ORDER BY state, queue LIMIT 1)
    UNION ALL
    SELECT later.state, later.queue
    FROM pairs, LATERAL (
        SELECT j.state, j.queue FROM /*schema*/river_job AS j
        WHERE (j.state, j.queue) > (pairs.state, pairs.queue)
        ORDER BY j.state, j.queue
        LIMIT 1
    ) AS later
)
SELECT p.queue, p.state::text AS state, capped.n
FROM (SELECT * FROM pairs LIMIT {MAX_PAIRS}) AS p, LATERAL (
    SELECT count(*) AS n FROM (
        SELECT 1 FROM /*schema*/river_job AS j
        WHERE j.state = p.state AND j.queue = p.queue
        LIMIT $1::bigint
    ) AS rows
) AS capped
"""

# The full count, for pairs past the cap; a sequential scan, run in the background.
_EXACT_COUNTS = (
    "SELECT queue, state::text AS state, count(*) AS n FROM /*schema*/river_job GROUP BY 1, 2"
)

# Finished jobs per minute and queue, from the partial index on finalized rows
# (the queue is read from the heap: one fetch per job finished in the hour).
_THROUGHPUT = f"""
WITH origin AS (
    SELECT date_trunc('minute', now()) - interval '{CHART_MINUTES - 1} minutes' AS at
)
SELECT j.queue,
    (extract(epoch FROM date_trunc('minute', j.finalized_at) - origin.at) / 60)::int AS minute,
    count(*) FILTER (WHERE j.state = 'completed') AS completed,
    count(*) FILTER (WHERE j.state = 'discarded') AS discarded,
    count(*) FILTER (WHERE j.state = 'cancelled') AS cancelled
FROM /*schema*/river_job AS j, origin
WHERE j.state IN ('completed', 'discarded', 'cancelled') AND j.finalized_at >= origin.at
GROUP BY 1, 2
"""

_LEADER = "SELECT leader_id, elected_at, expires_at FROM /*schema*/river_leader"

# Who worked jobs lately: the last entry of attempted_by of running jobs (few,
# by the state prefix of the fetching index) and of the latest finished ones
# (the newest entries of the finalized_at index, at most 1,000 per state).
_SEEN = f"""
WITH seen AS (
    SELECT attempted_by[cardinality(attempted_by)] AS client, attempted_at AS at, 1 AS running
    FROM /*schema*/river_job WHERE state = 'running'
    UNION ALL
    (SELECT attempted_by[cardinality(attempted_by)], finalized_at, 0 FROM /*schema*/river_job
     WHERE state = 'completed' AND finalized_at > now() - interval '{SEEN_WINDOW_MINUTES} minutes'
     ORDER BY finalized_at DESC LIMIT 1000)
    UNION ALL
    (SELECT attempted_by[cardinality(attempted_by)], finalized_at, 0 FROM /*schema*/river_job
     WHERE state = 'discarded' AND finalized_at > now() - interval '{SEEN_WINDOW_MINUTES} minutes'
     ORDER BY finalized_at DESC LIMIT 1000)
    UNION ALL
    (SELECT attempted_by[cardinality(attempted_by)], finalized_at, 0 FROM /*schema*/river_job
     WHERE state = 'cancelled' AND finalized_at > now() - interval '{SEEN_WINDOW_MINUTES} minutes'
     ORDER BY finalized_at DESC LIMIT 1000)
)
SELECT client, max(at) AS last_seen, sum(running)::bigint AS running
FROM seen WHERE client IS NOT NULL
GROUP BY client
ORDER BY last_seen DESC NULLS LAST, client
LIMIT 200
"""

# Which liveness locks are held now (a bigint advisory key shows in pg_locks as
# classid = high 32 bits, objid = low 32 bits, objsubid = 1).
_HELD_KEYS = """
SELECT (l.classid::bigint << 32) | l.objid::bigint AS key
FROM pg_locks AS l
WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND ((l.classid::bigint << 32) | l.objid::bigint) = ANY($1::bigint[])
"""

_NOW = "SELECT now()"


@dataclass(frozen=True, slots=True)
class Leader:
    """The ``river_leader`` row: the client running maintenance."""

    client_id: str
    elected_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class SeenClient:
    """A client that worked a job recently (the last entry of its ``attempted_by``)."""

    client_id: str
    last_seen: datetime | None
    running: int
    alive: bool | None
    """Whether it holds its liveness lock now; None for ids without the marker
    (a River Go client, a poll_only client), whose liveness cannot be told."""


@dataclass(slots=True)
class QueueSummary:
    """One queue on the overview: its row (if it has one), counts and throughput."""

    name: str
    paused: bool = False
    has_row: bool = False
    updated_at: datetime | None = None
    counts: dict[str, int] = field(default_factory=dict)
    """Jobs by state (see `COUNT_CAP`)."""
    over_cap: set[str] = field(default_factory=set)
    """States whose live count reached the cap."""
    at_least: set[str] = field(default_factory=set)
    """States whose count is only a lower bound: it reached the cap, and no full
    count was made yet."""
    completed: list[int] = field(default_factory=lambda: [0] * CHART_MINUTES)
    discarded: list[int] = field(default_factory=lambda: [0] * CHART_MINUTES)
    cancelled: list[int] = field(default_factory=lambda: [0] * CHART_MINUTES)


@dataclass(frozen=True, slots=True)
class Overview:
    """Everything the overview page shows."""

    now: datetime
    queues: list[QueueSummary]
    totals: QueueSummary
    leader: Leader | None
    clients: list[SeenClient]
    counted_at: datetime | None
    """When the full count used for counts past the cap was made (None: not yet)."""


def _tally(
    queue_rows: Sequence[Any],
    counts: Sequence[Any],
    exact: Mapping[tuple[str, str], int] | None,
) -> tuple[dict[str, QueueSummary], QueueSummary]:
    queues: dict[str, QueueSummary] = {}
    for row in queue_rows:
        queues[row.name] = QueueSummary(
            row.name, paused=row.paused, has_row=True, updated_at=row.updated_at
        )
    totals = QueueSummary("")
    for rec in counts:
        queue = queues.setdefault(rec["queue"], QueueSummary(rec["queue"]))
        state, n = rec["state"], rec["n"]
        if n >= COUNT_CAP:
            queue.over_cap.add(state)
            totals.over_cap.add(state)
            if exact is not None and (queue.name, state) in exact:
                # The full count is a little old: a live count past it wins.
                n = max(n, exact[queue.name, state])
            else:
                queue.at_least.add(state)
                totals.at_least.add(state)
        queue.counts[state] = n
        totals.counts[state] = totals.counts.get(state, 0) + n
    return queues, totals


async def state_counts(
    client: Client, exact: Mapping[tuple[str, str], int] | None
) -> tuple[dict[str, QueueSummary], QueueSummary]:
    """Every queue's counts by state, and the totals (see `COUNT_CAP`)."""
    queue_rows = await client.queue_list(limit=MAX_PAIRS)
    async with reading(client) as tx:
        counts = await tx.fetch(_COUNTS, COUNT_CAP)
    return _tally(queue_rows, counts, exact)


async def overview(client: Client, exact: Mapping[tuple[str, str], int] | None) -> Overview:
    """Queues with counts and throughput, the leader, and the clients seen recently.

    `exact` is the last full count by (queue, state), used where a count passed the cap.
    """
    queue_rows = await client.queue_list(limit=MAX_PAIRS)
    async with reading(client) as tx:
        now = await tx.fetchval(_NOW)
        counts = await tx.fetch(_COUNTS, COUNT_CAP)
        throughput = await tx.fetch(_THROUGHPUT)
        leader_row = await tx.fetchrow(_LEADER)
        seen = await tx.fetch(_SEEN)
        keys = {r["client"]: liveness_key(client.driver.schema, r["client"]) for r in seen}
        marked = {cid: key for cid, key in keys.items() if is_marked(cid)}
        held = {r["key"] for r in await tx.fetch(_HELD_KEYS, list(marked.values()))}

    queues, totals = _tally(queue_rows, counts, exact)
    for rec in throughput:
        queue = queues.setdefault(rec["queue"], QueueSummary(rec["queue"]))
        minute = rec["minute"]
        if 0 <= minute < CHART_MINUTES:
            for name in ("completed", "discarded", "cancelled"):
                getattr(queue, name)[minute] += rec[name]
                getattr(totals, name)[minute] += rec[name]
    leader = None
    if leader_row is not None:
        leader = Leader(leader_row["leader_id"], leader_row["elected_at"], leader_row["expires_at"])
    clients = [
        SeenClient(
            client_id=r["client"],
            last_seen=r["last_seen"],
            running=r["running"],
            alive=(marked[r["client"]] in held) if r["client"] in marked else None,
        )
        for r in seen
    ]
    return Overview(
        now=now,
        queues=sorted(queues.values(), key=lambda q: q.name),
        totals=totals,
        leader=leader,
        clients=clients,
        counted_at=None,
    )


async def exact_counts(client: Client) -> dict[tuple[str, str], int]:
    """Every (queue, state) pair's full count: a scan of the table, for the background."""
    async with client.transaction() as tx:
        await tx.execute("SET LOCAL statement_timeout = '120s'")
        rows = await tx.fetch(_EXACT_COUNTS)
    return {(r["queue"], r["state"]): r["n"] for r in rows}
