"""Running one job: decode its args, call its worker, turn what happened into an Outcome."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
import math
import traceback
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import trio

from ._args import Job, JobArgs
from ._events import Outcome, OutcomeKind
from ._exceptions import (
    JobCancel,
    JobDecodeError,
    JobSnooze,
    JobTimeoutError,
    UnknownJobKindError,
    WorkResultError,
)
from ._job import JobRow, decode_json, metadata_problem, row_values
from ._middleware import Extensions
from ._retry import RetryPolicy, next_retry
from ._worker import Worker, Workers, _FunctionWorker, resolve_timeout

if TYPE_CHECKING:
    from ._config import ErrorHandler
    from ._driver import Driver

__all__ = ["RunningJob", "WorkConfig", "current_job", "execute", "running_job"]

log = logging.getLogger("rivertrio.executor")


@dataclass(frozen=True, slots=True)
class WorkConfig:
    """What working a job needs from its client; the client builds it (so does `work_job`)."""

    workers: Workers | None
    job_timeout: float | None
    retry_policy: RetryPolicy
    error_handler: ErrorHandler | None
    enter_job: Callable[[], object]
    """Called in each job's own task before its work: binds ``current_client()`` there."""
    extensions: Extensions = field(default_factory=Extensions)
    """The config's middleware and hooks."""
    driver: Driver | None = None
    """Where a job's progress reports are written during its run; None writes none
    (the last report still goes with the job's completion)."""


class RunningJob:
    """A job task's handle: lets the producer cancel one running job, and holds what
    its run records for the completion (output, logs, progress)."""

    __slots__ = (
        "_row",
        "cancel_requested",
        "config",
        "id",
        "job",
        "progress_written_at",
        "record",
        "scope",
        "updates",
    )

    def __init__(self, row: JobRow | None = None, *, record: Any = None) -> None:
        self._row = row
        self.record = record
        """The fetched record, until the run builds the job from it (see `fetched`)."""
        self.id: int = row.id if row is not None else record["id"]
        self.scope: trio.CancelScope | None = None
        self.cancel_requested = False
        self.config: WorkConfig | None = None
        self.job: Job[Any] | None = None
        """The job with its args decoded, once they are."""
        self.updates: dict[str, str] | None = None
        """Metadata keys to merge into the row with the outcome, each value JSON text."""
        self.progress_written_at: float | None = None

    @classmethod
    def fetched(cls, record: Any) -> RunningJob:
        """A handle for a job as the fetch returned it (a database record).

        Its row is built only when needed: a run with no middleware builds the
        `Job` straight from the record, one object where a row and then a job
        would be two.
        """
        return cls(record=record)

    @property
    def row(self) -> JobRow:
        """The job's row as fetched (the `Job` itself once its args are decoded)."""
        row = self._row
        if row is None:
            row = self._row = JobRow.from_record(self.record)
            self.record = None
        return row

    def set_update(self, key: str, value_json: str) -> None:
        """Merge ``key: value`` into the job's metadata with its outcome (River's
        metadata updates): kept whatever the outcome, but not for an interruption."""
        if self.updates is None:
            self.updates = {}
        self.updates[key] = value_json

    def updates_json(self) -> str | None:
        """The metadata updates as one JSON object's text, or None if there are none."""
        if not self.updates:
            return None
        return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in self.updates.items()) + "}"

    def cancel(self) -> None:
        """Cancel the job's work (a remote `job_cancel`); it ends `cancelled`."""
        self.cancel_requested = True
        if self.scope is not None:
            self.scope.cancel()


#: The job running in the current task (and the tasks it starts).
current_job: ContextVar[RunningJob] = ContextVar("rivertrio_job")


def running_job(what: str) -> RunningJob:
    """The handle of the job running in this task.

    Raises:
        RuntimeError: Called outside a job's work (the message starts with `what`).
    """
    try:
        return current_job.get()
    except LookupError:
        raise RuntimeError(f"{what} can only be called inside a job's work()") from None


# Error records are stored in a jsonb array: a string Postgres refuses (a NUL, a
# lone surrogate) would fail the completer's whole batch, and an unbounded one
# could push the row past jsonb's size limit after a few retries.
_MAX_ERROR_TEXT = 100_000


def _storable(text: str) -> str:
    if len(text) > _MAX_ERROR_TEXT:
        text = text[:_MAX_ERROR_TEXT] + f"... ({len(text) - _MAX_ERROR_TEXT} characters cut)"
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _error_json(row: JobRow, error: BaseException) -> str:
    try:
        message = str(error)
    except Exception:
        message = "(str() of the error raised)"
    return json.dumps(
        {
            "attempt": row.attempt,
            "error": _storable(
                f"{type(error).__name__}: {message}" if message else type(error).__name__
            ),
            "trace": _storable("".join(traceback.format_exception(error))),
        }
    )


def _propagates(error: BaseException) -> bool:
    """Whether a BaseException from a job must leave it: cancellation, or a real Ctrl-C.

    Everything else a worker raises is the job's failure, recorded, however it is
    spelled (KeyboardInterrupt raised by hand, SystemExit from a library calling
    sys.exit, GeneratorExit, a custom BaseException subclass).
    """
    if isinstance(error, trio.Cancelled):
        return True
    if isinstance(error, BaseExceptionGroup):
        return any(_propagates(e) for e in error.exceptions)
    if isinstance(error, KeyboardInterrupt):
        # Trio raises a real Ctrl-C from its SIGINT handler inside whatever code
        # is running, possibly a job's: that one must reach the program (it is
        # the user asking to stop), and the job is interrupted, not failed.
        tb = error.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        return tb is not None and tb.tb_frame.f_globals.get("__name__") == "trio._core._ki"
    return False


async def execute(config: WorkConfig, handle: RunningJob) -> Outcome:
    """Work one fetched job and return its outcome. A checkpoint.

    Every failure of the job itself becomes a FAILED outcome: a worker error, args
    or metadata that do not decode (`JobDecodeError`), an unknown kind, a timeout,
    and also a BaseException raised by the worker (KeyboardInterrupt, SystemExit,
    GeneratorExit, custom subclasses), which is logged as an error: a job's bug
    never stops the client. Cancellation from outside (hard stop, the enclosing
    scope) propagates as `trio.Cancelled`, and a real Ctrl-C that Trio delivered
    inside the job's code as `KeyboardInterrupt`; the caller records the job as
    interrupted.

    `work` returning means completed, whatever it returns: a value is ignored with
    a warning (the job's effects happened; a retry would repeat them), except an
    awaitable, which means the work was never awaited (FAILED), and an exception,
    which counts as raised. A worker that swallows its cancellation (timeout,
    ``job_cancel``, hard stop) and returns is completed too, as in River, with a
    warning: it delays stopping for as long as it keeps going.

    The config's and the worker's middleware and hooks wrap the run (see
    `Extensions.work`): what they raise is the job's failure like any other,
    and a cancellation passes through them. What the run recorded (output,
    progress, logs) goes with the outcome as metadata updates.
    """
    config.enter_job()
    current_job.set(handle)
    handle.config = config
    started = trio.current_time()
    record = handle.record
    kind = record["kind"] if record is not None else handle.row.kind
    worker: Worker[Any] | None = None
    try:
        entry = config.workers.get(kind) if config.workers is not None else None
        if entry is None:
            raise UnknownJobKindError(f"no worker is registered for job kind {kind!r}")
        args_cls, worker = entry
        extensions = config.extensions
        # Plain attribute reads: the common case (nothing to wrap) costs no call.
        if extensions.wraps_every_work or worker.middleware or args_cls.hooks:
            run = functools.partial(_run, config, handle, args_cls, worker)
            await extensions.work(handle.row, worker, args_cls, run)
        else:
            await _run(config, handle, args_cls, worker)
        return _outcome(handle, OutcomeKind.COMPLETED, started)
    except JobCancel as exc:
        return _outcome(handle, OutcomeKind.CANCELLED, started, _error_json(handle.row, exc))
    except JobSnooze as exc:
        problem = _snooze_problem(handle.row)
        if problem is None:
            return _outcome(handle, OutcomeKind.SNOOZED, started, delay=exc.seconds)
        return await _failed(config, handle, worker, JobDecodeError(problem), started)
    except Exception as exc:
        return await _failed(config, handle, worker, exc, started)
    except BaseException as exc:
        if _propagates(exc):
            raise
        row = handle.row
        log.error(
            "job %d (kind %r) raised %s, a BaseException: recorded as a failed attempt; "
            "the client goes on (workers should raise Exception subclasses)",
            row.id,
            row.kind,
            type(exc).__name__,
            exc_info=exc,
        )
        return await _failed(config, handle, worker, exc, started)


def _outcome(
    handle: RunningJob,
    kind: OutcomeKind,
    started: float,
    error: str | None = None,
    retry_at: datetime | None = None,
    delay: float | None = None,
) -> Outcome:
    row = handle.row
    now = trio.current_time()
    attempted_at = row.attempted_at
    wait = 0.0 if attempted_at is None else (attempted_at - row.scheduled_at).total_seconds()
    return Outcome(
        row,
        kind,
        error,
        retry_at,
        delay,
        handle.updates_json() if handle.updates else None,
        wait if wait > 0.0 else 0.0,
        now - started,
        now,
    )


async def _run(
    config: WorkConfig, handle: RunningJob, args_cls: type[JobArgs], worker: Worker[Any]
) -> None:
    """Decode the job and run its worker within its timeout: the innermost step of a run.

    Returns if the job completed. A timeout raises `JobTimeoutError` and a remote
    cancellation `JobCancel`, so middleware sees them as the job's errors.
    """
    job = handle.job = _decode_job(handle, args_cls)
    # A worker that does not choose its jobs' timeouts is not asked each time.
    if type(worker).timeout is Worker.timeout:
        timeout = config.job_timeout
    else:
        timeout = resolve_timeout(worker, job, config.job_timeout)
    started = trio.current_time()
    # Typed to return None, but user code may return anything: judged below. A
    # function registered with `Workers.register` is called as it is, without
    # the coroutine of the method that wraps it.
    work: Callable[[Job[Any]], Awaitable[object]] = (
        worker.fn if type(worker) is _FunctionWorker else worker.work
    )
    # The deadline given at construction: setting it afterwards costs as much again.
    with trio.CancelScope(deadline=math.inf if timeout is None else started + timeout) as scope:
        handle.scope = scope
        if handle.cancel_requested:
            scope.cancel()
        result = await work(job)
    handle.scope = None
    if not scope.cancelled_caught:
        if scope.cancel_called or await _cancelled():
            _warn_cancellation_ignored(job, handle, timeout, started)
        if result is not None:
            _check_result(job, result)
        return
    if handle.cancel_requested:
        raise JobCancel("job cancelled remotely")
    raise JobTimeoutError(f"job exceeded its timeout of {timeout} s")


async def _cancelled() -> bool:
    """Whether an enclosing scope of this task is cancelled: not a checkpoint.

    As ``trio.current_effective_deadline() == -math.inf``, in constant time
    rather than a walk up every enclosing scope, which a job would pay on every
    run. The cancellation caught here is raised again at the task's next
    checkpoint.
    """
    try:
        await trio.lowlevel.checkpoint_if_cancelled()
    except trio.Cancelled:
        return True
    return False


def _decode_job(handle: RunningJob, args_cls: type[JobArgs]) -> Job[Any]:
    """The job with its args decoded; it becomes the handle's row."""
    record = handle.record
    if record is None:
        row = handle.row
        args = _decode_args(row.id, row.kind, row.metadata, row.encoded_args, args_cls)
        return Job.from_row(row, args)
    # Straight from the fetched record: the row is built once, as the job. If
    # the args do not decode, the handle builds its row from the record later.
    values = row_values(record)
    args = _decode_args(
        values[_ID], values[_KIND], values[_METADATA], values[_ENCODED_ARGS], args_cls
    )
    job: Job[Any] = Job(*values, args)  # type: ignore[call-arg]  # the 18 fields, then args
    handle._row = job
    handle.record = None
    return job


# Where `row_values` puts the fields `_decode_job` reads.
_FIELDS = [f.name for f in dataclasses.fields(JobRow)]
_ID, _KIND, _METADATA, _ENCODED_ARGS = (
    _FIELDS.index(name) for name in ("id", "kind", "metadata", "encoded_args")
)


def _decode_args(
    job_id: int, kind: str, metadata: dict[str, Any], encoded: str, args_cls: type[JobArgs]
) -> JobArgs:
    problem = metadata_problem(metadata)
    if problem is not None:
        raise JobDecodeError(f"job {job_id}: its metadata {problem}")
    try:
        return args_cls.from_json(decode_json(encoded))
    except Exception as exc:
        why = str(exc) if isinstance(exc, JobDecodeError) else f"{type(exc).__name__}: {exc}"
        raise JobDecodeError(
            f"job {job_id}: args of kind {kind!r} do not decode into {args_cls.__qualname__}: {why}"
        ) from exc


_INT4_MAX = 2**31 - 1


def _snooze_problem(row: JobRow) -> str | None:
    # The completion statement counts snoozes with an int cast of metadata.snoozes:
    # a value another client wrote that is not a small integer would fail the whole
    # batch, every job in it left running for the rescuer. Fail this one instead.
    count = row.metadata.get("snoozes")
    if count is None or (
        isinstance(count, int) and not isinstance(count, bool) and -_INT4_MAX <= count < _INT4_MAX
    ):
        return None
    return f"job {row.id} cannot be snoozed: its metadata's 'snoozes' is {count!r}, not a count"


def _check_result(row: JobRow, result: object) -> None:
    """Judge a non-None value returned by `work` (see `execute`)."""
    if isinstance(result, BaseException):
        log.warning(
            "job %d (kind %r): work() returned %r instead of raising it; treated as raised",
            row.id,
            row.kind,
            result,
        )
        raise result
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()  # it will never run; closing spares a "never awaited" warning
        raise WorkResultError(
            f"work() returned {type(result).__name__} {result!r} without awaiting it, so that "
            "part of the job never ran (a missing await?)"
        )
    log.warning(
        "job %d (kind %r): work() returned %s; the value is ignored (work should return None)",
        row.id,
        row.kind,
        _short_repr(result),
    )


def _short_repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _warn_cancellation_ignored(
    row: JobRow, handle: RunningJob, timeout: float | None, started: float
) -> None:
    if handle.cancel_requested:
        why = "its job_cancel"
    elif timeout is not None and trio.current_time() >= started + timeout:
        late = trio.current_time() - (started + timeout)
        why = f"its timeout of {timeout:g} s ({late:.2f} s late)"
    else:
        why = "the client's stop"
    log.warning(
        "job %d (kind %r) returned after %s cancelled it: recorded as completed; work() "
        "should let trio.Cancelled propagate (catching it delays stopping)",
        row.id,
        row.kind,
        why,
    )


async def _failed(
    config: WorkConfig,
    handle: RunningJob,
    worker: Worker[Any] | None,
    error: BaseException,
    started: float,
) -> Outcome:
    row = handle.row
    error_text = _error_json(row, error)
    # The hooks below are user code too: whatever they do, the job's outcome
    # must still be sent, or the producer (and with it the client) would fail.
    if config.error_handler is not None:
        try:
            result = await config.error_handler(row, error)
        except BaseException as exc:
            if _propagates(exc):
                raise
            log.exception("the error handler raised for job %d; applying the retry policy", row.id)
        else:
            if getattr(result, "set_cancelled", False) is True:
                return _outcome(handle, OutcomeKind.CANCELLED, started, error_text)
    retry = next_retry(row, handle.job, worker, config.retry_policy, now=datetime.now(UTC))
    return _outcome(
        handle, OutcomeKind.FAILED, started, error_text, retry_at=retry.at, delay=retry.delay
    )
