"""User code takes every connection it can from the client's pool.

Jobs open ``client.transaction()`` and hold it open on an event. The client's
own services (the fetcher, the completer, the elector) share the pool with
them; they must not starve. The driver keeps ``reserved`` connections that
transaction blocks cannot take, and any wait for a connection is bounded
(``acquire_timeout``) with an error that says what holds them and how to size
the pool. `open_client` reserves ``Config.reserved_connections`` (2 + one per
queue) of ``Config.effective_pool_size``.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

import rivertrio
from rivertrio import EventKind
from rivertrio._driver import Driver, open_driver
from support.common import Task, config, task_workers
from support.faults import Recorder, Tally, job_states, print_figures, watch_logs

pytestmark = pytest.mark.timeout(90)


class Holders:
    """The worker: "hold" jobs open a transaction and keep it until `release`."""

    def __init__(self) -> None:
        self.client: rivertrio.Client | None = None
        self.holding = 0
        self.limit = 0
        self.all_held = trio.Event()
        self.release = trio.Event()
        self.runs: collections.Counter[int] = collections.Counter()
        self.errors: list[str] = []

    async def work(self, job: rivertrio.Job[Task]) -> None:
        self.runs[job.id] += 1
        if job.args.name != "hold":
            return
        assert self.client is not None
        try:
            async with self.client.transaction() as tx:
                await tx.execute("SELECT 1")
                self.holding += 1
                if self.holding >= self.limit:
                    self.all_held.set()
                await self.release.wait()
        except rivertrio.DatabaseError as exc:
            self.errors.append(str(exc))
            raise


@asynccontextmanager
async def client_on(
    database_url: str, cfg: rivertrio.Config, *, reserved: int | None, acquire_timeout: float = 30
) -> AsyncIterator[rivertrio.Client]:
    """A client on a driver of the test's making (reserved=None: `open_client` itself)."""
    if reserved is None:
        async with rivertrio.open_client(cfg, database_url=database_url) as client:
            yield client
        return
    async with (
        open_driver(
            database_url,
            schema=cfg.schema,
            max_size=cfg.effective_pool_size,
            reserved=reserved,
            acquire_timeout=acquire_timeout,
        ) as driver,
        trio.open_nursery() as nursery,
    ):
        client = rivertrio.Client(cfg, driver)
        await nursery.start(client.run)
        try:
            yield client
        finally:
            await client.stop()


async def starve(
    database_url: str, schema: str, driver: Driver, *, reserved: int | None, name: str
) -> None:
    """Every connection transaction blocks may take is held; plain jobs must still complete."""
    tally = Tally(name)
    holders = Holders()
    recorder = Recorder()
    cfg = config(schema, workers=task_workers(holders.work), max_workers=20)
    plain_done_while_held = False
    with watch_logs() as logs, trio.fail_after(60):
        async with (
            trio.open_nursery() as nursery,
            client_on(database_url, cfg, reserved=reserved) as client,
        ):
            holders.client = client
            holders.limit = client.driver.block_limit
            async with client.subscribe(*EventKind, buffer=100) as events:
                nursery.start_soon(recorder.run, events)
                try:
                    # More holders than the pool has connections.
                    holds = [Task(name="hold") for _ in range(cfg.effective_pool_size)]
                    await client.insert_many(holds)
                    await holders.all_held.wait()
                    held_at = trio.current_time()
                    plain = await client.insert_many([Task(n=i) for i in range(20)])
                    with trio.move_on_after(20):
                        await recorder.wait_completed([r.job.id for r in plain])
                        plain_done_while_held = True
                    tally.recover_seconds = trio.current_time() - held_at
                finally:
                    holders.release.set()
                states = await job_states(client.driver)
                await recorder.wait_completed(states)
                await client.stop()

    tally.extra.update(
        pool=client.driver.pool_size,
        transactions_at_once=holders.limit,
        plain_done_while_held=plain_done_while_held,
    )
    print_figures(tally, states, recorder, holders.runs)
    for record in logs.matching("no connection", level=30):
        print("log:", record.name, record.getMessage()[:160])
    assert plain_done_while_held, (
        "the client's own statements starved: every pooled connection was held by "
        "transaction blocks"
    )
    assert tally.duplicate_events == 0
    assert holders.errors == []
    assert not logs.matching("no connection", level=30)


async def test_open_client_keeps_connections_for_its_services(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    await starve(
        database_url,
        migrated_schema,
        driver,
        reserved=None,
        name="pool: open_client, transactions hold every connection",
    )


async def test_an_exhausted_pool_says_what_holds_it_and_how_to_size_it(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    # A driver opened with nothing reserved: waits for a connection are still bounded.
    holders = Holders()
    recorder = Recorder()
    cfg = config(migrated_schema, workers=task_workers(holders.work), max_workers=20)
    with watch_logs() as logs, trio.fail_after(60):
        async with (
            trio.open_nursery() as nursery,
            client_on(database_url, cfg, reserved=0, acquire_timeout=1) as client,
        ):
            holders.client = client
            holders.limit = client.driver.pool_size
            async with client.subscribe(*EventKind, buffer=100) as events:
                nursery.start_soon(recorder.run, events)
                try:
                    holds = [Task(name="hold") for _ in range(cfg.effective_pool_size)]
                    await client.insert_many(holds)
                    await holders.all_held.wait()
                    started = trio.current_time()
                    with pytest.raises(rivertrio.DatabaseError) as raised:
                        await client.insert(Task(n=1))
                    waited = trio.current_time() - started
                    # The client's services hit the same wall, and say so.
                    await logs.wait_for("no connection .* was free", level=30)
                finally:
                    holders.release.set()
                states = await job_states(client.driver)
                await recorder.wait_completed(states)
                await client.stop()

    message = str(raised.value)
    print(f"\n[pool exhausted] waited={waited:.2f}s error={message}")
    assert 0.9 <= waited < 5
    assert f"all {client.driver.pool_size} pooled connections are in use" in message
    assert f"{client.driver.pool_size} of them held open by transaction blocks" in message
    assert "client.transaction()" in message and "size the pool" in message
    assert set(recorder.ids()) == set(states), "once released, every job completed"
