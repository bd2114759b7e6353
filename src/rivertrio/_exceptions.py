"""The exception types rivertrio raises. Users never catch driver or asyncio types."""

from __future__ import annotations


class RivertrioError(Exception):
    """Base class of every error rivertrio raises on purpose."""


class ConfigError(RivertrioError, ValueError):
    """Invalid configuration; the message names the field and the rule."""


class InvalidInputError(RivertrioError, ValueError):
    """Invalid job args or insert options; raised before anything is written."""


class DatabaseError(RivertrioError):
    """A statement failed in Postgres."""


class DatabaseConnectionError(DatabaseError):
    """Postgres could not be reached; the message names the host and port."""


class EmbeddedPostgresError(RivertrioError):
    """The embedded Postgres could not be started."""


class NotFoundError(RivertrioError, LookupError):
    """A job or queue does not exist."""


class JobRunningError(RivertrioError):
    """The operation is not allowed on a running job."""


class UnknownJobKindError(RivertrioError):
    """No worker is registered for a job kind."""


class QueueAlreadyAddedError(RivertrioError):
    """A queue with that name is already configured on this client."""


class QueueNotFoundError(NotFoundError):
    """No queue with that name is configured on this client."""


class AlreadyRunningError(RivertrioError, RuntimeError):
    """``run`` was called while a previous run of the same service is in progress."""
