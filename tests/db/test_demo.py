"""``rivertrio demo`` end to end, against the test database, in the test's own schema."""

from __future__ import annotations

from rivertrio._driver import open_driver
from support.cli import invoke


async def _states_by_kind(database_url: str, schema: str) -> dict[tuple[str, str], int]:
    async with open_driver(database_url, schema=schema) as driver:
        recs = await driver.fetch(
            "SELECT kind, state::text AS state, count(*) AS n FROM /*schema*/river_job "
            "GROUP BY kind, state"
        )
    return {(r["kind"], r["state"]): r["n"] for r in recs}


async def test_the_demo_works_every_job_and_leaves_nothing_running(
    database_url: str, empty_schema: str
) -> None:
    result = await invoke(
        "demo", "--jobs", "300", "--seed", "1", "--database-url", database_url,
        "--schema", empty_schema,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"schema {empty_schema} (recreated)" in out
    assert "left running: 0; unfinished: 0" in out
    assert "Every job reached a final state" in out
    total_line = next(line for line in out.splitlines() if line.startswith("total"))
    assert total_line.split()[1] == "300"

    counts = await _states_by_kind(database_url, empty_schema)
    assert sum(counts.values()) == 300
    assert {state for _, state in counts} <= {"completed", "cancelled", "discarded"}
    # The story the demo tells: a cancelled export, declined cards discarded,
    # scheduled reports run, snoozed syncs finished.
    assert counts[("export_archive", "cancelled")] == 1
    assert counts[("charge_card", "discarded")] >= 1
    assert counts[("generate_report", "completed")] == 3
    assert counts[("sync_inventory", "completed")] >= 2


async def test_the_demo_can_run_again_from_a_clean_schema(
    database_url: str, empty_schema: str
) -> None:
    for _ in range(2):
        result = await invoke(
            "demo", "--jobs", "40", "--database-url", database_url, "--schema", empty_schema
        )
        assert result.exit_code == 0, result.output
    counts = await _states_by_kind(database_url, empty_schema)
    assert sum(counts.values()) == 40
