"""Extension points: middleware that wraps inserts and job runs, and hooks that run at a step.

The public shapes only; `rivertrio._middleware` runs them. As in River:

- **Middleware** wraps a step and stays on the stack for its whole duration:
  ``insert_many`` wraps every insert (one call per insert, with all its jobs),
  ``work`` wraps each run of a job. It calls ``call_next()`` to go on, and may
  act before and after, change the jobs to insert, or replace the outcome.
- **Hooks** run at one point and return: ``insert_begin`` just before jobs are
  inserted, ``work_begin`` just before a job's worker runs, ``work_end`` just
  after, with its error (which it may replace).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ._job import InsertResult, JobRow

__all__ = ["Hook", "JobInsertParams", "Middleware", "QueueStats"]


@dataclass(slots=True)
class JobInsertParams:
    """One job about to be inserted, as insert middleware and ``insert_begin`` hooks see it.

    Every option is resolved already (the call's, the args class's, the
    config's, the defaults). Change a field to change what is inserted, most
    often ``metadata``; the fields are checked again once the middleware and
    hooks have run, and an invalid value fails the insert. The unique key was
    computed before them, from the values as they were: changing the kind, the
    queue or the args does not change it (as in River).
    """

    kind: str
    encoded_args: str
    """The args as JSON object text."""
    queue: str
    priority: int
    max_attempts: int
    scheduled_at: datetime | None
    """When the job becomes due; None for now (the database's clock)."""
    tags: list[str]
    metadata: dict[str, Any]
    pending: bool
    unique_key: bytes | None
    unique_states: int | None


@dataclass(frozen=True, slots=True)
class QueueStats:
    """What the leader measured of one queue (see `Middleware.observe_queues`)."""

    queue: str
    available: int
    """Jobs in the queue that are ``available``: due and waiting for a worker."""
    oldest_available_age: float
    """Seconds since the oldest available job became due (0 with none waiting)."""


class Middleware:
    """Base class of middleware: override `insert_many`, `work`, or both.

    Set middleware on ``Config(middleware=[...])`` (every insert and every job
    of the client) or on a worker's ``middleware`` attribute (that worker's
    jobs only). The first in a list is the outermost: it is called first and
    returns last. A job's run goes through the config's middleware, then the
    worker's, then the ``work_begin`` hooks, the worker, and the ``work_end``
    hooks.

    What a middleware raises fails that insert (the caller gets the exception)
    or that job (recorded in its errors, retried by the retry policy), never
    the client; the exception carries a note naming the middleware.
    Cancellation (`trio.Cancelled`) must be let through unchanged.
    """

    async def insert_many(
        self,
        params: list[JobInsertParams],
        call_next: Callable[[], Awaitable[list[InsertResult]]],
    ) -> list[InsertResult]:
        """Wrap one insert of ``params`` (one job for `Client.insert`). A checkpoint.

        Call ``await call_next()`` once to insert the jobs: it returns one
        `InsertResult` per job, in order (an empty list for
        ``insert_many_fast``, whose COPY returns no rows). Change ``params``
        before calling it to change what is inserted. Return its result, or a
        list of as many results.
        """
        return await call_next()

    async def work(self, job: JobRow, call_next: Callable[[], Awaitable[None]]) -> None:
        """Wrap one run of `job` (the row as fetched, ``running``). A checkpoint.

        Call ``await call_next()`` once to run the rest of the chain and the
        worker: it returns if the job completed and raises the job's error
        otherwise (`JobSnooze` and `JobCancel` included; a timeout is
        `JobTimeoutError`, a remote cancellation `JobCancel`). Returning makes
        the job complete, raising fails it with that exception: a middleware
        may replace the outcome either way.
        """
        await call_next()

    #: Seconds between the leader's queue measurements handed to `observe_queues`;
    #: None (the default) asks for none.
    queue_stats_interval: float | None = None

    def observe_queues(self, stats: Sequence[QueueStats]) -> None:
        """Take the leader's latest measurement of every queue (not a checkpoint).

        Called every ``queue_stats_interval`` seconds while this client is the
        leader, and once with an empty list when it stops leading. It must not
        block: keep the values for a metrics callback to read.
        """


class Hook:
    """Base class of hooks: override any of `insert_begin`, `work_begin`, `work_end`.

    Set hooks on ``Config(hooks=[...])`` (every insert and job of the
    client) or on a job args class's ``hooks`` attribute (its jobs only); the
    config's run first, each list in its order. Hooks run inside the
    middleware, right around the step itself.
    """

    async def insert_begin(self, params: JobInsertParams) -> None:
        """Called just before a job is inserted; may change ``params``. A checkpoint.

        Raising fails the whole insert, with that exception.
        """

    async def work_begin(self, job: JobRow) -> None:
        """Called just before a job's worker runs. A checkpoint.

        Raising fails the job with that exception; its worker does not run.
        """

    async def work_end(self, job: JobRow, error: Exception | None) -> Exception | None:
        """Called after a job's worker returned (``error`` None) or raised. A checkpoint.

        Return the error to record: ``error`` itself to leave the outcome as it
        is, another exception to replace it, None to make the job complete.
        Each ``work_end`` hook gets what the previous one returned.
        """
        return error
