"""The exception types rivertrio raises, and the two a worker raises to steer its job.

Users never catch driver or asyncio types. Two kinds of exception live elsewhere
on purpose: the command line's ``CliError`` is a click exception (it sits beside
click in ``_cli/_common.py``), and the testing harness's failures are
AssertionErrors of their own (``rivertrio/testing/_failures.py``).
"""

from __future__ import annotations

from ._validate import duration


class RivertrioError(Exception):
    """Base class of every error rivertrio raises on purpose."""


class ConfigError(RivertrioError, ValueError):
    """Invalid configuration; the message names the field and the rule."""


class InvalidInputError(RivertrioError, ValueError):
    """Invalid job args or insert options; raised before anything is written."""


class DatabaseError(RivertrioError):
    """A statement failed in Postgres.

    Args:
        message: What failed, and why.
        sqlstate: The SQLSTATE code Postgres reported, if it reported one.
    """

    sqlstate: str | None
    """The SQLSTATE code Postgres reported (``"23505"``: a unique violation), or None."""

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class DatabaseConnectionError(DatabaseError):
    """Postgres could not be reached; the message names the host and port."""


class EmbeddedPostgresError(RivertrioError):
    """The embedded Postgres could not be started."""


class NotFoundError(RivertrioError, LookupError):
    """A job or queue does not exist."""


class JobRunningError(RivertrioError):
    """The operation is not allowed on a running job."""


class JobNotRunningError(RivertrioError):
    """The job is not running the attempt the caller works any more (finalized,
    cancelled, rescued or deleted): `job_complete_tx` refused to complete it."""


class UnknownJobKindError(RivertrioError):
    """No worker is registered for a job kind."""


class QueueAlreadyAddedError(RivertrioError):
    """A queue with that name is already configured on this client."""


class QueueNotFoundError(NotFoundError):
    """No queue with that name is configured on this client."""


class AlreadyRunningError(RivertrioError, RuntimeError):
    """``run`` was called while a previous run of the same service is in progress."""


class MigrationError(RivertrioError):
    """A migration cannot run as asked, given what the database already holds; or a
    client's configuration needs a migration the schema lacks."""


class JobTimeoutError(RivertrioError, TimeoutError):
    """A job ran longer than its timeout and was cancelled."""


class WorkResultError(RivertrioError, TypeError):
    """A worker's ``work`` returned an awaitable instead of awaiting it."""


class JobDecodeError(RivertrioError, ValueError):
    """A fetched job's args or metadata cannot be decoded: the job fails without running.

    Raised for rows written by hand or by another client (args that are not a
    JSON object, a missing field, a value of the wrong type, nesting too deep
    for Python's json module). The message names the problem; the failure is
    recorded in the job's errors and retried by the retry policy, since a new
    version of the args class may decode it.
    """


class LivenessError(RivertrioError):
    """Another live session holds this client id's liveness lock: the id is in use."""


class DashboardUnavailableError(RivertrioError):
    """The dashboard cannot answer: it has no open database client."""


class JobCancel(Exception):
    """Raise from `Worker.work` to cancel the job for good: it is never retried.

    Args:
        reason: Why; recorded in the job's errors.
    """

    def __init__(self, reason: str | BaseException = "") -> None:
        super().__init__(str(reason) if isinstance(reason, BaseException) else reason)
        self.reason = reason


class JobSnooze(Exception):
    """Raise from `Worker.work` to run the job again later without using an attempt.

    The job becomes ``scheduled`` (``available`` at once for 5 s or less) and its
    ``metadata.snoozes`` counts up.

    Args:
        seconds: How long from now; 0 or more.

    Raises:
        InvalidInputError: `seconds` is negative, not finite or not a number.
    """

    def __init__(self, seconds: float) -> None:
        checked = duration("JobSnooze seconds", seconds, InvalidInputError, at_least=0)
        super().__init__(f"snoozed for {seconds} s")
        self.seconds = checked
