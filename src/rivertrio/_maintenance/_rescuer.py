"""The rescuer: running jobs that are stuck, or whose client died, go back to be retried.

Two rules pick the jobs:

- *stuck* (River's rule): attempted more than ``rescue_stuck_jobs_after`` ago.
  Checked every `interval` (30 s). A worker whose ``timeout()`` is longer than
  that keeps its jobs until their own timeout has passed.
- *orphaned* (rivertrio's fast rescue): the job's last ``attempted_by`` is a
  rivertrio client id (it ends with `CLIENT_ID_MARKER`) whose liveness lock
  (see ``rivertrio._liveness``) has been free for at least `orphan_grace`
  seconds, on checks made every `orphan_interval`, and the attempt itself is
  older than `orphan_grace`. Postgres frees the lock when the client's process
  or connection dies, so such jobs are rescued within seconds instead of an
  hour. A lock that comes back within the grace (a reconnect, a database
  restart) clears the suspicion. Ids without the marker (River's Go clients)
  are left to the stuck rule.

Either way the job becomes ``retryable`` (delay from the worker's
``next_retry`` or the retry policy) with an error saying it was rescued,
``discarded`` if it has no attempts left, or ``cancelled`` if a cancel was
requested. The UPDATE re-checks that the row is still running in the same
attempt (and, for an orphan, that its client still holds no lock), so a job
that finished meanwhile is never overwritten.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import trio

from .._args import Job
from .._driver._liveness import CLIENT_ID_MARKER, client_liveness, liveness_key
from .._driver._maintenance import RescueRows, rescue_jobs, stuck_jobs
from .._exceptions import ConfigError
from .._job import JobRow
from .._retry import Retry, next_retry
from .._validate import duration, integer
from .._worker import Worker, resolve_timeout
from ._base import IntervalService, run_bounded

if TYPE_CHECKING:
    import asyncpg

    from .._config import Config
    from .._driver import Driver

__all__ = ["JobRescuer", "RescueResult"]

log = logging.getLogger("rivertrio.maintenance")

#: River's message for a rescued job; ours adds why.
RESCUED_ERROR = "Stuck job rescued by Rescuer"


@dataclass(slots=True)
class RescueResult:
    """What one rescuer pass changed."""

    retried: int = 0
    discarded: int = 0
    cancelled: int = 0
    orphans: int = 0
    """How many of the rescued jobs were orphaned (their client died)."""
    skipped: int = 0
    """Stuck rows left alone because their worker's timeout has not passed yet."""

    def __bool__(self) -> bool:
        return bool(self.retried or self.discarded or self.cancelled)


@dataclass(slots=True)
class _Decision:
    state: str
    retry: Retry | None = None


class JobRescuer(IntervalService):
    """Rescues stuck and orphaned running jobs; see the module docstring.

    Args:
        driver: The database.
        config: Supplies ``rescue_stuck_jobs_after``, ``job_timeout``, the workers
            (their ``timeout()`` and ``next_retry()``) and the retry policy.
        interval: Seconds between checks for stuck jobs (River: 30).
        orphan_interval: Seconds between checks for dead clients.
        orphan_grace: How long a client's lock must have been free, and its
            job's attempt old, before the job counts as orphaned.
        fast_rescue: Check for orphans at all.
        batch_size: Rows per statement.
    """

    name = "rescuer"

    def __init__(
        self,
        driver: Driver,
        config: Config,
        *,
        interval: float = 30.0,
        orphan_interval: float = 1.0,
        orphan_grace: float = 5.0,
        fast_rescue: bool = True,
        batch_size: int = 1000,
    ) -> None:
        self._stuck_interval = duration("rescuer interval", interval, ConfigError)
        self._orphan_grace = duration("orphan_grace", orphan_grace, ConfigError, at_least=0)
        orphan_interval = duration("orphan_interval", orphan_interval, ConfigError)
        super().__init__(interval=min(orphan_interval, interval) if fast_rescue else interval)
        self._driver = driver
        self._config = config
        self._fast_rescue = fast_rescue
        self._batch_size = integer("batch_size", batch_size, ConfigError)
        self._next_stuck_check = -float("inf")
        # Client id -> when (trio clock) its lock was first seen free. Kept by
        # this leader only: a new leader starts over, which delays, never hastens.
        self._lockless_since: dict[str, float] = {}
        self._last_liveness_check = -float("inf")

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        # Observations from an earlier term say nothing about what happened
        # while another client led: start over.
        self._lockless_since.clear()
        await super()._serve(task_status)

    async def _tick(self) -> RescueResult:
        now = trio.current_time()
        stuck_due = now >= self._next_stuck_check
        if stuck_due:
            self._next_stuck_check = now + self._stuck_interval
        return await self.run_once(stuck=stuck_due, orphans=self._fast_rescue)

    async def run_once(self, *, stuck: bool = True, orphans: bool = True) -> RescueResult:
        """Check for dead clients, then rescue stuck and orphaned jobs in batches.

        A checkpoint. Cancel-safe: each batch is one statement.

        Args:
            stuck: Apply the stuck rule (``rescue_stuck_jobs_after``).
            orphans: Apply the orphan rule (dead clients' jobs).
        """
        dead = await self._dead_clients() if orphans else []
        result = RescueResult()
        if not stuck and not dead:
            return result
        rescue_after = self._config.rescue_stuck_jobs_after if stuck else None
        after_id = 0
        while True:
            recs = await run_bounded(
                self._driver,
                stuck_jobs,
                self._driver.configured_schema,
                after_id=after_id,
                rescue_after=rescue_after,
                dead_clients=dead,
                grace=self._orphan_grace,
                limit=self._batch_size,
            )
            if not recs:
                break
            await self._rescue_batch(recs, result)
            after_id = recs[-1]["id"]
            if len(recs) < self._batch_size:
                break
        if result:
            log.info(
                "rescuer: %d retried, %d discarded, %d cancelled (%d from dead clients)",
                result.retried,
                result.discarded,
                result.cancelled,
                result.orphans,
            )
        return result

    async def _dead_clients(self) -> list[str]:
        liveness = await run_bounded(
            self._driver,
            client_liveness,
            self._driver.configured_schema,
            self._driver.schema,
            CLIENT_ID_MARKER,
        )
        now = trio.current_time()
        since = self._lockless_since
        if now - self._last_liveness_check > self._orphan_grace + 2 * self.interval:
            # A gap in the checks (a failing database, a long stall): the lock may
            # have come and gone unseen, so "free since" is no longer known.
            since.clear()
        self._last_liveness_check = now
        for client_id in list(since):
            if liveness.get(client_id, True):
                del since[client_id]
        dead: list[str] = []
        for client_id, held in liveness.items():
            if held:
                continue
            first_seen = since.setdefault(client_id, now)
            if now - first_seen >= self._orphan_grace:
                dead.append(client_id)
        return dead

    async def _rescue_batch(self, recs: list[asyncpg.Record], result: RescueResult) -> None:
        rows = RescueRows([], [], [], [], [], [], [])
        orphan_ids: set[int] = set()
        for rec in recs:
            row = JobRow.from_record(rec)
            orphaned = bool(rec["orphaned"])
            decision = self._decide(row, rec["db_now"], orphaned=orphaned)
            if decision is None:
                result.skipped += 1
                continue
            owner = row.attempted_by[-1] if row.attempted_by else ""
            if orphaned:
                orphan_ids.add(row.id)
                why = (
                    f"{RESCUED_ERROR}: its client {owner!r} is gone "
                    "(its liveness lock was released: the process or its connection died)"
                )
            else:
                why = (
                    f"{RESCUED_ERROR}: still running {self._config.rescue_stuck_jobs_after:g} s "
                    f"after it was attempted (rescue_stuck_jobs_after), by client {owner!r}"
                )
            assert row.attempted_at is not None  # running rows always have one
            rows.ids.append(row.id)
            rows.attempted_at.append(row.attempted_at)
            rows.states.append(decision.state)
            retry = decision.retry or Retry()
            rows.retry_at.append(retry.at)
            rows.delays.append(retry.delay)
            rows.errors.append(
                json.dumps({"attempt": max(row.attempt, 0), "error": why, "trace": ""})
            )
            rows.owner_keys.append(liveness_key(self._driver.schema, owner) if orphaned else None)
        if not rows.ids:
            return
        changed = await run_bounded(self._driver, rescue_jobs, self._driver.configured_schema, rows)
        for rec in changed:
            state = rec["state"]
            if state == "retryable":
                result.retried += 1
            elif state == "discarded":
                result.discarded += 1
            else:
                result.cancelled += 1
            if rec["id"] in orphan_ids:
                result.orphans += 1

    def _decide(self, row: JobRow, now: datetime, *, orphaned: bool) -> _Decision | None:
        """What to do with a stuck or orphaned row; None leaves it running."""
        if "cancel_attempted_at" in row.metadata:
            return _Decision("cancelled")
        job, worker = self._job_and_worker(row)
        if not orphaned and job is not None and worker is not None and row.attempted_at is not None:
            # A worker may allow its jobs longer than rescue_stuck_jobs_after;
            # the orphan rule ignores this: the job's process is gone.
            try:
                timeout = resolve_timeout(worker, job, self._config.job_timeout)
            except Exception:
                log.exception("rescuer: timeout() failed for job %d; rescuing it", row.id)
                timeout = None
            if timeout is not None and now - row.attempted_at < timedelta(seconds=timeout):
                return None
        if row.attempt >= row.max_attempts:
            return _Decision("discarded")
        return _Decision(
            "retryable", next_retry(row, job, worker, self._config.retry_policy, now=now)
        )

    def _job_and_worker(self, row: JobRow) -> tuple[Job[Any] | None, Worker[Any] | None]:
        # Unlike River, a kind this client has no worker for is retried, not
        # discarded: in a mixed fleet the leader need not work every kind.
        workers = self._config.workers
        entry = workers.get(row.kind) if workers is not None else None
        if entry is None:
            return None, None
        args_cls, worker = entry
        try:
            args = args_cls.from_json(json.loads(row.encoded_args))
        except Exception:
            return None, None
        return Job.from_row(row, args), worker
