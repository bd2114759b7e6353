"""`job_complete_tx`: a worker completes its own job in a transaction with its other writes."""

from __future__ import annotations

from typing import TypeVar, overload

from ._args import Job, JobArgs
from ._driver import Tx
from ._driver._completer import complete_in_tx
from ._exceptions import InvalidInputError, JobNotRunningError
from ._executor import current_job
from ._job import JobRow, JobState

__all__ = ["job_complete_tx"]

ArgsT = TypeVar("ArgsT", bound=JobArgs)


@overload
async def job_complete_tx(tx: Tx, job: Job[ArgsT]) -> Job[ArgsT]: ...
@overload
async def job_complete_tx(tx: Tx, job: JobRow) -> JobRow: ...


async def job_complete_tx(tx: Tx, job: JobRow) -> JobRow:
    """Mark a running job completed inside `tx`; it commits (or rolls back) with `tx`.

    For a worker whose effects are database writes: make them and complete the
    job in one transaction, and they happen exactly once. Once `tx` has
    committed the job is ``completed`` whatever happens next: the worker
    returning, raising, or the client stopping or dying before its completer
    writes the outcome; the completer then finds the row finished and reports
    it as completed, once, without changing it. Output recorded before the call
    (`record_output`, progress, logs) is stored with it; after it, not.

    A checkpoint. Returns the job as stored afterwards (with its args when
    `job` is a `Job`).

    Raises:
        InvalidInputError: `job` is not a running job.
        JobNotRunningError: The row no longer runs this attempt (cancelled,
            rescued and fetched again, deleted): nothing was changed, and the
            transaction should be rolled back.
    """
    if not isinstance(job, JobRow):
        raise InvalidInputError(f"job_complete_tx takes the job being worked, not {job!r}")
    if job.state is not JobState.RUNNING:
        raise InvalidInputError(
            f"job_complete_tx: job {job.id} is {job.state}, not running: pass the job "
            "your worker is working"
        )
    handle = current_job.get(None)
    updates = handle.updates_json() if handle is not None and handle.row.id == job.id else None
    rec = await tx.run(complete_in_tx, tx.configured_schema, job.id, job.attempt, updates)
    if rec is None:
        raise JobNotRunningError(f"job {job.id} was deleted: it was not completed")
    if not rec["completed"]:
        raise JobNotRunningError(
            f"job {job.id} was not completed: it is {rec['state']} at attempt {rec['attempt']}, "
            f"no longer running attempt {job.attempt}; roll the transaction back"
        )
    row = JobRow.from_record(rec)
    return Job.from_row(row, job.args) if isinstance(job, Job) else row
