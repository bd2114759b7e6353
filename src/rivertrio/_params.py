"""Parameters and results of job and queue management: listing, deleting, queue rows."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeAlias

from ._args import encode_metadata
from ._exceptions import InvalidInputError
from ._job import JobRow, JobState
from ._validate import BIGINT_MAX, MAX_PRIORITY, MIN_PRIORITY, integer, job_id, member

__all__ = [
    "JOB_LIST_ORDER_FIELDS",
    "MAX_JOB_LIST_LIMIT",
    "JobDeleteManyParams",
    "JobListCursor",
    "JobListOrderBy",
    "JobListParams",
    "JobListResult",
    "Queue",
]

MAX_JOB_LIST_LIMIT = 10_000

#: What `job_list` can order by: the id, or one of the row's times (then the id).
JobListOrderBy: TypeAlias = Literal[
    "id", "created_at", "scheduled_at", "attempted_at", "finalized_at"
]
JOB_LIST_ORDER_FIELDS: tuple[str, ...] = (
    "id",
    "created_at",
    "scheduled_at",
    "attempted_at",
    "finalized_at",
)


def _seq(name: str, value: object) -> tuple[Any, ...] | None:
    """A filter list, or None when unset or empty (an empty list filters nothing)."""
    if value is None:
        return None
    if isinstance(value, str | bytes | Mapping) or not isinstance(
        value, Sequence | set | frozenset
    ):
        raise InvalidInputError(
            f"{name} must be a list, not {type(value).__name__} (write {name}=[...])"
        )
    items = tuple(value)
    return items or None


def _ints(name: str, value: object, lo: int, hi: int) -> tuple[int, ...] | None:
    items = _seq(name, value)
    if items is None:
        return None
    for i, item in enumerate(items):
        integer(f"{name}[{i}]", item, InvalidInputError, minimum=lo, maximum=hi)
    return items


def _strs(name: str, value: object) -> tuple[str, ...] | None:
    items = _seq(name, value)
    if items is None:
        return None
    for item in items:
        if not isinstance(item, str) or not item:
            raise InvalidInputError(f"{name}: {item!r} is not a non-empty string")
    return items


def _states(value: object) -> tuple[JobState, ...] | None:
    items = _seq("states", value)
    if items is None:
        return None
    return tuple(
        member("states", item, JobState, InvalidInputError, what="a job state") for item in items
    )


@dataclass(frozen=True, slots=True)
class _JobFilter:
    """The filters job_list and job_delete_many share; unset (None or empty) means any."""

    ids: Sequence[int] | None = None
    kinds: Sequence[str] | None = None
    queues: Sequence[str] | None = None
    states: Sequence[JobState | str] | None = None
    priorities: Sequence[int] | None = None
    tags: Sequence[str] | None = None
    tags_match: Literal["any", "all"] = "any"
    metadata: Mapping[str, Any] | None = None

    def _check_filters(self) -> None:
        put = object.__setattr__
        put(self, "ids", _ints("ids", self.ids, 1, BIGINT_MAX))
        put(self, "kinds", _strs("kinds", self.kinds))
        put(self, "queues", _strs("queues", self.queues))
        put(self, "states", _states(self.states))
        put(self, "priorities", _ints("priorities", self.priorities, MIN_PRIORITY, MAX_PRIORITY))
        put(self, "tags", _strs("tags", self.tags))
        if self.tags_match not in ("any", "all"):
            raise InvalidInputError(f"tags_match must be 'any' or 'all', got {self.tags_match!r}")
        if self.metadata is not None:
            put(self, "metadata", json.loads(encode_metadata(self.metadata, "metadata filter")))

    @property
    def has_filter(self) -> bool:
        """Whether any filter is set."""
        return any(
            v is not None
            for v in (
                self.ids,
                self.kinds,
                self.queues,
                self.states,
                self.priorities,
                self.tags,
                self.metadata,
            )
        )


@dataclass(frozen=True, slots=True)
class JobListCursor:
    """A position in a `job_list` ordering: list the rows after it with ``after=``.

    Build one from the last row of a page (`JobListResult.last_cursor` does it), or
    from any row with `from_job`. `encode` / `decode` turn it into an opaque string,
    e.g. for a command line or a web page.
    """

    order_by: JobListOrderBy
    id: int
    time: datetime | None = None
    """The row's value of the ``order_by`` time field (None for ``"id"`` or a null time)."""

    @classmethod
    def from_job(cls, job: JobRow, order_by: JobListOrderBy = "id") -> JobListCursor:
        """The cursor just at `job` in the given ordering."""
        if order_by not in JOB_LIST_ORDER_FIELDS:
            raise InvalidInputError(_order_by_problem(order_by))
        time = None if order_by == "id" else getattr(job, order_by)
        return cls(order_by=order_by, id=job.id, time=time)

    def encode(self) -> str:
        """An opaque, URL-safe string for this cursor."""
        data = {"o": self.order_by, "i": self.id, "t": self.time and self.time.isoformat()}
        raw = json.dumps(data, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> JobListCursor:
        """The cursor `encode` made.

        Raises:
            InvalidInputError: `text` is not a cursor.
        """
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            data = json.loads(raw)
            time = data["t"]
            cursor = cls(
                order_by=data["o"],
                id=data["i"],
                time=None if time is None else datetime.fromisoformat(time),
            )
        except (binascii.Error, ValueError, KeyError, TypeError) as exc:
            raise InvalidInputError(f"{text!r} is not a job list cursor") from exc
        cursor._check()
        return cursor

    def _check(self) -> None:
        if self.order_by not in JOB_LIST_ORDER_FIELDS:
            raise InvalidInputError(f"cursor: {_order_by_problem(self.order_by)}")
        job_id(self.id, InvalidInputError, "cursor: id")
        if self.time is not None and (
            not isinstance(self.time, datetime) or self.time.utcoffset() is None
        ):
            raise InvalidInputError("cursor: time must be a timezone-aware datetime or None")


def _order_by_problem(order_by: object) -> str:
    return f"order_by must be one of {', '.join(JOB_LIST_ORDER_FIELDS)}; got {order_by!r}"


@dataclass(frozen=True, slots=True)
class JobListParams(_JobFilter):
    """Which jobs `Client.job_list` lists: filters, ordering, a keyset cursor and a limit.

    Filters left unset (None or an empty list) match every row; set ones must all
    match. ``tags`` matches rows with any of the tags (``tags_match="any"``) or
    all of them (``"all"``); ``metadata`` matches rows whose metadata contains
    the given JSON object.

    Args:
        order_by: ``"id"`` or a time field (then by id within equal times; rows
            whose time is null come after the others in ascending order).
        order: ``"asc"`` or ``"desc"``.
        after: Only rows after this cursor in the ordering (keyset pagination:
            every row is listed exactly once across pages, however rows are
            inserted meanwhile). Its ``order_by`` must match.
        limit: At most this many rows, 1 to 10,000.

    Raises:
        InvalidInputError: A field is invalid; the message names it.
    """

    order_by: JobListOrderBy = "id"
    order: Literal["asc", "desc"] = "asc"
    after: JobListCursor | None = None
    limit: int = 100

    def __post_init__(self) -> None:
        self._check_filters()
        if self.order_by not in JOB_LIST_ORDER_FIELDS:
            raise InvalidInputError(_order_by_problem(self.order_by))
        if self.order not in ("asc", "desc"):
            raise InvalidInputError(f"order must be 'asc' or 'desc', got {self.order!r}")
        integer("limit", self.limit, InvalidInputError, maximum=MAX_JOB_LIST_LIMIT)
        if self.after is not None:
            if not isinstance(self.after, JobListCursor):
                raise InvalidInputError(
                    f"after must be a JobListCursor, not {type(self.after).__name__}"
                )
            self.after._check()
            if self.after.order_by != self.order_by:
                raise InvalidInputError(
                    f"after: the cursor is for order_by={self.after.order_by!r}, "
                    f"but these params order by {self.order_by!r}"
                )

    def next_page(self, page: JobListResult) -> JobListParams:
        """These params for the page after `page` (same filters, ``after`` its last row).

        Raises:
            InvalidInputError: `page` is empty: there is no page after it.
        """
        if not isinstance(page, JobListResult):
            raise InvalidInputError(
                f"next_page takes the JobListResult of the previous page, not {type(page).__name__}"
            )
        if page.last_cursor is None:
            raise InvalidInputError("next_page: the page is empty, so no page follows it")
        return dataclasses.replace(self, after=page.last_cursor)


@dataclass(frozen=True, slots=True)
class JobListResult:
    """One page of `Client.job_list`."""

    jobs: list[JobRow]
    last_cursor: JobListCursor | None
    """The cursor at the last row (pass it as ``after=`` for the next page); None
    when the page is empty."""


@dataclass(frozen=True, slots=True)
class JobDeleteManyParams(_JobFilter):
    """Which jobs `Client.job_delete_many` deletes (running jobs never are).

    Takes the filters of `JobListParams`. With no filter at all it refuses to
    run, unless ``unsafe_all=True`` says that deleting every job is meant.

    Args:
        limit: Delete at most this many (the lowest ids first); None = no limit.
        unsafe_all: Allow a call with no filter to delete every non-running job.

    Raises:
        InvalidInputError: A field is invalid; the message names it.
    """

    limit: int | None = None
    unsafe_all: bool = False

    def __post_init__(self) -> None:
        self._check_filters()
        integer("limit", self.limit, InvalidInputError, maximum=BIGINT_MAX, none="for no limit")
        if not isinstance(self.unsafe_all, bool):
            raise InvalidInputError(
                f"unsafe_all must be a bool, not {type(self.unsafe_all).__name__}"
            )


@dataclass(frozen=True, slots=True)
class Queue:
    """A row of ``river_queue``: a queue some client has worked.

    A producer creates its queue's row when it starts and refreshes
    ``updated_at`` while it runs; the leader deletes rows idle for 24 h.
    """

    name: str
    created_at: datetime
    updated_at: datetime
    paused_at: datetime | None
    metadata: dict[str, Any]

    @property
    def paused(self) -> bool:
        """Whether the queue is paused."""
        return self.paused_at is not None

    @classmethod
    def from_record(cls, rec: Any) -> Queue:
        """Build from a database record."""
        metadata = rec["metadata"]
        return cls(
            name=rec["name"],
            created_at=rec["created_at"],
            updated_at=rec["updated_at"],
            paused_at=rec["paused_at"],
            metadata=json.loads(metadata) if isinstance(metadata, str) else dict(metadata),
        )
