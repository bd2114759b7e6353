"""The dashboard's reads: what the client API has no call for, in SQL that uses River's indexes.

Each read runs in a short transaction of its own with a statement timeout (a
dashboard must never hold the database up) and custom plans only: the
selectivity of a state, queue or kind differs by orders of magnitude, and a
generic plan chosen for one would be wrong for the next. Actions are not here:
the dashboard changes jobs and queues only through `rivertrio.Client`.

The indexes these reads rely on (River's schema):

- ``river_job_pkey`` (id): the newest-first order of every job list.
- ``river_job_prioritized_fetching_index`` (state, queue, priority,
  scheduled_at, id): counts by state and queue, read index-only; lists of a rare
  state or queue.
- ``river_job_state_and_finalized_at_index`` (state, finalized_at), partial on
  finalized rows: throughput, and the clients seen recently.
- ``river_job_kind`` (kind), ``river_job_args_index`` and
  ``river_job_metadata_index`` (GIN): kind, args and periodic-job filters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .._exceptions import InvalidInputError
from .._job import JobState
from .._liveness import is_marked, liveness_key

if TYPE_CHECKING:
    from .. import Client
    from .._driver import Tx

__all__ = [
    "COUNT_CAP",
    "DISPLAY_STATES",
    "PAGE_SIZE",
    "ArgsMatch",
    "Filter",
    "JobPage",
    "JobSummary",
    "Leader",
    "Overview",
    "PeriodicSummary",
    "QueueSummary",
    "SeenClient",
    "count_matching",
    "exact_counts",
    "job_page",
    "job_page_sql",
    "known_kinds",
    "matching_ids",
    "overview",
    "parse_args_query",
    "periodic_jobs",
    "state_counts",
]

#: The order states are shown in: work to do, then work done.
DISPLAY_STATES: tuple[JobState, ...] = (
    JobState.AVAILABLE,
    JobState.RUNNING,
    JobState.SCHEDULED,
    JobState.RETRYABLE,
    JobState.PENDING,
    JobState.COMPLETED,
    JobState.DISCARDED,
    JobState.CANCELLED,
)

#: Counts by queue and state stop at this many rows each (read index-only, so a
#: queue with millions of completed jobs costs no more than one with ten
#: thousand); larger counts come from a full count made in the background.
COUNT_CAP = 10_000
#: Jobs per page of a list.
PAGE_SIZE = 50
#: At most this many (queue, state) pairs on the overview.
MAX_PAIRS = 2_000
#: The throughput chart covers this many minutes, the current one last.
CHART_MINUTES = 60
#: Clients are "seen" when they ran a job that is running or ended this recently.
SEEN_WINDOW_MINUTES = 10

# Every dashboard read: bounded, and planned for the values it is given.
_READ_SETTINGS = (
    "SET LOCAL statement_timeout = '15s'; SET LOCAL plan_cache_mode = force_custom_plan"
)


def _state_list(states: Iterable[JobState]) -> str:
    return ", ".join(f"'{JobState(s).value}'" for s in states)


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

# Distinct kinds, one probe of the kind index each.
_KINDS = """
WITH RECURSIVE kinds AS (
    (SELECT kind FROM /*schema*/river_job ORDER BY kind LIMIT 1)
    UNION ALL
    SELECT later.kind FROM kinds, LATERAL (
        SELECT j.kind FROM /*schema*/river_job AS j
        WHERE j.kind > kinds.kind
        ORDER BY j.kind
        LIMIT 1
    ) AS later
)
SELECT kind FROM kinds LIMIT 500
"""

# Jobs a periodic schedule inserted carry metadata.periodic = true (River's
# mark too), found through the metadata GIN index.
_PERIODIC = """
SELECT kind, queue, metadata->>'river:periodic_job_id' AS periodic_id,
    count(*) AS total,
    count(*) FILTER (WHERE state = 'discarded') AS discarded,
    max(created_at) AS last_created,
    min(scheduled_at) FILTER (
        WHERE state IN ('available', 'scheduled', 'retryable', 'pending')
    ) AS next_at,
    max(id) AS last_id
FROM /*schema*/river_job
WHERE metadata @> '{"periodic": true}'
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
LIMIT 500
"""

_PERIODIC_LAST = """
SELECT id, state::text AS state, finalized_at FROM /*schema*/river_job WHERE id = ANY($1::bigint[])
"""

# One line of a job list. The last error only: a job may carry 25 attempts' traces.
_SUMMARY_COLUMNS = """id, state::text AS state, attempt, max_attempts, priority, queue, kind,
    args::text AS args, tags, created_at, scheduled_at, attempted_at, finalized_at,
    attempted_by[cardinality(attempted_by)] AS attempted_by_last,
    errors[cardinality(errors)]::text AS last_error"""


# -- filters --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArgsMatch:
    """What the args search box asks for, as one indexed condition on ``args``.

    - ``{"customer": 42}``: a JSON object the args contain (``args @> ...``);
    - ``customer.id=42``: the same, written as a dotted path and a value (the
      value is read as JSON when it is JSON, else as a string);
    - anything else: a value equal to the text anywhere in the args, at any
      depth (``args @? '$.** ? (@ == "text")'``); text that is a number also
      matches that number. Text in double quotes is a JSON string: the value
      it spells (``"a=b"`` for a value the path form would read as a path).

    All three are served by the GIN index on ``args``. Substrings are not
    searched: no index serves them, and scanning a million args is what a
    dashboard must not do.
    """

    text: str
    operator: str
    """``@>`` (containment, the value is jsonb) or ``@?`` (a jsonpath)."""
    value: str


_PATH = re.compile(r"([A-Za-z_][A-Za-z0-9_\-]*(?:\.[A-Za-z_][A-Za-z0-9_\-]*)*)\s*=(.*)", re.S)
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]{0,17})(?:\.[0-9]{1,17})?")
MAX_ARGS_QUERY = 1000


def parse_args_query(text: str) -> ArgsMatch | None:
    """The condition the args search `text` stands for (see `ArgsMatch`); None if empty.

    Raises:
        InvalidInputError: The text is too long, holds a NUL character, or starts
            with ``{`` or ``"`` and is not a JSON object or string.
    """
    text = text.strip()
    if not text:
        return None
    if len(text) > MAX_ARGS_QUERY:
        raise InvalidInputError(
            f"args search: at most {MAX_ARGS_QUERY} characters, got {len(text)}"
        )
    if "\x00" in text:
        raise InvalidInputError("args search: a NUL character cannot be searched for")
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise InvalidInputError(f"args search: {text!r} is not valid JSON ({exc})") from None
        if not isinstance(value, dict):
            raise InvalidInputError("args search: a JSON search must be an object")
        return ArgsMatch(text, "@>", json.dumps(value))
    if text.startswith('"'):
        # A JSON string: the value itself, for text that would read as a path.
        try:
            quoted = json.loads(text)
        except ValueError as exc:
            raise InvalidInputError(f"args search: {text!r} is not a JSON string ({exc})") from None
        if not isinstance(quoted, str):
            raise InvalidInputError(f"args search: {text!r} is not a JSON string")
        return _anywhere(text, quoted)
    path = _PATH.fullmatch(text)
    if path is not None:
        raw = path.group(2).strip()
        try:
            leaf: Any = json.loads(raw)
        except ValueError:
            leaf = raw
        for key in reversed(path.group(1).split(".")):
            leaf = {key: leaf}
        return ArgsMatch(text, "@>", json.dumps(leaf))
    return _anywhere(text, text)


def _anywhere(text: str, value: str) -> ArgsMatch:
    """A match of `value` anywhere in the args (as a number too, if it is one)."""
    # A jsonpath string literal takes JSON's escapes: the value never becomes syntax.
    test = f"@ == {json.dumps(value)}"
    if _NUMBER.fullmatch(value):
        test += f" || @ == {value}"
    return ArgsMatch(text, "@?", f"$.** ? ({test})")


@dataclass(frozen=True, slots=True)
class Filter:
    """Which jobs a list, a count or a bulk action covers; empty fields match all."""

    states: tuple[JobState, ...] = ()
    kinds: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    args: ArgsMatch | None = None

    @classmethod
    def parse(
        cls,
        *,
        states: Sequence[str] = (),
        kinds: Sequence[str] = (),
        queues: Sequence[str] = (),
        args: str = "",
    ) -> Filter:
        """Build from request parameters (blank values are ignored).

        Raises:
            InvalidInputError: An unknown state, or an args search that cannot be read.
        """
        parsed: list[JobState] = []
        for state in states:
            if not state:
                continue
            try:
                parsed.append(JobState(state))
            except ValueError:
                valid = ", ".join(s.value for s in DISPLAY_STATES)
                raise InvalidInputError(
                    f"state: {state!r} is not a job state (one of {valid})"
                ) from None
        return cls(
            states=tuple(dict.fromkeys(parsed)),
            kinds=tuple(dict.fromkeys(k for k in kinds if k)),
            queues=tuple(dict.fromkeys(q for q in queues if q)),
            args=parse_args_query(args),
        )

    @property
    def empty(self) -> bool:
        """Whether nothing is filtered."""
        return not (self.states or self.kinds or self.queues or self.args)

    def params(self) -> list[tuple[str, str]]:
        """The filter as query parameters (``state``, ``kind``, ``queue``, ``q``)."""
        pairs = [("state", s.value) for s in self.states]
        pairs += [("kind", k) for k in self.kinds]
        pairs += [("queue", q) for q in self.queues]
        if self.args is not None:
            pairs.append(("q", self.args.text))
        return pairs

    def where(self, args: list[Any]) -> list[str]:
        """SQL conditions for this filter; their values are appended to `args`."""
        conditions: list[str] = []

        def param(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        # States are written into the SQL (they are JobState values, never the
        # request's text): the planner then knows how common each one is from the
        # column's statistics, which it cannot from a cast parameter, and picks the
        # fetching index for a rare state instead of walking the whole primary key.
        if self.states:
            conditions.append(f"state IN ({_state_list(self.states)})")
        elif self.queues:
            # Every state, spelled out: the fetching index leads with state, so
            # this lets a rare queue be found through (state, queue) instead of
            # by scanning the table.
            conditions.append(f"state IN ({_state_list(JobState)})")
        if self.queues:
            conditions.append(f"queue = ANY({param(list(self.queues))}::text[])")
        if self.kinds:
            conditions.append(f"kind = ANY({param(list(self.kinds))}::text[])")
        if self.args is not None:
            cast = "jsonb" if self.args.operator == "@>" else "jsonpath"
            conditions.append(f"args {self.args.operator} {param(self.args.value)}::{cast}")
        return conditions


# -- results ----------------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class JobSummary:
    """One line of a job list."""

    id: int
    state: str
    attempt: int
    max_attempts: int
    priority: int
    queue: str
    kind: str
    args: str
    tags: list[str]
    created_at: datetime
    scheduled_at: datetime
    attempted_at: datetime | None
    finalized_at: datetime | None
    attempted_by: str | None
    last_error: str | None
    """The message of the last recorded error."""

    @classmethod
    def from_record(cls, rec: Any) -> JobSummary:
        """Build from a row of the list query."""
        return cls(
            id=rec["id"],
            state=rec["state"],
            attempt=rec["attempt"],
            max_attempts=rec["max_attempts"],
            priority=rec["priority"],
            queue=rec["queue"],
            kind=rec["kind"],
            args=rec["args"],
            tags=list(rec["tags"] or ()),
            created_at=rec["created_at"],
            scheduled_at=rec["scheduled_at"],
            attempted_at=rec["attempted_at"],
            finalized_at=rec["finalized_at"],
            attempted_by=rec["attempted_by_last"],
            last_error=_error_message(rec["last_error"]),
        )


def _error_message(raw: str | None) -> str | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return raw
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return str(data["error"])
    return raw


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of a job list, newest first."""

    jobs: list[JobSummary]
    next_before: int | None
    """Pass as ``before`` for the next (older) page; None on the last page."""


@dataclass(frozen=True, slots=True)
class PeriodicSummary:
    """The jobs one periodic schedule inserted, as found in ``river_job``."""

    kind: str
    queue: str
    periodic_id: str | None
    total: int
    discarded: int
    last_created: datetime
    next_at: datetime | None
    last_id: int
    last_state: str
    last_finalized_at: datetime | None


# -- reads ------------------------------------------------------------------------------


async def _read(tx: Tx) -> None:
    await tx.execute(_READ_SETTINGS)


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
    async with client.transaction() as tx:
        await _read(tx)
        counts = await tx.fetch(_COUNTS, COUNT_CAP)
    return _tally(queue_rows, counts, exact)


async def overview(client: Client, exact: Mapping[tuple[str, str], int] | None) -> Overview:
    """Queues with counts and throughput, the leader, and the clients seen recently.

    `exact` is the last full count by (queue, state), used where a count passed the cap.
    """
    queue_rows = await client.queue_list(limit=MAX_PAIRS)
    async with client.transaction() as tx:
        await _read(tx)
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


async def known_kinds(client: Client) -> list[str]:
    """The job kinds in the table (at most 500), by a loose scan of the kind index."""
    async with client.transaction() as tx:
        await _read(tx)
        rows = await tx.fetch(_KINDS)
    return [r["kind"] for r in rows]


async def exact_counts(client: Client) -> dict[tuple[str, str], int]:
    """Every (queue, state) pair's full count: a scan of the table, for the background."""
    async with client.transaction() as tx:
        await tx.execute("SET LOCAL statement_timeout = '120s'")
        rows = await tx.fetch(_EXACT_COUNTS)
    return {(r["queue"], r["state"]): r["n"] for r in rows}


def job_page_sql(filter: Filter, before: int | None, limit: int) -> tuple[str, list[Any]]:
    """The SELECT of one page of a job list (one row more than `limit`), and its arguments."""
    args: list[Any] = []
    conditions = filter.where(args)
    if before is not None:
        args.append(before)
        conditions.append(f"id < ${len(args)}::bigint")
    args.append(limit + 1)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    sql = (
        f"SELECT {_SUMMARY_COLUMNS} FROM /*schema*/river_job {where} "
        f"ORDER BY id DESC LIMIT ${len(args)}::bigint"
    )
    return sql, args


async def job_page(
    client: Client, filter: Filter, *, before: int | None = None, limit: int = PAGE_SIZE
) -> JobPage:
    """One page of the jobs matching `filter`, newest first, older than job `before`.

    Keyset paging on the id: a page is found by an index, however deep it is,
    and jobs inserted meanwhile (newer, so before the first page) move no job
    from one page to another.
    """
    sql, args = job_page_sql(filter, before, limit)
    async with client.transaction() as tx:
        await _read(tx)
        rows = await tx.fetch(sql, *args)
    jobs = [JobSummary.from_record(r) for r in rows[:limit]]
    return JobPage(jobs, jobs[-1].id if len(rows) > limit else None)


async def count_matching(client: Client, filter: Filter, cap: int) -> tuple[int, int | None]:
    """How many jobs match `filter` (at most `cap` + 1), and the newest job's id then.

    A bulk action covers the jobs up to that id: ones inserted after the count
    was shown are not touched.
    """
    args: list[Any] = []
    conditions = filter.where(args)
    args.append(cap + 1)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    async with client.transaction() as tx:
        await _read(tx)
        newest = await tx.fetchval("SELECT max(id) FROM /*schema*/river_job")
        count = await tx.fetchval(
            f"SELECT count(*) FROM (SELECT 1 FROM /*schema*/river_job {where} "
            f"LIMIT ${len(args)}::bigint) AS matching",
            *args,
        )
    return count, newest


async def matching_ids(client: Client, filter: Filter, *, up_to: int, limit: int) -> list[int]:
    """The ids of the newest `limit` jobs matching `filter`, none newer than job `up_to`."""
    args: list[Any] = []
    conditions = filter.where(args)
    args.extend([up_to, limit])
    conditions.append(f"id <= ${len(args) - 1}::bigint")
    sql = (
        f"SELECT id FROM /*schema*/river_job WHERE {' AND '.join(conditions)} "
        f"ORDER BY id DESC LIMIT ${len(args)}::bigint"
    )
    async with client.transaction() as tx:
        await _read(tx)
        rows = await tx.fetch(sql, *args)
    return [r["id"] for r in rows]


async def periodic_jobs(client: Client) -> list[PeriodicSummary]:
    """Each periodic schedule seen in the jobs table, by kind, queue and periodic id."""
    async with client.transaction() as tx:
        await _read(tx)
        rows = await tx.fetch(_PERIODIC)
        last = {
            r["id"]: r for r in await tx.fetch(_PERIODIC_LAST, [row["last_id"] for row in rows])
        }
    result = []
    for r in rows:
        latest = last.get(r["last_id"])
        result.append(
            PeriodicSummary(
                kind=r["kind"],
                queue=r["queue"],
                periodic_id=r["periodic_id"],
                total=r["total"],
                discarded=r["discarded"],
                last_created=r["last_created"],
                next_at=r["next_at"],
                last_id=r["last_id"],
                last_state=latest["state"] if latest else "deleted",
                last_finalized_at=latest["finalized_at"] if latest else None,
            )
        )
    return result
