"""Global and partitioned concurrency limits, fair turns between partitions, held jobs.

The limits are checked against the independent log the workers write
(support.flow), and the flow fetch's locking is checked head on: a second
fetch of the queue waits for the first to commit, then sees what it started.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import trio

import rivertrio
from rivertrio import FlowControl, FlowKey, InsertOpts, RateLimit
from rivertrio._driver import Driver, qualify
from rivertrio._driver._flow import FETCH, FlowFetch, flow_adopt, flow_fetch_jobs, server_clock
from rivertrio._driver._producer import fetch_jobs
from rivertrio._flow import fetch_rules
from rivertrio._job import JobRow
from support.flow import FLOW_LOG_DDL, counting_events, log_event, max_overlap, read_runs

COMPLETED = [rivertrio.EventKind.JOB_COMPLETED]

QUEUE = "exports"


@dataclass
class Export(rivertrio.JobArgs, kind="flow_export"):
    customer: int | str | None = None
    n: int = 0
    fail: bool = False


def _workers(driver: Driver, *, hold: float = 0.005) -> rivertrio.Workers:
    workers = rivertrio.Workers()

    @workers.register(Export)
    async def export(job: rivertrio.Job[Export]) -> None:
        await log_event(driver, job, "start")
        await trio.sleep(hold)  # the work itself
        await log_event(driver, job, "end")
        if job.args.fail:
            raise RuntimeError("failed on purpose")

    return workers


def _config(schema: str, rules: FlowControl, **fields: Any) -> rivertrio.Config:
    # A short poll: every client keeps trying, so their fetches contend for the
    # queue (a client is woken by its own jobs' ends, not by others').
    fields.setdefault("fetch_poll_interval", 0.02)
    return rivertrio.Config(schema=schema, flow={QUEUE: rules}, **fields)


def _working_config(
    driver: Driver,
    schema: str,
    rules: FlowControl,
    max_workers: int,
    *,
    hold: float = 0.005,
    **fields: Any,
) -> rivertrio.Config:
    """`_config` for a client that works the queue, logging its jobs' starts and ends."""
    return _config(
        schema,
        rules,
        workers=_workers(driver, hold=hold),
        queues={QUEUE: rivertrio.QueueConfig(max_workers=max_workers)},
        **fields,
    )


@asynccontextmanager
async def _clients(
    database_url: str, configs: Sequence[rivertrio.Config]
) -> AsyncIterator[list[rivertrio.Client]]:
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(rivertrio.open_client(c, database_url=database_url))
            for c in configs
        ]


async def _insert(client: rivertrio.Client, jobs: Sequence[Export]) -> list[JobRow]:
    results = await client.insert_many([(j, InsertOpts(queue=QUEUE)) for j in jobs])
    return [r.job for r in results]


async def _insert_held(
    database_url: str, schema: str, rules: FlowControl, jobs: Sequence[Export]
) -> list[JobRow]:
    """Insert `jobs` as a client given the queue's rules does: held."""
    async with rivertrio.open_client(_config(schema, rules), database_url=database_url) as client:
        return await _insert(client, jobs)


# --- held jobs -------------------------------------------------------------------


async def test_jobs_of_a_flow_queue_are_inserted_held_with_their_keys(
    database_url: str, driver: Driver, migrated_schema: str
) -> None:
    rules = FlowControl(
        concurrency=3,
        partition_by=FlowKey(args=["customer"], kind=True),
        sequence_by=FlowKey(metadata=["order"]),
    )
    async with rivertrio.open_client(
        _config(migrated_schema, rules), database_url=database_url
    ) as client:
        [held] = await _insert(client, [Export(customer='ü "7"')])
        [plain] = [
            r.job for r in await client.insert_many([(Export(customer=1), InsertOpts(queue="x"))])
        ]
        with_key = (
            await client.insert(Export(customer=2), InsertOpts(queue=QUEUE, metadata={"order": 12}))
        ).job
    assert held.state is rivertrio.JobState.PENDING
    assert held.metadata == {
        "rivertrio:part": '["ü \\"7\\"", "flow_export"]',
        "rivertrio:seq": "[null]",
        "rivertrio:flow": "s:[null]",
    }
    assert with_key.metadata["rivertrio:seq"] == "[12]"
    assert plain.state is rivertrio.JobState.AVAILABLE
    assert "rivertrio:flow" not in plain.metadata
    # River's fetch (and rivertrio's plain one, the same SQL) never sees a held job.
    assert await driver.run(fetch_jobs, migrated_schema, QUEUE, 100, "river_go_client") == []


async def test_the_sql_key_is_the_inserted_key(
    database_url: str, driver: Driver, migrated_schema: str
) -> None:
    # Jobs inserted without the rules are keyed by SQL when adopted: the same text.
    key = FlowKey(args=["customer", "n"], metadata=["tenant"], kind=True)
    values: list[Any] = [
        0,
        -17,
        2**70,
        "plain",
        "",
        'quote " and \\ backslash',
        "tab\tnew\nline\x01",
        "é 東京 🙂",
        True,
        False,
        None,
    ]
    async with rivertrio.open_client(
        rivertrio.Config(schema=migrated_schema), database_url=database_url
    ) as client:
        for value in values:
            job = (
                await client.insert(
                    Export(customer=value, n=3), InsertOpts(metadata={"tenant": value})
                )
            ).job
            expected = key.value(job.kind, json.loads(job.encoded_args), job.metadata)
            got = await driver.fetchval(
                f"SELECT {key.sql('j')} FROM /*schema*/river_job AS j WHERE id = $1", job.id
            )
            assert got == expected, value


async def test_rivers_fetch_never_takes_a_held_job_and_failures_stay_held(
    database_url: str, driver: Driver, migrated_schema: str
) -> None:
    await driver.execute(FLOW_LOG_DDL)
    rules = FlowControl(concurrency=5)
    config = _working_config(driver, migrated_schema, rules, 5, retry_policy=lambda job: 3600.0)
    async with (
        rivertrio.open_client(config, database_url=database_url) as client,
        counting_events([client], [rivertrio.EventKind.JOB_FAILED], 4) as failed,
    ):
        jobs = await _insert(client, [Export(n=i, fail=True) for i in range(4)])
        with trio.fail_after(30):
            await failed.wait()
    rows = await driver.fetch(
        "SELECT state::text, scheduled_at > now() AS later FROM /*schema*/river_job"
    )
    # Failed with retries left: held again (a River fetch cannot take them), for later.
    assert [(r["state"], r["later"]) for r in rows] == [("pending", True)] * len(jobs)
    assert await driver.run(fetch_jobs, migrated_schema, QUEUE, 100, "river_go_client") == []


# --- global and partitioned limits, across clients -------------------------------


async def test_a_global_limit_holds_across_clients(
    database_url: str, driver: Driver, migrated_schema: str
) -> None:
    await driver.execute(FLOW_LOG_DDL)
    # Each client runs one job at a time: three must take part at once to
    # reach the limit, and all four would run four.
    rules = FlowControl(concurrency=3)
    base = _working_config(driver, migrated_schema, rules, 1, hold=0.01)
    configs = [dataclasses.replace(base, id=f"limit-client-{i}") for i in range(4)]
    async with (
        _clients(database_url, configs) as clients,
        counting_events(clients, COMPLETED, 40) as done,
    ):
        await _insert(clients[0], [Export(n=i) for i in range(40)])
        with trio.fail_after(30):
            await done.wait()
    runs = await read_runs(driver)
    assert len(runs) == 40
    assert max_overlap(runs) == {None: 3}
    by_client = Counter(
        r["attempted_by"][-1]
        for r in await driver.fetch("SELECT attempted_by FROM /*schema*/river_job")
    )
    assert len(by_client) >= 3  # one slot each: three at once at least


async def test_a_partition_limit_holds_across_clients(
    database_url: str, driver: Driver, migrated_schema: str
) -> None:
    await driver.execute(FLOW_LOG_DDL)
    rules = FlowControl(partition_by=FlowKey(args=["customer"]), partition_concurrency=1)
    base = _working_config(driver, migrated_schema, rules, 5)
    configs = [dataclasses.replace(base, id=f"part-client-{i}") for i in range(3)]
    async with (
        _clients(database_url, configs) as clients,
        counting_events(clients, COMPLETED, 48) as done,
    ):
        jobs = await _insert(clients[0], [Export(customer=i % 4, n=i) for i in range(48)])
        with trio.fail_after(30):
            await done.wait()
    customer = {j.id: json.loads(j.encoded_args)["customer"] for j in jobs}
    runs = await read_runs(driver)
    overlap = max_overlap(runs, key=lambda run: customer[run.job_id])
    assert overlap == {0: 1, 1: 1, 2: 1, 3: 1}
    assert max(max_overlap(runs).values()) > 1  # the customers did run side by side


async def _fetch_in_open_transaction(
    conn: Any, schema: str, fetch: FlowFetch, limit: int, client_id: str
) -> list[Any]:
    """The flow fetch in the caller's transaction: it holds the queue's lock until that ends."""
    rows = await conn.fetch(
        qualify(FETCH, schema),
        QUEUE,
        limit,
        client_id,
        None,
        [],
        [],
        *fetch.params,
        schema,
        [],
        None,
    )
    return [r for r in rows if r["id"] is not None]


async def _wait_for_a_lock_waiter(driver: Driver) -> None:
    with trio.fail_after(10):
        while not await driver.fetchval(  # noqa: ASYNC110 - server state, no event
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ):
            await trio.sleep(0.01)


async def test_a_fetch_that_waited_for_the_lock_starts_its_jobs_when_it_got_it(
    database_url: str, driver: Driver, migrated_schema: str
) -> None:
    # Rate limits count starts by attempted_at: a fetch that waited for the
    # lock must not date its starts back to when it asked (the statement's
    # start), or a window could hold more starts than the limit.
    rules = FlowControl(rate=RateLimit(limit=100, period=60.0))
    fetch = fetch_rules(rules)
    await _insert_held(database_url, migrated_schema, rules, [Export(n=i) for i in range(2)])
    second: list[Any] = []

    async def second_fetch() -> None:
        done = await driver.run(flow_fetch_jobs, migrated_schema, QUEUE, 1, "second", fetch, None)
        second.extend(done.rows)

    async with trio.open_nursery() as nursery, driver.transaction() as tx:
        await tx.run(_fetch_in_open_transaction, migrated_schema, fetch, 1, "first")
        nursery.start_soon(second_fetch)
        await _wait_for_a_lock_waiter(driver)
        released_after = await tx.fetchval("SELECT clock_timestamp()")
    [row] = second
    assert row["attempted_at"] >= released_after
    logged = await driver.fetchval("SELECT max(started_at) FROM /*schema*/rivertrio_flow_start")
    assert logged >= released_after


async def test_a_second_fetch_waits_for_the_first_and_counts_what_it_started(
    database_url: str, driver: Driver, migrated_schema: str
) -> None:
    # What makes the limit global: flow fetches of a queue take turns on a lock
    # held to their commit, and each counts running jobs after taking it.
    # Without it, the second fetch would count none of the first one's
    # (uncommitted) jobs as running and start 3 more.
    rules = FlowControl(concurrency=3)
    fetch = fetch_rules(rules)
    await _insert_held(database_url, migrated_schema, rules, [Export(n=i) for i in range(10)])

    async def first_fetch(conn: Any) -> list[Any]:
        return await _fetch_in_open_transaction(conn, migrated_schema, fetch, 10, "first")

    second: list[Any] = []

    async def second_fetch() -> None:
        done = await driver.run(flow_fetch_jobs, migrated_schema, QUEUE, 10, "second", fetch, None)
        second.extend(done.rows)

    async with trio.open_nursery() as nursery, driver.transaction() as tx:
        first = await tx.run(first_fetch)
        assert len(first) == 3
        nursery.start_soon(second_fetch)
        # The second fetch is waiting on the queue's flow lock...
        await _wait_for_a_lock_waiter(driver)
        assert second == []
        # ...and once the first commits, it sees its 3 running jobs: no room.
    assert second == []
    running = await driver.fetchval(
        "SELECT count(*) FROM /*schema*/river_job WHERE state = 'running'"
    )
    assert running == 3


# --- fair turns between partitions -------------------------------------------------


_fetchers = itertools.count()


async def _fetch_ids(
    driver: Driver, schema: str, rules: FlowControl, limit: int, cursor: str | None
) -> tuple[list[int], str | None]:
    # Each fetch as another client's: none of them has the others' jobs in hand.
    client_id = f"fair-{next(_fetchers)}"
    done = await driver.run(
        flow_fetch_jobs, schema, QUEUE, limit, client_id, fetch_rules(rules), cursor
    )
    return [r["id"] for r in done.rows], done.cursor


async def test_a_busy_partition_does_not_keep_the_others_waiting(
    database_url: str, driver: Driver, migrated_schema: str
) -> None:
    # One customer's 50 jobs come first in line; ten others have one each. With
    # one running per customer, and 3 partitions considered per fetch, every
    # customer has a job running after 4 fetches (10 + 1 partitions, 3 at a time),
    # whatever the line's order.
    rules = FlowControl(
        partition_by=FlowKey(args=["customer"]), partition_concurrency=1, max_partitions=3
    )
    hot = [Export(customer="hot", n=i) for i in range(50)]
    cold = [Export(customer=f"c{i:02}") for i in range(10)]
    held = await _insert_held(database_url, migrated_schema, rules, [*hot, *cold])
    hot_ids, cold_ids = {j.id for j in held[:50]}, {j.id for j in held[50:]}
    started: list[int] = []
    cursor = None
    for _ in range(4):
        ids, cursor = await _fetch_ids(driver, migrated_schema, rules, 100, cursor)
        assert len(ids) <= 3
        started += ids
    assert cold_ids <= set(started)
    assert len(set(started) & hot_ids) == 1
    # Everyone has a job running: nothing more may start.
    assert (await _fetch_ids(driver, migrated_schema, rules, 100, cursor))[0] == []


async def test_free_slots_are_shared_out_between_partitions(
    database_url: str, driver: Driver, migrated_schema: str
) -> None:
    # Only a queue-wide limit, but partitions: 4 slots go one to each of 4
    # customers before any customer gets a second, though one came first in line.
    rules = FlowControl(concurrency=4, partition_by=FlowKey(args=["customer"]))
    first = [Export(customer=0, n=i) for i in range(20)]
    others = [Export(customer=c) for c in (1, 2, 3, 4) for _ in range(3)]
    jobs = await _insert_held(database_url, migrated_schema, rules, [*first, *others])
    customer = {j.id: json.loads(j.encoded_args)["customer"] for j in jobs}
    ids, _ = await _fetch_ids(driver, migrated_schema, rules, 100, None)
    assert sorted(customer[i] for i in ids) == [0, 1, 2, 3]
    # The next fetch finds the queue full.
    assert (await _fetch_ids(driver, migrated_schema, rules, 100, None))[0] == []


async def test_jobs_inserted_without_the_rules_are_adopted_into_their_partition(
    database_url: str, driver: Driver, migrated_schema: str
) -> None:
    rules = FlowControl(partition_by=FlowKey(args=["customer"]), partition_concurrency=1)
    async with rivertrio.open_client(
        rivertrio.Config(schema=migrated_schema), database_url=database_url
    ) as unaware:
        [stray] = await _insert(unaware, [Export(customer=7)])
    async with rivertrio.open_client(
        _config(migrated_schema, rules), database_url=database_url
    ) as aware:
        [held] = await _insert(aware, [Export(customer=7)])
    assert stray.state is rivertrio.JobState.AVAILABLE
    # The first fetch starts the held job and sees the stray one; adopted, it
    # is held from now on...
    first = await driver.run(
        flow_fetch_jobs, migrated_schema, QUEUE, 10, "c", fetch_rules(rules), None
    )
    assert ([r["id"] for r in first.rows], first.available) == ([held.id], True)
    assert await driver.run(flow_adopt, migrated_schema, QUEUE, fetch_rules(rules)) == 1
    adopted = await driver.fetchrow(
        "SELECT state::text, metadata FROM /*schema*/river_job WHERE id = $1", stray.id
    )
    assert adopted is not None
    assert adopted["state"] == "pending"
    assert json.loads(adopted["metadata"])["rivertrio:part"] == held.metadata["rivertrio:part"]
    # ...and the adopted job, of the same customer, waits for it.
    again = await driver.run(
        flow_fetch_jobs, migrated_schema, QUEUE, 10, "c", fetch_rules(rules), None, [held.id]
    )
    assert (again.rows, again.available) == ([], False)


async def test_a_client_works_jobs_inserted_without_the_rules_at_once(
    database_url: str, driver: Driver, migrated_schema: str
) -> None:
    # Adopted by a fetch, they are taken by the next one straight away, under
    # the limit: not at the next poll (half a minute away here).
    await driver.execute(FLOW_LOG_DDL)
    rules = FlowControl(concurrency=2)
    config = _working_config(driver, migrated_schema, rules, 5, fetch_poll_interval=30.0)
    async with rivertrio.open_client(config, database_url=database_url) as client:
        # First a held job, worked: the client's first fetches are behind it.
        async with counting_events([client], COMPLETED, 1) as first:
            await _insert(client, [Export(n=-1)])
            with trio.fail_after(10):
                await first.wait()
        async with counting_events([client], COMPLETED, 6) as done:
            async with rivertrio.open_client(
                rivertrio.Config(schema=migrated_schema), database_url=database_url
            ) as unaware:
                await _insert(unaware, [Export(n=i) for i in range(6)])
            with trio.fail_after(10):
                await done.wait()
    assert max(max_overlap(await read_runs(driver)).values()) <= 2


async def test_a_producer_need_not_count_its_own_finished_attempts(
    database_url: str, driver: Driver, migrated_schema: str
) -> None:
    # A job whose work is over stays running until its outcome is written; the
    # producer that ran it may start another in its place meanwhile, by naming
    # that very attempt. Any other attempt (or another producer) still counts.
    rules = FlowControl(concurrency=1)
    fetch = fetch_rules(rules)
    await _insert_held(database_url, migrated_schema, rules, [Export(n=i) for i in range(5)])
    first = await driver.run(flow_fetch_jobs, migrated_schema, QUEUE, 10, "p", fetch, None)
    [row] = first.rows
    mine = [(row["id"], row["attempted_at"])]
    other = [(row["id"], row["attempted_at"] - timedelta(microseconds=1))]
    in_hand = [row["id"]]
    blocked = await driver.run(
        flow_fetch_jobs, migrated_schema, QUEUE, 10, "p", fetch, None, in_hand, other
    )
    assert blocked.rows == []
    again = await driver.run(
        flow_fetch_jobs, migrated_schema, QUEUE, 10, "p", fetch, None, in_hand, mine
    )
    assert len(again.rows) == 1
    assert again.rows[0]["id"] != row["id"]


async def test_jobs_a_lost_reply_started_come_back_with_the_next_fetch(
    database_url: str, driver: Driver, migrated_schema: str
) -> None:
    # A flow fetch commits on its own: when its reply is lost, the jobs it
    # started run under the client's id with nobody working them. The client's
    # next fetch returns them (they are running, they count against the limit,
    # and they take room from new ones); those it has in hand, it does not.
    rules = FlowControl(concurrency=3)
    fetch = fetch_rules(rules)
    await _insert_held(database_url, migrated_schema, rules, [Export(n=i) for i in range(10)])
    since = await driver.run(server_clock)

    async def fetch_as(client_id: str, in_hand: list[int], since: Any) -> list[int]:
        done = await driver.run(
            flow_fetch_jobs, migrated_schema, QUEUE, 10, client_id, fetch, None, in_hand, (), since
        )
        return sorted(r["id"] for r in done.rows)

    lost = await driver.run(flow_fetch_jobs, migrated_schema, QUEUE, 2, "p", fetch, None)
    lost_ids = sorted(r["id"] for r in lost.rows)
    assert len(lost_ids) == 2
    # Another client's fetch does not take them: they are not its own.
    [other] = await fetch_as("q", [], since)
    assert other not in lost_ids
    assert await fetch_as("p", [], since) == lost_ids
    # Once in hand, they are not returned again, and the queue is full.
    assert await fetch_as("p", lost_ids, since) == []
    # A caller started after them (a process restarted under the same id) leaves
    # them to the rescuer, which counts the attempt they were in.
    assert await fetch_as("p", [], await driver.run(server_clock)) == []


async def test_a_restarted_client_leaves_its_earlier_runs_jobs_to_the_rescuer(
    database_url: str, driver: Driver, migrated_schema: str
) -> None:
    # A job running under the client's id from before it started was not
    # started by a lost reply of this run: running it again at once, in the
    # same attempt, would let a job that kills its process loop forever.
    await driver.execute(FLOW_LOG_DDL)
    rules = FlowControl(concurrency=5)
    jobs = await _insert_held(database_url, migrated_schema, rules, [Export(n=i) for i in range(3)])
    earlier = await driver.run(
        flow_fetch_jobs, migrated_schema, QUEUE, 1, "restarted", fetch_rules(rules), None
    )
    [earlier_id] = [r["id"] for r in earlier.rows]
    config = _working_config(driver, migrated_schema, rules, 10, id="restarted")
    async with (
        rivertrio.open_client(config, database_url=database_url) as client,
        counting_events([client], COMPLETED, 2) as done,
    ):
        with trio.fail_after(30):
            await done.wait()
    runs = await read_runs(driver)
    assert sorted({r.job_id for r in runs}) == sorted(j.id for j in jobs if j.id != earlier_id)
    state = await driver.fetchval(
        "SELECT state::text FROM /*schema*/river_job WHERE id = $1", earlier_id
    )
    assert state == "running"
