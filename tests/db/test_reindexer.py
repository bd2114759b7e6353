"""The reindexer: River's indexes rebuilt concurrently, one at a time, leftovers respected."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import rivertrio
from rivertrio import REINDEXER_INDEX_NAMES_DEFAULT
from rivertrio._driver import Driver, quote_ident
from rivertrio._driver._reindexer import reindex
from rivertrio._elector import Elector
from rivertrio._maintenance import Maintainer, Reindexer
from support.common import config, running
from support.maintenance import HookedDriver

pytestmark = pytest.mark.timeout(90)

NAMES = list(REINDEXER_INDEX_NAMES_DEFAULT)


async def filenodes(driver: Driver) -> dict[str, int]:
    """Each index of river_job by name, with the file it lives in (a rebuild changes it)."""
    rows = await driver.fetch(
        "SELECT c.relname, pg_relation_filenode(c.oid) AS node FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = $1::regclass",
        f"{quote_ident(driver.schema)}.river_job",
    )
    return {r["relname"]: r["node"] for r in rows}


async def index_names(driver: Driver) -> set[str]:
    return set(await filenodes(driver))


async def wait_until(check: Callable[[], Awaitable[bool]], within: float = 30) -> None:
    """Wait, within a deadline, for a state inside the server's REINDEX.

    How far a running REINDEX has got shows only in the catalogs (Postgres sends
    no notice of it), so this reads them until the state holds; it waits for
    the state itself, never for a guessed time.
    """
    with trio.fail_after(within):
        while not await check():  # noqa: ASYNC110 - server state, no event to wait on
            await trio.sleep(0.02)


@asynccontextmanager
async def writer_holding(driver: Driver) -> AsyncIterator[None]:
    """An open transaction that wrote to river_job.

    A concurrent rebuild creates its ``_ccnew`` index, then waits for every such
    writer to finish: it is stuck there, with its leftover in place, until then.
    """
    async with driver.transaction() as tx:
        await tx.execute("INSERT INTO /*schema*/river_job (args, kind) VALUES ('{}', 'w')")
        yield
        await tx.execute("DELETE FROM /*schema*/river_job WHERE kind = 'w'")


async def test_every_index_is_rebuilt_one_at_a_time_in_order(driver: Driver) -> None:
    before = await filenodes(driver)
    assert set(NAMES) <= set(before)
    concurrent: list[int] = []

    async def count_rebuilds_running() -> None:
        # Just before each rebuild starts, no other rebuild of this schema may run.
        concurrent.append(
            await driver.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                "AND query LIKE 'REINDEX INDEX CONCURRENTLY ' || $1 || '.%'",
                quote_ident(driver.schema),
            )
        )

    hooked = HookedDriver(driver, reindex, count_rebuilds_running)
    reindexer = Reindexer(hooked, schedule=3600)  # type: ignore[arg-type]
    with trio.fail_after(60):
        run = await reindexer.run_once()
    assert run.reindexed == tuple(NAMES)
    assert (run.skipped, run.missing, run.failed) == ({}, (), {})
    assert concurrent == [0] * len(NAMES)
    after = await filenodes(driver)
    assert {n for n in NAMES if after[n] == before[n]} == set()
    # Nothing left behind, and the other index is untouched.
    assert set(after) == set(before)


async def test_an_index_with_leftovers_is_skipped_until_they_are_dropped(
    driver: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    # What interrupted rebuilds leave: River checks the numbered forms too.
    await driver.execute(
        "CREATE INDEX river_job_kind_ccnew ON /*schema*/river_job (kind); "
        "CREATE INDEX river_job_pkey_ccold2 ON /*schema*/river_job (id)"
    )
    before = await filenodes(driver)
    reindexer = Reindexer(driver, schedule=3600)
    with caplog.at_level(logging.WARNING, logger="rivertrio.maintenance"):
        run = await reindexer.run_once()
    assert run.skipped == {
        "river_job_kind": ("river_job_kind_ccnew",),
        "river_job_pkey": ("river_job_pkey_ccold2",),
    }
    assert run.reindexed == tuple(n for n in NAMES if n not in run.skipped)
    after = await filenodes(driver)
    assert after["river_job_kind"] == before["river_job_kind"]
    assert after["river_job_pkey"] == before["river_job_pkey"]
    assert after["river_job_args_index"] != before["river_job_args_index"]
    warning = next(
        r.getMessage() for r in caplog.records if "river_job_kind_ccnew" in r.getMessage()
    )
    assert "DROP INDEX CONCURRENTLY" in warning

    await driver.execute(
        "DROP INDEX /*schema*/river_job_kind_ccnew; DROP INDEX /*schema*/river_job_pkey_ccold2"
    )
    again = await reindexer.run_once()
    assert again.reindexed == tuple(NAMES)


async def test_an_index_that_does_not_exist_is_passed_over(driver: Driver) -> None:
    reindexer = Reindexer(driver, schedule=3600, index_names=["no_such_index", "river_job_kind"])
    run = await reindexer.run_once()
    assert (run.missing, run.reindexed) == (("no_such_index",), ("river_job_kind",))


async def test_a_rebuild_past_its_timeout_fails_and_blocks_the_next_runs(driver: Driver) -> None:
    reindexer = Reindexer(driver, schedule=3600, index_names=["river_job_kind"], timeout=0.5)
    async with writer_holding(driver):
        with trio.fail_after(20):
            run = await reindexer.run_once()
    assert list(run.failed) == ["river_job_kind"]
    assert "57014" in run.failed["river_job_kind"]  # statement_timeout
    # As in River: the leftover stays, and later runs skip the index.
    assert "river_job_kind_ccnew" in await index_names(driver)
    later = await reindexer.run_once()
    assert later.skipped == {"river_job_kind": ("river_job_kind_ccnew",)}


async def test_a_rebuild_stopped_midway_drops_its_leftovers(driver: Driver) -> None:
    reindexer = Reindexer(driver, schedule=3600, index_names=["river_job_kind"], timeout=None)
    scope = trio.CancelScope()
    done = trio.Event()

    async def run() -> None:
        with scope:  # stopping the service (or losing the term) cancels it like this
            await reindexer.run_once()
        done.set()

    async def leftover_exists() -> bool:
        return "river_job_kind_ccnew" in await index_names(driver)

    async def rebuild_gone() -> bool:
        running = await driver.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
            "AND query LIKE 'REINDEX INDEX CONCURRENTLY ' || $1 || '.%'",
            quote_ident(driver.schema),
        )
        return bool(running == 0)

    async with trio.open_nursery() as nursery:
        async with writer_holding(driver):
            nursery.start_soon(run)
            await wait_until(leftover_exists)
            scope.cancel()
            # Only once the server has cancelled the rebuild does the writer go:
            # the leftover can then disappear only if the reindexer drops it.
            await wait_until(rebuild_gone)
            assert await leftover_exists()
        with trio.fail_after(30):
            await done.wait()
    assert not await leftover_exists()
    assert (await reindexer.run_once()).reindexed == ("river_job_kind",)


async def test_the_service_runs_on_its_schedule(driver: Driver) -> None:
    reindexer = Reindexer(driver, schedule=0.2, index_names=["river_job_kind"])
    before = (await filenodes(driver))["river_job_kind"]
    async with trio.open_nursery() as nursery:
        await nursery.start(reindexer.run)
        assert reindexer.runs.value == 0  # not at start: at the schedule's first time
        with trio.fail_after(30):
            await reindexer.runs.wait_for(2)
        reindexer.stop()
    assert reindexer.last_run is not None
    assert reindexer.last_run.reindexed == ("river_job_kind",)
    assert (await filenodes(driver))["river_job_kind"] != before


def _reindexers(maintainer: Maintainer) -> list[Any]:
    return [s for s in maintainer.services if isinstance(s, Reindexer)]


async def test_the_config_sets_it_up_or_turns_it_off(driver: Driver) -> None:
    elector = Elector(driver, rivertrio.Config().id)
    default = Maintainer.for_config(driver, rivertrio.Config(), elector)
    (reindexer,) = _reindexers(default)
    assert (reindexer.schedule, reindexer.index_names, reindexer.timeout) == (
        "0 0 * * *",
        REINDEXER_INDEX_NAMES_DEFAULT,
        60.0,
    )
    custom = rivertrio.Config(
        reindexer_schedule="30 3 * * *",
        reindexer_index_names=["river_job_kind"],
        reindexer_timeout=None,
    )
    (reindexer,) = _reindexers(Maintainer.for_config(driver, custom, elector))
    assert (reindexer.schedule, reindexer.index_names, reindexer.timeout) == (
        "30 3 * * *",
        ("river_job_kind",),
        None,
    )
    for off in (
        rivertrio.Config(reindexer_schedule=None),
        rivertrio.Config(reindexer_index_names=[]),
    ):
        assert _reindexers(Maintainer.for_config(driver, off, elector)) == []


async def test_a_leading_client_rebuilds_on_the_configured_schedule(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    before = (await filenodes(driver))["river_job_kind"]
    cfg = config(migrated_schema, reindexer_schedule=0.2, reindexer_index_names=["river_job_kind"])
    async with running(cfg, database_url) as client:
        reindexer = client._tree.maintainer.service(Reindexer)
        with trio.fail_after(30):
            await reindexer.runs.wait_for(1)
    assert reindexer.last_run is not None
    assert reindexer.last_run.reindexed == ("river_job_kind",)
    assert (await filenodes(driver))["river_job_kind"] != before
