"""The ``require_*`` assertions: what a test's code inserted, read from ``river_job``.

They read through a client or inside a transaction, so a test can check what
its code inserted, even before that code's transaction commits.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn, TypeVar, cast

from rivertrio._args import InsertOpts, Job, JobArgs
from rivertrio._client import Client
from rivertrio._driver import Queryable
from rivertrio._exceptions import InvalidInputError
from rivertrio._job import JobRow, JobState
from rivertrio._validate import integer, member
from rivertrio._validate import max_attempts as check_max_attempts
from rivertrio._validate import priority as check_priority

__all__ = [
    "RequireInsertedOpts",
    "require_inserted",
    "require_many_inserted",
    "require_not_inserted",
]

ArgsT = TypeVar("ArgsT", bound=JobArgs)


@dataclass(frozen=True, slots=True)
class RequireInsertedOpts:
    """Expected values of a job's row for the ``require_*`` assertions; None = any.

    Args:
        queue: The job's queue.
        priority: Its priority.
        max_attempts: Its max attempts.
        state: Its state (a `JobState` or its name, e.g. ``"scheduled"``).
        tags: Its tags, exactly and in order.
        metadata: Keys its metadata holds, with these values (other keys may be there).
        scheduled_at: When it is due (timezone-aware; compared to the microsecond,
            as Postgres stores it).

    Raises:
        InvalidInputError: A value cannot be a job's; the message names the field.
    """

    queue: str | None = None
    priority: int | None = None
    max_attempts: int | None = None
    state: JobState | str | None = None
    tags: Sequence[str] | None = None
    metadata: Mapping[str, Any] | None = None
    scheduled_at: datetime | None = None

    def __post_init__(self) -> None:
        put = object.__setattr__
        if self.queue is not None and not isinstance(self.queue, str):
            raise InvalidInputError(f"queue must be a string, not {type(self.queue).__name__}")
        if self.priority is not None:
            check_priority(self.priority, InvalidInputError)
        if self.max_attempts is not None:
            check_max_attempts(self.max_attempts, InvalidInputError)
        if self.state is not None:
            state = member("state", self.state, JobState, InvalidInputError, what="a job state")
            put(self, "state", state)
        if self.tags is not None:
            tags = self.tags
            if isinstance(tags, str | bytes) or not isinstance(tags, Sequence):
                raise InvalidInputError(
                    f"tags must be a list of strings, not {type(tags).__name__} (write tags=[...])"
                )
            put(self, "tags", tuple(tags))
        if self.metadata is not None and not isinstance(self.metadata, Mapping):
            raise InvalidInputError(f"metadata must be a dict, not {type(self.metadata).__name__}")
        at = self.scheduled_at
        if at is not None and (not isinstance(at, datetime) or at.utcoffset() is None):
            raise InvalidInputError(f"scheduled_at must be a timezone-aware datetime, got {at!r}")


def _show(value: object) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, datetime):
        return value.isoformat()
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _row_problems(row: JobRow, opts: RequireInsertedOpts) -> list[str]:
    """How `row` differs from the expected values in `opts`."""
    problems: list[str] = []
    for name in ("queue", "priority", "max_attempts", "state", "scheduled_at"):
        expected = getattr(opts, name)
        actual = getattr(row, name)
        if expected is not None and actual != expected:
            problems.append(f"{name}={_show(actual)} (expected {_show(expected)})")
    if opts.tags is not None and list(row.tags) != list(opts.tags):
        problems.append(f"tags={_show(list(row.tags))} (expected {_show(list(opts.tags))})")
    if opts.metadata is not None:
        meta = row.metadata
        if any(key not in meta or meta[key] != value for key, value in opts.metadata.items()):
            problems.append(
                f"metadata={_show(dict(meta))} "
                f"(expected it to contain {_show(dict(opts.metadata))})"
            )
    return problems


_MISSING: Any = object()


@dataclass(slots=True)
class _Candidate:
    """One stored job of the kind looked for, and how it differs from the expectation."""

    row: JobRow
    problems: list[str]


@dataclass(slots=True)
class _Search:
    caller: str
    kind: str
    wanted: str
    """The expectation in words: ``of kind 'k' (Cls) with a=1, queue='q'``."""
    matches: list[JobRow]
    """The matching jobs: `Job` objects, except rows whose args were not needed
    (``require_not_inserted`` with no args expected) and do not decode."""
    misses: list[_Candidate]
    elsewhere: str
    """When no job has the kind: what the table holds instead."""

    def fail(self, message: str) -> NoReturn:
        raise AssertionError(f"{self.caller}: {message}")

    def fail_short(self, expected: str) -> NoReturn:
        """Fail for too few matches: say what was expected and the jobs that almost matched."""
        if not self.matches and not self.misses:
            self.fail(
                f"expected {expected}, but no job of kind {self.kind!r} was found{self.elsewhere}"
            )
        lines = [f"expected {expected}; found {self._found()}"]
        if self.misses:
            lines.append(f"jobs of kind {self.kind!r} that do not match:")
            lines.extend(f"  job {c.row.id}: {', '.join(c.problems)}" for c in self.misses[:_SHOWN])
            if len(self.misses) > _SHOWN:
                lines.append(f"  ... and {len(self.misses) - _SHOWN} more")
        self.fail("\n".join(lines))

    def _found(self) -> str:
        total = len(self.matches) + len(self.misses)
        jobs = "job" if total == 1 else "jobs"
        if not self.matches:
            return f"{total} {jobs} of that kind, none matching"
        return f"{total} {jobs} of that kind, {len(self.matches)} matching ({_ids(self.matches)})"


_SHOWN = 10


def _ids(jobs: Sequence[JobRow]) -> str:
    shown = ", ".join(str(job.id) for job in jobs[:_SHOWN])
    more = f", ... {len(jobs) - _SHOWN} more" if len(jobs) > _SHOWN else ""
    return f"id{'s' if len(jobs) > 1 else ''} {shown}{more}"


def _describe(row: JobRow) -> str:
    args = row.encoded_args if len(row.encoded_args) <= 80 else row.encoded_args[:77] + "..."
    return (
        f"job {row.id}: state={_show(row.state)}, queue={row.queue!r}, priority={row.priority}, "
        f"args {args}"
    )


def _queryable(caller: str, where: object) -> Queryable:
    if isinstance(where, Client):
        return where.driver
    if isinstance(where, Queryable):
        return where
    raise TypeError(
        f"{caller} takes a rivertrio.Client or a transaction (from client.transaction()), "
        f"not {type(where).__name__}"
    )


def _expected_args(
    caller: str,
    args_class: object,
    expected_args: Mapping[str, Any] | None,
    expected: dict[str, Any],
) -> dict[str, Any]:
    if isinstance(args_class, JobArgs):
        cls_name = type(args_class).__qualname__
        raise TypeError(
            f"{caller} takes the args class, not an instance: pass {cls_name} and the field "
            f"values to match as keywords, e.g. {caller}(client, {cls_name}, field=value)"
        )
    if not (isinstance(args_class, type) and issubclass(args_class, JobArgs)):
        raise TypeError(f"{caller}: {args_class!r} is not a rivertrio.JobArgs subclass")
    wanted = dict(expected_args or {})
    both = sorted(set(wanted) & set(expected))
    if both:
        raise TypeError(
            f"{caller}: field {both[0]!r} is given both as a keyword and in expected_args"
        )
    wanted.update(expected)
    if dataclasses.is_dataclass(args_class):
        fields = [f.name for f in dataclasses.fields(args_class)]
        for name in wanted:
            if name not in fields:
                raise TypeError(
                    f"{caller}: {args_class.__qualname__} has no field {name!r} "
                    f"(its fields: {', '.join(fields) or 'none'})"
                )
    return wanted


async def _search(
    caller: str,
    where: object,
    args_class: type[JobArgs],
    opts: RequireInsertedOpts | None,
    expected_args: Mapping[str, Any] | None,
    expected: dict[str, Any],
    *,
    need_args: bool = True,
) -> _Search:
    conn = _queryable(caller, where)
    wanted_args = _expected_args(caller, args_class, expected_args, expected)
    if opts is not None and not isinstance(opts, RequireInsertedOpts):
        hint = " (InsertOpts are for inserts)" if isinstance(opts, InsertOpts) else ""
        raise TypeError(
            f"{caller}: opts must be a rivertrio.testing.RequireInsertedOpts, "
            f"not {type(opts).__name__}{hint}"
        )
    kind = args_class.kind

    conditions = [f"{name}={_show(value)}" for name, value in wanted_args.items()]
    if opts is not None:
        conditions.extend(
            f"{f.name}={_show(getattr(opts, f.name))}"
            for f in dataclasses.fields(opts)
            if getattr(opts, f.name) is not None
        )
    wanted = f"of kind {kind!r} ({args_class.__qualname__})"
    if conditions:
        wanted += " with " + ", ".join(conditions)

    recs = await conn.fetch("SELECT * FROM /*schema*/river_job WHERE kind = $1 ORDER BY id", kind)
    matches: list[JobRow] = []
    misses: list[_Candidate] = []
    for rec in recs:
        row = JobRow.from_record(rec)
        problems: list[str] = []
        decoded: JobArgs | None = None
        try:
            decoded = args_class.from_json(json.loads(row.encoded_args))
        except Exception as exc:
            if need_args or wanted_args:
                problems.append(
                    f"args {_show(row.encoded_args)} do not decode into "
                    f"{args_class.__qualname__} ({type(exc).__name__}: {exc})"
                )
        else:
            for name, value in wanted_args.items():
                actual = getattr(decoded, name, _MISSING)
                if actual is _MISSING:
                    problems.append(f"{name} is missing (expected {_show(value)})")
                elif actual != value:
                    problems.append(f"{name}={_show(actual)} (expected {_show(value)})")
        if opts is not None:
            problems.extend(_row_problems(row, opts))
        if problems:
            misses.append(_Candidate(row, problems))
        else:
            matches.append(row if decoded is None else Job.from_row(row, decoded))

    elsewhere = ""
    if not recs:
        others = await conn.fetch(
            "SELECT kind, count(*) AS n FROM /*schema*/river_job "
            "GROUP BY kind ORDER BY n DESC, kind LIMIT $1",
            _SHOWN,
        )
        if others:
            found = ", ".join(f"{r['n']} of kind {r['kind']!r}" for r in others)
            elsewhere = f" (jobs found: {found})"
        else:
            elsewhere = " (river_job holds no jobs at all)"
    return _Search(caller, kind, wanted, matches, misses, elsewhere)


async def require_inserted(
    client_or_tx: Client | Queryable,
    args_class: type[ArgsT],
    /,
    *,
    opts: RequireInsertedOpts | None = None,
    expected_args: Mapping[str, Any] | None = None,
    **expected: Any,
) -> Job[ArgsT]:
    """Assert that exactly one job of this args class, as expected, was inserted; return it.

    Looks at every job of the class's kind in ``river_job`` (any state). A job
    matches when each keyword equals the field of that name in its decoded
    args, and its row has the values `opts` expects. For example::

        job = await require_inserted(client, SendEmail, to="a@example.com")
        job = await require_inserted(
            tx, SendEmail, opts=RequireInsertedOpts(queue="email", state="scheduled")
        )

    Pass a transaction (``async with client.transaction() as tx``) to see the
    jobs inserted in it before it commits. A checkpoint: one query (two when no
    job of the kind exists, to say what the table holds); it only reads.

    Args:
        client_or_tx: A `Client`, or a transaction from ``client.transaction()``.
        args_class: The `JobArgs` subclass of the job (the class, not an instance).
        opts: Expected values of the job's row (queue, priority, state, tags...).
        expected_args: Expected args fields as a dict, for fields whose names
            clash with this function's own keywords (``opts``, ``expected_args``).
        **expected: Expected args fields; compared with ``==`` to the values
            decoded from the stored JSON (a list field comes back as a list).

    Returns:
        The job, with its args decoded into `args_class`.

    Raises:
        AssertionError: No job matches, or several do (use `require_many_inserted`
            for those). The message says what was expected and what was found,
            naming the fields of each near miss.
        TypeError: An unknown args field, an instance instead of the class, or a
            `client_or_tx` that is neither a client nor a transaction.
    """
    search = await _search(
        "require_inserted", client_or_tx, args_class, opts, expected_args, expected
    )
    if not search.matches:
        search.fail_short(f"a job {search.wanted}")
    if len(search.matches) > 1:
        n = len(search.matches)
        search.fail(
            f"expected exactly one job {search.wanted}; found {n} matching "
            f"({_ids(search.matches)}): use require_many_inserted(..., count={n}) "
            "to require several"
        )
    return cast("Job[ArgsT]", search.matches[0])


async def require_many_inserted(
    client_or_tx: Client | Queryable,
    args_class: type[ArgsT],
    /,
    *,
    count: int | None = None,
    opts: RequireInsertedOpts | None = None,
    expected_args: Mapping[str, Any] | None = None,
    **expected: Any,
) -> list[Job[ArgsT]]:
    """Assert that jobs of this args class, as expected, were inserted; return them by id.

    Matches as `require_inserted` does. A checkpoint; it only reads.

    Args:
        client_or_tx: A `Client`, or a transaction from ``client.transaction()``.
        args_class: The `JobArgs` subclass of the jobs.
        count: Exactly this many must match (1 or more); None = at least one.
        opts: Expected values of the jobs' rows.
        expected_args: Expected args fields as a dict (for names that clash with
            ``count``, ``opts`` or ``expected_args``).
        **expected: Expected args fields.

    Returns:
        The matching jobs, in id (insertion) order, with decoded args.

    Raises:
        AssertionError: No job matches, or not exactly `count` do.
        InvalidInputError: `count` is not an int of 1 or more.
        TypeError: As for `require_inserted`.
    """
    if count is not None:
        integer(
            "require_many_inserted: count",
            count,
            InvalidInputError,
            hint=" (use require_not_inserted to require none)",
        )
    search = await _search(
        "require_many_inserted", client_or_tx, args_class, opts, expected_args, expected
    )
    if count is None:
        if not search.matches:
            search.fail_short(f"at least one job {search.wanted}")
    elif len(search.matches) < count:
        search.fail_short(f"{count} jobs {search.wanted}")
    elif len(search.matches) > count:
        search.fail(
            f"expected {count} jobs {search.wanted}; found {len(search.matches)} matching "
            f"({_ids(search.matches)})"
        )
    return cast("list[Job[ArgsT]]", search.matches)


async def require_not_inserted(
    client_or_tx: Client | Queryable,
    args_class: type[ArgsT],
    /,
    *,
    opts: RequireInsertedOpts | None = None,
    expected_args: Mapping[str, Any] | None = None,
    **expected: Any,
) -> None:
    """Assert that no job of this args class matching the expectation was inserted.

    Matches as `require_inserted` does: with no keywords and no `opts`, any job
    of the kind fails it; with some, only a job matching all of them does. A
    checkpoint; it only reads.

    Args:
        client_or_tx: A `Client`, or a transaction from ``client.transaction()``.
        args_class: The `JobArgs` subclass of the jobs.
        opts: Row values a forbidden job has.
        expected_args: Args fields as a dict (for names that clash with ``opts``
            or ``expected_args``).
        **expected: Args fields a forbidden job has.

    Raises:
        AssertionError: A job matches; the message lists the matching jobs.
        TypeError: As for `require_inserted`.
    """
    search = await _search(
        "require_not_inserted",
        client_or_tx,
        args_class,
        opts,
        expected_args,
        expected,
        need_args=False,
    )
    if search.matches:
        n = len(search.matches)
        lines = [f"expected no job {search.wanted}; found {n}:"]
        lines.extend(f"  {_describe(job)}" for job in search.matches[:_SHOWN])
        if n > _SHOWN:
            lines.append(f"  ... and {n - _SHOWN} more")
        search.fail("\n".join(lines))
