"""Inserting jobs: options, their resolution and validation, and the insert statements."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeAlias

import trio

from ._config import queue_name_problem
from ._driver import Tx
from ._driver._copy import copy_jobs, insert_jobs_atomic
from ._driver._jobs import InsertRows
from ._exceptions import DatabaseError, InvalidInputError, UnknownJobKindError
from ._job import JobArgs, JobRow, JobState, encode_args, json_value_problem
from ._unique import UniqueOpts, unique_key

if TYPE_CHECKING:
    import asyncpg

    from ._config import Config
    from ._driver import Driver

__all__ = [
    "DEFAULT_PRIORITY",
    "DEFAULT_QUEUE",
    "InsertOpts",
    "InsertParams",
    "InsertResult",
    "Inserter",
    "validate_tags",
]

DEFAULT_QUEUE = "default"
DEFAULT_PRIORITY = 1
MIN_PRIORITY, MAX_PRIORITY = 1, 4
MAX_ATTEMPTS_LIMIT = 32767  # river_job.max_attempts is a smallint
MAX_TAG_LENGTH = 255

# River's rule, with ASCII \w as in Go; fullmatch so a trailing newline fails too.
_TAG = re.compile(r"[\w][\w\-]+[\w]", re.ASCII)

INSERT_TOPIC = "river_insert"


def validate_tags(tags: object, where: str = "tags") -> tuple[str, ...]:
    """Check a list of tags (each at most 255 characters, matching ``^[\\w][\\w\\-]+[\\w]$``).

    Raises:
        InvalidInputError: Not a list of strings, or a tag breaks the rule.
    """
    if isinstance(tags, str | bytes) or not isinstance(tags, Sequence | set | frozenset):
        raise InvalidInputError(f"{where} must be a list of strings, not {type(tags).__name__}")
    checked: list[str] = []
    for tag in tags:
        if not isinstance(tag, str):
            raise InvalidInputError(f"{where}: tag {tag!r} is not a string")
        if len(tag) > MAX_TAG_LENGTH:
            raise InvalidInputError(
                f"{where}: tag {tag[:20]!r}... is {len(tag)} characters long; "
                f"at most {MAX_TAG_LENGTH} are allowed"
            )
        if not _TAG.fullmatch(tag):
            raise InvalidInputError(
                f"{where}: tag {tag!r} is invalid: it must match ^[\\w][\\w\\-]+[\\w]$ "
                "(at least 3 characters: letters, digits, '_', '-' inside)"
            )
        checked.append(tag)
    return tuple(checked)


def _encode_metadata(metadata: object, where: str = "metadata") -> str:
    if not isinstance(metadata, Mapping):
        raise InvalidInputError(
            f"{where} must be a JSON object (a dict), not {type(metadata).__name__}"
        )
    for key in metadata:
        if not isinstance(key, str):
            raise InvalidInputError(f"{where} key {key!r} is not a string")
    problem = json_value_problem(dict(metadata))
    if problem is not None:
        raise InvalidInputError(f"{where} {problem}")
    try:
        return json.dumps(dict(metadata), allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInputError(f"{where} does not encode to JSON: {exc}") from exc


@dataclass(frozen=True, slots=True)
class InsertOpts:
    """Options of one insert. Unset fields (None) fall back, field by field, to the
    args class's ``insert_opts``, then the config, then the default.

    Args:
        queue: The queue; default ``"default"``.
        priority: 1 (first) to 4; default 1.
        scheduled_at: When the job becomes due (timezone-aware); in the future
            makes it ``scheduled``.
        max_attempts: 1 to 32767; default the config's ``max_attempts`` (25).
        tags: Each at most 255 characters matching ``^[\\w][\\w\\-]+[\\w]$``.
        metadata: A JSON object stored with the job.
        unique: Uniqueness options (see `UniqueOpts`).
        pending: Insert as ``pending``: never fetched until moved out of it.

    Raises:
        InvalidInputError: A field is invalid; the message names it.
    """

    queue: str | None = None
    priority: int | None = None
    scheduled_at: datetime | None = None
    max_attempts: int | None = None
    tags: Sequence[str] | None = None
    metadata: Mapping[str, Any] | None = None
    unique: UniqueOpts | None = None
    pending: bool = False

    def __post_init__(self) -> None:
        if self.queue is not None:
            problem = queue_name_problem(self.queue)
            if problem is not None:
                raise InvalidInputError(f"queue: {problem}")
        p = self.priority
        if p is not None and (
            not isinstance(p, int) or isinstance(p, bool) or not MIN_PRIORITY <= p <= MAX_PRIORITY
        ):
            raise InvalidInputError(
                f"priority must be an int between {MIN_PRIORITY} and {MAX_PRIORITY}, got {p!r}"
            )
        at = self.scheduled_at
        if at is not None:
            if not isinstance(at, datetime):
                raise InvalidInputError(f"scheduled_at must be a datetime, not {type(at).__name__}")
            if at.tzinfo is None or at.utcoffset() is None:
                raise InvalidInputError(
                    f"scheduled_at must be timezone-aware (e.g. datetime.now(UTC)), got {at!r}"
                )
        ma = self.max_attempts
        if ma is not None and (
            not isinstance(ma, int) or isinstance(ma, bool) or not 1 <= ma <= MAX_ATTEMPTS_LIMIT
        ):
            raise InvalidInputError(
                f"max_attempts must be an int between 1 and {MAX_ATTEMPTS_LIMIT}, got {ma!r}"
            )
        if self.tags is not None:
            object.__setattr__(self, "tags", validate_tags(self.tags))
        if self.metadata is not None:
            # Decoded again so the stored options cannot change behind our back.
            object.__setattr__(self, "metadata", json.loads(_encode_metadata(self.metadata)))
        if self.unique is not None and not isinstance(self.unique, UniqueOpts):
            raise InvalidInputError(
                f"unique must be a rivertrio.UniqueOpts, not {type(self.unique).__name__}"
            )
        if not isinstance(self.pending, bool):
            raise InvalidInputError(f"pending must be a bool, not {type(self.pending).__name__}")


#: One job to insert: its args, or (args, options).
InsertParams: TypeAlias = JobArgs | tuple[JobArgs, InsertOpts | None]


@dataclass(frozen=True, slots=True)
class InsertResult:
    """What an insert returned: the row, and whether it was an existing unique duplicate."""

    job: JobRow
    unique_skipped_as_duplicate: bool


@dataclass(slots=True)
class _Prepared:
    args: str
    kind: str
    max_attempts: int
    metadata: str
    priority: int
    queue: str
    scheduled_at: datetime | None
    pending: bool
    tags: str
    unique_key: bytes | None
    unique_states: str | None


def _job_row(rec: asyncpg.Record) -> JobRow:
    fields: dict[str, Any] = dict(rec.items())
    states = fields["unique_states"]
    if states is not None and not isinstance(states, int):
        # bit(8) arrives as an asyncpg BitString; hand JobRow the byte's value
        # (BitString.as_string() groups the bits with spaces).
        fields["unique_states"] = int.from_bytes(states.bytes, "big")
    return JobRow.from_record(fields)


def _pick(*values: Any) -> Any:
    for value in values:
        if value is not None:
            return value
    return None


class Inserter:
    """Builds and runs inserts for a client; see `insert`, `insert_many`, `insert_many_fast`.

    Args:
        driver: The database.
        config: Supplies the default max_attempts, the workers (to reject unknown
            kinds), ``fetch_cooldown`` (to debounce notifications) and ``poll_only``.
        on_available: Called with the queues that got available jobs after each
            insert that committed within the call (not for a caller's transaction),
            to wake local producers without waiting for a notification.
        clock: The monotonic clock debouncing notifications (for tests).
    """

    def __init__(
        self,
        driver: Driver,
        config: Config,
        *,
        on_available: Callable[[frozenset[str]], None] | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._driver = driver
        self._config = config
        self._on_available = on_available
        self._clock = clock
        self._last_notified: dict[str, float] = {}

    # --- validation and resolution (no I/O) ---

    def _prepare(self, args: object, opts: object, now: datetime) -> _Prepared:
        if not isinstance(args, JobArgs):
            raise InvalidInputError(
                f"job args must be a rivertrio.JobArgs instance, not {type(args).__name__}"
            )
        if opts is not None and not isinstance(opts, InsertOpts):
            raise InvalidInputError(
                f"insert options must be a rivertrio.InsertOpts, not {type(opts).__name__}"
            )
        kind = type(args).kind
        workers = self._config.workers
        if workers is not None and kind not in workers:
            raise UnknownJobKindError(
                f"job kind {kind!r} has no registered worker; register one with "
                f"workers.add(...) or @workers.register({type(args).__qualname__}) "
                "(an insert-only client, with no workers, accepts any kind)"
            )
        encoded = encode_args(args)
        cls_opts = type(args).insert_opts
        if cls_opts is not None and not isinstance(cls_opts, InsertOpts):
            raise InvalidInputError(
                f"{type(args).__qualname__}.insert_opts must be a rivertrio.InsertOpts, "
                f"not {type(cls_opts).__name__}"
            )
        layers = [o for o in (opts, cls_opts) if o is not None]

        def field(name: str) -> Any:
            return _pick(*(getattr(o, name) for o in layers))

        queue: str = field("queue") or DEFAULT_QUEUE
        scheduled_at: datetime | None = field("scheduled_at")
        unique: UniqueOpts | None = field("unique")
        tags: Sequence[str] = field("tags") or ()
        metadata: Mapping[str, Any] = _pick(field("metadata"), {})
        key: bytes | None = None
        states: str | None = None
        if unique is not None and not unique.is_empty:
            key = unique_key(unique, kind=kind, encoded_args=encoded, queue=queue, now=now)
            states = format(unique.states_bitmask, "08b")
        return _Prepared(
            args=encoded,
            kind=kind,
            max_attempts=_pick(field("max_attempts"), self._config.max_attempts),
            metadata=_encode_metadata(metadata),
            priority=_pick(field("priority"), DEFAULT_PRIORITY),
            queue=queue,
            scheduled_at=None if scheduled_at is None else scheduled_at.astimezone(UTC),
            pending=any(o.pending for o in layers),
            # unnest cannot carry a 2-D array, so tags travel comma-joined
            # (the tag rule forbids commas).
            tags=",".join(tags),
            unique_key=key,
            unique_states=states,
        )

    def _prepare_many(self, params: object, what: str) -> list[_Prepared]:
        if isinstance(params, str | bytes | JobArgs) or not isinstance(params, Sequence):
            raise InvalidInputError(
                f"{what} takes a list of job args or (args, InsertOpts) pairs, "
                f"not {type(params).__name__}"
            )
        if not params:
            raise InvalidInputError(f"{what} needs at least one job; the list is empty")
        now = datetime.now(UTC)
        prepared: list[_Prepared] = []
        for i, item in enumerate(params):
            if isinstance(item, tuple):
                if len(item) != 2:
                    raise InvalidInputError(
                        f"{what}: params[{i}] must be args or an (args, InsertOpts) pair, "
                        f"not a tuple of {len(item)}"
                    )
                args, opts = item
            else:
                args, opts = item, None
            try:
                prepared.append(self._prepare(args, opts, now))
            except InvalidInputError as exc:
                raise InvalidInputError(f"{what}: params[{i}]: {exc}") from exc
            except UnknownJobKindError as exc:
                raise UnknownJobKindError(f"{what}: params[{i}]: {exc}") from exc
        return prepared

    @staticmethod
    def _rows(prepared: Sequence[_Prepared]) -> InsertRows:
        return InsertRows(
            args=[p.args for p in prepared],
            kind=[p.kind for p in prepared],
            max_attempts=[p.max_attempts for p in prepared],
            metadata=[p.metadata for p in prepared],
            priority=[p.priority for p in prepared],
            queue=[p.queue for p in prepared],
            scheduled_at=[p.scheduled_at for p in prepared],
            pending=[p.pending for p in prepared],
            tags=[p.tags for p in prepared],
            unique_key=[p.unique_key for p in prepared],
            unique_states=[p.unique_states for p in prepared],
        )

    # --- notifications ---

    def _notifications(self, queues: frozenset[str], now: float) -> tuple[list[str], list[str]]:
        """Pick the insert notifications to send, at most one per queue per cooldown."""
        if self._config.poll_only or not queues:
            return [], []
        cooldown = self._config.fetch_cooldown
        channel = self._driver.channel(INSERT_TOPIC)
        channels: list[str] = []
        payloads: list[str] = []
        for queue in sorted(queues):
            last = self._last_notified.get(queue)
            if last is not None and now - last < cooldown:
                continue
            self._last_notified[queue] = now
            channels.append(channel)
            payloads.append(json.dumps({"queue": queue}, separators=(",", ":")))
        return channels, payloads

    def _available(self, committed: bool, queues: frozenset[str]) -> None:
        if committed and queues and self._on_available is not None:
            self._on_available(queues)

    # --- the inserts ---

    async def insert(
        self, executor: Driver | Tx, args: JobArgs, opts: InsertOpts | None = None
    ) -> InsertResult:
        """Insert one job. A checkpoint.

        With the Driver the job is committed when this returns; with a `Tx` it
        commits (and its notification is delivered) with the caller's transaction.
        Cancel-safe on the Driver: if cancelled, the job is either fully inserted
        or not at all.

        Raises:
            InvalidInputError: Invalid args or options (nothing is sent to the database).
            UnknownJobKindError: Workers are configured and none works this kind.
        """
        prepared = [self._prepare(args, opts, datetime.now(UTC))]
        return (await self._run_insert(executor, prepared))[0]

    async def insert_many(
        self, executor: Driver | Tx, params: Sequence[InsertParams]
    ) -> list[InsertResult]:
        """Insert many jobs in one statement; results are in the order of `params`. A checkpoint.

        A unique job repeated within the batch is inserted once; the later copies
        are reported as duplicates of it.

        Raises:
            InvalidInputError: `params` is empty, or an entry is invalid (its index is named).
            UnknownJobKindError: Workers are configured and none works an entry's kind.
        """
        return await self._run_insert(executor, self._prepare_many(params, "insert_many"))

    async def insert_many_fast(self, executor: Driver | Tx, params: Sequence[InsertParams]) -> int:
        """Insert many jobs with COPY and return how many were inserted. A checkpoint.

        Faster than `insert_many` for large batches, but returns no rows and
        cannot skip unique duplicates: a unique conflict fails the whole call and
        nothing is inserted (in a `Tx`, it also aborts the caller's transaction).

        Raises:
            InvalidInputError: `params` is empty, or an entry is invalid.
            UnknownJobKindError: Workers are configured and none works an entry's kind.
            DatabaseError: A unique conflict (sqlstate 23505) or another database error.
        """
        prepared = self._prepare_many(params, "insert_many_fast")
        now = self._clock()
        try:
            count, queues, committed = await executor.run(
                copy_jobs,
                self._driver.configured_schema,
                self._rows(prepared),
                lambda queues: self._notifications(queues, now),
            )
        except DatabaseError as exc:
            if getattr(exc, "sqlstate", None) != "23505":
                raise
            err = DatabaseError(
                f"insert_many_fast: a job conflicts with a unique job (stored or in the same "
                f"batch); nothing was inserted: {exc}"
            )
            err.sqlstate = "23505"  # type: ignore[attr-defined]
            raise err from exc
        self._available(committed, queues)
        return count

    async def _run_insert(
        self, executor: Driver | Tx, prepared: list[_Prepared]
    ) -> list[InsertResult]:
        # Two rows with one unique key in one INSERT ... ON CONFLICT DO UPDATE
        # would fail the statement ("cannot affect row a second time"): send each
        # key once and report the later copies as duplicates of the first.
        sent: list[_Prepared] = []
        slot_of: list[int] = []
        first_with_key: dict[bytes, int] = {}
        for p in prepared:
            if p.unique_key is not None:
                slot = first_with_key.get(p.unique_key)
                if slot is not None:
                    slot_of.append(slot)
                    continue
                first_with_key[p.unique_key] = len(sent)
            slot_of.append(len(sent))
            sent.append(p)

        now = self._clock()
        available: set[str] = set()

        def notify(records: Sequence[asyncpg.Record]) -> tuple[list[str], list[str]]:
            for rec in records:
                if rec["state"] == JobState.AVAILABLE and not rec["unique_skipped_as_duplicate"]:
                    available.add(rec["queue"])
            return self._notifications(frozenset(available), now)

        records, committed = await executor.run(
            insert_jobs_atomic, self._driver.configured_schema, self._rows(sent), notify
        )
        if len(records) != len(sent):  # pragma: no cover (would be a bug in the SQL)
            raise DatabaseError(f"insert returned {len(records)} rows for {len(sent)} jobs")
        rows = [_job_row(rec) for rec in records]
        results: list[InsertResult] = []
        reported: set[int] = set()
        for slot in slot_of:
            is_later_copy = slot in reported
            reported.add(slot)
            results.append(
                InsertResult(
                    job=rows[slot],
                    unique_skipped_as_duplicate=is_later_copy
                    or bool(records[slot]["unique_skipped_as_duplicate"]),
                )
            )
        self._available(committed, frozenset(available))
        return results
