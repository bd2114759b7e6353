"""``rivertrio bench --latency``: how long a job waits to start, and to be done.

Jobs are inserted at a fixed rate by one client and worked by another (woken
through LISTEN/NOTIFY, as across processes); the result gives insert-to-start
and insert-to-persisted-completion percentiles. The inserts start on time
whatever the ones before them are doing (open loop).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from .._args import InsertOpts, Job, JobArgs
from .._client import open_client
from .._config import Config, QueueConfig
from .._events import EventKind
from .._worker import Workers
from ._bench_common import BenchResult, peak_rss_mb, percentile

__all__ = ["measure_latency"]

_LATENCY_WARMUP = 20


@dataclass
class LatencyArgs(JobArgs, kind="bench_latency"):
    """Carries its insert time (``time.monotonic()``) so the worker can measure its start."""

    t: float


async def measure_latency(
    url: str,
    schema: str,
    queue: str,
    rate: float,
    duration: float,
    workers: int,
    fetch_cooldown: float,
    advance: Callable[[int], None],
) -> BenchResult:
    """Insert at `rate` jobs/s for `duration` s; percentiles of start and completion."""
    starts: dict[int, float] = {}
    completions: dict[int, float] = {}
    total = max(1, round(rate * duration))
    measured: set[int] = set()
    all_done = trio.Event()
    wanted = total + _LATENCY_WARMUP
    latency_workers = Workers()

    @latency_workers.register(LatencyArgs)
    async def record_start(job: Job[LatencyArgs]) -> None:
        starts[job.id] = time.monotonic() - job.args.t

    worker_config = Config(
        schema=schema,
        queues={queue: QueueConfig(max_workers=workers)},
        workers=latency_workers,
        fetch_cooldown=fetch_cooldown,
        fetch_poll_interval=max(1.0, fetch_cooldown),
    )
    # A second, insert-only client: its inserts reach the worker through
    # LISTEN/NOTIFY, as they would from another process.
    insert_config = Config(schema=schema, fetch_cooldown=fetch_cooldown)
    opts = InsertOpts(queue=queue)
    async with (
        open_client(worker_config, database_url=url) as worker_client,
        open_client(insert_config, database_url=url) as inserter,
        worker_client.subscribe(EventKind.JOB_COMPLETED, buffer=10_000) as events,
        trio.open_nursery() as nursery,
    ):

        async def collect() -> None:
            async for event in events:
                assert event.job is not None
                t = json.loads(event.job.encoded_args)["t"]
                completions[event.job.id] = time.monotonic() - t
                if len(completions) >= wanted:
                    all_done.set()

        nursery.start_soon(collect)
        for _ in range(_LATENCY_WARMUP):
            await inserter.insert(LatencyArgs(t=time.monotonic()), opts)

        async def send() -> None:
            result = await inserter.insert(LatencyArgs(t=time.monotonic()), opts)
            measured.add(result.job.id)
            advance(1)

        started = time.monotonic()
        t0 = trio.current_time()
        # Open loop: each insert starts on time, whether or not the ones before
        # it have returned (one after the other, the rate could never exceed one
        # per insert round trip). Concurrent inserts share statements.
        async with trio.open_nursery() as senders:
            for i in range(total):
                await trio.sleep_until(t0 + i / rate)
                senders.start_soon(send)
        seconds = time.monotonic() - started
        with trio.move_on_after(max(30.0, duration)):
            await all_done.wait()
        nursery.cancel_scope.cancel()
    start_ms = [starts[i] * 1000 for i in measured if i in starts]
    done_ms = [completions[i] * 1000 for i in measured if i in completions]
    extra: dict[str, Any] = {
        "rate": rate,
        "fetch_cooldown": fetch_cooldown,
        "workers": workers,
        "missing": total - len(done_ms),
    }
    for name, values in (("start", start_ms), ("complete", done_ms)):
        for q in (50, 95, 99):
            extra[f"{name}_p{q}_ms"] = round(percentile(values, q), 3)
        extra[f"{name}_max_ms"] = round(max(values, default=math.nan), 3)
    return BenchResult("latency", total, seconds, peak_rss_mb(), extra)
