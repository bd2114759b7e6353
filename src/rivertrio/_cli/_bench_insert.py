"""``rivertrio bench --insert``: what a single ``client.insert()`` costs.

N single inserts one after the other, then N from ``--concurrency`` tasks at
once: inserts/s, and this process's CPU time per insert
(`time.process_time`; exact with ``--json``, where no progress display runs).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import trio

from .._args import InsertOpts
from .._client import open_client
from .._config import Config
from ._bench_common import BenchResult, NoopArgs, peak_rss_mb

__all__ = ["insert_cost"]

_INSERT_WARMUP = 50
_ADVANCE_EVERY = 100  # inserts between progress updates: a display update costs CPU too


async def insert_cost(
    url: str,
    schema: str,
    queue: str,
    n: int,
    concurrency: int,
    window: float | None,
    advance: Callable[[int], None],
) -> list[BenchResult]:
    """`n` single inserts one after the other, then `n` from `concurrency` tasks at once.

    Each result gives inserts/s, and the microseconds of this process's CPU
    (`time.process_time`: user and system) and of wall time per insert.
    """
    config = Config(schema=schema)
    if window is not None:
        config = dataclasses.replace(config, insert_coalesce_window=window)
    opts = InsertOpts(queue=queue)
    results: list[BenchResult] = []
    async with open_client(config, database_url=url) as client:
        for _ in range(_INSERT_WARMUP):
            await client.insert(NoopArgs(), opts)

        async def inserts(count: int) -> None:
            for i in range(count):
                await client.insert(NoopArgs(), opts)
                if i % _ADVANCE_EVERY == _ADVANCE_EVERY - 1:
                    advance(_ADVANCE_EVERY)
            advance(count % _ADVANCE_EVERY)

        for tasks in (1, concurrency):
            shares = [n // tasks + (1 if k < n % tasks else 0) for k in range(tasks)]
            wall, cpu = time.perf_counter(), time.process_time()
            async with trio.open_nursery() as nursery:
                for share in shares:
                    nursery.start_soon(inserts, share)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            extra = {
                "concurrency": tasks,
                "coalesce_window": config.insert_coalesce_window,
                "cpu_us_per_insert": round(cpu / n * 1e6, 1),
                "wall_us_per_insert": round(wall / n * 1e6, 1),
            }
            results.append(BenchResult("insert", n, wall, peak_rss_mb(), extra))
    return results
