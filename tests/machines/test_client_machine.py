"""A Hypothesis state machine over a whole client on real Postgres.

Rules insert jobs whose workers complete, fail, snooze, cancel themselves, block
until released, or ignore cancellation for a moment; open and close
subscriptions (block and drop); stop, stop_and_cancel, cancel the scope around
the client, and start again. At every stop it checks: no job is left running,
every job is in a state its behaviour allows, the always-subscribed reference
subscriber got exactly one event for each job worked in that run, each other
lossless subscriber got an unbroken slice of those events, every subscriber
channel ended, and nothing raised from inside the library.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
import trio
import trio.testing
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from test_completion_machine import Host

import rivertrio
from rivertrio import EventKind
from rivertrio._subscriptions import Overflow
from support.common import Task

T = TypeVar("T")

BEHAVIOURS = ("complete", "fail", "snooze", "cancel", "block", "stubborn")
# The states a job may end a run in, by behaviour; `available` when it was
# interrupted (or never fetched) is checked separately.
FINAL = {
    "complete": {"completed"},
    "fail": {"retryable"},
    "snooze": {"scheduled"},
    "cancel": {"cancelled"},
    "block": {"completed"},
    "stubborn": {"completed"},
}
STEP_TIMEOUT = 20.0

pytestmark = pytest.mark.timeout(0 if settings.get_current_profile_name() == "long" else 600)


@dataclass(eq=False)
class Sub:
    overflow: Overflow
    run: int
    events: list[rivertrio.Event] = field(default_factory=list)
    leave: trio.CancelScope = field(default_factory=trio.CancelScope)
    ended: trio.Event = field(default_factory=trio.Event)
    closed_by_client: bool = False


class ClientMachine(RuleBasedStateMachine):
    url: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.host = Host(self.url).__enter__()
        self.release = trio.Event()
        self.behaviour: dict[int, str] = {}
        self.seen: dict[int, set[int]] = {}  # run -> ids the worker was called for
        self.errors: list[BaseException] = []
        self.runs = 0
        self.run_scope: trio.CancelScope | None = None
        self.run_done: trio.Event | None = None
        self.reference: Sub | None = None
        self.subs: list[Sub] = []
        workers = rivertrio.Workers()
        workers.register(Task)(self._work)
        self.config = rivertrio.Config(
            schema=self.host.schema,
            queues={"default": rivertrio.QueueConfig(max_workers=4)},
            workers=workers,
            retry_policy=lambda job: 100.0,
            soft_stop_timeout=0.3,
            fetch_poll_interval=0.2,
            job_timeout=None,
        )
        self.client = rivertrio.Client(self.config, self.host.driver)

    def teardown(self) -> None:
        try:
            if self.running:
                self.call(self._hard_stop)
        finally:
            self.host.__exit__(None, None, None)

    # -- the worker --

    async def _work(self, job: rivertrio.Job[Task]) -> None:
        self.seen.setdefault(self.runs, set()).add(job.id)
        name = job.args.name
        if name == "fail":
            raise ValueError("planned failure")
        if name == "snooze":
            raise rivertrio.JobSnooze(100)
        if name == "cancel":
            raise rivertrio.JobCancel("planned cancel")
        if name in ("block", "stubborn"):
            release = self.release
            try:
                await release.wait()
            except trio.Cancelled:
                if name == "stubborn":
                    # Ignores the cancellation for a moment, as real code may.
                    with trio.CancelScope(shield=True):
                        await trio.sleep(0.01)
                raise

    # -- plumbing --

    def call(self, step: Callable[[], Awaitable[T]]) -> T:
        async def bounded() -> T:
            with trio.fail_after(STEP_TIMEOUT):
                return await step()

        return self.host.call(bounded)

    async def _run_client(self, *, task_status: trio.TaskStatus[None]) -> None:
        done = self.run_done = trio.Event()
        try:
            with trio.CancelScope() as scope:
                self.run_scope = scope
                await self.client.run(task_status=task_status)
        except BaseException as exc:  # pragma: no cover - recorded for the invariant
            self.errors.append(exc)
        finally:
            done.set()

    async def _consume(self, sub: Sub, *, task_status: trio.TaskStatus[None]) -> None:
        try:
            with sub.leave:
                async with self.client.subscribe(
                    *EventKind, buffer=2, overflow=sub.overflow
                ) as events:
                    task_status.started()
                    async for event in events:
                        sub.events.append(event)
                    sub.closed_by_client = True
        except BaseException as exc:  # pragma: no cover - recorded for the invariant
            self.errors.append(exc)
            raise
        finally:
            sub.ended.set()

    async def _open(self, overflow: Overflow) -> Sub:
        sub = Sub(overflow=overflow, run=self.runs)
        await self.host.nursery.start(self._consume, sub)
        return sub

    async def _hard_stop(self) -> None:
        await self.client.stop_and_cancel()
        assert self.run_done is not None
        await self.run_done.wait()

    @property
    def running(self) -> bool:
        return self.run_done is not None and not self.run_done.is_set()

    # -- rules --

    @precondition(lambda self: not self.running)
    @rule()
    def start(self) -> None:
        async def step() -> None:
            self.runs += 1
            # Subscribed before the start, so it sees the whole run.
            self.reference = await self._open("block")
            self.subs.append(self.reference)
            await self.host.nursery.start(self._run_client)

        self.call(step)

    @rule(behaviour=st.sampled_from(BEHAVIOURS), count=st.integers(1, 3))
    def insert(self, behaviour: str, count: int) -> None:
        async def step() -> None:
            results = await self.client.insert_many([Task(name=behaviour)] * count)
            for result in results:
                self.behaviour[result.job.id] = behaviour

        self.call(step)

    @rule()
    def release_blocked(self) -> None:
        async def step() -> None:
            self.release.set()
            self.release = trio.Event()

        self.call(step)

    @precondition(lambda self: self.running)
    @rule(overflow=st.sampled_from(["block", "drop"]))
    def subscribe(self, overflow: Overflow) -> None:
        async def step() -> None:
            self.subs.append(await self._open(overflow))

        self.call(step)

    @precondition(
        lambda self: any(not s.ended.is_set() and s is not self.reference for s in self.subs)
    )
    @rule(data=st.data())
    def unsubscribe(self, data: st.DataObject) -> None:
        live = [s for s in self.subs if not s.ended.is_set() and s is not self.reference]
        sub = data.draw(st.sampled_from(live))

        async def step() -> None:
            sub.leave.cancel()
            await sub.ended.wait()

        self.call(step)

    @precondition(lambda self: self.running)
    @rule(how=st.sampled_from(["stop", "stop_and_cancel", "cancel_scope"]))
    def stop(self, how: str) -> None:
        async def step() -> None:
            if how == "stop":
                await self.client.stop()
            elif how == "stop_and_cancel":
                await self.client.stop_and_cancel()
            else:
                assert self.run_scope is not None
                self.run_scope.cancel()
            assert self.run_done is not None
            await self.run_done.wait()
            # Every subscription of this run ends when the client stops.
            for sub in self.subs:
                await sub.ended.wait()

        self.call(step)
        self._check_run(self.runs)

    # -- checks --

    def _check_run(self, run: int) -> None:
        assert not [e for e in self.errors if not isinstance(e, trio.Cancelled)], self.errors
        reference = self.reference
        assert reference is not None and reference.closed_by_client
        ref_keys = [(e.kind, e.job.id if e.job else None) for e in reference.events]
        job_ids = [key[1] for key in ref_keys if key[1] is not None]
        assert len(job_ids) == len(set(job_ids)), f"an outcome was delivered twice: {ref_keys}"
        missing = self.seen.get(run, set()) - set(job_ids)
        assert not missing, f"jobs worked in run {run} with no event: {missing}"
        for sub in self.subs:
            if sub is reference or sub.run != run:
                continue
            keys = [(e.kind, e.job.id if e.job else None) for e in sub.events]
            if sub.overflow == "block":
                assert _is_slice(keys, ref_keys), (keys, ref_keys)
            else:
                assert _is_subsequence(keys, ref_keys), (keys, ref_keys)
        self.subs = []

        async def stored() -> dict[int, str]:
            rows = await self.host.driver.fetch("SELECT id, state::text FROM /*schema*/river_job")
            return {r["id"]: r["state"] for r in rows}

        states = self.call(stored)
        interrupted = {
            e.job.id for e in reference.events if e.kind == EventKind.JOB_INTERRUPTED and e.job
        }
        for job_id, state in states.items():
            assert state != "running", f"job {job_id} left running after the client stopped"
            allowed = FINAL[self.behaviour[job_id]]
            if state == "available":
                # Never fetched in this run, or interrupted by the stop.
                assert job_id not in set(job_ids) - interrupted, (job_id, state)
            else:
                assert state in allowed, (job_id, self.behaviour[job_id], state)

    @invariant()
    def nothing_raised(self) -> None:
        assert not [e for e in self.errors if not isinstance(e, trio.Cancelled)], self.errors


def _is_slice(small: list[Any], big: list[Any]) -> bool:
    if not small:
        return True
    return any(big[i : i + len(small)] == small for i in range(len(big) - len(small) + 1))


def _is_subsequence(small: list[Any], big: list[Any]) -> bool:
    it = iter(big)
    return all(item in it for item in small)


def test_client_state_machine(database_url: str) -> None:
    """40 examples in CI (about 25 s); `--hypothesis-profile=long` runs the profile's count."""
    ClientMachine.url = database_url
    profile = settings()
    examples = 40 if settings.get_current_profile_name() == "ci" else profile.max_examples
    run = ClientMachine.TestCase
    run.settings = settings(profile, max_examples=examples, stateful_step_count=12)
    run().runTest()
