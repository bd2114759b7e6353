"""Maintenance: the services only the leader runs, and the maintainer that runs them.

The maintainer follows its elector's terms: when the elector wins a term it
starts every maintenance service; when the term is lost (resigned, replaced,
expired, the elector stopped) it cancels them all. Each service is atomic per
statement, so cancelling one mid-pass leaves nothing half done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import trio

from .._exceptions import ConfigError
from .._insert import Inserter
from .._middleware import Extensions
from .._service import Counter, Service, SupportsLifecycle, cancel_on
from .._validate import duration, integer
from ._cleaner import JobCleaner
from ._periodic import PeriodicEnqueuer, PeriodicJobs
from ._queue_cleaner import QueueCleaner
from ._queue_stats import QueueMeasurer
from ._reindexer import Reindexer, ReindexRun
from ._rescuer import JobRescuer
from ._scheduler import JobScheduler
from ._workflows import WorkflowReleaser

if TYPE_CHECKING:
    from .._config import Config
    from .._driver import Driver
    from .._elector import Elector

__all__ = [
    "JobCleaner",
    "JobRescuer",
    "JobScheduler",
    "Maintainer",
    "MaintenanceSettings",
    "PeriodicEnqueuer",
    "PeriodicJobs",
    "QueueCleaner",
    "QueueMeasurer",
    "ReindexRun",
    "Reindexer",
    "WorkflowReleaser",
]

log = logging.getLogger("rivertrio.maintenance")

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class MaintenanceSettings:
    """Intervals and sizes of the maintenance services (River's defaults).

    These are not `Config` fields: the defaults suit production, and tests
    shorten them.

    Raises:
        ConfigError: A duration is not a finite positive number.
    """

    scheduler_interval: float = 5.0
    rescuer_interval: float = 30.0
    orphan_interval: float = 1.0
    """How often the rescuer looks for dead clients (fast rescue)."""
    orphan_grace: float = 5.0
    """How long a client's liveness lock must be gone before its jobs are rescued."""
    fast_rescue: bool = True
    cleaner_interval: float = 30.0
    queue_cleaner_interval: float = 60.0
    queue_retention: float = 24 * 3600.0
    """Queue rows not updated for this long are deleted."""
    batch_size: int = 1000
    scheduler_batch_size: int = 10_000

    def __post_init__(self) -> None:
        for name in (
            "scheduler_interval",
            "rescuer_interval",
            "orphan_interval",
            "cleaner_interval",
            "queue_cleaner_interval",
            "queue_retention",
        ):
            duration(name, getattr(self, name), ConfigError)
        duration("orphan_grace", self.orphan_grace, ConfigError, at_least=0)
        for name in ("batch_size", "scheduler_batch_size"):
            integer(name, getattr(self, name), ConfigError)


def _reindexers(driver: Driver, config: Config) -> list[Reindexer]:
    """The config's reindexer: none when its schedule is None or it has no index to rebuild."""
    if config.reindexer_schedule is None:
        return []
    names = config.reindexer_index_names
    reindexer = Reindexer(
        driver,
        schedule=config.reindexer_schedule,
        timeout=config.reindexer_timeout,
        **({} if names is None else {"index_names": names}),
    )
    return [reindexer] if reindexer.index_names else []


def _queue_measurers(driver: Driver, config: Config) -> list[QueueMeasurer]:
    """A queue measurer if some middleware asked for queue measurements (at its interval)."""
    observers = Extensions(config.middleware, config.hooks).observers
    if not observers:
        return []
    interval = min(m.queue_stats_interval for m in observers if m.queue_stats_interval)
    return [QueueMeasurer(driver, observers, interval=interval)]


class Maintainer(Service):
    """Runs maintenance services while its elector is the leader, and only then.

    Build it with `for_config` for the standard set, or pass your own services
    (anything following the lifecycle contract).

    Args:
        elector: Whose terms to follow.
        services: Started in order at each term, cancelled when it ends.
    """

    def __init__(self, elector: Elector, services: Sequence[SupportsLifecycle]) -> None:
        super().__init__()
        self._elector = elector
        self.services = tuple(services)
        self.terms = Counter()
        """Terms during which the services ran (counted once all had started)."""
        self.terms_ended = Counter()
        """Terms whose services have all stopped again."""
        self._leading = False

    @classmethod
    def for_config(
        cls,
        driver: Driver,
        config: Config,
        elector: Elector,
        *,
        settings: MaintenanceSettings | None = None,
        inserter: Inserter | None = None,
        periodic_jobs: PeriodicJobs | None = None,
        on_available: Callable[[frozenset[str]], None] | None = None,
    ) -> Maintainer:
        """The standard maintainer: scheduler, rescuer, cleaner, queue cleaner, periodic
        jobs, the workflow releaser, and the reindexer unless the config turns it off.

        Args:
            driver: The database.
            config: Retentions, rescue rule, retry policy, workers, periodic jobs, poll_only.
            elector: The client's elector.
            settings: Intervals; River's defaults if None.
            inserter: Inserts periodic jobs (pass the client's); a new one if None.
            periodic_jobs: The registry; built from ``config.periodic_jobs`` if None.
            on_available: Called with queues that got available jobs (wake producers).
        """
        s = settings or MaintenanceSettings()
        periodic = (
            periodic_jobs if periodic_jobs is not None else PeriodicJobs(config.periodic_jobs)
        )
        return cls(
            elector,
            [
                JobScheduler(
                    driver,
                    interval=s.scheduler_interval,
                    batch_size=s.scheduler_batch_size,
                    notify=not config.poll_only,
                    on_available=on_available,
                ),
                JobRescuer(
                    driver,
                    config,
                    interval=s.rescuer_interval,
                    orphan_interval=s.orphan_interval,
                    orphan_grace=s.orphan_grace,
                    fast_rescue=s.fast_rescue,
                    batch_size=s.batch_size,
                ),
                JobCleaner(
                    driver,
                    completed_retention=config.completed_job_retention,
                    cancelled_retention=config.cancelled_job_retention,
                    discarded_retention=config.discarded_job_retention,
                    interval=s.cleaner_interval,
                    batch_size=s.batch_size,
                ),
                QueueCleaner(
                    driver,
                    retention=s.queue_retention,
                    interval=s.queue_cleaner_interval,
                    batch_size=s.batch_size,
                ),
                PeriodicEnqueuer(
                    periodic, inserter if inserter is not None else Inserter(driver, config), driver
                ),
                WorkflowReleaser(
                    driver,
                    interval=s.scheduler_interval,
                    notify=not config.poll_only,
                    on_available=on_available,
                ),
                *_reindexers(driver, config),
                *_queue_measurers(driver, config),
            ],
        )

    def service(self, kind: type[S]) -> S:
        """The first of this maintainer's services of type `kind`.

        Raises:
            LookupError: It has none.
        """
        for service in self.services:
            if isinstance(service, kind):
                return service
        raise LookupError(f"this maintainer runs no {kind.__name__}")

    @property
    def leading(self) -> bool:
        """Whether the services are running (the elector holds a term)."""
        return self._leading

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_on, self._stop_event, nursery.cancel_scope)
            task_status.started()
            last = 0
            while True:
                term = await self._elector.next_term(after=last)
                last = term.number
                if term.lost.is_set():
                    continue
                await self._run_term(term.lost)

    async def _run_term(self, lost: trio.Event) -> None:
        """Run every service until `lost` is set, then cancel them."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_on, lost, nursery.cancel_scope)
                for service in self.services:
                    await nursery.start(service.run)
                self._leading = True
                log.info("maintenance services started (this client leads)")
                self.terms.increment()
                await trio.sleep_forever()
        finally:
            if self._leading:
                log.info("maintenance services stopped (leadership ended)")
                self._leading = False
                self.terms_ended.increment()
