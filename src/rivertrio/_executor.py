"""Running one job: decode its args, call its worker, turn what happened into an Outcome."""

from __future__ import annotations

import json
import logging
import traceback
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import trio

from ._events import Outcome, OutcomeKind
from ._exceptions import RivertrioError, UnknownJobKindError
from ._job import Job, JobRow
from ._worker import JobCancel, JobSnooze, resolve_timeout

if TYPE_CHECKING:
    from ._client import Client
    from ._config import Config

__all__ = ["JobTimeoutError", "RunningJob", "current_client", "execute"]

log = logging.getLogger("rivertrio.executor")

_current_client: ContextVar[Client] = ContextVar("rivertrio_client")


def current_client() -> Client:
    """The client running the current job, for workers that insert follow-up jobs.

    Raises:
        RuntimeError: Called outside a job run by a rivertrio client.
    """
    try:
        return _current_client.get()
    except LookupError:
        raise RuntimeError("current_client() is only available inside a job's work()") from None


class JobTimeoutError(RivertrioError, TimeoutError):
    """A job ran longer than its timeout and was cancelled."""


class RunningJob:
    """A job task's handle: lets the producer cancel one running job."""

    __slots__ = ("cancel_requested", "row", "scope")

    def __init__(self, row: JobRow) -> None:
        self.row = row
        self.scope: trio.CancelScope | None = None
        self.cancel_requested = False

    def cancel(self) -> None:
        """Cancel the job's work (a remote `job_cancel`); it ends `cancelled`."""
        self.cancel_requested = True
        if self.scope is not None:
            self.scope.cancel()


def _error_json(row: JobRow, error: BaseException) -> str:
    message = str(error)
    return json.dumps(
        {
            "attempt": row.attempt,
            "error": f"{type(error).__name__}: {message}" if message else type(error).__name__,
            "trace": "".join(traceback.format_exception(error)),
        }
    )


async def execute(client: Client, config: Config, handle: RunningJob) -> Outcome:
    """Work one fetched job and return its outcome. A checkpoint.

    Every failure of the job itself (a worker error, bad args, an unknown kind, a
    timeout) becomes a FAILED outcome. Cancellation from outside (hard stop,
    the enclosing scope) propagates as `trio.Cancelled`; the caller records the
    job as interrupted.
    """
    row = handle.row
    _current_client.set(client)
    started = trio.current_time()
    wait = 0.0
    if row.attempted_at is not None:
        wait = max(0.0, (row.attempted_at - row.scheduled_at).total_seconds())

    def outcome(kind: OutcomeKind, **fields: Any) -> Outcome:
        now = trio.current_time()
        return Outcome(
            job=row,
            kind=kind,
            queue_wait_duration=wait,
            run_duration=now - started,
            finished_at=now,
            **fields,
        )

    job: Job[Any] | None = None
    worker: Any = None
    try:
        entry = config.workers.get(row.kind) if config.workers is not None else None
        if entry is None:
            raise UnknownJobKindError(f"no worker is registered for job kind {row.kind!r}")
        args_cls, worker = entry
        args = args_cls.from_json(json.loads(row.encoded_args))
        job = Job.from_row(row, args)
        timeout = resolve_timeout(worker, job, config.job_timeout)
        with trio.CancelScope() as scope:
            handle.scope = scope
            if timeout is not None:
                scope.deadline = started + timeout
            if handle.cancel_requested:
                scope.cancel()
            await worker.work(job)
        handle.scope = None
        if not scope.cancelled_caught:
            return outcome(OutcomeKind.COMPLETED)
        if handle.cancel_requested:
            return outcome(
                OutcomeKind.CANCELLED,
                error=_error_json(row, JobCancel("job cancelled remotely")),
            )
        raise JobTimeoutError(f"job exceeded its timeout of {timeout} s")
    except JobCancel as exc:
        return outcome(OutcomeKind.CANCELLED, error=_error_json(row, exc))
    except JobSnooze as exc:
        return outcome(OutcomeKind.SNOOZED, delay=exc.seconds)
    except Exception as exc:
        return await _failed(config, row, job, worker, exc, outcome)


async def _failed(
    config: Config,
    row: JobRow,
    job: Job[Any] | None,
    worker: Any,
    error: Exception,
    outcome: Any,
) -> Outcome:
    error_text = _error_json(row, error)
    if config.error_handler is not None:
        try:
            result = await config.error_handler(row, error)
        except Exception:
            log.exception("the error handler raised for job %d; applying the retry policy", row.id)
        else:
            if result is not None and result.set_cancelled:
                return outcome(OutcomeKind.CANCELLED, error=error_text)  # type: ignore[no-any-return]
    retry_at: datetime | None = None
    if worker is not None and job is not None:
        try:
            retry_at = worker.next_retry(job)
        except Exception:
            log.exception("next_retry raised for job %d; applying the retry policy", row.id)
        if retry_at is not None and retry_at <= datetime.now(UTC):
            retry_at = None  # a time in the past falls back to the policy
    delay = None if retry_at is not None else config.retry_policy(row)
    return outcome(  # type: ignore[no-any-return]
        OutcomeKind.FAILED, error=error_text, retry_at=retry_at, delay=delay
    )
