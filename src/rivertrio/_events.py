"""Events delivered to subscribers, and the outcomes job tasks hand the completer."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, overload

from ._job import JobRow, updated_row

__all__ = [
    "Event",
    "EventBatch",
    "EventKind",
    "JobStats",
    "Outcome",
    "OutcomeKind",
    "QueueEvent",
]


class EventKind(enum.StrEnum):
    """What happened; the values are River's event kind strings."""

    JOB_COMPLETED = "job_completed"
    JOB_FAILED = "job_failed"
    JOB_CANCELLED = "job_cancelled"
    JOB_SNOOZED = "job_snoozed"
    JOB_INTERRUPTED = "job_interrupted"
    QUEUE_PAUSED = "queue_paused"
    QUEUE_RESUMED = "queue_resumed"


@dataclass(frozen=True, slots=True)
class JobStats:
    """Timings of one job's attempt, in seconds."""

    queue_wait_duration: float
    """From the job being due (scheduled_at) to its fetch."""
    run_duration: float
    """Time spent in the worker."""
    complete_duration: float
    """From the worker's return to the outcome being persisted."""


@dataclass(frozen=True, slots=True)
class Event:
    """One event: a job outcome persisted, or a queue paused or resumed.

    Job events carry `job` (the row as stored after the outcome) and `stats`;
    queue events carry `queue` (its name) only.
    """

    kind: EventKind
    job: JobRow | None = None
    stats: JobStats | None = None
    queue: str | None = None


class OutcomeKind(enum.StrEnum):
    """How a job's attempt ended, as the job task saw it (before the database decides)."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SNOOZED = "snoozed"
    INTERRUPTED = "interrupted"


@dataclass(slots=True)
class Outcome:
    """An attempt's result, sent by a job task to the completer.

    The database turns it into the row's next state: a failure becomes
    retryable, available (next retry within 5 s) or discarded (no attempts
    left); anything but completion becomes cancelled when cancellation was
    requested while the job ran.
    """

    job: JobRow
    """The row as fetched (state running)."""
    kind: OutcomeKind
    error: str | None = None
    """For FAILED (and a CANCELLED decided by an error handler): the error JSON
    object's text, with ``attempt``, ``error`` and ``trace`` (``at`` is set by
    the database)."""
    retry_at: datetime | None = None
    """For FAILED: an absolute retry time (a worker's ``next_retry``), or None."""
    delay: float | None = None
    """For FAILED: seconds after ``attempted_at``; for SNOOZED: seconds from now."""
    metadata_updates: str | None = None
    """Keys to merge into the row's metadata (a JSON object's text: recorded output,
    logs, progress), whatever the outcome; None for none."""
    queue_wait_duration: float = 0.0
    run_duration: float = 0.0
    finished_at: float = 0.0
    """``trio.current_time()`` when the worker returned, to measure completion."""


@dataclass(frozen=True, slots=True)
class QueueEvent:
    """A queue paused or resumed, passed through the completer to keep one event path."""

    kind: EventKind
    queue: str


class EventBatch(Sequence[Event]):
    """The events of one persisted batch, in order, each built when it is first read.

    The completer sends one per batch; the subscription manager reads `kinds`
    and builds only the events some subscription asked for, so a client whose
    events nobody reads never builds a row or an event per job.
    """

    __slots__ = ("_built", "_items", "_now", "_records", "kinds")

    def __init__(
        self,
        kinds: list[EventKind],
        items: list[Outcome | QueueEvent],
        records: list[Any],
        now: float,
    ) -> None:
        self.kinds = kinds
        """Each event's kind, known without building it."""
        self._items = items
        self._records = records  # a job outcome's returned row; None for a queue event
        self._now = now  # when the batch was persisted (trio clock)
        self._built: list[Event | None] | None = None

    def __len__(self) -> int:
        return len(self.kinds)

    @overload
    def __getitem__(self, index: int) -> Event: ...

    @overload
    def __getitem__(self, index: slice) -> list[Event]: ...

    def __getitem__(self, index: int | slice) -> Event | list[Event]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        built = self._built
        if built is None:
            built = self._built = [None] * len(self.kinds)
        event = built[index]
        if event is None:
            event = built[index] = self._build(index)
        return event

    def __repr__(self) -> str:
        return f"EventBatch({list(self)!r})"

    def _build(self, index: int) -> Event:
        kind = self.kinds[index]
        item = self._items[index]
        if isinstance(item, QueueEvent):
            return Event(kind, queue=item.queue)
        record = self._records[index]
        # The completion returns only what it changed of the caller's own attempt.
        row = (
            updated_row(item.job, record) if record["changes_only"] else JobRow.from_record(record)
        )
        finished = self._now - item.finished_at
        stats = JobStats(item.queue_wait_duration, item.run_duration, max(0.0, finished))
        return Event(kind, row, stats)
