"""Middleware and hooks without a database: their order, their errors, and what passes through.

Job runs go through the real executor (`work_job`); inserts through the
inserter's chain (`Extensions.insert`) around an inner step that records what
it was asked to insert.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
import trio

import rivertrio
from rivertrio import Hook, JobInsertParams, Middleware
from rivertrio._driver._insert import JobToInsert
from rivertrio._middleware import Extensions
from rivertrio._prepare import prepare_job
from rivertrio.testing import work_job

pytestmark = pytest.mark.timeout(60)


@dataclass
class Ping(rivertrio.JobArgs, kind="ping"):
    what: str = "ok"


class Recorder(Middleware):
    """Records when it is entered and left, under its name."""

    def __init__(self, name: str, trail: list[str]) -> None:
        self.name = name
        self.trail = trail

    def __repr__(self) -> str:
        return f"Recorder({self.name})"

    async def insert_many(
        self,
        params: list[JobInsertParams],
        call_next: Callable[[], Awaitable[list[rivertrio.InsertResult]]],
    ) -> list[rivertrio.InsertResult]:
        self.trail.append(f"{self.name}:insert>")
        for p in params:
            p.metadata.setdefault("seen_by", []).append(self.name)
        try:
            return await call_next()
        finally:
            self.trail.append(f"{self.name}:insert<")

    async def work(self, job: rivertrio.JobRow, call_next: Callable[[], Awaitable[None]]) -> None:
        self.trail.append(f"{self.name}:work>")
        try:
            await call_next()
        finally:
            self.trail.append(f"{self.name}:work<")


class RecordingHook(Hook):
    def __init__(self, name: str, trail: list[str]) -> None:
        self.name = name
        self.trail = trail

    async def insert_begin(self, params: JobInsertParams) -> None:
        self.trail.append(f"{self.name}:insert_begin")

    async def work_begin(self, job: rivertrio.JobRow) -> None:
        self.trail.append(f"{self.name}:work_begin")

    async def work_end(self, job: rivertrio.JobRow, error: Exception | None) -> Exception | None:
        self.trail.append(f"{self.name}:work_end:{type(error).__name__}")
        return error


def worker_that(trail: list[str], behave: Callable[[], Awaitable[None]] | None = None) -> Any:
    async def work(job: rivertrio.Job[Ping]) -> None:
        trail.append("worker")
        if behave is not None:
            await behave()

    return work


# -- work: order --


async def test_work_order_config_then_worker_middleware_then_hooks() -> None:
    trail: list[str] = []

    @dataclass
    class Hooked(rivertrio.JobArgs, kind="ping"):
        hooks: ClassVar[tuple[Hook, ...]] = (RecordingHook("args", trail),)
        what: str = "ok"

    class HookedWorker(rivertrio.Worker[Hooked]):
        middleware = (Recorder("own", trail),)

        async def work(self, job: rivertrio.Job[Hooked]) -> None:
            trail.append("worker")

    config = rivertrio.Config(
        middleware=[Recorder("outer", trail), Recorder("inner", trail)],
        hooks=[RecordingHook("config", trail)],
    )
    result = await work_job(HookedWorker(), Hooked(), config=config)
    assert result.kind == "completed"
    assert trail == [
        "outer:work>",
        "inner:work>",
        "own:work>",
        "config:work_begin",
        "args:work_begin",
        "worker",
        "config:work_end:NoneType",
        "args:work_end:NoneType",
        "own:work<",
        "inner:work<",
        "outer:work<",
    ]


async def test_middleware_sees_the_row_before_args_are_decoded() -> None:
    seen: list[rivertrio.JobRow] = []

    class Look(Middleware):
        async def work(
            self, job: rivertrio.JobRow, call_next: Callable[[], Awaitable[None]]
        ) -> None:
            seen.append(job)
            await call_next()

    result = await work_job(
        worker_that([]), Ping(what="x"), config=rivertrio.Config(middleware=[Look()])
    )
    assert result.kind == "completed"
    (row,) = seen
    assert row.kind == "ping" and json.loads(row.encoded_args) == {"what": "x"}
    assert row.state is rivertrio.JobState.RUNNING


# -- work: outcomes seen and replaced --


class Outcome(Middleware):
    """Records what call_next did, and replaces it when told to."""

    def __init__(self, replace: Callable[[BaseException | None], None] | None = None) -> None:
        self.seen: list[BaseException | None] = []
        self.replace = replace

    async def work(self, job: rivertrio.JobRow, call_next: Callable[[], Awaitable[None]]) -> None:
        error: BaseException | None = None
        try:
            await call_next()
        except Exception as exc:
            error = exc
        self.seen.append(error)
        if self.replace is not None:
            self.replace(error)
        elif error is not None:
            raise error


async def boom() -> None:
    raise ValueError("boom")


async def test_middleware_sees_the_error_and_may_swallow_it() -> None:
    mw = Outcome(replace=lambda error: None)
    result = await work_job(worker_that([], boom), Ping(), config=rivertrio.Config(middleware=[mw]))
    assert result.kind == "completed"
    assert isinstance(mw.seen[0], ValueError)


async def test_middleware_may_fail_a_job_that_completed() -> None:
    def fail(error: BaseException | None) -> None:
        assert error is None
        raise RuntimeError("rejected by middleware")

    mw = Outcome(replace=fail)
    result = await work_job(worker_that([]), Ping(), config=rivertrio.Config(middleware=[mw]))
    assert result.kind == "failed"
    assert result.error == "RuntimeError: rejected by middleware"
    assert result.exception is not None
    assert any("Outcome" in note for note in getattr(result.exception, "__notes__", ()))


async def test_middleware_sees_snooze_cancel_and_timeout_as_errors() -> None:
    async def snooze() -> None:
        raise rivertrio.JobSnooze(10)

    async def cancel() -> None:
        raise rivertrio.JobCancel("no")

    async def hang() -> None:
        await trio.sleep_forever()

    for behave, kind, error_type in (
        (snooze, "snoozed", rivertrio.JobSnooze),
        (cancel, "cancelled", rivertrio.JobCancel),
        (hang, "failed", rivertrio.JobTimeoutError),
    ):
        mw = Outcome()
        config = rivertrio.Config(middleware=[mw], job_timeout=0.05)
        result = await work_job(worker_that([], behave), Ping(), config=config)
        assert result.kind == kind
        assert isinstance(mw.seen[0], error_type)


async def test_a_middleware_error_fails_the_job_with_a_note_naming_it() -> None:
    class Broken(Middleware):
        def __repr__(self) -> str:
            return "Broken()"

        async def work(
            self, job: rivertrio.JobRow, call_next: Callable[[], Awaitable[None]]
        ) -> None:
            raise LookupError("no tenant")

    trail: list[str] = []
    result = await work_job(
        worker_that(trail), Ping(), config=rivertrio.Config(middleware=[Broken()])
    )
    assert result.kind == "failed"
    assert result.error == "LookupError: no tenant"
    assert result.exception is not None
    assert result.exception.__notes__ == ["raised by the worker middleware Broken()"]
    assert trail == []  # the worker never ran
    assert result.retry_delay is not None  # retried by the retry policy like any failure


async def test_the_workers_error_passing_through_gets_no_note() -> None:
    result = await work_job(
        worker_that([], boom), Ping(), config=rivertrio.Config(middleware=[Recorder("a", [])])
    )
    assert result.kind == "failed"
    assert result.exception is not None
    assert not getattr(result.exception, "__notes__", None)


async def test_calling_call_next_twice_fails_the_job() -> None:
    class Twice(Middleware):
        async def work(
            self, job: rivertrio.JobRow, call_next: Callable[[], Awaitable[None]]
        ) -> None:
            await call_next()
            await call_next()

    trail: list[str] = []
    result = await work_job(
        worker_that(trail), Ping(), config=rivertrio.Config(middleware=[Twice()])
    )
    assert result.kind == "failed"
    assert result.error is not None and "called call_next twice" in result.error
    assert trail == ["worker"]


async def test_cancellation_passes_through_middleware_untouched() -> None:
    seen: list[BaseException] = []

    class Watch(Middleware):
        async def work(
            self, job: rivertrio.JobRow, call_next: Callable[[], Awaitable[None]]
        ) -> None:
            try:
                await call_next()
            except BaseException as exc:
                seen.append(exc)
                raise

    started = trio.Event()

    async def hang() -> None:
        started.set()
        await trio.sleep_forever()

    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: work_job(
                    worker_that([], hang), Ping(), config=rivertrio.Config(middleware=[Watch()])
                )
            )
            await started.wait()
            scope.cancel()
    assert scope.cancelled_caught
    assert len(seen) == 1 and isinstance(seen[0], trio.Cancelled)


# -- work: hooks --


async def test_work_begin_hook_error_fails_the_job_before_it_runs() -> None:
    class Gate(Hook):
        async def work_begin(self, job: rivertrio.JobRow) -> None:
            raise PermissionError("closed")

    trail: list[str] = []
    result = await work_job(worker_that(trail), Ping(), config=rivertrio.Config(hooks=[Gate()]))
    assert result.kind == "failed"
    assert result.error == "PermissionError: closed"
    assert trail == []
    assert result.exception is not None
    assert "work_begin hook" in result.exception.__notes__[0]


async def test_work_end_hooks_chain_and_may_replace_the_error() -> None:
    got: list[str] = []

    class Forgive(Hook):
        async def work_end(
            self, job: rivertrio.JobRow, error: Exception | None
        ) -> Exception | None:
            got.append(f"forgive:{type(error).__name__}")
            return None

    class Blame(Hook):
        async def work_end(
            self, job: rivertrio.JobRow, error: Exception | None
        ) -> Exception | None:
            got.append(f"blame:{type(error).__name__}")
            return KeyError("blamed")

    config = rivertrio.Config(hooks=[Forgive(), Blame()])
    result = await work_job(worker_that([], boom), Ping(), config=config)
    assert got == ["forgive:ValueError", "blame:NoneType"]
    assert result.kind == "failed"
    assert result.error == "KeyError: 'blamed'"

    result = await work_job(
        worker_that([], boom), Ping(), config=rivertrio.Config(hooks=[Forgive()])
    )
    assert result.kind == "completed"


async def test_work_end_returning_a_non_exception_fails_the_job() -> None:
    class Wrong(Hook):
        async def work_end(self, job: rivertrio.JobRow, error: Exception | None) -> Any:
            return "fine"

    result = await work_job(worker_that([]), Ping(), config=rivertrio.Config(hooks=[Wrong()]))
    assert result.kind == "failed"
    assert result.error is not None and "returned str, not an exception or None" in result.error


# -- configuration --


def test_config_rejects_what_is_neither_middleware_nor_hook() -> None:
    with pytest.raises(rivertrio.ConfigError, match=r"middleware\[0\] is 42, which defines none"):
        rivertrio.Config(middleware=[42])  # type: ignore[list-item]
    with pytest.raises(rivertrio.ConfigError, match=r"hooks\[1\].*defines none of insert_begin"):
        rivertrio.Config(hooks=[RecordingHook("a", []), Middleware()])  # type: ignore[list-item]

    class Sync(Middleware):
        def work(self, job: Any, call_next: Any) -> None:  # type: ignore[override]
            pass

    with pytest.raises(rivertrio.ConfigError, match=r"Sync.work must be an async function"):
        rivertrio.Config(middleware=[Sync()])
    with pytest.raises(rivertrio.ConfigError, match="must be a list"):
        rivertrio.Config(middleware=Middleware())  # type: ignore[arg-type]


def test_a_workers_middleware_must_wrap_work() -> None:
    class InsertOnly(Middleware):
        async def insert_many(self, params: Any, call_next: Any) -> Any:
            return await call_next()

    workers = rivertrio.Workers()
    with pytest.raises(rivertrio.ConfigError, match="must define work"):
        workers.register(Ping, middleware=[InsertOnly()])(worker_that([]))


# -- inserts --


def job(**opts: Any) -> JobToInsert:
    return prepare_job(Ping(), rivertrio.InsertOpts(**opts), rivertrio.Config(), datetime.now(UTC))


class Inner:
    """The insert itself, as the chain's innermost step: records the jobs it got."""

    def __init__(self) -> None:
        self.got: list[JobToInsert] = []

    async def __call__(self, jobs: list[JobToInsert]) -> list[rivertrio.InsertResult]:
        self.got.extend(jobs)
        await trio.lowlevel.checkpoint()
        return []


async def test_insert_order_and_changed_metadata_reach_the_insert() -> None:
    trail: list[str] = []

    @dataclass
    class Hooked(rivertrio.JobArgs, kind="hooked"):
        hooks: ClassVar[tuple[Hook, ...]] = (RecordingHook("args", trail),)

    ext = Extensions(
        [Recorder("outer", trail), Recorder("inner", trail)], [RecordingHook("config", trail)]
    )
    inner = Inner()
    await ext.insert([Hooked(), Ping()], [job(), job()], inner, returns_rows=False)
    assert trail == [
        "outer:insert>",
        "inner:insert>",
        "config:insert_begin",
        "args:insert_begin",
        "config:insert_begin",
        "inner:insert<",
        "outer:insert<",
    ]
    assert [json.loads(j.metadata) for j in inner.got] == [{"seen_by": ["outer", "inner"]}] * 2


async def test_a_hook_may_change_the_params_and_they_are_checked_again() -> None:
    class Route(Hook):
        def __init__(self, queue: str) -> None:
            self.queue = queue

        async def insert_begin(self, params: JobInsertParams) -> None:
            params.queue = self.queue
            params.tags.append("routed")

    inner = Inner()
    await Extensions([], [Route("urgent")]).insert([Ping()], [job()], inner, returns_rows=False)
    assert inner.got[0].queue == "urgent" and inner.got[0].tags == ("routed",)

    inner = Inner()
    with pytest.raises(rivertrio.InvalidInputError, match=r"params\[0\] as the insert middleware"):
        await Extensions([], [Route("Not A Queue")]).insert(
            [Ping()], [job()], inner, returns_rows=False
        )
    assert inner.got == []


async def test_an_insert_middleware_error_fails_that_insert_with_a_note() -> None:
    class Refuse(Middleware):
        def __repr__(self) -> str:
            return "Refuse()"

        async def insert_many(self, params: Any, call_next: Any) -> Any:
            raise PermissionError("quota")

    inner = Inner()
    with pytest.raises(PermissionError, match="quota") as info:
        await Extensions([Refuse()]).insert([Ping()], [job()], inner, returns_rows=False)
    assert info.value.__notes__ == ["raised by the insert middleware Refuse()"]
    assert inner.got == []


async def test_an_insert_middleware_returning_the_wrong_thing_is_named() -> None:
    class Wrong(Middleware):
        async def insert_many(self, params: Any, call_next: Any) -> Any:
            await call_next()
            return None

    with pytest.raises(TypeError, match="must return what call_next"):
        await Extensions([Wrong()]).insert([Ping()], [job()], Inner(), returns_rows=False)


def test_wraps_insert_only_when_something_applies() -> None:
    assert not Extensions().wraps_insert([Ping()])
    assert Extensions([Recorder("a", [])]).wraps_insert([Ping()])

    @dataclass
    class Hooked(rivertrio.JobArgs, kind="hooked"):
        hooks: ClassVar[tuple[Hook, ...]] = (RecordingHook("args", []),)

    assert Extensions().wraps_insert([Ping(), Hooked()])
