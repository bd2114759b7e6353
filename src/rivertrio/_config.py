"""Client configuration, validated when it is built."""

from __future__ import annotations

import inspect
import re
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeAlias, TypeVar

from ._driver._liveness import CLIENT_ID_MARKER
from ._driver._topics import channel_problem
from ._exceptions import ConfigError
from ._flow import FlowControl
from ._hooks import Hook, Middleware
from ._maintenance_config import REINDEXER_SCHEDULE_DEFAULT, PeriodicJob, reindexer_settings
from ._middleware import Extensions
from ._retry import RetryPolicy, default_retry_policy
from ._validate import duration, integer, queue_name, schema_name_problem
from ._validate import max_attempts as check_max_attempts
from ._worker import Workers

if TYPE_CHECKING:
    from ._job import JobRow

__all__ = [
    "MAX_WORKERS",
    "Config",
    "ErrorHandler",
    "ErrorHandlerResult",
    "QueueConfig",
]

MAX_WORKERS = 10_000
MAX_CLIENT_ID_LENGTH = 100
MIN_FETCH_COOLDOWN = 0.001

_T = TypeVar("_T")


def _fetch_timing(
    cooldown: object, poll: object, *, none: str | None = None, where: str = ""
) -> tuple[float | None, float | None]:
    """``fetch_cooldown`` and ``fetch_poll_interval`` checked: each at least 1 ms, and
    the poll interval no shorter than the cooldown (None allowed with `none`)."""
    checked = [
        duration(f"{where}{name}", value, ConfigError, at_least=MIN_FETCH_COOLDOWN, none=none)
        for name, value in (("fetch_cooldown", cooldown), ("fetch_poll_interval", poll))
    ]
    cooldown, poll = checked
    if cooldown is not None and poll is not None and poll < cooldown:
        its = "its " if where else ""
        raise ConfigError(
            f"{where}fetch_poll_interval ({poll}) must be >= {its}fetch_cooldown ({cooldown})"
        )
    return cooldown, poll


def _by_queue(name: str, value: object, cls: type[_T], shown: str) -> dict[str, _T]:
    """A setting by queue name checked: a mapping of valid queue names to `cls`, copied
    (so that changing the caller's dict does not change a validated config)."""
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{name} must be a dict of queue name to {shown}, not {type(value).__name__}"
        )
    checked = dict(value)
    for queue, item in checked.items():
        queue_name(queue, ConfigError, where=f"{name}: ")
        if not isinstance(item, cls):
            raise ConfigError(f"{name}[{queue!r}] must be a {shown}, not {type(item).__name__}")
    return checked


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
        integer("max_workers", self.max_workers, ConfigError, maximum=MAX_WORKERS)
        cooldown, poll = _fetch_timing(
            self.fetch_cooldown, self.fetch_poll_interval, none="to use the Config's"
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


def default_client_id(now: datetime | None = None, *, marked: bool = True) -> str:
    """Host name plus start time, as River builds it, plus a random part:
    ``myhost_2026_01_02T15_04_05_123456_3fa9c1``.

    The random part keeps apart clients made in the same microsecond (worker
    processes started together, say): a marked id must be unique, since a
    client whose id another live client holds refuses to start. `marked`
    appends rivertrio's marker (``.rt``): the client then holds a liveness
    lock, and the leader rescues its jobs within seconds if it dies.
    """
    host = socket.gethostname() or "unknown_host"
    host = re.sub(r"[^A-Za-z0-9_\-]", "_", host)[:60]
    when = (now or datetime.now(UTC)).astimezone(UTC)
    stamp = f"{host}_{when:%Y_%m_%dT%H_%M_%S_%f}_{secrets.token_hex(3)}"
    return stamp + (CLIENT_ID_MARKER if marked else "")


# A default id, as `default_client_id` makes them (so `dataclasses.replace` of a
# config into poll_only can drop the marker it cannot honour).
_DEFAULT_ID = re.compile(r"[A-Za-z0-9_\-]+_\d{4}_\d\d_\d\dT\d\d_\d\d_\d\d_\d{6}_[0-9a-f]{6}\.rt")


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
    # it, and 0.1 s made cross-process start latency ~50 ms at 200 jobs/s (the aim
    # is under 5 ms). Producers still batch under load (see Producer).
    fetch_cooldown: float = 0.001
    fetch_poll_interval: float = 1.0
    job_timeout: float | None = 60.0
    rescue_stuck_jobs_after: float = 3600.0
    max_attempts: int = 25
    retry_policy: RetryPolicy = default_retry_policy
    error_handler: ErrorHandler | None = None
    middleware: Sequence[Middleware] = ()
    """Wrap every insert and every job run (`rivertrio.Middleware`); the first is outermost."""
    hooks: Sequence[Hook] = ()
    """Run at the start of every insert and around every job run (`rivertrio.Hook`)."""
    periodic_jobs: Sequence[PeriodicJob] = ()
    completed_job_retention: float | None = 86400.0
    cancelled_job_retention: float | None = 86400.0
    discarded_job_retention: float | None = 604800.0
    reindexer_schedule: float | str | None = REINDEXER_SCHEDULE_DEFAULT
    """When the leader rebuilds River's bloat-prone indexes: a cron expression
    (UTC), or an interval in seconds; None turns the reindexer off. River's
    default: daily at midnight UTC."""
    reindexer_index_names: Sequence[str] | None = None
    """The indexes it rebuilds, one at a time; None for River's default list
    (`REINDEXER_INDEX_NAMES_DEFAULT`), an empty list to rebuild none."""
    reindexer_timeout: float | None = 60.0
    """Longest one rebuild may take, in seconds (River's 60 s); None for no limit."""
    soft_stop_timeout: float | None = None
    poll_only: bool = False
    schema: str | None = None
    id: str = ""
    pool_size: int | None = None
    """Connections in the client's pool; None = 6 + one per queue. Of them, 2 + one
    per queue are kept from transaction blocks for the client's own fetches,
    completions and election."""
    insert_coalesce_window: float = 0.0002
    """Seconds that concurrent `Client.insert` calls may wait to be sent together in one
    statement (at most 500 jobs); 0 sends each on its own. A call with no other insert
    of the client in flight is sent at once, so a lone caller never waits."""
    flow: Mapping[str, FlowControl] = field(default_factory=dict)
    """Flow control by queue name: global and partitioned concurrency limits, rate
    limits, sequences (see `FlowControl`). Give the same rules to every client that
    inserts into or works these queues."""

    def __post_init__(self) -> None:
        self._resolve_id()
        self._check_queues()
        self._check_flow()
        self._check_workers()
        self._check_durations()
        self._check_extensions()
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
        queues = _by_queue("queues", self.queues, QueueConfig, "QueueConfig")
        object.__setattr__(self, "queues", queues)

    def _check_flow(self) -> None:
        flow = _by_queue("flow", self.flow, FlowControl, "rivertrio.FlowControl")
        object.__setattr__(self, "flow", flow)

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

        cooldown, poll = _fetch_timing(self.fetch_cooldown, self.fetch_poll_interval)
        put("fetch_cooldown", cooldown)
        put("fetch_poll_interval", poll)
        for name in self.queues:
            # Each queue's settings in effect, its own falling back to these.
            _fetch_timing(
                self.queue_fetch_cooldown(name),
                self.queue_fetch_poll_interval(name),
                where=f"queues[{name!r}].",
            )
        timeout = duration("job_timeout", self.job_timeout, ConfigError, none="for no limit")
        put("job_timeout", timeout)
        rescue = duration("rescue_stuck_jobs_after", self.rescue_stuck_jobs_after, ConfigError)
        if timeout is not None and rescue < timeout:
            raise ConfigError(
                f"rescue_stuck_jobs_after ({rescue}) must be >= job_timeout ({timeout}): "
                "jobs would be rescued while still within their timeout"
            )
        put("rescue_stuck_jobs_after", rescue)
        for name, none in (
            ("completed_job_retention", "to keep them forever"),
            ("cancelled_job_retention", "to keep them forever"),
            ("discarded_job_retention", "to keep them forever"),
            ("soft_stop_timeout", "for no limit"),
        ):
            put(name, duration(name, getattr(self, name), ConfigError, at_least=0, none=none))
        window = duration(
            "insert_coalesce_window", self.insert_coalesce_window, ConfigError, at_least=0
        )
        if window > 1:
            raise ConfigError(
                f"insert_coalesce_window must be at most 1 second, got {window:g}: every "
                "concurrent insert may wait that long"
            )
        put("insert_coalesce_window", window)

    def _check_extensions(self) -> None:
        ext = Extensions(self.middleware, self.hooks, ConfigError)
        object.__setattr__(self, "middleware", tuple(self.middleware))
        object.__setattr__(self, "hooks", tuple(self.hooks))
        for m in ext.observers:
            duration(
                f"{type(m).__qualname__}.queue_stats_interval", m.queue_stats_interval, ConfigError
            )

    def _check_rest(self) -> None:
        schedule, names, timeout = reindexer_settings(
            self.reindexer_schedule, self.reindexer_index_names, self.reindexer_timeout
        )
        object.__setattr__(self, "reindexer_schedule", schedule)
        if self.reindexer_index_names is not None:
            object.__setattr__(self, "reindexer_index_names", names)
        object.__setattr__(self, "reindexer_timeout", timeout)
        check_max_attempts(self.max_attempts, ConfigError)
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
        if self.pool_size is not None:
            integer(
                "pool_size",
                self.pool_size,
                ConfigError,
                minimum=self.reserved_connections + 1,
                maximum=10_000,
                hint=f": the client keeps {self.reserved_connections} connections (2 + one per "
                "queue) for its own fetches, completions and election, and transaction blocks "
                "need at least one more",
            )
        if not isinstance(self.poll_only, bool):
            raise ConfigError(f"poll_only must be a bool, not {type(self.poll_only).__name__}")
        if self.schema is not None:
            problem = schema_name_problem(self.schema) or channel_problem(self.schema)
            if problem is not None:
                raise ConfigError(f"schema {problem}")
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
