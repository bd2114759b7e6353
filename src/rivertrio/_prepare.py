"""A job to insert, resolved from its args and options (call, args class, config, defaults).

Every insert path (the Trio client, its coalescer, `rivertrio.aio`, `render_insert`, the
testing helpers) prepares its jobs here, so validation and defaults are written once.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ._args import InsertOpts, JobArgs, encode_args, encode_metadata
from ._driver._insert import JobToInsert
from ._exceptions import InvalidInputError, UnknownJobKindError
from ._flow import stamp
from ._job import InsertResult, JobRow
from ._unique import UniqueOpts, unique_key
from ._unique_fields import unique_fields

if TYPE_CHECKING:
    import asyncpg

    from ._config import Config

__all__ = [
    "DEFAULT_PRIORITY",
    "DEFAULT_QUEUE",
    "dedupe",
    "prepare_job",
    "prepare_many",
    "results",
]

DEFAULT_QUEUE = "default"
DEFAULT_PRIORITY = 1


def dedupe(jobs: Sequence[JobToInsert]) -> tuple[list[JobToInsert], list[int]]:
    """The jobs to send, each unique key once, and where each job's row will be among them.

    Two rows with one unique key in one INSERT ... ON CONFLICT DO UPDATE would
    fail the statement ("cannot affect row a second time"): each key is sent
    once, and the later copies are reported as duplicates of the first.
    """
    sent: list[JobToInsert] = []
    slot_of: list[int] = []
    first_with_key: dict[bytes, int] = {}
    for job in jobs:
        if job.unique_key is not None:
            slot = first_with_key.get(job.unique_key)
            if slot is not None:
                slot_of.append(slot)
                continue
            first_with_key[job.unique_key] = len(sent)
        slot_of.append(len(sent))
        sent.append(job)
    return sent, slot_of


def results(
    outcomes: Sequence[asyncpg.Record | Exception], slot_of: Sequence[int]
) -> list[InsertResult | Exception]:
    """Each job's result (or error), from the outcomes of the jobs sent."""
    rows: dict[int, JobRow] = {}
    results: list[InsertResult | Exception] = []
    reported: set[int] = set()
    for slot in slot_of:
        outcome = outcomes[slot]
        if isinstance(outcome, Exception):
            results.append(outcome)
            continue
        row = rows.get(slot)
        if row is None:
            row = rows[slot] = JobRow.from_record(outcome)
        is_later_copy = slot in reported
        reported.add(slot)
        results.append(
            InsertResult(
                job=row,
                unique_skipped_as_duplicate=is_later_copy or outcome["unique_skipped_as_duplicate"],
            )
        )
    return results


# The options `_merged` resolves, in its order; then `pending`.
_OPTION_FIELDS = operator.attrgetter(
    "queue", "priority", "scheduled_at", "max_attempts", "tags", "metadata", "unique"
)
_NO_OPTIONS: tuple[Any, ...] = (None,) * 7 + (False,)


def _merged(opts: InsertOpts | None, cls_opts: InsertOpts | None) -> tuple[Any, ...]:
    """Each option from `opts`, else from `cls_opts` (None where neither sets it); then pending."""
    if opts is None or cls_opts is None:
        only = opts if cls_opts is None else cls_opts
        return _NO_OPTIONS if only is None else (*_OPTION_FIELDS(only), only.pending)
    merged = (
        mine if mine is not None else theirs
        for mine, theirs in zip(_OPTION_FIELDS(opts), _OPTION_FIELDS(cls_opts), strict=True)
    )
    return (*merged, opts.pending or cls_opts.pending)


def _pick(*values: Any) -> Any:
    for value in values:
        if value is not None:
            return value
    return None


def prepare_job(args: object, opts: object, config: Config, now: datetime) -> JobToInsert:
    """Check and resolve one job to insert (no I/O).

    Each option comes from `opts`, else the args class's ``insert_opts``, else
    the config (``max_attempts``), else the default. `now` is the insert time
    that a unique period is counted from when the job has no ``scheduled_at``.

    Raises:
        InvalidInputError: Invalid args or options.
        UnknownJobKindError: The config has workers and none works this kind.
    """
    if not isinstance(args, JobArgs):
        raise InvalidInputError(
            f"job args must be a rivertrio.JobArgs instance, not {type(args).__name__}"
        )
    if opts is not None and not isinstance(opts, InsertOpts):
        raise InvalidInputError(
            f"insert options must be a rivertrio.InsertOpts, not {type(opts).__name__}"
        )
    kind = type(args).kind
    workers = config.workers
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
    merged = _merged(opts, cls_opts)
    queue: str = merged[0] or DEFAULT_QUEUE
    scheduled_at: datetime | None = merged[2]
    unique: UniqueOpts | None = merged[6]
    tags: Sequence[str] = merged[4] or ()
    metadata: Mapping[str, Any] = _pick(merged[5], {})
    key: bytes | None = None
    states: int | None = None
    if unique is not None and not unique.is_empty:
        key = unique_key(
            unique,
            kind=kind,
            encoded_args=encoded,
            queue=queue,
            now=now,
            scheduled_at=scheduled_at,
            fields=unique_fields(type(args)),
        )
        states = unique.states_bitmask
    pending: bool = merged[7]
    rules = config.flow.get(queue)
    if rules is not None and not pending:
        # A flow-controlled queue: held (pending, keys stamped) for the flow fetch.
        metadata = stamp(rules, kind, encoded, metadata)
        pending = True
    return JobToInsert(
        args=encoded,
        kind=kind,
        max_attempts=_pick(merged[3], config.max_attempts),
        metadata=encode_metadata(metadata) if metadata else "{}",
        priority=_pick(merged[1], DEFAULT_PRIORITY),
        queue=queue,
        scheduled_at=None if scheduled_at is None else scheduled_at.astimezone(UTC),
        pending=pending,
        tags=tuple(tags),
        unique_key=key,
        unique_states=states,
    )


def prepare_many(params: object, what: str, config: Config) -> list[JobToInsert]:
    """Check and resolve the jobs of an insert of many (`what`: the call, for messages).

    Raises:
        InvalidInputError: `params` is not a non-empty list, or an entry is
            invalid (its index is named).
        UnknownJobKindError: The config has workers and none works an entry's kind.
    """
    if isinstance(params, str | bytes | JobArgs) or not isinstance(params, Sequence):
        raise InvalidInputError(
            f"{what} takes a list of job args or (args, InsertOpts) pairs, "
            f"not {type(params).__name__}"
        )
    if not params:
        raise InvalidInputError(f"{what} needs at least one job; the list is empty")
    now = datetime.now(UTC)
    prepared: list[JobToInsert] = []
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
            prepared.append(prepare_job(args, opts, config, now))
        except InvalidInputError as exc:
            raise InvalidInputError(f"{what}: params[{i}]: {exc}") from exc
        except UnknownJobKindError as exc:
            raise UnknownJobKindError(f"{what}: params[{i}]: {exc}") from exc
    return prepared
