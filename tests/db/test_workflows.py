"""Workflows: built in Python, inserted at once, run in dependency order, managed as a whole.

Order is checked against the workers' own log (support.flow): a task's start
comes after every dependency's end.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import trio

import rivertrio
from rivertrio import (
    FlowControl,
    InsertOpts,
    InvalidInputError,
    JobState,
    NotFoundError,
    Workflow,
    Workflows,
)
from rivertrio._driver import Driver
from rivertrio._driver._producer import fetch_jobs
from rivertrio._maintenance import WorkflowReleaser
from support.flow import FLOW_LOG_DDL, counting_events, log_event, max_overlap, read_runs

DONE = [
    rivertrio.EventKind.JOB_COMPLETED,
    rivertrio.EventKind.JOB_FAILED,
    rivertrio.EventKind.JOB_CANCELLED,
]


@dataclass
class Step(rivertrio.JobArgs, kind="flow_step"):
    label: str = ""
    fail: bool = False


def _config(
    schema: str, driver: Driver, seen: dict[str, Any] | None = None, **fields: Any
) -> rivertrio.Config:
    workers = rivertrio.Workers()

    @workers.register(Step)
    async def step(job: rivertrio.Job[Step]) -> None:
        await log_event(driver, job, "start")
        if seen is not None:
            seen[job.args.label] = await Workflows(rivertrio.current_client()).outputs(job)
        rivertrio.record_output({"made_by": job.args.label})
        await log_event(driver, job, "end")
        if job.args.fail:
            raise RuntimeError(f"{job.args.label} fails")

    fields.setdefault("queues", {"default": rivertrio.QueueConfig(max_workers=5)})
    fields.setdefault("max_attempts", 1)
    return rivertrio.Config(schema=schema, workers=workers, **fields)


async def _run(
    database_url: str,
    config: rivertrio.Config,
    events: int,
    action: Callable[[Workflows], Any],
) -> Any:
    async with (
        rivertrio.open_client(config, database_url=database_url) as client,
        counting_events([client], DONE, events) as done,
    ):
        result = await action(Workflows(client))
        with trio.fail_after(30):
            await done.wait()
    return result


def _diamond(*, fail_c: bool = False, **kwargs: Any) -> Workflow:
    wf = Workflow("diamond", **kwargs)
    a = wf.add("a", Step("a"))
    b = wf.add("b", Step("b"), deps=[a])
    c = wf.add("c", Step("c", fail=fail_c), deps=["a"])
    wf.add("d", Step("d"), deps=[b, c])
    return wf


def test_a_workflow_is_checked_as_it_is_built() -> None:
    wf = Workflow("checks")
    wf.add("a", Step("a"))
    with pytest.raises(InvalidInputError, match="already has a task named 'a'"):
        wf.add("a", Step("a"))
    with pytest.raises(InvalidInputError, match="depends on 'later'"):
        wf.add("b", Step("b"), deps=["later"])
    with pytest.raises(InvalidInputError, match=r"args must be a rivertrio\.JobArgs"):
        wf.add("c", {"label": "c"})  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="'cancel' or 'run'"):
        Workflow("x", on_dependency_failure="ignore")  # type: ignore[arg-type]
    # Depending only on tasks added earlier: no cycle can be built.
    assert [t.deps for t in wf.tasks] == [()]


async def test_tasks_run_after_their_dependencies_and_read_their_outputs(
    database_url: str, driver: Driver, migrated_schema: str
) -> None:
    await driver.execute(FLOW_LOG_DDL)
    seen: dict[str, Any] = {}
    config = _config(migrated_schema, driver, seen)
    wf = _diamond()
    info = await _run(database_url, config, 4, lambda workflows: workflows.insert(wf))
    assert {name: job.state for name, job in info.tasks.items()} == {
        "a": JobState.AVAILABLE,
        "b": JobState.PENDING,
        "c": JobState.PENDING,
        "d": JobState.PENDING,
    }
    runs = {r.job_id: r for r in await read_runs(driver)}
    by_name = {name: runs[job.id] for name, job in info.tasks.items()}
    for task in wf.tasks:
        for dep in task.deps:
            end = by_name[dep].end
            assert end is not None and end <= by_name[task.name].start, (dep, task.name)
    assert seen == {
        "a": {},
        "b": {"a": {"made_by": "a"}},
        "c": {"a": {"made_by": "a"}},
        "d": {"b": {"made_by": "b"}, "c": {"made_by": "c"}},
    }
    async with rivertrio.open_client(
        rivertrio.Config(schema=migrated_schema), database_url=database_url
    ) as admin:
        done = await Workflows(admin).get(wf.id)
        listed = await Workflows(admin).list()
    assert done.finished and done.states == {JobState.COMPLETED: 4}
    assert [(s.id, s.name, s.states) for s in listed] == [
        (wf.id, "diamond", {JobState.COMPLETED: 4})
    ]


async def test_waiting_tasks_are_never_fetched_by_river(
    database_url: str, driver: Driver, migrated_schema: str
) -> None:
    async with rivertrio.open_client(
        rivertrio.Config(schema=migrated_schema), database_url=database_url
    ) as client:
        info = await Workflows(client).insert(_diamond())
    taken = await driver.run(fetch_jobs, migrated_schema, "default", 100, "river_go_client")
    assert [r["id"] for r in taken] == [info.tasks["a"].id]


async def test_a_failed_dependency_cancels_what_waits_for_it(
    database_url: str, driver: Driver, migrated_schema: str
) -> None:
    await driver.execute(FLOW_LOG_DDL)
    wf = _diamond(fail_c=True)
    # a, b complete; c is discarded; d is cancelled without running, by the
    # client that persisted c's end (well before the leader's next sweep).
    await _run(database_url, _config(migrated_schema, driver), 3, lambda w: w.insert(wf))
    async with rivertrio.open_client(
        rivertrio.Config(schema=migrated_schema), database_url=database_url
    ) as admin:
        with trio.fail_after(4):
            while not (info := await Workflows(admin).get(wf.id)).finished:  # noqa: ASYNC110
                await trio.sleep(0.01)  # server state: no event says it
    states = {name: job.state for name, job in info.tasks.items()}
    assert states == {
        "a": JobState.COMPLETED,
        "b": JobState.COMPLETED,
        "c": JobState.DISCARDED,
        "d": JobState.CANCELLED,
    }
    assert info.tasks["d"].metadata["rivertrio:cancelled_by"] == "dependency"
    assert info.tasks["d"].id not in {r.job_id for r in await read_runs(driver)}


async def test_a_task_may_run_whatever_its_dependencies_did(
    database_url: str, driver: Driver, migrated_schema: str
) -> None:
    await driver.execute(FLOW_LOG_DDL)
    wf = _diamond(fail_c=True, on_dependency_failure="run")
    await _run(database_url, _config(migrated_schema, driver), 4, lambda w: w.insert(wf))
    async with rivertrio.open_client(
        rivertrio.Config(schema=migrated_schema), database_url=database_url
    ) as admin:
        info = await Workflows(admin).get(wf.id)
    assert info.tasks["d"].state is JobState.COMPLETED
    runs = {r.job_id: r for r in await read_runs(driver)}
    d_start = runs[info.tasks["d"].id].start
    assert all(runs[info.tasks[n].id].end <= d_start for n in ("b", "c"))  # type: ignore[operator]


async def test_cancel_and_retry_a_workflow_as_a_whole(
    database_url: str, driver: Driver, migrated_schema: str
) -> None:
    await driver.execute(FLOW_LOG_DDL)
    async with rivertrio.open_client(
        rivertrio.Config(schema=migrated_schema), database_url=database_url
    ) as admin:
        workflows = Workflows(admin)
        wf = _diamond()
        await workflows.insert(wf)
        cancelled = await workflows.cancel(wf.id)
        assert sorted(j.state for j in cancelled) == [JobState.CANCELLED] * 4
        assert (await workflows.get(wf.id)).finished
        with pytest.raises(NotFoundError, match="workflow 'nope' not found"):
            await workflows.cancel("nope")
    # Retried as a whole: a runs at once, the others wait for it again.
    retried = await _run(
        database_url,
        _config(migrated_schema, driver),
        4,
        lambda w: w.retry(wf.id),
    )
    assert {j.state for j in retried} == {JobState.AVAILABLE, JobState.PENDING}
    async with rivertrio.open_client(
        rivertrio.Config(schema=migrated_schema), database_url=database_url
    ) as admin:
        info = await Workflows(admin).get(wf.id)
    assert info.states == {JobState.COMPLETED: 4}
    runs = {r.job_id: r for r in await read_runs(driver)}
    assert runs[info.tasks["a"].id].end <= runs[info.tasks["d"].id].start  # type: ignore[operator]


async def test_the_leaders_sweep_settles_tasks_finished_elsewhere(
    database_url: str, driver: Driver, migrated_schema: str
) -> None:
    # A task finished by something that does not release its dependents (here a
    # person's job_cancel on a pending task): the sweep settles them.
    async with rivertrio.open_client(
        rivertrio.Config(schema=migrated_schema), database_url=database_url
    ) as admin:
        workflows = Workflows(admin)
        wf = Workflow("swept")
        a = wf.add("a", Step("a"))
        wf.add("b", Step("b"), deps=[a])
        wf.add("c", Step("c"), deps=[a], on_dependency_failure="run")
        info = await workflows.insert(wf)
        await admin.job_cancel(info.tasks["a"].id)
        sweep = await WorkflowReleaser(driver).run_once()
        assert (sweep.released, sweep.cancelled, sweep.queues) == (1, 1, {"default"})
        after = await workflows.get(wf.id)
    assert after.tasks["b"].state is JobState.CANCELLED
    assert after.tasks["c"].state is JobState.AVAILABLE


async def test_tasks_in_a_flow_controlled_queue_are_held_once_released(
    database_url: str, driver: Driver, migrated_schema: str
) -> None:
    await driver.execute(FLOW_LOG_DDL)
    flow = {"default": FlowControl(concurrency=1)}
    config = _config(migrated_schema, driver, flow=flow)
    wf = Workflow("fan")
    root = wf.add("root", Step("root"))
    for i in range(4):
        wf.add(f"leaf{i}", Step(f"leaf{i}"), InsertOpts(tags=["leaf"]), deps=[root])
    info = await _run(database_url, config, 5, lambda w: w.insert(wf))
    assert info.tasks["root"].state is JobState.PENDING  # held from the start
    assert "rivertrio:flow" in info.tasks["leaf0"].metadata  # held once released
    runs = await read_runs(driver)
    assert len(runs) == 5
    assert max_overlap(runs) == {None: 1}


async def test_outputs_refuses_a_job_outside_a_workflow(
    database_url: str, migrated_schema: str
) -> None:
    async with rivertrio.open_client(
        rivertrio.Config(schema=migrated_schema), database_url=database_url
    ) as client:
        job = (await client.insert(Step("alone"))).job
        with pytest.raises(InvalidInputError, match="workflow task"):
            await Workflows(client).outputs(job)
        with pytest.raises(InvalidInputError, match="has no task"):
            await Workflows(client).insert(Workflow("empty"))
        unique = Workflow("unique")
        unique.add("once", Step("once"), InsertOpts(unique=rivertrio.UniqueOpts(by_args=True)))
        with pytest.raises(InvalidInputError, match="task 'once' is a unique job"):
            await Workflows(client).insert(unique)
    assert dataclasses.is_dataclass(job)


async def test_a_release_waits_for_one_in_flight_instead_of_skipping_its_tasks(
    database_url: str, driver: Driver, migrated_schema: str
) -> None:
    # Two clients persist a task's two dependencies at once and each releases
    # the workflow. The first may read the dependencies before the second one
    # ended and leave the task waiting; the second, which saw both ends, must
    # not skip the task the first holds, or the task waits for the leader's
    # sweep. Here an open transaction holds the task as the first release would.
    async with rivertrio.open_client(
        rivertrio.Config(schema=migrated_schema), database_url=database_url
    ) as admin:
        info = await Workflows(admin).insert(_diamond())
    done = [info.tasks[name].id for name in ("a", "b", "c")]
    d = info.tasks["d"].id
    await driver.execute(
        "UPDATE /*schema*/river_job SET state = 'completed', finalized_at = now() "
        "WHERE id = ANY($1::bigint[])",
        done,
    )
    released: list[Any] = []

    async def release() -> None:
        released.append(await WorkflowReleaser(driver).run_once())

    async with trio.open_nursery() as nursery, driver.transaction() as tx:
        await tx.execute("SELECT 1 FROM /*schema*/river_job WHERE id = $1 FOR UPDATE", d)
        nursery.start_soon(release)
        with trio.fail_after(10):
            while not await driver.fetchval(  # noqa: ASYNC110 - server state, no event
                "SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted"
            ):
                await trio.sleep(0.01)
        assert released == []
    [sweep] = released
    assert sweep.released == 1
    row = await driver.fetchrow(
        "SELECT state::text AS state FROM /*schema*/river_job WHERE id = $1", d
    )
    assert row is not None and row["state"] == "available"
