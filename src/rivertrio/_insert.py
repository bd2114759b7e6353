"""Inserting jobs: one statement per insert or coalesced batch, and its notifications."""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Callable, Coroutine, Sequence
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import trio

from ._args import InsertOpts, InsertParams, JobArgs
from ._coalesce import Coalescer
from ._driver import RELEASE_TIMEOUT, Queryable
from ._driver._errors import map_error
from ._driver._flow import held_in_text
from ._driver._insert import (
    JobToInsert,
    available_queues,
    copy_jobs,
    insert_each,
    insert_jobs,
    notify_many,
)
from ._driver._topics import INSERT_TOPIC
from ._exceptions import (
    DatabaseConnectionError,
    DatabaseError,
)
from ._job import InsertResult
from ._middleware import Extensions, insert_args
from ._prepare import dedupe, prepare_job, prepare_many, results

if TYPE_CHECKING:
    import asyncpg

    from ._config import Config
    from ._driver import Driver

__all__ = ["InsertResult", "Inserter"]

log = logging.getLogger("rivertrio.insert")

#: Most jobs one coalesced insert statement carries.
COALESCE_MAX = 500
#: Most coalesced insert statements of one client in flight at once (see `Coalescer`).
COALESCE_IN_FLIGHT = 2


class _Reservation:
    """The insert notifications one statement may send, their queues' slots held meanwhile."""

    __slots__ = ("now", "payloads", "previous", "queues", "suppressed")

    def __init__(self, now: float) -> None:
        self.now = now
        self.queues: list[str] = []
        self.payloads: list[str] = []
        self.previous: list[float | None] = []
        self.suppressed: list[str] = []
        """Queues notified too recently: notified later, once the statement committed."""


class Inserter:
    """Builds and runs inserts for a client; see `insert`, `insert_many`, `insert_many_fast`.

    Args:
        driver: The database.
        config: Supplies the default max_attempts, the workers (to reject unknown
            kinds), ``fetch_cooldown`` (to debounce notifications), ``poll_only``
            and ``insert_coalesce_window``.
        on_available: Called with the queues that got available jobs after each
            insert that committed within the call (not for a caller's transaction),
            to wake local producers without waiting for a notification.
        clock: The monotonic clock debouncing notifications (for tests).
    """

    def __init__(
        self,
        driver: Driver,
        config: Config,
        *,
        on_available: Callable[[frozenset[str]], None] | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._driver = driver
        self._config = config
        # Every insert passes its middleware and hooks (see Extensions.insert).
        self._extensions = Extensions(config.middleware, config.hooks)
        self._on_available = on_available
        self._clock = clock
        self._last_notified: dict[str, float] = {}
        # Queues whose notification was suppressed by the debounce: `send_owed`
        # notifies them once it lets it, so that the last insert of a burst is
        # not left for the producers' next poll.
        self._owed: set[str] = set()
        self._owed_changed = trio.Event()
        self._channel = driver.channel(INSERT_TOPIC)
        window = config.insert_coalesce_window
        self._coalescer: Coalescer[JobToInsert, InsertResult] | None = (
            Coalescer(
                self._insert_one,
                self._send_batch,
                window=window,
                max_size=COALESCE_MAX,
                max_in_flight=COALESCE_IN_FLIGHT,
                # A sent statement is held up to RELEASE_TIMEOUT after a
                # cancellation (see Driver.run_held); waiting as long for its
                # answer lets a cancelled caller still learn it.
                settle_timeout=RELEASE_TIMEOUT + 1,
                interrupted=_interrupted,
            )
            if window > 0
            else None
        )

    # --- validation and resolution (no I/O) ---

    def _prepare_many(self, params: object, what: str) -> list[JobToInsert]:
        return prepare_many(params, what, self._config)

    # --- notifications: at most one per queue per fetch_cooldown, and a last one ---
    #
    # An insert in the caller's transaction always notifies: its notification
    # is delivered when that transaction commits, and no later one could be
    # sure to come after that commit.

    def _may_notify(self, queue: str, now: float) -> bool:
        last = self._last_notified.get(queue)
        # The very sum `send_owed` waits for: no rounding may keep a due queue back.
        return last is None or last + self._config.fetch_cooldown <= now

    def _split(
        self, queues: AbstractSet[str], now: float, debounce: bool
    ) -> tuple[list[str], list[str]]:
        """The queues to notify now and those notified too recently, in order."""
        if self._config.poll_only:
            return [], []
        due = [q for q in sorted(queues) if not debounce or self._may_notify(q, now)]
        return due, sorted(queues - set(due))

    def _notifications(
        self, queues: frozenset[str], now: float, debounce: bool, suppressed: list[str]
    ) -> tuple[list[str], list[str]]:
        """Pick the notifications for queues that got available jobs (the COPY path);
        add to `suppressed` the queues notified too recently."""
        notify, held_back = self._split(queues, now, debounce)
        suppressed.extend(held_back)
        for queue in notify:
            self._last_notified[queue] = now
        return [self._channel] * len(notify), [_payload(q) for q in notify]

    def _reserve(self, jobs: Sequence[JobToInsert], debounce: bool) -> _Reservation:
        """Pick the queues a statement inserting `jobs` may notify, and hold their slots.

        The statement itself notifies only those that get an available job;
        `_settle` then gives back the slots it did not use.
        """
        reservation = _Reservation(self._clock())
        now = reservation.now
        wanted = {j.queue for j in jobs if not j.pending or held_in_text(j.metadata)}
        notify, reservation.suppressed = self._split(wanted, now, debounce)
        for queue in notify:
            reservation.queues.append(queue)
            reservation.payloads.append(_payload(queue))
            reservation.previous.append(self._last_notified.get(queue))
            self._last_notified[queue] = now
        return reservation

    def _settle(self, reservation: _Reservation, available: set[str]) -> None:
        """Give back the held slots of queues the statement did not notify (only
        those that got available jobs were), and owe the suppressed ones that did."""
        last = self._last_notified
        for queue, previous in zip(reservation.queues, reservation.previous, strict=True):
            if queue in available or last.get(queue) != reservation.now:
                continue  # used, or taken over by a later insert since
            if previous is None:
                del last[queue]
            else:
                last[queue] = previous
        self._owe([q for q in reservation.suppressed if q in available])

    def _owe(self, queues: Sequence[str]) -> None:
        if queues:
            self._owed.update(queues)
            self._owed_changed.set()

    async def send_owed(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Notify the queues whose notification the debounce suppressed, as soon as
        it allows: runs until cancelled (the client runs it while it runs).

        A notification that fails is not sent again: the producers' polls find
        the jobs.
        """
        task_status.started()
        while True:
            now = self._clock()
            cooldown = self._config.fetch_cooldown
            last = self._last_notified
            due = min((last.get(q, -math.inf) + cooldown for q in self._owed), default=math.inf)
            if due > now:
                # Until the first is due, or another queue is owed (it may be due sooner).
                with trio.move_on_after(due - now):
                    await self._owed_changed.wait()
                self._owed_changed = trio.Event()
                continue
            queues = sorted(q for q in self._owed if self._may_notify(q, now))
            if not queues:  # pragma: no cover - due means some queue may notify
                await trio.lowlevel.checkpoint()
                continue
            for queue in queues:
                self._last_notified[queue] = now
                self._owed.discard(queue)
            try:
                await self._driver.run(
                    notify_many, [self._channel] * len(queues), [_payload(q) for q in queues]
                )
            except DatabaseError as exc:
                log.debug("notifying queues %s of their inserts failed: %s", queues, exc)

    def _available(self, committed: bool, queues: frozenset[str]) -> None:
        if committed and queues and self._on_available is not None:
            self._on_available(queues)

    # --- the inserts ---

    async def insert(
        self, conn: Queryable, args: JobArgs, opts: InsertOpts | None = None
    ) -> InsertResult:
        """Insert one job. A checkpoint.

        With the Driver the job is committed when this returns, in one
        statement with its notification; concurrent calls are gathered into
        one statement when the config's ``insert_coalesce_window`` is set. With
        a `Tx` it commits (and its notification is delivered) with the caller's
        transaction.

        Cancellation on the Driver: cancelled before the job is sent, the call
        raises `trio.Cancelled` and the job is not inserted; once it is sent,
        the call waits for the answer (at most about `RELEASE_TIMEOUT` seconds)
        and returns the result or raises the error, so the caller knows which,
        and the cancellation comes at its next checkpoint. Only a server that
        does not answer within that bound leaves the outcome unknown.

        Raises:
            InvalidInputError: Invalid args or options (nothing is sent to the database).
            UnknownJobKindError: Workers are configured and none works this kind.
            DatabaseError: The database refused the job (its own error only,
                whatever else was sent with it).
            DatabaseConnectionError: The database could not be reached.
        """
        job = prepare_job(args, opts, self._config, datetime.now(UTC))
        if self._extensions.wraps_insert((args,)):

            async def one(jobs: list[JobToInsert]) -> list[InsertResult]:
                return [await self._insert_prepared(conn, jobs[0])]

            return (await self._extensions.insert((args,), [job], one))[0]
        return await self._insert_prepared(conn, job)

    async def _insert_prepared(self, conn: Queryable, job: JobToInsert) -> InsertResult:
        if conn is not self._driver:
            return (await self._run_insert(conn, [job]))[0]
        if self._coalescer is not None:
            return await self._coalescer.submit(job)
        return await self._insert_one(job)

    async def _insert_one(self, job: JobToInsert) -> InsertResult:
        return (await self._run_insert(self._driver, [job]))[0]

    async def insert_many(
        self, conn: Queryable, params: Sequence[InsertParams]
    ) -> list[InsertResult]:
        """Insert many jobs in one statement; results are in the order of `params`. A checkpoint.

        All or none. A unique job repeated within the batch is inserted once; the
        later copies are reported as duplicates of it. Cancellation on the
        Driver is as for `insert`.

        Raises:
            InvalidInputError: `params` is empty, or an entry is invalid (its index is named).
            UnknownJobKindError: Workers are configured and none works an entry's kind.
        """
        prepared = self._prepare_many(params, "insert_many")
        args = insert_args(params)
        if self._extensions.wraps_insert(args):
            return await self._extensions.insert(
                args, prepared, functools.partial(self._run_insert, conn)
            )
        return await self._run_insert(conn, prepared)

    async def insert_many_fast(self, conn: Queryable, params: Sequence[InsertParams]) -> int:
        """Insert many jobs with COPY and return how many were inserted. A checkpoint.

        Faster than `insert_many` for large batches, but returns no rows and
        cannot skip unique duplicates: a unique conflict fails the whole call and
        nothing is inserted (in a `Tx`, it also aborts the caller's transaction).

        Raises:
            InvalidInputError: `params` is empty, or an entry is invalid.
            UnknownJobKindError: Workers are configured and none works an entry's kind.
            DatabaseError: A unique conflict (sqlstate 23505) or another database error.
        """
        prepared = self._prepare_many(params, "insert_many_fast")
        args = insert_args(params)
        if self._extensions.wraps_insert(args):
            counts: list[int] = []

            async def copy(jobs: list[JobToInsert]) -> list[InsertResult]:
                counts.append(await self._copy(conn, jobs))
                return []

            await self._extensions.insert(args, prepared, copy, returns_rows=False)
            return sum(counts)
        return await self._copy(conn, prepared)

    async def _copy(self, conn: Queryable, prepared: list[JobToInsert]) -> int:
        now = self._clock()
        debounce = conn is self._driver
        suppressed: list[str] = []
        try:
            count, queues, committed = await conn.run(
                copy_jobs,
                self._driver.configured_schema,
                prepared,
                lambda queues: self._notifications(queues, now, debounce, suppressed),
            )
        except DatabaseError as exc:
            if exc.sqlstate != "23505":
                raise
            raise DatabaseError(
                f"insert_many_fast: a job conflicts with a unique job (stored or in the same "
                f"batch); nothing was inserted: {exc}",
                sqlstate=exc.sqlstate,
            ) from exc
        if committed:
            self._owe(suppressed)
        self._available(committed, queues)
        return count

    async def _run_insert(self, conn: Queryable, jobs: list[JobToInsert]) -> list[InsertResult]:
        """Insert `jobs` in one statement, all or none."""
        sent, slot_of = dedupe(jobs)
        records = await self._send(conn, insert_jobs, sent)
        if len(records) != len(sent):  # pragma: no cover (would be a bug in the SQL)
            raise DatabaseError(f"insert returned {len(records)} rows for {len(sent)} jobs")
        return results(records, slot_of)  # type: ignore[return-value]  # no errors in it

    async def _send_batch(self, jobs: list[JobToInsert]) -> list[InsertResult | Exception]:
        """Insert coalesced jobs of several callers: each gets its own outcome.

        One statement for all; if the database rejects it, each job again in a
        statement of its own, so only the job at fault fails (its caller alone
        gets the error). A connection failure leaves every outcome unknown: it
        is every caller's error, and nothing is sent again.
        """
        sent, slot_of = dedupe(jobs)
        try:
            records: list[asyncpg.Record | Exception] = list(
                await self._send(self._driver, insert_jobs, sent, shielded=True)
            )
        except DatabaseConnectionError:
            raise
        except DatabaseError as exc:
            if exc.sqlstate is None or len(sent) == 1:
                raise  # not a rejected statement (no connection free), or the one job's own
            where = self._driver.where
            records = [
                outcome if not isinstance(outcome, Exception) else _mapped(outcome, where)
                for outcome in await self._send(self._driver, insert_each, sent, shielded=True)
            ]
        return results(records, slot_of)

    async def _send(
        self,
        conn: Queryable,
        fn: Callable[..., Coroutine[Any, Any, Sequence[asyncpg.Record | Exception]]],
        jobs: list[JobToInsert],
        *,
        shielded: bool = False,
    ) -> Sequence[asyncpg.Record | Exception]:
        """Run an insert function with the notifications it may send.

        On the Driver the statement is held (`Driver.run_held`): its caller learns
        its outcome though cancelled; `shielded` (jobs of other callers too) holds
        the whole crossing (`Driver.run_shielded`).
        """
        on_driver = conn is self._driver
        reservation = self._reserve(jobs, debounce=on_driver)
        args = (
            self._driver.configured_schema,
            jobs,
            self._channel,
            reservation.queues,
            reservation.payloads,
        )
        available: set[str] = set()
        outcomes: Sequence[asyncpg.Record | Exception]
        try:
            if shielded:
                outcomes = await self._driver.run_shielded(fn, *args)
            elif on_driver:
                outcomes = await self._driver.run_held(fn, *args)
            else:
                outcomes = await conn.run(fn, *args)
            available = available_queues([o for o in outcomes if not isinstance(o, Exception)])
        finally:
            self._settle(reservation, available)
        self._available(on_driver, frozenset(available))
        return outcomes


@functools.lru_cache(maxsize=1024)
def _payload(queue: str) -> str:
    return json.dumps({"queue": queue}, separators=(",", ":"))


def _mapped(exc: Exception, where: str) -> Exception:
    mapped = map_error(exc, where)
    return mapped if isinstance(mapped, Exception) else exc


def _interrupted() -> Exception:
    return DatabaseConnectionError(
        "the database did not answer an insert statement in time after a cancellation; "
        "whether its jobs were inserted is unknown"
    )
