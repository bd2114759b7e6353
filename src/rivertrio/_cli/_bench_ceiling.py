"""``rivertrio bench --ceiling``: the database's own ceiling.

The fetch and complete statements the client uses, run back to back on one
connection with no per-job Python work: how fast the database itself works
the burn-down's jobs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .._driver import Driver
from .._driver._completer import complete_jobs
from .._driver._producer import fetch_jobs
from ._bench_common import BenchResult, peak_rss_mb
from ._common import CliError

__all__ = ["measure_ceiling"]


async def _fetch_and_complete(
    conn: Any, schema: str | None, queue: str, limit: int, client_id: str
) -> int:
    """Asyncio side: one fetch of up to `limit` jobs, then one complete of them."""
    rows = await fetch_jobs(conn, schema, queue, limit, client_id)
    if not rows:
        return 0
    ids = [r["id"] for r in rows]
    k = len(ids)
    await complete_jobs(conn, schema, ids, ["completed"] * k, [None] * k, [None] * k, [None] * k)
    return k


async def measure_ceiling(
    driver: Driver, queue: str, n: int, batch: int, advance: Callable[[int], None]
) -> BenchResult:
    """Work the queue's `n` jobs, `batch` at a time, and time it."""
    done = 0
    async with driver.connection() as conn:
        started = time.monotonic()
        while True:
            k = await conn.run(
                _fetch_and_complete, driver.configured_schema, queue, batch, "bench_ceiling"
            )
            if not k:
                break
            done += k
            advance(k)
        seconds = time.monotonic() - started
    if done != n:
        raise CliError(f"ceiling: worked {done} jobs, expected {n}")
    return BenchResult("ceiling", n, seconds, peak_rss_mb(), {"batch": batch})
