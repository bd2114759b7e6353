"""Periodic jobs: the registry, schedules, and the enqueuer the leader runs."""

from __future__ import annotations

import itertools
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
import trio

import rivertrio
from rivertrio._driver import Driver
from rivertrio._elector import Elector
from rivertrio._insert import Inserter
from rivertrio._job import JobRow
from rivertrio._maintenance import Maintainer, MaintenanceSettings, PeriodicEnqueuer, PeriodicJobs
from rivertrio._maintenance._periodic import PERIODIC_JOB_ID_KEY
from support.common import Noop, config
from support.maintenance import first_passes_done

pytestmark = pytest.mark.timeout(60)


@dataclass
class Tagged(rivertrio.JobArgs, kind="tagged"):
    insert_opts: ClassVar[rivertrio.InsertOpts] = rivertrio.InsertOpts(
        metadata={"from_class": True}, queue="tagged"
    )


def workers() -> rivertrio.Workers:
    w = rivertrio.Workers()

    @w.register(Noop)
    async def noop(job: rivertrio.Job[Noop]) -> None:
        pass

    @w.register(Tagged)
    async def tagged(job: rivertrio.Job[Tagged]) -> None:
        pass

    return w


def enqueuer(driver: Driver, schema: str, *jobs: rivertrio.PeriodicJob) -> PeriodicEnqueuer:
    cfg = config(schema, workers=workers())
    return PeriodicEnqueuer(PeriodicJobs(jobs), Inserter(driver, cfg), driver)


async def periodic_rows(driver: Driver) -> list[JobRow]:
    recs = await driver.fetch("SELECT * FROM /*schema*/river_job ORDER BY id")
    return [JobRow.from_record(r) for r in recs]


async def run_until_fired(service: PeriodicEnqueuer, firings: int) -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            await service.firings.wait_for(firings)
            service.stop()


async def test_each_firing_inserts_one_periodic_job_at_its_intended_time(
    driver: Driver, migrated_schema: str
) -> None:
    interval = 0.25
    service = enqueuer(
        driver, migrated_schema, rivertrio.PeriodicJob(interval, lambda: Noop(n=7), id="tick")
    )
    started = datetime.now(UTC)
    await run_until_fired(service, 3)
    rows = await periodic_rows(driver)
    assert len(rows) == service.inserted >= 3
    for r in rows:
        # The job's id travels in metadata, under River's key.
        assert r.kind == "noop" and r.metadata == {"periodic": True, PERIODIC_JOB_ID_KEY: "tick"}
        assert r.state == rivertrio.JobState.AVAILABLE
    # scheduled_at is when each firing was due, not when it was inserted: the
    # times are whole intervals apart (more than one only if a firing was missed).
    times = [r.scheduled_at for r in rows]
    step = timedelta(seconds=interval)
    for a, b in itertools.pairwise(times):
        assert b - a >= step and (b - a) % step == timedelta(0)
    assert started < times[0] <= started + timedelta(seconds=interval + 1)


async def test_run_on_start_inserts_at_once(driver: Driver, migrated_schema: str) -> None:
    service = enqueuer(
        driver,
        migrated_schema,
        rivertrio.PeriodicJob(3600, lambda: Noop(), run_on_start=True),
        rivertrio.PeriodicJob(3600, lambda: Noop(n=2)),
    )
    before = datetime.now(UTC)
    await run_until_fired(service, 1)
    (only,) = await periodic_rows(driver)
    # No id given: no id in metadata (the generated key is the registry's own).
    assert only.metadata == {"periodic": True}
    assert before <= only.scheduled_at <= datetime.now(UTC)


async def test_constructor_returning_none_skips_the_firing(
    driver: Driver, migrated_schema: str
) -> None:
    calls = iter(range(100))

    def every_other() -> Noop | None:
        n = next(calls)
        return Noop(n=n) if n % 2 else None

    service = enqueuer(driver, migrated_schema, rivertrio.PeriodicJob(0.05, every_other))
    await run_until_fired(service, 4)
    rows = await periodic_rows(driver)
    assert service.skipped >= 2 and service.inserted == len(rows) >= 2
    assert all(json.loads(r.encoded_args)["n"] % 2 == 1 for r in rows)


async def test_unique_options_keep_repeated_firings_from_duplicating(
    driver: Driver, migrated_schema: str
) -> None:
    opts = rivertrio.InsertOpts(unique=rivertrio.UniqueOpts(by_args=True))
    service = enqueuer(driver, migrated_schema, rivertrio.PeriodicJob(0.05, lambda: (Noop(), opts)))
    await run_until_fired(service, 3)
    (only,) = await periodic_rows(driver)
    assert only.metadata == {"periodic": True}
    assert service.inserted == 1 and service.duplicates == service.firings.value - 1 >= 2


async def test_metadata_merges_with_the_args_class_and_the_constructors_options(
    driver: Driver, migrated_schema: str
) -> None:
    at = datetime.now(UTC) + timedelta(hours=1)
    service = enqueuer(
        driver,
        migrated_schema,
        rivertrio.PeriodicJob(3600, lambda: Tagged(), run_on_start=True, id="cls"),
        rivertrio.PeriodicJob(
            3600,
            lambda: (Tagged(), rivertrio.InsertOpts(metadata={"mine": 1}, scheduled_at=at)),
            run_on_start=True,
            id="own",
        ),
    )
    await run_until_fired(service, 2)
    first, second = await periodic_rows(driver)
    assert first.metadata == {"from_class": True, "periodic": True, PERIODIC_JOB_ID_KEY: "cls"}
    assert first.queue == "tagged"
    assert second.metadata == {"mine": 1, "periodic": True, PERIODIC_JOB_ID_KEY: "own"}
    # The constructor's own scheduled_at wins over the firing time.
    assert second.scheduled_at == at and second.state == rivertrio.JobState.SCHEDULED


async def test_failing_constructor_is_contained(driver: Driver, migrated_schema: str) -> None:
    def broken() -> Noop:
        raise RuntimeError("constructor bug")

    @dataclass
    class Unregistered(rivertrio.JobArgs, kind="unregistered"):
        pass

    service = enqueuer(
        driver,
        migrated_schema,
        rivertrio.PeriodicJob(3600, broken, run_on_start=True),
        rivertrio.PeriodicJob(3600, lambda: Unregistered(), run_on_start=True),
        rivertrio.PeriodicJob(3600, lambda: "not args", run_on_start=True),  # type: ignore[arg-type,return-value]
        rivertrio.PeriodicJob(3600, lambda: Noop(), run_on_start=True),
    )
    await run_until_fired(service, 4)
    assert service.failed == 3 and service.inserted == 1
    assert len(await periodic_rows(driver)) == 1


async def test_jobs_can_be_added_and_removed_at_runtime(
    driver: Driver, migrated_schema: str
) -> None:
    service = enqueuer(driver, migrated_schema)
    registry = service.jobs
    calls: list[int] = []
    late_built = trio.Event()

    def frequent() -> Noop:
        calls.append(1)
        return Noop(n=1)

    def late() -> Noop:
        late_built.set()
        return Noop(n=2)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            key = registry.add(rivertrio.PeriodicJob(0.05, frequent, run_on_start=True))
            assert key in registry
            await service.firings.wait_for(3)
            removed = registry.remove(key)
            assert removed.constructor is frequent and key not in registry
            calls_at_removal = len(calls)
            registry.add(rivertrio.PeriodicJob(3600, late, run_on_start=True, id="late"))
            await late_built.wait()
            # Firings are sequential: the next one to end is the late job's.
            await service.firings.wait_for(service.firings.value + 1)
            service.stop()
    # The removed job never fired again; the added one fired at once.
    assert len(calls) == calls_at_removal
    ns = [json.loads(r.encoded_args)["n"] for r in await periodic_rows(driver)]
    assert ns.count(2) == 1 and ns.count(1) == calls_at_removal


async def test_maintainer_fires_configured_periodic_jobs_while_leading(
    driver: Driver, migrated_schema: str
) -> None:
    job_counter: list[int] = []

    def build() -> Noop:
        job_counter.append(1)
        return Noop(n=len(job_counter))

    cfg = config(
        migrated_schema,
        workers=workers(),
        periodic_jobs=[rivertrio.PeriodicJob(3600, build, run_on_start=True, id="boot")],
    )
    elector = Elector(driver, f"periodic-{uuid.uuid4().hex[:8]}", elect_interval=0.1, ttl=1.0)
    maintainer = Maintainer.for_config(driver, cfg, elector, settings=MaintenanceSettings())
    periodic = maintainer.service(PeriodicEnqueuer)
    assert "boot" in periodic.jobs
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(maintainer.run)
            await nursery.start(elector.run)
            await periodic.firings.wait_for(1)
            await first_passes_done(maintainer)
            maintainer.stop()
            elector.stop()
    rows: list[Any] = await periodic_rows(driver)
    assert len(rows) == 1 and rows[0].metadata == {"periodic": True, PERIODIC_JOB_ID_KEY: "boot"}


async def test_a_job_is_removed_by_its_id_while_the_client_runs(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    fired: list[str] = []
    late_built = trio.Event()

    def build(name: str) -> Noop:
        fired.append(name)
        if name == "late":
            late_built.set()
        return Noop()

    cfg = config(
        migrated_schema,
        workers=workers(),
        periodic_jobs=[
            rivertrio.PeriodicJob(0.05, lambda: build("often"), id="often"),
            rivertrio.PeriodicJob(3600, lambda: build("hourly"), id="hourly"),
        ],
    )
    with trio.fail_after(30):
        async with rivertrio.open_client(cfg, database_url=database_url) as client:
            service = client._tree.maintainer.service(PeriodicEnqueuer)
            await service.firings.wait_for(2)
            assert client.periodic_jobs.remove_by_id("often") is True
            after_removal = fired.count("often")
            # Unknown ids are no error, as in River; the job that is left fires.
            assert client.periodic_jobs.remove_by_id("often") is False
            client.periodic_jobs.remove_many_by_id(["nope"])
            client.periodic_jobs.add(rivertrio.PeriodicJob(3600, lambda: build("late"), True))
            await late_built.wait()
            # Firings are sequential: the next one to end is the late job's.
            await service.firings.wait_for(service.firings.value + 1)
            assert "hourly" in client.periodic_jobs
    # Firings are sequential: at most one "often" firing was under way when it went.
    assert fired.count("often") <= after_removal + 1
    assert fired.count("late") == 1
    ids = {r.metadata.get(PERIODIC_JOB_ID_KEY) for r in await periodic_rows(driver)}
    assert ids == {"often", None}
