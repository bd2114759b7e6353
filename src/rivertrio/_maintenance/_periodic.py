"""Periodic jobs: the registry a client keeps, and the enqueuer the leader runs.

Each `PeriodicJob` fires on its schedule (an interval in seconds, or a cron
expression, read in the job's time zone, UTC by default); each firing calls its
constructor and inserts one job with ``metadata.periodic = true`` (and, for a
job with an id, ``metadata["river:periodic_job_id"]``, as River sets them) and
``scheduled_at`` = the time the firing was due, so a late firing still records
when it was meant to run. A constructor returning None skips the firing.
Firings missed while no client led are not made up. ``run_on_start`` also
fires once when the job enters the schedule: when the enqueuer starts (a
client becomes leader) or when the job is added to a running enqueuer. Give
the job unique options (for example ``UniqueOpts(by_period=...)``) so that a
leadership change cannot insert one firing twice.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING

import trio
from croniter import croniter

from .._args import InsertOpts, JobArgs
from .._exceptions import ConfigError, DatabaseError, NotFoundError
from .._maintenance_config import PeriodicJob
from .._service import Counter, Service, cancel_on

if TYPE_CHECKING:
    from .._driver import Driver
    from .._insert import Inserter

__all__ = ["PERIODIC_JOB_ID_KEY", "PeriodicEnqueuer", "PeriodicJobs", "next_run_time"]

log = logging.getLogger("rivertrio.maintenance")

#: The metadata key of the periodic job id (River's ``MetadataKeyPeriodicJobID``).
PERIODIC_JOB_ID_KEY = "river:periodic_job_id"


def next_run_time(
    schedule: float | str, previous: datetime, now: datetime, zone: tzinfo | None = None
) -> datetime:
    """When a job due at `previous` is next due, strictly after `now`.

    An interval keeps its phase (``previous + k * interval``), skipping the
    firings missed up to `now`; a cron expression gives its next match after
    `now`, read in `zone` (default UTC), returned in UTC. Where clocks change, each wall-clock
    time fires once: a time the clocks skip fires at the end of the gap (as
    croniter gives it), a time they repeat only at its first occurrence. Not a
    checkpoint.
    """
    if isinstance(schedule, str):
        matches = croniter(schedule, now.astimezone(zone or UTC))
        while True:
            nxt: datetime = matches.get_next(datetime)
            if not _repeated_later(nxt):
                # In UTC: Python compares two times of one zone by their wall
                # clocks, which is wrong in the hour the clocks repeat.
                return nxt.astimezone(UTC)
    interval = timedelta(seconds=schedule)
    if previous > now:
        return previous
    missed = math.floor((now - previous) / interval)
    return previous + (missed + 1) * interval


def _repeated_later(when: datetime) -> bool:
    """Whether `when` is the second occurrence of a wall-clock time the clocks repeat."""
    wall = when.replace(tzinfo=None)
    first = wall.replace(tzinfo=when.tzinfo, fold=0)
    # Its first occurrence must exist (round-trip through UTC): in a gap it does not.
    exists = first.astimezone(UTC).astimezone(when.tzinfo).replace(tzinfo=None) == wall
    return exists and first.astimezone(UTC) < when.astimezone(UTC)


class PeriodicJobs:
    """The periodic jobs of a client; add and remove them while it runs.

    Args:
        jobs: The initial jobs (usually ``Config.periodic_jobs``).

    Raises:
        ConfigError: A job is not a `PeriodicJob`, or two share an id.
    """

    def __init__(self, jobs: Iterable[PeriodicJob] = ()) -> None:
        self._jobs: dict[str, PeriodicJob] = {}
        self._changed = trio.Event()
        self._auto = 0
        for job in jobs:
            self.add(job)

    def add(self, job: PeriodicJob) -> str:
        """Add a job; returns its id (its own, or a generated one). Not a checkpoint.

        A running enqueuer schedules it at once (and fires it now if it has
        ``run_on_start``).

        Raises:
            ConfigError: Not a `PeriodicJob`, or its id is already in use.
        """
        if not isinstance(job, PeriodicJob):
            raise ConfigError(
                f"periodic jobs must be PeriodicJob objects, not {type(job).__name__}"
            )
        if job.id is None:
            key = ""
            while not key or key in self._jobs:
                self._auto += 1
                key = f"#{self._auto}"
        else:
            key = job.id
            if key in self._jobs:
                raise ConfigError(f"a periodic job with id {key!r} is already added")
        self._jobs[key] = job
        self._signal()
        return key

    def remove(self, job_id: str) -> PeriodicJob:
        """Remove the job with this id and return it. Not a checkpoint.

        Raises:
            NotFoundError: No periodic job has this id.
        """
        try:
            job = self._jobs.pop(job_id)
        except KeyError:
            raise NotFoundError(f"no periodic job has id {job_id!r}") from None
        self._signal()
        return job

    def remove_by_id(self, job_id: str) -> bool:
        """Remove the job with this id, if there is one (River's ``RemoveByID``).

        Its next firing and all later ones are cancelled. Returns whether a job
        was removed. Not a checkpoint.
        """
        if job_id not in self._jobs:
            return False
        self.remove(job_id)
        return True

    def remove_many_by_id(self, job_ids: Iterable[str]) -> None:
        """`remove_by_id` for each id (River's ``RemoveManyByID``). Not a checkpoint."""
        for job_id in job_ids:
            self.remove_by_id(job_id)

    def items(self) -> list[tuple[str, PeriodicJob]]:
        """The jobs and their ids, in the order they were added."""
        return list(self._jobs.items())

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    @property
    def changed(self) -> trio.Event:
        """An event set at the next add or remove."""
        return self._changed

    def _signal(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


def _periodic_opts(
    args: JobArgs, opts: InsertOpts | None, intended: datetime, job_id: str | None
) -> InsertOpts:
    # Our options replace the args class's per field, so its metadata is merged
    # in here rather than lost.
    cls_opts = type(args).insert_opts
    if opts is not None and opts.metadata is not None:
        metadata = dict(opts.metadata)
    elif isinstance(cls_opts, InsertOpts) and cls_opts.metadata is not None:
        metadata = dict(cls_opts.metadata)
    else:
        metadata = {}
    metadata["periodic"] = True
    if job_id is not None:
        metadata[PERIODIC_JOB_ID_KEY] = job_id
    base = opts if opts is not None else InsertOpts()
    scheduled_at = base.scheduled_at or (
        cls_opts.scheduled_at if isinstance(cls_opts, InsertOpts) else None
    )
    return dataclasses.replace(base, metadata=metadata, scheduled_at=scheduled_at or intended)


class PeriodicEnqueuer(Service):
    """Inserts the jobs of a `PeriodicJobs` registry on their schedules, while running.

    The maintainer runs it only while its client leads. Counters for tests
    and monitoring: `firings` (firings handled), `inserted`, `duplicates`
    (unique duplicates skipped by the insert), `skipped` (constructor returned
    None), `failed` (constructor or insert failed; logged).

    Args:
        jobs: The registry.
        inserter: Inserts the jobs (the client's, so local producers wake).
        driver: The database.
    """

    def __init__(self, jobs: PeriodicJobs, inserter: Inserter, driver: Driver) -> None:
        super().__init__()
        self.jobs = jobs
        self._inserter = inserter
        self._driver = driver
        self.firings = Counter()
        self.inserted = 0
        self.duplicates = 0
        self.skipped = 0
        self.failed = 0

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        # id -> (the job scheduled, when it is next due)
        schedule: dict[str, tuple[PeriodicJob, datetime]] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_on, self._stop_event, nursery.cancel_scope)
            task_status.started()
            while True:
                changed = self.jobs.changed
                now = datetime.now(UTC)
                current = dict(self.jobs.items())
                for key in list(schedule):
                    if current.get(key) is not schedule[key][0]:
                        del schedule[key]
                for key, job in current.items():
                    if key not in schedule:
                        first = (
                            now
                            if job.run_on_start
                            else next_run_time(job.schedule, now, now, _zone(job))
                        )
                        schedule[key] = (job, first)
                for key, (job, due) in sorted(schedule.items(), key=lambda kv: kv[1][1]):
                    now = datetime.now(UTC)
                    if due > now:
                        break
                    await self._fire(key, job, due)
                    if key in schedule and schedule[key][0] is job:
                        later = next_run_time(job.schedule, due, datetime.now(UTC), _zone(job))
                        schedule[key] = (job, later)
                if changed.is_set():
                    continue
                wait = (
                    (min(due for _, due in schedule.values()) - datetime.now(UTC)).total_seconds()
                    if schedule
                    else math.inf
                )
                with trio.move_on_after(max(wait, 0.0)):
                    await changed.wait()

    async def _fire(self, key: str, job: PeriodicJob, intended: datetime) -> None:
        try:
            built = job.constructor()
            if built is None:
                self.skipped += 1
                return
            args, opts = built if isinstance(built, tuple) else (built, None)
            if not isinstance(args, JobArgs):
                raise TypeError(
                    f"the constructor returned {type(args).__name__}, expected JobArgs, "
                    "(JobArgs, InsertOpts) or None"
                )
            if opts is not None and not isinstance(opts, InsertOpts):
                raise TypeError(f"the constructor returned {type(opts).__name__} as insert options")
            res = await self._inserter.insert(
                self._driver, args, _periodic_opts(args, opts, intended, job.id)
            )
        except DatabaseError as exc:
            self.failed += 1
            log.warning("periodic job %r: insert failed; this firing is lost: %s", key, exc)
        except Exception:
            self.failed += 1
            log.exception("periodic job %r: constructing or inserting its job failed", key)
        else:
            if res.unique_skipped_as_duplicate:
                self.duplicates += 1
            else:
                self.inserted += 1
        finally:
            self.firings.increment()


def _zone(job: PeriodicJob) -> tzinfo | None:
    # PeriodicJob resolves a zone name to a tzinfo when it is built.
    return job.timezone if isinstance(job.timezone, tzinfo) else None
