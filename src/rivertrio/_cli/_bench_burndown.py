"""``rivertrio bench``'s burn-down: no-op jobs worked by worker processes.

The jobs are worked by P worker processes with ``--workers`` slots each (run
by a supervisor, as ``rivertrio worker --processes`` runs them); the time from
starting the clients to the last outcome being persisted gives jobs/s. Each
process is ``rivertrio bench-child``: it says "ready", starts its client on
"go", and reports its peak RSS as it exits.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import click
import trio

from .._args import Job
from .._client import open_client
from .._config import Config, QueueConfig
from .._driver import Driver, open_driver
from .._supervisor import Supervisor, stop_requests
from .._worker import Workers
from ..embedded import DATABASE_URL_ENV
from ._bench_common import BenchResult, NoopArgs, flow_rules, peak_rss_mb
from ._common import CliError, run_trio
from ._tuning import tune_worker_process

__all__ = ["OTEL_ENV", "bench_child", "burndown"]

_DONE_POLL = 0.01
_PROGRESS_POLL = 0.5
_CHILD_START_TIMEOUT = 60.0

#: Set (to "1") by ``bench --otel`` for its worker processes.
OTEL_ENV = "RIVERTRIO_BENCH_OTEL"


def _noop_workers() -> Workers:
    workers = Workers()

    @workers.register(NoopArgs)
    async def noop(job: Job[NoopArgs]) -> None:
        pass

    return workers


async def _remaining(driver: Driver, queue: str) -> int:
    return int(
        await driver.fetchval(
            "SELECT count(*) FROM /*schema*/river_job "
            "WHERE queue = $1 AND state IN ('available', 'running', 'pending')",
            queue,
        )
    )


async def _any_remaining(driver: Driver, queue: str) -> bool:
    return bool(
        await driver.fetchval(
            "SELECT EXISTS (SELECT 1 FROM /*schema*/river_job "
            "WHERE state IN ('available', 'running', 'pending') AND queue = $1)",
            queue,
        )
    )


class _Lines:
    """Reads a child process's stdout line by line."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def readline(self) -> str:
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some()
            if not chunk:
                raise EOFError
            self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        return line.decode()


@dataclass
class _Child:
    process: trio.Process
    lines: _Lines


@asynccontextmanager
async def _children(
    url: str, schema: str, queue: str, workers: int, processes: int, flow_limit: int | None
) -> AsyncIterator[tuple[Supervisor, list[_Child]]]:
    """Start worker processes and wait until each is ready (clients not started yet).

    They run under a `Supervisor`, as ``rivertrio worker --processes`` runs its
    processes; none is restarted (a bench child that dies fails the bench).
    """
    command = [
        sys.executable,
        "-m",
        "rivertrio",
        "bench-child",
        "--schema",
        schema,
        "--queue",
        queue,
        "--workers",
        str(workers),
        *(() if flow_limit is None else ("--flow-limit", str(flow_limit))),
    ]
    # The URL travels in the environment: a password on a command line is
    # visible to every user of the host.
    supervisor = Supervisor(
        command,
        processes=processes,
        env={**os.environ, DATABASE_URL_ENV: url},
        restart=False,
        pipes=True,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        children = []
        for process in supervisor.children:
            assert process.stdout is not None
            children.append(_Child(process, _Lines(process.stdout)))
        with trio.fail_after(_CHILD_START_TIMEOUT):
            for child in children:
                try:
                    line = await child.lines.readline()
                except EOFError:
                    line = ""
                if line != "ready":
                    code = await child.process.wait()
                    raise CliError(f"a bench worker process failed to start (exit status {code})")
        yield supervisor, children
        nursery.cancel_scope.cancel()


async def burndown(
    url: str,
    schema: str,
    queue: str,
    n: int,
    workers: int,
    processes: int,
    advance: Callable[[int], None],
    flow_limit: int | None = None,
) -> BenchResult:
    """Work the queue's `n` jobs with `processes` worker processes, and time it."""
    async with (
        open_driver(url, schema=schema, max_size=1) as watcher,
        _children(url, schema, queue, workers, processes, flow_limit) as (supervisor, children),
    ):
        started = time.monotonic()
        for child in children:
            assert child.process.stdin is not None
            await child.process.stdin.send_all(b"go\n")
        next_count = started + _PROGRESS_POLL
        last_remaining = n
        while await _any_remaining(watcher, queue):
            if supervisor.stopping:
                # A child died (its supervisor stops the rest): its jobs would
                # wait here forever.
                codes = [c.process.returncode for c in children]
                raise CliError(f"a bench worker process ended unexpectedly (exit statuses {codes})")
            if time.monotonic() >= next_count:
                remaining = await _remaining(watcher, queue)
                advance(last_remaining - remaining)
                last_remaining = remaining
                next_count = time.monotonic() + _PROGRESS_POLL
            await trio.sleep(_DONE_POLL)
        seconds = time.monotonic() - started
        advance(last_remaining)
        supervisor.stop()  # a soft stop: each child reports, then exits
        rss = 0.0
        for child in children:
            report = json.loads(await child.lines.readline())
            rss = max(rss, float(report["peak_rss_mb"]))
            if await child.process.wait() != 0:
                raise CliError(f"a bench worker process exited with {child.process.returncode}")
    extra: dict[str, Any] = {"workers": workers, "processes": processes}
    if flow_limit is not None:
        extra["flow_limit"] = flow_limit
    mode = "burndown" if flow_limit is None else "burndown_flow"
    return BenchResult(mode, n, seconds, rss, extra)


# --- a worker process -------------------------------------------------------


def _bench_middleware() -> list[Any]:
    """With ``--otel``: the OpenTelemetry middleware on the SDK, spans batched to an
    exporter that drops them and metrics aggregated in memory: all the cost but the wire."""
    if os.environ.get(OTEL_ENV) != "1":
        return []
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from ..otel import OpenTelemetryMiddleware

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Drop()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return [OpenTelemetryMiddleware(tracer_provider=tracer_provider, meter_provider=meter_provider)]


async def _child_main(
    url: str, schema: str, queue: str, workers: int, flow_limit: int | None
) -> None:
    config = Config(
        schema=schema,
        queues={queue: QueueConfig(max_workers=workers)},
        workers=_noop_workers(),
        middleware=_bench_middleware(),
        flow=flow_rules(queue, flow_limit),
    )
    # As `rivertrio worker` sets its process up.
    tune_worker_process()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    async with stop_requests() as requests:
        if (await trio.to_thread.run_sync(sys.stdin.readline)).strip() != "go":
            return
        async with open_client(config, database_url=url):
            await requests.receive()  # a soft stop on leaving the block
    sys.stdout.write(json.dumps({"peak_rss_mb": peak_rss_mb()}) + "\n")
    sys.stdout.flush()


@click.command("bench-child", hidden=True)
@click.option("--database-url", envvar=DATABASE_URL_ENV, required=True)
@click.option("--schema", required=True)
@click.option("--queue", required=True)
@click.option("--workers", type=int, required=True)
@click.option("--flow-limit", type=int, default=None)
def bench_child(
    database_url: str, schema: str, queue: str, workers: int, flow_limit: int | None
) -> None:
    """A burn-down worker process: "ready", then works from "go" on stdin until SIGTERM."""
    run_trio(_child_main, database_url, schema, queue, workers, flow_limit)
