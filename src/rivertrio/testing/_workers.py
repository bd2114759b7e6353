"""`work_job`: run one job through the real executor, to unit-test a worker.

The job is in memory, so no database is needed unless the worker uses a client.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeVar, cast

import trio

from rivertrio._args import InsertOpts, Job, JobArgs
from rivertrio._client import Client, job_client
from rivertrio._config import Config
from rivertrio._events import OutcomeKind
from rivertrio._exceptions import ConfigError, InvalidInputError, UnknownJobKindError
from rivertrio._executor import RunningJob, WorkConfig, execute
from rivertrio._job import METADATA_OUTPUT, JobRow, JobState
from rivertrio._middleware import Extensions
from rivertrio._prepare import prepare_job
from rivertrio._util import collapse_single_groups
from rivertrio._worker import Worker, Workers

if TYPE_CHECKING:
    from rivertrio._config import ErrorHandlerResult

__all__ = ["WorkResult", "work_job"]

ArgsT = TypeVar("ArgsT", bound=JobArgs)

#: How a job worked by `work_job` ended.
WorkResultKind = Literal["completed", "failed", "cancelled", "snoozed"]


@dataclass(frozen=True, slots=True, repr=False)
class WorkResult:
    """What happened when `work_job` ran a job: how it ended, and why.

    ``kind`` is the outcome the executor reported, before any database applies
    it: ``"completed"``, ``"failed"``, ``"cancelled"`` or ``"snoozed"``.
    """

    kind: WorkResultKind
    job: JobRow
    """The job as the worker saw it: ``running``, attempt 1, with the options applied."""
    error: str | None = None
    """For a failed or cancelled job: the error as the job's ``errors`` would record
    it (``"ValueError: boom"``, ``"JobCancel: no such user"``)."""
    exception: BaseException | None = None
    """For a failed job (and one an error handler cancelled): the exception itself,
    with its traceback. ``type(result.exception)`` is the error's type."""
    snooze_seconds: float | None = None
    output: Any = None
    """What the worker recorded with `rivertrio.record_output` (decoded), or None."""
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The job's metadata as the outcome would store it: the job's own, with what the
    run recorded merged in (output, progress, ``river:log``)."""
    """For a snoozed job: the seconds given to `JobSnooze`."""
    retry_delay: float | None = None
    """For a failed job that would be retried: seconds from the attempt's start
    (``job.attempted_at``) to the retry, from the worker's ``next_retry`` or the
    retry policy. None when the failure was the last attempt."""
    retry_at: datetime | None = None
    """The same retry as a time: ``job.attempted_at + retry_delay``."""

    @property
    def discarded(self) -> bool:
        """Whether the job failed at its last attempt: it would be discarded, not retried."""
        return self.kind == "failed" and self.job.attempt >= self.job.max_attempts

    def __repr__(self) -> str:
        # Short, for assertion messages: the job by id and kind, and only the set fields.
        parts = [f"kind={self.kind!r}", f"job=<job {self.job.id} of kind {self.job.kind!r}>"]
        for name in ("error", "snooze_seconds", "retry_delay"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value!r}")
        return f"WorkResult({', '.join(parts)})"


class _NoClient:
    """Stands for the client in a job run by `work_job` without ``client=``."""

    def __getattr__(self, name: str) -> NoReturn:
        raise RuntimeError(
            f"current_client().{name}: this job was run by rivertrio.testing.work_job without "
            "a client; pass client=... to work_job (an insert-only client on a test database "
            "is enough) to let the worker use one"
        )

    def __repr__(self) -> str:
        return "<no client: work_job was called without client=...>"


_NO_CLIENT = _NoClient()

# Ids of in-memory jobs: unique within the process, so jobs of one test differ.
_job_ids = itertools.count(1)


def _registry(
    worker: Worker[Any] | Callable[[Job[Any]], Awaitable[None]], args: JobArgs
) -> Workers:
    """A Workers registry holding `worker` for the kind of `args`."""
    kind = type(args).kind
    workers = Workers()
    if isinstance(worker, type):
        if issubclass(worker, Worker):
            raise TypeError(
                f"work_job takes a worker instance, not the class: "
                f"work_job({worker.__qualname__}(), ...)"
            )
        raise TypeError(f"work_job: {worker!r} is not a rivertrio.Worker or an async function")
    if isinstance(worker, Worker):
        try:
            workers.add(worker)
        except ConfigError:
            # No Worker[Args] base to tell its args class from: it works these args.
            workers.add(worker, type(args))
        if kind not in workers:
            worker_kind = " or ".join(map(repr, sorted(workers.kinds)))
            raise UnknownJobKindError(
                f"work_job: {type(worker).__qualname__} works job kind {worker_kind}, but the "
                f"args are a {type(args).__qualname__} of kind {kind!r}"
            )
    else:
        workers.register(type(args))(worker)  # raises TypeError unless an async function
    return workers


async def work_job(
    worker: Worker[ArgsT] | Callable[[Job[ArgsT]], Awaitable[None]],
    args: ArgsT,
    *,
    opts: InsertOpts | None = None,
    config: Config | None = None,
    client: Client | None = None,
) -> WorkResult:
    """Run one job through the real executor and return how it ended, to unit-test a worker.

    The job is built in memory, as a client would fetch it: a fresh id,
    ``running``, attempt 1, ``attempted_at`` now, and the options resolved as an
    insert resolves them (`opts`, then the args class's ``insert_opts``, then
    the config's ``max_attempts``, then the defaults): queue, priority,
    max_attempts, tags, metadata, scheduled_at. The args are encoded and decoded
    as for a real job, so args that an insert would refuse raise here, and args
    that do not decode into their class fail the job (`JobDecodeError`).

    Everything else is the client's own code: the worker's ``timeout()`` or the
    config's ``job_timeout`` (a job over time fails with `JobTimeoutError`), its
    ``next_retry()``, the config's ``retry_policy``, ``error_handler``,
    ``middleware`` and ``hooks`` (and the worker's middleware).
    Nothing is written anywhere: the result says what the client would record.

    Without `client`, no database is needed, and ``rivertrio.current_client()``
    inside the worker returns a stand-in whose every use raises `RuntimeError`
    naming the problem. With it, ``current_client()`` returns that client, so a
    worker that inserts follow-up jobs can be tested against a real database
    (then check them with `require_inserted`).

    A checkpoint (the worker runs). Cancelling the caller cancels the job's work
    and propagates; so does an error in this call's own arguments.

    Args:
        worker: A `Worker` instance, or an async function ``(job) -> None``.
        args: The job's args.
        opts: Insert options, applied as an insert applies them.
        config: The config whose ``job_timeout``, ``max_attempts``,
            ``retry_policy``, ``error_handler`` and ``id`` apply (its workers are
            ignored). Default: `client`'s config, else ``Config()``.
        client: The client ``current_client()`` returns inside the worker.

    Returns:
        How the job ended: see `WorkResult`.

    Raises:
        InvalidInputError: The args or options are invalid, as `Client.insert` says.
        UnknownJobKindError: The worker works another kind of job than the args'.
        TypeError: `worker` is not a Worker instance or an async function, or
            `config` or `client` has the wrong type.
    """
    if not isinstance(args, JobArgs):
        raise InvalidInputError(
            f"work_job: args must be a rivertrio.JobArgs instance, not {type(args).__name__}"
        )
    if config is not None and not isinstance(config, Config):
        raise TypeError(f"work_job: config must be a rivertrio.Config, not {type(config).__name__}")
    if client is not None and not isinstance(client, Client):
        raise TypeError(f"work_job: client must be a rivertrio.Client, not {type(client).__name__}")
    workers = _registry(worker, args)
    base = config if config is not None else client.config if client is not None else Config()

    # The executor hands each failure to the error handler: catch the exception
    # there (the outcome carries only its text), then defer to the user's handler.
    raised: list[BaseException] = []
    user_handler = base.error_handler

    async def capture(row: JobRow, error: BaseException) -> ErrorHandlerResult | None:
        raised.append(error)
        if user_handler is None:
            return None
        return await user_handler(row, error)

    cfg = dataclasses.replace(base, workers=workers, error_handler=capture)

    now = datetime.now(UTC)
    # The insert's own resolution and validation, with no database involved.
    prepared = prepare_job(args, opts, cfg, now)
    row = JobRow(
        id=next(_job_ids),
        state=JobState.RUNNING,
        attempt=1,
        max_attempts=prepared.max_attempts,
        attempted_at=now,
        attempted_by=[cfg.id],
        created_at=now,
        finalized_at=None,
        scheduled_at=prepared.scheduled_at or now,
        priority=prepared.priority,
        queue=prepared.queue,
        kind=prepared.kind,
        tags=list(prepared.tags),
        metadata=json.loads(prepared.metadata),
        errors=[],
        encoded_args=prepared.args,
        unique_key=prepared.unique_key,
        unique_states=prepared.unique_states,
    )

    outcomes = []
    work = WorkConfig(
        workers=workers,
        job_timeout=cfg.job_timeout,
        retry_policy=cfg.retry_policy,
        error_handler=capture,
        enter_job=functools.partial(
            job_client.set, client if client is not None else cast("Client", _NO_CLIENT)
        ),
        extensions=Extensions(cfg.middleware, cfg.hooks),
    )

    async def run() -> None:
        outcomes.append(await execute(work, RunningJob(row)))

    # A task of its own: the executor sets current_client() in the task's context,
    # which must not leak into the caller's.
    with collapse_single_groups():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
    (outcome,) = outcomes

    error = json.loads(outcome.error)["error"] if outcome.error is not None else None
    updates = json.loads(outcome.metadata_updates) if outcome.metadata_updates else {}
    retry_delay: float | None = None
    retry_at: datetime | None = None
    if outcome.kind == OutcomeKind.FAILED and row.attempt < row.max_attempts:
        if outcome.retry_at is not None:
            retry_at = outcome.retry_at
            retry_delay = (retry_at - now).total_seconds()
        elif outcome.delay is not None:
            retry_delay = outcome.delay
            retry_at = now + timedelta(seconds=retry_delay)
    return WorkResult(
        kind=cast("WorkResultKind", outcome.kind.value),
        job=row,
        error=error,
        exception=raised[0] if raised else None,
        snooze_seconds=outcome.delay if outcome.kind == OutcomeKind.SNOOZED else None,
        output=updates.get(METADATA_OUTPUT),
        metadata={**row.metadata, **updates},
        retry_delay=retry_delay,
        retry_at=retry_at,
    )
