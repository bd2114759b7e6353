"""Client configuration, validated when it is built."""

from __future__ import annotations

import importlib
import inspect
import math
import re
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeAlias

from ._driver._maintenance import CLIENT_ID_MARKER
from ._exceptions import ConfigError
from ._retry import RetryPolicy, default_retry_policy
from ._worker import Workers

if TYPE_CHECKING:
    from ._insert import InsertOpts
    from ._job import JobArgs, JobRow

__all__ = [
    "MAX_QUEUE_NAME_LENGTH",
    "MAX_WORKERS",
    "Config",
    "ErrorHandler",
    "ErrorHandlerResult",
    "PeriodicJob",
    "PeriodicJobConstructor",
    "QueueConfig",
    "queue_name_problem",
]

MAX_WORKERS = 10_000
MAX_QUEUE_NAME_LENGTH = 64
MAX_CLIENT_ID_LENGTH = 100
MIN_FETCH_COOLDOWN = 0.001

# The documented rule is ^[a-z0-9]+(?:[_-]?[a-z0-9]+)*$. That form backtracks
# exponentially on a near-miss such as "aaaa...a!"; this one accepts exactly the
# same names (alphanumeric runs joined by single '_' or '-') in linear time.
_QUEUE_NAME = re.compile(r"[a-z0-9]+(?:[_-][a-z0-9]+)*")
# An unquoted Postgres identifier; 63 bytes is Postgres' NAMEDATALEN - 1.
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_MAX_IDENTIFIER = 63


def queue_name_problem(name: object) -> str | None:
    """Why `name` is not a valid queue name, or None if it is."""
    if not isinstance(name, str):
        return f"queue name must be a string, not {type(name).__name__}"
    if not name or len(name) > MAX_QUEUE_NAME_LENGTH:
        return (
            f"queue name {name!r} must be 1 to {MAX_QUEUE_NAME_LENGTH} characters "
            f"(it has {len(name)})"
        )
    if not _QUEUE_NAME.fullmatch(name):
        return (
            f"queue name {name!r} is invalid: it must match ^[a-z0-9]+(?:[_-]?[a-z0-9]+)*$ "
            "(lowercase letters and digits, single '_' or '-' between them)"
        )
    return None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _duration(
    name: str,
    value: object,
    *,
    optional: bool = False,
    positive: bool = False,
    minimum: float = 0.0,
) -> float | None:
    """Validate a duration field; returns it as a float (or None if allowed)."""
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name} must be a number of seconds, not None")
    if not _is_number(value):
        raise ConfigError(f"{name} must be a number of seconds, not {type(value).__name__}")
    seconds = float(value)  # type: ignore[arg-type]
    if not math.isfinite(seconds):
        hint = " (use None for no limit)" if optional else ""
        raise ConfigError(f"{name} must be finite, got {value!r}{hint}")
    if positive and seconds <= 0:
        raise ConfigError(f"{name} must be greater than 0 seconds, got {value!r}")
    if seconds < minimum:
        if minimum == 0:
            raise ConfigError(f"{name} must not be negative, got {value!r}")
        raise ConfigError(f"{name} must be at least {minimum} seconds, got {value!r}")
    return seconds


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """One queue's settings.

    Args:
        max_workers: How many jobs of the queue run at once in this client, 1 to 10,000.
        fetch_cooldown: Overrides the config's ``fetch_cooldown`` for this queue.
        fetch_poll_interval: Overrides the config's ``fetch_poll_interval`` for this queue.

    Raises:
        ConfigError: A value is out of range; the message names the field.
    """

    max_workers: int
    fetch_cooldown: float | None = None
    fetch_poll_interval: float | None = None

    def __post_init__(self) -> None:
        mw = self.max_workers
        if not isinstance(mw, int) or isinstance(mw, bool):
            raise ConfigError(f"max_workers must be an int, not {type(mw).__name__}")
        if not 1 <= mw <= MAX_WORKERS:
            raise ConfigError(f"max_workers must be between 1 and {MAX_WORKERS:,}, got {mw}")
        cooldown = _duration(
            "fetch_cooldown", self.fetch_cooldown, optional=True, minimum=MIN_FETCH_COOLDOWN
        )
        poll = _duration(
            "fetch_poll_interval",
            self.fetch_poll_interval,
            optional=True,
            minimum=MIN_FETCH_COOLDOWN,
        )
        if cooldown is not None and poll is not None and poll < cooldown:
            raise ConfigError(
                f"fetch_poll_interval ({poll}) must be >= fetch_cooldown ({cooldown})"
            )
        object.__setattr__(self, "fetch_cooldown", cooldown)
        object.__setattr__(self, "fetch_poll_interval", poll)


@dataclass(frozen=True, slots=True)
class ErrorHandlerResult:
    """What an error handler asks for: ``set_cancelled=True`` cancels the job for good."""

    set_cancelled: bool = False


#: Called (awaited) when a job fails, with its row as fetched and the error. It
#: may return an `ErrorHandlerResult` to cancel the job; errors it raises are
#: logged and the normal retry policy applies.
ErrorHandler: TypeAlias = Callable[
    ["JobRow", BaseException], Awaitable["ErrorHandlerResult | None"]
]

#: Builds a periodic job's args (optionally with insert options), or None to skip a firing.
PeriodicJobConstructor: TypeAlias = Callable[[], "JobArgs | tuple[JobArgs, InsertOpts] | None"]


def _cron_is_valid(expression: str) -> bool:
    # Imported by name: croniter ships no type information (types-croniter is a
    # separate package), and this is the only use of it here.
    croniter: Any = importlib.import_module("croniter").croniter
    return bool(croniter.is_valid(expression))


@dataclass(frozen=True, slots=True)
class PeriodicJob:
    """A job inserted on a schedule by the leader.

    Args:
        schedule: An interval in seconds (> 0), or a cron expression such as
            ``"*/15 * * * *"`` (as croniter accepts it).
        constructor: Returns the job's args, ``(args, InsertOpts)``, or None to
            skip this firing.
        run_on_start: Also insert once when the client (as leader) starts.
        id: A stable identifier, 1 to 128 characters; unique among a config's
            periodic jobs.

    Raises:
        ConfigError: A value is invalid; the message names the field.
    """

    schedule: float | str
    constructor: PeriodicJobConstructor
    run_on_start: bool = False
    id: str | None = None

    def __post_init__(self) -> None:
        schedule = self.schedule
        if isinstance(schedule, str):
            if not _cron_is_valid(schedule):
                raise ConfigError(
                    f"PeriodicJob.schedule {schedule!r} is not a valid cron expression"
                )
        else:
            interval = _duration("PeriodicJob.schedule", schedule, positive=True)
            object.__setattr__(self, "schedule", interval)
        if not callable(self.constructor):
            raise ConfigError(
                f"PeriodicJob.constructor must be callable, not {type(self.constructor).__name__}"
            )
        if not isinstance(self.run_on_start, bool):
            raise ConfigError("PeriodicJob.run_on_start must be a bool")
        if self.id is not None and (not isinstance(self.id, str) or not 1 <= len(self.id) <= 128):
            raise ConfigError(
                f"PeriodicJob.id must be a string of 1 to 128 characters, got {self.id!r}"
            )


def default_client_id(now: datetime | None = None, *, marked: bool = True) -> str:
    """Host name plus start time, as River builds it: ``myhost_2026_01_02T15_04_05_123456``.

    `marked` appends rivertrio's marker (``.rt``): the client then holds a
    liveness lock, and the leader rescues its jobs within seconds if it dies.
    """
    host = socket.gethostname() or "unknown_host"
    host = re.sub(r"[^A-Za-z0-9_\-]", "_", host)[:60]
    when = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{host}_{when:%Y_%m_%dT%H_%M_%S_%f}" + (CLIENT_ID_MARKER if marked else "")


# A default id, as `default_client_id` makes them (so `dataclasses.replace` of a
# config into poll_only can drop the marker it cannot honour).
_DEFAULT_ID = re.compile(r"[A-Za-z0-9_\-]+_\d{4}_\d\d_\d\dT\d\d_\d\d_\d\d_\d{6}\.rt")


def _is_sync_function(fn: object) -> bool:
    # A plain `def` where an async callable is expected would hand back a value
    # instead of an awaitable; catch that here rather than at the first failure.
    call = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else type(fn).__call__
    return (inspect.isfunction(call) or inspect.ismethod(call)) and not (
        inspect.iscoroutinefunction(call)
    )


@dataclass(frozen=True, slots=True)
class Config:
    """A client's configuration. Every field is validated when the Config is built.

    See the API documentation for each field's meaning; durations are seconds.

    Raises:
        ConfigError: A field is invalid; the message names the field and the rule.
    """

    queues: Mapping[str, QueueConfig] = field(default_factory=dict)
    workers: Workers | None = None
    # River's minimum, not its 0.1 s default: insert notifications are spaced by
    # it, and 0.1 s made cross-process start latency ~50 ms at 200 jobs/s (issue 6
    # wants under 5 ms). Producers still batch under load (see Producer).
    fetch_cooldown: float = 0.001
    fetch_poll_interval: float = 1.0
    job_timeout: float | None = 60.0
    rescue_stuck_jobs_after: float = 3600.0
    max_attempts: int = 25
    retry_policy: RetryPolicy = default_retry_policy
    error_handler: ErrorHandler | None = None
    periodic_jobs: Sequence[PeriodicJob] = ()
    completed_job_retention: float | None = 86400.0
    cancelled_job_retention: float | None = 86400.0
    discarded_job_retention: float | None = 604800.0
    soft_stop_timeout: float | None = None
    poll_only: bool = False
    schema: str | None = None
    id: str = ""
    pool_size: int | None = None
    """Connections in the client's pool; None = 6 + one per queue. Of them, 2 + one
    per queue are kept from transaction blocks for the client's own fetches,
    completions and election."""

    def __post_init__(self) -> None:
        self._resolve_id()
        self._check_queues()
        self._check_workers()
        self._check_durations()
        self._check_rest()

    def _resolve_id(self) -> None:
        # "" = generate one. Fast rescue needs a session lock, which poll_only's
        # transaction-pooling proxies cannot keep: no marker then.
        if self.id == "" or (self.poll_only and _DEFAULT_ID.fullmatch(str(self.id))):
            object.__setattr__(self, "id", default_client_id(marked=not self.poll_only))

    @property
    def insert_only(self) -> bool:
        """True when the client works no queues: it only inserts and manages jobs."""
        return not self.queues

    @property
    def reserved_connections(self) -> int:
        """Pooled connections kept from transaction blocks, for the client's own services."""
        return 2 + len(self.queues)

    @property
    def effective_pool_size(self) -> int:
        """The size of the client's connection pool: `pool_size`, or 6 + one per queue."""
        return self.pool_size if self.pool_size is not None else 6 + len(self.queues)

    def queue_fetch_cooldown(self, queue: str) -> float:
        """The fetch cooldown in effect for a configured queue."""
        override = self.queues[queue].fetch_cooldown
        return self.fetch_cooldown if override is None else override

    def queue_fetch_poll_interval(self, queue: str) -> float:
        """The fetch poll interval in effect for a configured queue."""
        override = self.queues[queue].fetch_poll_interval
        return self.fetch_poll_interval if override is None else override

    def _check_queues(self) -> None:
        if not isinstance(self.queues, Mapping):
            raise ConfigError(
                f"queues must be a dict of name to QueueConfig, not {type(self.queues).__name__}"
            )
        queues = dict(self.queues)
        for name, queue_config in queues.items():
            problem = queue_name_problem(name)
            if problem is not None:
                raise ConfigError(f"queues: {problem}")
            if not isinstance(queue_config, QueueConfig):
                raise ConfigError(
                    f"queues[{name!r}] must be a QueueConfig, not {type(queue_config).__name__}"
                )
        # A copy, so mutating the caller's dict does not change a validated config.
        object.__setattr__(self, "queues", queues)

    def _check_workers(self) -> None:
        if self.workers is not None and not isinstance(self.workers, Workers):
            raise ConfigError(
                f"workers must be a rivertrio.Workers, not {type(self.workers).__name__}"
            )
        if self.queues and self.workers is None:
            raise ConfigError(
                "workers is required when queues are configured: pass workers=rivertrio.Workers() "
                "with a worker added for each job kind (or no queues for an insert-only client)"
            )
        if self.queues and self.workers is not None and not len(self.workers):
            raise ConfigError(
                "workers has no worker registered: add at least one before building a Config "
                "with queues"
            )

    def _check_durations(self) -> None:
        def put(name: str, value: float | None) -> None:
            object.__setattr__(self, name, value)

        cooldown = _duration("fetch_cooldown", self.fetch_cooldown, minimum=MIN_FETCH_COOLDOWN)
        poll = _duration(
            "fetch_poll_interval", self.fetch_poll_interval, minimum=MIN_FETCH_COOLDOWN
        )
        assert cooldown is not None
        assert poll is not None
        if poll < cooldown:
            raise ConfigError(
                f"fetch_poll_interval ({poll}) must be >= fetch_cooldown ({cooldown})"
            )
        put("fetch_cooldown", cooldown)
        put("fetch_poll_interval", poll)
        for name, queue_config in self.queues.items():
            q_cooldown = queue_config.fetch_cooldown
            q_poll = queue_config.fetch_poll_interval
            if q_cooldown is None and q_poll is None:
                continue
            eff_cooldown = cooldown if q_cooldown is None else q_cooldown
            eff_poll = poll if q_poll is None else q_poll
            if eff_poll < eff_cooldown:
                raise ConfigError(
                    f"queues[{name!r}].fetch_poll_interval ({eff_poll}) must be >= "
                    f"its fetch_cooldown ({eff_cooldown})"
                )
        timeout = _duration("job_timeout", self.job_timeout, optional=True, positive=True)
        put("job_timeout", timeout)
        rescue = _duration("rescue_stuck_jobs_after", self.rescue_stuck_jobs_after, positive=True)
        assert rescue is not None
        if timeout is not None and rescue < timeout:
            raise ConfigError(
                f"rescue_stuck_jobs_after ({rescue}) must be >= job_timeout ({timeout}): "
                "jobs would be rescued while still within their timeout"
            )
        put("rescue_stuck_jobs_after", rescue)
        for name in (
            "completed_job_retention",
            "cancelled_job_retention",
            "discarded_job_retention",
            "soft_stop_timeout",
        ):
            put(name, _duration(name, getattr(self, name), optional=True))

    def _check_rest(self) -> None:
        ma = self.max_attempts
        if not isinstance(ma, int) or isinstance(ma, bool) or not 1 <= ma <= 32767:
            raise ConfigError(f"max_attempts must be an int from 1 to 32767, got {ma!r}")
        if not callable(self.retry_policy):
            raise ConfigError("retry_policy must be a callable (job) -> seconds")
        if self.error_handler is not None:
            if not callable(self.error_handler):
                raise ConfigError("error_handler must be an async callable (job, error)")
            if _is_sync_function(self.error_handler):
                raise ConfigError(
                    "error_handler must be an async function: async def handler(job, error)"
                )
        if isinstance(self.periodic_jobs, str | bytes) or not isinstance(
            self.periodic_jobs, Sequence
        ):
            raise ConfigError("periodic_jobs must be a list of PeriodicJob")
        periodic = tuple(self.periodic_jobs)
        seen: set[str] = set()
        for job in periodic:
            if not isinstance(job, PeriodicJob):
                raise ConfigError(
                    f"periodic_jobs must hold PeriodicJob objects, not {type(job).__name__}"
                )
            if job.id is not None:
                if job.id in seen:
                    raise ConfigError(f"periodic_jobs: id {job.id!r} is used twice")
                seen.add(job.id)
        object.__setattr__(self, "periodic_jobs", periodic)
        size = self.pool_size
        least = self.reserved_connections + 1
        if size is not None and (
            not isinstance(size, int) or isinstance(size, bool) or not least <= size <= 10_000
        ):
            raise ConfigError(
                f"pool_size must be an int from {least} to 10000, got {size!r}: the client "
                f"keeps {least - 1} connections (2 + one per queue) for its own fetches, "
                "completions and election, and transaction blocks need at least one more"
            )
        if not isinstance(self.poll_only, bool):
            raise ConfigError(f"poll_only must be a bool, not {type(self.poll_only).__name__}")
        schema = self.schema
        if schema is not None and (
            not isinstance(schema, str)
            or not _SCHEMA_NAME.fullmatch(schema)
            or len(schema.encode()) > _MAX_IDENTIFIER
        ):
            raise ConfigError(
                f"schema {schema!r} is not a valid Postgres identifier: a letter or '_', then "
                f"letters, digits, '_' or '$', at most {_MAX_IDENTIFIER} bytes"
            )
        cid = self.id
        if self.poll_only and isinstance(cid, str) and cid.endswith(CLIENT_ID_MARKER):
            raise ConfigError(
                f"id {cid!r} ends with {CLIENT_ID_MARKER!r}, which promises a liveness lock held "
                "on a session connection; poll_only (transaction pooling) cannot hold one, so "
                "its running jobs would be rescued while it lives: choose an id without it"
            )
        if not isinstance(cid, str) or not 1 <= len(cid) <= MAX_CLIENT_ID_LENGTH:
            raise ConfigError(
                f"id must be a string of 1 to {MAX_CLIENT_ID_LENGTH} characters, got {cid!r}"
            )
