"""`report_progress`: a worker reports how far along its job is, stored at most once a second."""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime

import trio

from ._driver._metadata import write_progress
from ._exceptions import DatabaseError, InvalidInputError
from ._executor import running_job
from ._job import METADATA_PROGRESS

__all__ = ["MAX_PROGRESS_MESSAGE", "PROGRESS_INTERVAL", "report_progress"]

log = logging.getLogger("rivertrio.progress")

#: Seconds between two writes of one job's progress.
PROGRESS_INTERVAL = 1.0
#: Longest progress message, in characters.
MAX_PROGRESS_MESSAGE = 200
# A progress write is a courtesy to whoever watches: it must not hold the job
# up for long when the database is slow.
_WRITE_TIMEOUT = 5.0


async def report_progress(value: float, message: str = "") -> None:
    """Report the job's progress: a number (your scale: a fraction, a percentage, a
    count of items) and a short message. A checkpoint.

    Stored in the job's metadata under ``"progress"`` (``{"value", "message",
    "at"}``), read back with `JobRow.progress`, and shown by ``rivertrio jobs
    get``. A job's progress is written at most once a second: the first report
    at once, then a report at least a second after the last write; the ones in
    between are only kept, and the last one is always written with the job's
    outcome. A failed write is logged and does not fail the job.

    Raises:
        RuntimeError: Called outside a job's work.
        InvalidInputError: `value` is not a finite number, or `message` is not a
            string of at most 200 characters.
    """
    handle = running_job("report_progress()")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(f"report_progress: value must be a finite number, got {value!r}")
    if not isinstance(message, str) or len(message) > MAX_PROGRESS_MESSAGE:
        raise InvalidInputError(
            f"report_progress: message must be a string of at most {MAX_PROGRESS_MESSAGE} "
            f"characters, got {message[:40]!r}... ({len(message)} characters)"
            if isinstance(message, str)
            else f"report_progress: message must be a string, not {type(message).__name__}"
        )
    report = json.dumps(
        {"value": value, "message": message, "at": datetime.now(UTC).isoformat()},
        separators=(",", ":"),
    )
    # Kept for the outcome first: whatever happens below, the last report is stored.
    handle.set_update(METADATA_PROGRESS, report)
    config = handle.config
    driver = config.driver if config is not None else None
    now = trio.current_time()
    last = handle.progress_written_at
    if driver is None or (last is not None and now - last < PROGRESS_INTERVAL):
        await trio.lowlevel.checkpoint()
        return
    handle.progress_written_at = now
    row = handle.row
    with trio.move_on_after(_WRITE_TIMEOUT) as scope:
        try:
            await driver.run(
                write_progress,
                driver.configured_schema,
                row.id,
                row.attempt,
                f'{{"{METADATA_PROGRESS}":{report}}}',
            )
        except DatabaseError as exc:
            log.warning("job %d: its progress report could not be written: %s", row.id, exc)
    if scope.cancelled_caught:
        log.warning("job %d: writing its progress took over %g s; skipped", row.id, _WRITE_TIMEOUT)
