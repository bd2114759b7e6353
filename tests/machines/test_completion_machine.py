"""A Hypothesis state machine over the completion pipeline and real Postgres.

The completer and subscription manager run as the client wires them; producers
(clones of the completer's input) send outcomes for real running rows; user
subscriptions come and go, some slow; runs are stopped, restarted, or ended by
cancelling the scope around them while outcomes are still in flight.

After every run: no exception anywhere (in particular no ClosedResourceError or
BrokenResourceError: nothing was sent on a closed channel), every outcome handed
to the completer is persisted as the database must decide it, every persisted
outcome reached each lossless subscriber subscribed when it was delivered,
exactly once and in order, and every subscriber channel is closed.

One Trio run in a helper thread hosts the driver for the whole test; each example
gets a root scope of its own in it; rules call in with ``trio.from_thread.run``.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import pytest
import trio
import trio.testing
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import rivertrio
from rivertrio._completer import Completer, CompletionItem
from rivertrio._driver import Driver, open_driver
from rivertrio._driver._sql import JOB_COLUMNS
from rivertrio._events import Event, EventKind, Outcome, OutcomeKind
from rivertrio._job import JobRow
from rivertrio._subscriptions import Overflow, Subscription, SubscriptionManager

T = TypeVar("T")
HOUR = 3600.0
# Trio's scheduler shuffles with this generator when Hypothesis is installed (see call()).
_SCHEDULER_RANDOM: random.Random = trio._core._run._r
STEP_TIMEOUT = 15.0

# -- what a job does -------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """An outcome to send, and the state and event the database must turn it into."""

    name: str
    kind: OutcomeKind
    delay: float | None
    max_attempts: int
    state: str
    event: EventKind


SPECS = (
    Spec("completed", OutcomeKind.COMPLETED, None, 25, "completed", EventKind.JOB_COMPLETED),
    Spec("cancelled", OutcomeKind.CANCELLED, None, 25, "cancelled", EventKind.JOB_CANCELLED),
    Spec("failed_last", OutcomeKind.FAILED, HOUR, 1, "discarded", EventKind.JOB_FAILED),
    Spec("failed_soon", OutcomeKind.FAILED, 0.0, 25, "available", EventKind.JOB_FAILED),
    Spec("failed_later", OutcomeKind.FAILED, HOUR, 25, "retryable", EventKind.JOB_FAILED),
    Spec("snoozed_long", OutcomeKind.SNOOZED, HOUR, 25, "scheduled", EventKind.JOB_SNOOZED),
    Spec("snoozed_short", OutcomeKind.SNOOZED, 0.0, 25, "available", EventKind.JOB_SNOOZED),
    Spec("interrupted", OutcomeKind.INTERRUPTED, None, 25, "available", EventKind.JOB_INTERRUPTED),
)
INTERRUPTED = SPECS[-1]
# What the job task's row goes through before its outcome arrives.
FATES = ("normal", "deleted", "finished_elsewhere")
# One job task: its outcome, its row's fate, held until released, sent with send_nowait.
JOBS = st.tuples(st.sampled_from(SPECS), st.sampled_from(FATES), st.booleans(), st.booleans())

_INSERT = f"""
INSERT INTO /*schema*/river_job (
    args, kind, max_attempts, queue, state, attempt, attempted_at, attempted_by)
SELECT '{{}}'::jsonb, 'machine_job', m, 'default', 'running', 1, now(), ARRAY['machine']
FROM unnest($1::smallint[]) WITH ORDINALITY AS u(m, ord)
ORDER BY ord
RETURNING {JOB_COLUMNS}
"""


@dataclass(eq=False)
class Job:
    row: JobRow
    spec: Spec
    fate: str
    hold: bool
    nowait: bool
    sent: Spec | None = None
    """What the job task handed to the completer (its spec, or an interruption)."""


@dataclass(eq=False)
class Producer:
    number: int
    clone: trio.MemorySendChannel[CompletionItem]
    closing: trio.Event = field(default_factory=trio.Event)
    jobs: trio.Nursery | None = None


@dataclass(eq=False)
class Run:
    number: int
    start_index: int
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    stopping: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)
    hold: trio.Event = field(default_factory=trio.Event)
    client: trio.Nursery | None = None
    producers: list[Producer] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)


@dataclass(eq=False)
class Sub:
    number: int
    kinds: frozenset[EventKind]
    overflow: Overflow
    buffer: int
    run: int
    """The run that serves it (the current one, or the next if none is running)."""
    witness: bool = False
    registration: Subscription | None = None
    received: list[Event] = field(default_factory=list)
    start_index: int = -1
    end_index: int = -1
    closed_by_run: bool = False
    left: bool = False
    paused: bool = False
    resume: trio.Event = field(default_factory=trio.Event)
    leave: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)


class CountingDriver:
    """The real driver, counting the completer's statements in flight so steps can settle."""

    def __init__(self, inner: Driver) -> None:
        self.inner = inner
        self.in_flight = 0
        self.idle = trio.Event()

    @property
    def configured_schema(self) -> str | None:
        """The wrapped driver's schema."""
        return self.inner.configured_schema

    async def run(self, fn: Callable[..., Coroutine[Any, Any, T]], /, *args: Any) -> T:
        """Run ``fn`` on the real driver, counted."""
        self.in_flight += 1
        try:
            return await self.inner.run(fn, *args)
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self.idle.set()
                self.idle = trio.Event()


# -- the Trio host thread --------------------------------------------------------------------


class Host:
    """One Trio run in a helper thread: a migrated schema of its own and a driver on it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.schema = f"rt_machine_{uuid.uuid4().hex[:12]}"
        self.driver: Driver
        self.nursery: trio.Nursery
        self.token: trio.lowlevel.TrioToken
        self._closing: trio.Event
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="machine trio", daemon=True)

    def __enter__(self) -> Host:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise RuntimeError("the machine's Trio thread failed to start") from self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            trio.from_thread.run_sync(self._closing.set, trio_token=self.token)
        self._thread.join(60)
        if self._error is not None:
            raise RuntimeError("the machine's Trio thread failed") from self._error

    def call(self, step: Callable[[], Awaitable[T]]) -> T:
        """Run ``await step()`` in the Trio thread."""
        return trio.from_thread.run(step, trio_token=self.token)

    def _main(self) -> None:
        try:
            trio.run(self._trio_main)
        finally:
            # The exception in flight, if any, for the test thread to report.
            self._error = sys.exc_info()[1]
            self._ready.set()

    async def _trio_main(self) -> None:
        async with open_driver(self.url) as admin:
            await admin.execute(f'CREATE SCHEMA "{self.schema}"')
        try:
            await rivertrio.migrate(self.url, schema=self.schema)
            async with open_driver(self.url, schema=self.schema) as driver:
                self.driver = driver
                self._closing = trio.Event()
                self.token = trio.lowlevel.current_trio_token()
                async with trio.open_nursery() as nursery:
                    self.nursery = nursery
                    self._ready.set()
                    await self._closing.wait()
                    nursery.cancel_scope.cancel()
        finally:
            with trio.move_on_after(10, shield=True):
                async with open_driver(self.url) as admin:
                    await admin.execute(f'DROP SCHEMA "{self.schema}" CASCADE')


# -- the machine -----------------------------------------------------------------------------


def _subsequence(small: list[Event], big: list[Event]) -> bool:
    it = iter(id(e) for e in big)
    return all(id(e) in it for e in small)


class CompletionMachine(RuleBasedStateMachine):
    """Drives one completer and one subscription manager through runs, as a client would."""

    host: ClassVar[Host]

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[BaseException] = []
        self.run: Run | None = None
        self.runs = 0
        self.subs: list[Sub] = []
        self.world_done = trio.Event()
        self.db = CountingDriver(self.host.driver)
        self.completer = Completer(
            self.db,
            batch_size=4,
            backlog=3,
            flush_interval=60.0,
            retry_backoff=0.001,
            final_flush_timeout=10.0,
        )
        self.manager = SubscriptionManager()

        async def open_world() -> trio.Nursery:
            nursery: trio.Nursery = await self.host.nursery.start(self._world)
            return nursery

        self.world = self.host.call(open_world)

    # -- Trio side --------------------------------------------------------------------------

    def _record(self, where: str, exc: BaseException) -> None:
        note = f"in {where}"
        exc.add_note(note)
        self.errors.append(exc)

    async def _world(self, *, task_status: trio.TaskStatus[trio.Nursery]) -> None:
        """The example's root scope: runs and user consumers live here."""
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(nursery)
                await trio.sleep_forever()
        except* Exception as group:
            self._record("the example's root nursery", group)
        finally:
            self.world_done.set()

    async def _client(self, run: Run, *, task_status: trio.TaskStatus[None]) -> None:
        """What the client does with the pair: completer first, manager on its output."""
        try:
            with run.scope:
                async with trio.open_nursery() as client:
                    await client.start(self.completer.run)
                    self.manager.attach(self.completer.output)
                    await client.start(self.manager.run)
                    run.client = client
                    task_status.started()
                    await run.stopping.wait()
        except* Exception as group:
            self._record(f"run {run.number}", group)
        finally:
            run.done.set()

    async def _producer(
        self, run: Run, producer: Producer, *, task_status: trio.TaskStatus[None]
    ) -> None:
        try:
            async with trio.open_nursery() as jobs:
                producer.jobs = jobs
                task_status.started()
                await producer.closing.wait()
        finally:
            # Not a checkpoint: closed even when the producer was cancelled.
            producer.clone.close()

    async def _job(self, run: Run, producer: Producer, job: Job) -> None:
        """A job task: works (maybe held), then sends one outcome; interrupted if cancelled."""
        clone = producer.clone
        try:
            if job.hold:
                await run.hold.wait()
            else:
                await trio.lowlevel.checkpoint()
            item = _outcome(job.row, job.spec)
            if job.nowait:
                try:
                    clone.send_nowait(item)
                except trio.WouldBlock:
                    await clone.send(item)
            else:
                await clone.send(item)
            job.sent = job.spec
        except trio.Cancelled:
            # A job task cancelled by its caller still reports, without a checkpoint
            # if there is room in the backlog, else shielded and bounded.
            item = _outcome(job.row, INTERRUPTED)
            try:
                try:
                    clone.send_nowait(item)
                except trio.WouldBlock:
                    with trio.move_on_after(STEP_TIMEOUT, shield=True):
                        await clone.send(item)
                        job.sent = INTERRUPTED
                else:
                    job.sent = INTERRUPTED
            except Exception as exc:
                self._record(f"job {job.row.id} (interrupted)", exc)
            raise
        except Exception as exc:
            self._record(f"job {job.row.id}", exc)

    async def _consumer(self, sub: Sub, *, task_status: trio.TaskStatus[None]) -> None:
        """A user's subscriber: reads continuously into a list, unless paused."""
        try:
            with sub.leave:
                context = self.manager.subscribe(
                    *sub.kinds, buffer=sub.buffer, overflow=sub.overflow
                )
                async with context as events:
                    # No checkpoint since registration: exact.
                    sub.start_index = self.manager.events_total
                    sub.registration = context.subscription
                    task_status.started()
                    async for event in events:
                        sub.received.append(event)
                        while sub.paused:
                            await sub.resume.wait()
                    sub.closed_by_run = True
        except Exception as exc:
            self._record(f"subscriber {sub.number}", exc)
        finally:
            # Recorded after leaving: an upper bound on what it was subscribed for.
            sub.end_index = self.manager.events_total
            sub.done.set()

    # -- helpers -------------------------------------------------------------------------------

    def call(self, step: Callable[[], Awaitable[T]], *, schedule: int = 0) -> T:
        """Run ``await step()`` in the Trio thread, then let the system settle.

        Settling (every task blocked, no statement in flight) makes each rule's
        effect complete before the next rule, so Hypothesis can replay and shrink
        a failure. Outcomes still wait in flight across rules: held job tasks,
        senders blocked on a full backlog, a batch not yet full.

        ``schedule`` seeds Trio's scheduling order for this step. Under Hypothesis
        Trio shuffles each batch of runnable tasks with one random generator;
        reseeding it per step makes a step's interleaving depend on the step
        alone, not on every step before it, so shrinking can drop earlier steps.
        """

        async def settled() -> T:
            _SCHEDULER_RANDOM.seed(schedule)
            result = await step()
            with trio.fail_after(STEP_TIMEOUT):
                while True:
                    await trio.testing.wait_all_tasks_blocked()
                    if self.db.in_flight == 0:
                        return result
                    await self.db.idle.wait()

        try:
            return self.host.call(settled)
        except trio.TooSlowError:
            raise AssertionError(f"the system did not settle within {STEP_TIMEOUT} s") from None

    def _open_sub(
        self, kinds: frozenset[EventKind], overflow: Overflow, buffer: int, *, witness: bool = False
    ) -> Sub:
        serving = self.run.number if self.run is not None else self.runs + 1
        sub = Sub(len(self.subs), kinds, overflow, buffer, serving, witness=witness)

        async def step() -> None:
            with trio.fail_after(STEP_TIMEOUT):
                await self.world.start(self._consumer, sub)

        self.call(step)
        self.subs.append(sub)
        return sub

    def _live_subs(self) -> list[Sub]:
        return [s for s in self.subs if not s.done.is_set() and not s.witness]

    def _open_producers(self) -> list[Producer]:
        if self.run is None:
            return []
        return [p for p in self.run.producers if not p.closing.is_set()]

    def _end_run(self, how: str, schedule: int = 0) -> None:
        """Stop (``how="stop"``) or cancel the current run, wait for its end, check it."""
        run = self.run
        assert run is not None

        async def step() -> None:
            with trio.fail_after(STEP_TIMEOUT):
                for sub in self.subs:
                    if sub.paused:
                        # A paused lossless subscriber holds the pipeline by design.
                        sub.paused = False
                        sub.resume.set()
                if how == "stop":
                    run.hold.set()
                    for producer in run.producers:
                        producer.closing.set()
                    self.completer.stop()  # the client closes its original handle
                    run.stopping.set()
                else:
                    run.scope.cancel()
                await run.done.wait()
                for sub in self.subs:
                    if sub.run == run.number:
                        await sub.done.wait()

        try:
            self.call(step, schedule=schedule)
        except trio.TooSlowError:
            raise AssertionError(f"{how}: the run did not end within {STEP_TIMEOUT} s") from None
        self.run = None
        self._check_run(run)

    def _check_run(self, run: Run) -> None:
        self._check_no_errors()
        assert self.completer.stopped
        assert self.manager.stopped
        counters = self.completer.counters
        assert counters.rows_dropped == 0, counters
        assert counters.events_undeliverable == 0, counters

        # Every outcome handed to the completer is persisted as the database must decide.
        unsent = [j.row.id for j in run.jobs if j.sent is None]
        assert not unsent, f"job tasks that never handed over an outcome: {unsent}"
        ids = [j.row.id for j in run.jobs]
        stored: dict[int, str] = self.call(lambda: _states(self.host.driver, ids))
        expected_state: dict[int, str] = {}
        expected_event: dict[int, EventKind] = {}
        for job in run.jobs:
            assert job.sent is not None
            if job.fate == "deleted":
                continue
            if job.fate == "finished_elsewhere":
                expected_state[job.row.id] = "completed"
                expected_event[job.row.id] = EventKind.JOB_COMPLETED
            else:
                expected_state[job.row.id] = job.sent.state
                expected_event[job.row.id] = job.sent.event
        assert stored == expected_state, "stored states differ from what the outcomes decide"

        # The witness saw the whole run: exactly one event per surviving job.
        [witness] = [s for s in self.subs if s.witness and s.run == run.number]
        assert witness.closed_by_run, "the witness's channel was not closed by the run"
        events = witness.received
        assert len(events) == self.manager.events_total - run.start_index, (
            "the witness did not get every event the manager received"
        )
        seen = [e.job.id for e in events if e.job is not None]
        assert sorted(seen) == sorted(expected_state), "persisted outcomes not delivered once"
        for event in events:
            assert event.job is not None
            assert event.kind is expected_event[event.job.id], event
            assert event.job.state == expected_state[event.job.id], event

        # Every other subscriber of this run: lossless ones got exactly their slice.
        for sub in self.subs:
            if sub.run != run.number or sub.witness:
                continue
            assert sub.done.is_set()
            assert sub.left or sub.closed_by_run, f"subscriber {sub.number} channel not closed"
            end = len(events) if sub.closed_by_run else sub.end_index - run.start_index
            window = [
                e for e in events[sub.start_index - run.start_index : end] if e.kind in sub.kinds
            ]
            if sub.overflow == "block" and sub.closed_by_run:
                assert [id(e) for e in sub.received] == [id(e) for e in window], (
                    f"lossless subscriber {sub.number} missed or repeated events"
                )
            elif sub.overflow == "block":
                assert [id(e) for e in sub.received] == [id(e) for e in window][
                    : len(sub.received)
                ], f"lossless subscriber {sub.number} (left) missed or repeated events"
            else:
                assert _subsequence(sub.received, window), f"drop subscriber {sub.number}"
        assert self.manager.subscriptions == [], "subscriptions of an ended run must be closed"

    def _check_no_errors(self) -> None:
        if self.errors:
            raise AssertionError(f"{len(self.errors)} exception(s) escaped") from self.errors[0]

    # -- rules -----------------------------------------------------------------------------------

    @precondition(lambda self: self.run is None)
    @rule()
    def start(self) -> None:
        """A fresh run of both services, wired as the client does, with one producer.

        A witness (lossless, every kind) subscribes first: it sees the whole run.
        """
        self._open_sub(frozenset(EventKind), "block", 0, witness=True)
        self.runs += 1
        run = Run(self.runs, self.manager.events_total)

        async def step() -> None:
            with trio.fail_after(STEP_TIMEOUT):
                await self.world.start(self._client, run)

        self.call(step)
        self.run = run
        self.add_producer()

    @precondition(lambda self: self.run is not None and len(self._open_producers()) < 3)
    @rule()
    def add_producer(self) -> None:
        """A producer: its own clone of the completer's input."""
        run = self.run
        assert run is not None

        async def step() -> None:
            assert run.client is not None
            producer = Producer(len(run.producers), self.completer.input.clone())
            run.producers.append(producer)
            await run.client.start(self._producer, run, producer)

        self.call(step)

    @precondition(lambda self: bool(self._open_producers()))
    @rule(which=st.integers(0, 7), jobs=st.lists(JOBS, min_size=1, max_size=6))
    def send_outcomes(self, which: int, jobs: list[tuple[Spec, str, bool, bool]]) -> None:
        """Job tasks for new running rows send outcomes (held ones wait for a release)."""
        self._send(which, jobs)

    @precondition(lambda self: bool(self._open_producers()))
    @rule(which=st.integers(0, 7), spec=st.sampled_from(SPECS), count=st.integers(4, 16))
    def send_burst(self, which: int, spec: Spec, count: int) -> None:
        """More outcomes at once than the backlog holds: senders must wait, none is lost."""
        self._send(which, [(spec, "normal", False, True)] * count)

    def _send(self, which: int, jobs: list[tuple[Spec, str, bool, bool]]) -> None:
        run = self.run
        assert run is not None
        producers = self._open_producers()
        producer = producers[which % len(producers)]

        async def step() -> None:
            assert producer.jobs is not None
            driver = self.host.driver
            records = await driver.fetch(_INSERT, [spec.max_attempts for spec, *_ in jobs])
            rows = [JobRow.from_record(r) for r in records]
            new = [
                Job(row, spec, fate, hold, nowait)
                for row, (spec, fate, hold, nowait) in zip(rows, jobs, strict=True)
            ]
            deleted = [j.row.id for j in new if j.fate == "deleted"]
            elsewhere = [j.row.id for j in new if j.fate == "finished_elsewhere"]
            if deleted:
                await driver.execute(
                    "DELETE FROM /*schema*/river_job WHERE id = any($1::bigint[])", deleted
                )
            if elsewhere:
                await driver.execute(
                    "UPDATE /*schema*/river_job SET state = 'completed', finalized_at = now() "
                    "WHERE id = any($1::bigint[])",
                    elsewhere,
                )
            run.jobs.extend(new)
            for job in new:
                producer.jobs.start_soon(self._job, run, producer, job)

        self.call(step)

    @precondition(lambda self: self.run is not None)
    @rule()
    def release_held_jobs(self) -> None:
        """Held job tasks finish and send their outcomes."""
        run = self.run
        assert run is not None

        async def step() -> None:
            run.hold.set()
            run.hold = trio.Event()
            await trio.lowlevel.checkpoint()

        self.call(step)

    @precondition(lambda self: bool(self._open_producers()))
    @rule(which=st.integers(0, 7))
    def close_producer(self, which: int) -> None:
        """A producer stops: it closes its clone once its jobs are done."""
        producers = self._open_producers()
        producer = producers[which % len(producers)]

        async def step() -> None:
            producer.closing.set()
            await trio.lowlevel.checkpoint()

        self.call(step)

    @precondition(lambda self: len(self._live_subs()) < 5)
    @rule(
        kinds=st.frozensets(st.sampled_from(EventKind), min_size=1),
        overflow=st.sampled_from(("block", "drop")),
        buffer=st.integers(0, 3),
    )
    def open_subscription(
        self, kinds: frozenset[EventKind], overflow: Overflow, buffer: int
    ) -> None:
        """A user subscribes (while running, or for the next run)."""
        self._open_sub(kinds, overflow, buffer)

    @precondition(lambda self: bool(self._live_subs()))
    @rule(which=st.integers(0, 7))
    def close_subscription(self, which: int) -> None:
        """A user leaves the subscribe block (maybe while the manager is blocked on it)."""
        subs = self._live_subs()
        sub = subs[which % len(subs)]

        async def step() -> None:
            sub.left = True
            sub.leave.cancel()
            with trio.fail_after(STEP_TIMEOUT):
                await sub.done.wait()
            if any(s is sub.registration for s in self.manager.subscriptions):
                raise AssertionError("a subscription that was left is still registered")

        self.call(step)

    @precondition(lambda self: any(not s.paused for s in self._live_subs()))
    @rule(which=st.integers(0, 7))
    def pause_consumer(self, which: int) -> None:
        """A consumer stops reading: a lossless subscription back-pressures the pipeline."""
        subs = [s for s in self._live_subs() if not s.paused]
        sub = subs[which % len(subs)]

        async def step() -> None:
            sub.resume = trio.Event()
            sub.paused = True
            await trio.lowlevel.checkpoint()

        self.call(step)

    @precondition(lambda self: any(s.paused for s in self._live_subs()))
    @rule(which=st.integers(0, 7))
    def resume_consumer(self, which: int) -> None:
        subs = [s for s in self._live_subs() if s.paused]
        sub = subs[which % len(subs)]

        async def step() -> None:
            sub.paused = False
            sub.resume.set()
            await trio.lowlevel.checkpoint()

        self.call(step)

    @precondition(lambda self: self.run is not None)
    @rule()
    def stop(self) -> None:
        """Soft stop: jobs finish, producers and the client close their handles."""
        self._end_run("stop")

    @precondition(lambda self: self.run is not None)
    @rule(schedule=st.integers(0, 255))
    def cancel_enclosing_scope(self, schedule: int) -> None:
        """The scope around the services and producers is cancelled, outcomes in flight.

        ``schedule`` picks the order in which the cancelled tasks run.
        """
        self._end_run("cancel", schedule)

    @precondition(lambda self: self.run is not None)
    @rule()
    def restart(self) -> None:
        self._end_run("stop")
        self.start()

    @invariant()
    def nothing_escaped(self) -> None:
        self._check_no_errors()

    def teardown(self) -> None:
        """Cancel the example's root scope; whatever was running must drain cleanly."""
        run = self.run

        async def step() -> None:
            self.world.cancel_scope.cancel()
            with trio.fail_after(STEP_TIMEOUT):
                await self.world_done.wait()

        try:
            self.call(step)
        except trio.TooSlowError:
            raise AssertionError(
                "the example did not end after its root scope was cancelled"
            ) from None
        self._check_no_errors()
        if run is not None:
            unsent = [j.row.id for j in run.jobs if j.sent is None]
            assert not unsent, f"job tasks that never handed over an outcome: {unsent}"
            ids = [j.row.id for j in run.jobs]
            stored = self.call(lambda: _states(self.host.driver, ids))
            assert "running" not in stored.values(), "outcomes left unpersisted at teardown"


def _outcome(row: JobRow, spec: Spec) -> Outcome:
    error = None
    if spec.kind is OutcomeKind.FAILED:
        error = json.dumps({"attempt": row.attempt, "error": "boom", "trace": ""})
    return Outcome(
        job=row,
        kind=spec.kind,
        error=error,
        delay=spec.delay,
        queue_wait_duration=0.01,
        run_duration=0.02,
        finished_at=trio.current_time(),
    )


async def _states(driver: Driver, ids: list[int]) -> dict[int, str]:
    rows = await driver.fetch(
        "SELECT id, state::text FROM /*schema*/river_job WHERE id = any($1::bigint[])", ids
    )
    return {r["id"]: r["state"] for r in rows}


_LONG = settings.get_current_profile_name() == "long"


@pytest.mark.timeout(0 if _LONG else 300)
def test_completion_machine(database_url: str) -> None:
    """At least 200 examples in CI (about 15 s); HYPOTHESIS_PROFILE=long runs 5000."""
    profile = settings()
    with Host(database_url) as host:
        CompletionMachine.host = host
        run_state_machine_as_test(
            CompletionMachine,
            settings=settings(
                profile, max_examples=max(200, profile.max_examples), stateful_step_count=30
            ),
        )
