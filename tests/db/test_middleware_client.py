"""Middleware and hooks in a running client: every insert path passes them, and their
errors fail one insert or one job, never the client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import trio

import rivertrio
from rivertrio import Hook, JobInsertParams, Middleware
from rivertrio._driver import Driver
from rivertrio._insert import Inserter
from rivertrio._maintenance import PeriodicEnqueuer, PeriodicJobs
from support.common import Noop, Task, config, events_until, row, running, task_workers

pytestmark = pytest.mark.timeout(60)


class Stamp(Middleware):
    """Stamps each job's metadata with how many jobs its insert carried."""

    def __init__(self) -> None:
        self.inserts: list[int] = []

    async def insert_many(
        self,
        params: list[JobInsertParams],
        call_next: Callable[[], Awaitable[list[rivertrio.InsertResult]]],
    ) -> list[rivertrio.InsertResult]:
        self.inserts.append(len(params))
        for p in params:
            p.metadata["stamp"] = len(params)
        return await call_next()


async def stamps(driver: Driver) -> list[Any]:
    recs = await driver.fetch(
        "SELECT (metadata ->> 'stamp')::int AS s FROM /*schema*/river_job ORDER BY id"
    )
    return [r["s"] for r in recs]


async def test_every_insert_path_passes_the_insert_middleware(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    stamp = Stamp()
    cfg = rivertrio.Config(schema=migrated_schema, middleware=[stamp])
    async with running(cfg, database_url) as client:
        await client.insert(Noop())
        await client.insert_many([Noop(), Noop()])
        assert await client.insert_many_fast([Noop(), Noop(), Noop()]) == 3
        async with client.transaction() as tx:
            await client.insert_tx(tx, Noop())
            await client.insert_many_tx(tx, [Noop(), Noop()])
            await client.insert_many_fast_tx(tx, [Noop()] * 4)
        # Concurrent single inserts are coalesced into shared statements: each
        # caller's insert still passes the middleware on its own.
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(client.insert, Noop())
    assert stamp.inserts == [1, 2, 3, 1, 2, 4] + [1] * 20
    assert await stamps(driver) == [1, 2, 2, 3, 3, 3, 1, 2, 2, 4, 4, 4, 4] + [1] * 20

    # With coalescing off, a lone insert takes the same path.
    cfg = rivertrio.Config(schema=migrated_schema, middleware=[stamp], insert_coalesce_window=0)
    async with running(cfg, database_url) as client:
        await client.insert(Noop())
    assert stamp.inserts[-1] == 1


async def test_periodic_inserts_pass_the_insert_middleware(
    driver: Driver, migrated_schema: str
) -> None:
    stamp = Stamp()
    cfg = config(migrated_schema, middleware=[stamp])
    job = rivertrio.PeriodicJob(3600, lambda: Noop(), run_on_start=True, id="p")
    service = PeriodicEnqueuer(PeriodicJobs([job]), Inserter(driver, cfg), driver)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            await service.firings.wait_for(1)
            service.stop()
    assert service.inserted == 1
    assert stamp.inserts == [1]
    assert await stamps(driver) == [1]


class Refuse(Middleware):
    def __init__(self) -> None:
        self.refuse = True

    async def insert_many(
        self,
        params: list[JobInsertParams],
        call_next: Callable[[], Awaitable[list[rivertrio.InsertResult]]],
    ) -> list[rivertrio.InsertResult]:
        if self.refuse:
            raise PermissionError("inserts are closed")
        return await call_next()


async def test_an_insert_middleware_error_fails_that_insert_only(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    refuse = Refuse()
    cfg = config(migrated_schema, middleware=[refuse])
    async with running(cfg, database_url) as client:
        with pytest.raises(PermissionError, match="closed") as info:
            await client.insert(Noop())
        assert "raised by the insert middleware" in info.value.__notes__[0]
        with pytest.raises(PermissionError):
            await client.insert_many([Noop(), Noop()])
        refuse.refuse = False
        # The client goes on: inserts and work as usual.
        async with client.subscribe(rivertrio.EventKind.JOB_COMPLETED) as events:
            res = await client.insert(Noop(n=1))
            (event,) = await events_until(events, 1)
        assert event.job is not None and event.job.id == res.job.id
    assert await stamps(driver) == [None]


async def test_a_worker_middleware_error_fails_the_job_and_the_client_goes_on(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    class FailTask(Middleware):
        async def work(
            self, job: rivertrio.JobRow, call_next: Callable[[], Awaitable[None]]
        ) -> None:
            if job.kind == "task":
                raise RuntimeError("middleware broke")
            await call_next()

    async def work(job: rivertrio.Job[Task]) -> None:
        pass

    cfg = config(migrated_schema, workers=task_workers(work), middleware=[FailTask()])
    async with (
        running(cfg, database_url) as client,
        client.subscribe(
            rivertrio.EventKind.JOB_FAILED, rivertrio.EventKind.JOB_COMPLETED
        ) as events,
    ):
        bad = await client.insert(Task(), rivertrio.InsertOpts(max_attempts=1))
        good = await client.insert(Noop())
        got = await events_until(events, 2)
    by_id = {e.job.id: e for e in got if e.job is not None}
    assert by_id[bad.job.id].kind is rivertrio.EventKind.JOB_FAILED
    assert by_id[good.job.id].kind is rivertrio.EventKind.JOB_COMPLETED
    stored = await row(driver, bad.job.id)
    assert stored.state is rivertrio.JobState.DISCARDED
    assert stored.errors[0].error == "RuntimeError: middleware broke"
    assert "raised by the worker middleware" in stored.errors[0].trace


@dataclass
class Audited(rivertrio.JobArgs, kind="audited"):
    """Args whose class carries hooks: its jobs only."""

    hooks: ClassVar[list[Hook]] = []
    n: int = 0


class Audit(Hook):
    def __init__(self) -> None:
        self.trail: list[str] = []

    async def insert_begin(self, params: JobInsertParams) -> None:
        params.metadata["audited"] = True
        self.trail.append(f"insert:{params.kind}")

    async def work_begin(self, job: rivertrio.JobRow) -> None:
        self.trail.append(f"begin:{job.id}")

    async def work_end(self, job: rivertrio.JobRow, error: Exception | None) -> Exception | None:
        self.trail.append(f"end:{job.id}:{error is None}")
        return error


async def test_args_class_hooks_apply_to_its_jobs_only(
    database_url: str, migrated_schema: str, driver: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    audit = Audit()
    monkeypatch.setattr(Audited, "hooks", [audit])
    workers = rivertrio.Workers()

    @workers.register(Audited)
    async def audited(job: rivertrio.Job[Audited]) -> None:
        pass

    @workers.register(Noop)
    async def noop(job: rivertrio.Job[Noop]) -> None:
        pass

    cfg = config(migrated_schema, workers=workers)
    async with (
        running(cfg, database_url) as client,
        client.subscribe(rivertrio.EventKind.JOB_COMPLETED) as events,
    ):
        a = await client.insert(Audited())
        n = await client.insert(Noop())
        await events_until(events, 2)
    assert sorted(audit.trail) == sorted(
        ["insert:audited", f"begin:{a.job.id}", f"end:{a.job.id}:True"]
    )
    assert (await row(driver, a.job.id)).metadata == {"audited": True}
    assert (await row(driver, n.job.id)).metadata == {}
