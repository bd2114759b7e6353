"""``rivertrio bench`` in tiny configurations: the JSON results are complete and sane."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import trio

from rivertrio._cli._bench_burndown import burndown
from rivertrio._cli._bench_common import NoopArgs
from rivertrio._cli._common import CliError
from rivertrio._driver import open_driver
from support.cli import invoke


async def bench(database_url: str, schema: str, *args: str) -> list[dict[str, Any]]:
    result = await invoke(
        "bench", "--json", "--database-url", database_url, "--schema", schema, *args
    )
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def check_common(result: dict[str, Any], mode: str, n: int) -> None:
    assert result["mode"] == mode
    assert result["n"] == n
    assert 0 < result["seconds"] < 120
    assert result["jobs_per_s"] == pytest.approx(n / result["seconds"], rel=0.01)
    assert 10 < result["peak_rss_mb"] < 1000


async def test_burndown_with_ceiling(database_url: str, migrated_schema: str) -> None:
    results = await bench(
        database_url, migrated_schema, "--num-jobs", "300", "--workers", "20", "--ceiling"
    )
    assert [r["mode"] for r in results] == ["ceiling", "insert_fast", "burndown"]
    ceiling, _insert, burndown = results
    for result in results:
        check_common(result, result["mode"], 300)
    assert ceiling["batch"] == 20
    assert burndown["workers"] == 20
    assert burndown["processes"] == 1
    assert burndown["ratio_to_ceiling"] == pytest.approx(
        burndown["jobs_per_s"] / ceiling["jobs_per_s"], rel=0.01
    )
    async with open_driver(database_url, schema=migrated_schema) as driver:
        recs = await driver.fetch(
            "SELECT state::text AS state, count(*) AS n FROM /*schema*/river_job GROUP BY state"
        )
    # Only the last phase's jobs remain (each phase clears the bench queue first).
    assert {r["state"]: r["n"] for r in recs} == {"completed": 300}


async def test_burndown_with_several_processes(database_url: str, migrated_schema: str) -> None:
    [insert, burndown] = await bench(
        database_url, migrated_schema, "--num-jobs", "200", "--workers", "10", "--processes", "2"
    )
    check_common(insert, "insert_fast", 200)
    check_common(burndown, "burndown", 200)
    assert burndown["processes"] == 2
    async with open_driver(database_url, schema=migrated_schema) as driver:
        workers = await driver.fetchval(
            "SELECT count(DISTINCT attempted_by[1]) FROM /*schema*/river_job"
        )
    assert 1 <= workers <= 2


async def test_burndown_under_flow_control(database_url: str, migrated_schema: str) -> None:
    results = await bench(
        database_url,
        migrated_schema,
        *("--num-jobs", "200", "--workers", "10", "--processes", "2", "--flow-limit", "5"),
    )
    assert [r["mode"] for r in results] == [
        "insert_fast",
        "burndown",
        "insert_fast",
        "burndown_flow",
    ]
    plain, flow = results[1], results[3]
    check_common(flow, "burndown_flow", 200)
    assert flow["flow_limit"] == 5
    assert flow["ratio_to_plain"] == pytest.approx(
        flow["jobs_per_s"] / plain["jobs_per_s"], rel=0.01
    )
    async with open_driver(database_url, schema=migrated_schema) as driver:
        recs = await driver.fetch(
            "SELECT count(*) AS n, bool_and(metadata ? 'rivertrio:flow') AS held "
            "FROM /*schema*/river_job WHERE state = 'completed'"
        )
    # The flow phase's jobs: inserted held, all worked.
    assert (recs[0]["n"], recs[0]["held"]) == (200, True)


async def test_latency(database_url: str, migrated_schema: str) -> None:
    [result] = await bench(
        database_url, migrated_schema, "--latency", "--rate", "100", "--duration", "0.5",
        "--fetch-cooldown", "0.01",
    )  # fmt: skip
    check_common(result, "latency", 50)
    assert result["missing"] == 0
    assert result["rate"] == 100
    for name in ("start", "complete"):
        p50, p95, p99 = (result[f"{name}_p{q}_ms"] for q in (50, 95, 99))
        assert 0 < p50 <= p95 <= p99 <= result[f"{name}_max_ms"] < 30_000
    # Every job completes after it starts, so each percentile is at least as large.
    for q in ("p50", "p95", "p99"):
        assert result[f"complete_{q}_ms"] >= result[f"start_{q}_ms"]


async def test_latency_offers_the_rate_asked_for(database_url: str, migrated_schema: str) -> None:
    # Inserts start on time, not one per round trip: a second at 1,500 jobs/s.
    [result] = await bench(
        database_url, migrated_schema, "--latency", "--rate", "1500", "--duration", "1"
    )
    check_common(result, "latency", 1500)
    assert result["missing"] == 0
    assert result["seconds"] < 1.5


async def test_insert_cost(database_url: str, migrated_schema: str) -> None:
    results = await bench(
        database_url, migrated_schema, "--insert", "--num-jobs", "200", "--concurrency", "8"
    )
    assert [r["concurrency"] for r in results] == [1, 8]
    for result in results:
        check_common(result, "insert", 200)
        assert 0 < result["cpu_us_per_insert"] < 100_000
        assert result["wall_us_per_insert"] == pytest.approx(
            result["seconds"] / 200 * 1e6, rel=0.01
        )
        assert result["coalesce_window"] == 0.0002
    async with open_driver(database_url, schema=migrated_schema) as driver:
        left = await driver.fetchval("SELECT count(*) FROM /*schema*/river_job")
    assert left == 0, "the bench removes the jobs it inserted"


async def test_insert_cost_without_coalescing(database_url: str, migrated_schema: str) -> None:
    results = await bench(
        database_url, migrated_schema, "--insert", "--num-jobs", "50", "--coalesce-window", "0"
    )
    assert [(r["concurrency"], r["coalesce_window"]) for r in results] == [(1, 0), (20, 0)]


async def test_insert_is_a_mode_of_its_own(database_url: str, migrated_schema: str) -> None:
    result = await invoke(
        "bench",
        "--insert",
        "--latency",
        "--database-url",
        database_url,
        "--schema",
        migrated_schema,
    )
    assert result.exit_code == 2
    assert "--insert measures inserts alone" in result.stderr


async def test_the_bench_deletes_only_its_own_queue(
    database_url: str, migrated_schema: str
) -> None:
    async with open_driver(database_url, schema=migrated_schema) as driver:
        await driver.execute(
            "INSERT INTO /*schema*/river_job (args, kind, queue) VALUES ('{}', 'mine', 'mine')"
        )
        await bench(database_url, migrated_schema, "--num-jobs", "20", "--workers", "5")
        assert (
            await driver.fetchval("SELECT count(*) FROM /*schema*/river_job WHERE queue = 'mine'")
            == 1
        )
        await bench(database_url, migrated_schema, "--num-jobs", "20", "--workers", "5", "--reset")
        assert (
            await driver.fetchval("SELECT count(*) FROM /*schema*/river_job WHERE queue = 'mine'")
            == 0
        )


async def test_the_human_output_has_a_table(database_url: str, migrated_schema: str) -> None:
    result = await invoke(
        "bench", "--database-url", database_url, "--schema", migrated_schema,
        "--num-jobs", "20", "--workers", "5",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "burndown" in result.stdout
    assert "jobs/s" in result.stdout


def bench_children() -> list[int]:
    """The pids of this process's ``rivertrio bench-child`` processes (Linux's /proc)."""
    tasks = Path("/proc/self/task").glob("*/children")
    pids = [int(pid) for children in tasks for pid in children.read_text().split()]
    return [pid for pid in pids if b"bench-child" in Path(f"/proc/{pid}/cmdline").read_bytes()]


async def test_a_dead_worker_process_fails_the_burndown(
    database_url: str, migrated_schema: str
) -> None:
    # A worker process that died mid burn-down used to leave the bench polling forever.
    async with open_driver(database_url, schema=migrated_schema) as driver:
        # One job to work, and one not due for an hour: the burn-down cannot end by itself.
        await driver.execute(
            "INSERT INTO /*schema*/river_job (args, kind, queue, scheduled_at) "
            "VALUES ('{}', $1, 'bench', now()), ('{}', $1, 'bench', now() + interval '1 hour')",
            NoopArgs.kind,
        )

        async def kill_a_child_once_working() -> None:
            while not await driver.fetchval(  # noqa: ASYNC110 - server state, no event
                "SELECT count(*) FROM /*schema*/river_job WHERE state = 'completed'"
            ):
                await trio.sleep(0.01)
            os.kill(bench_children()[0], signal.SIGKILL)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(kill_a_child_once_working)
                with pytest.raises(CliError, match=r"ended unexpectedly .*-9"):
                    await burndown(database_url, migrated_schema, "bench", 2, 5, 2, lambda k: None)
