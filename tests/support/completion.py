"""Helpers for the completer and subscription tests: running rows, outcomes, a faulty driver."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypedDict, TypeVar

import trio

from rivertrio._completer import Completer, CompletionItem
from rivertrio._driver import Driver
from rivertrio._driver._sql import JOB_COLUMNS
from rivertrio._events import Event, EventKind, Outcome, OutcomeKind
from rivertrio._exceptions import DatabaseConnectionError
from rivertrio._job import JobRow
from rivertrio._service import Service
from rivertrio._subscriptions import SubscriptionManager

T = TypeVar("T")

ALL_KINDS = tuple(EventKind)


class _Fast(TypedDict):
    flush_interval: float
    retry_backoff: float
    final_flush_timeout: float


# Fast settings for tests: batches go out almost at once and retries barely wait.
FAST: _Fast = {"flush_interval": 0.005, "retry_backoff": 0.001, "final_flush_timeout": 5.0}

_INSERT_RUNNING = f"""
INSERT INTO /*schema*/river_job (
    args, kind, max_attempts, queue, state, attempt, attempted_at, attempted_by, metadata)
SELECT '{{}}'::jsonb, 'test_job', $1, 'default', 'running', $2, now(), ARRAY['test-client'],
    $3::jsonb
FROM generate_series(1, $4)
RETURNING {JOB_COLUMNS}
"""


async def insert_running(
    driver: Driver,
    count: int = 1,
    *,
    max_attempts: int = 25,
    attempt: int = 1,
    metadata: dict[str, Any] | None = None,
) -> list[JobRow]:
    """Insert ``count`` rows as a fetch leaves them: running, attempted now, attempt 1."""
    records = await driver.fetch(
        _INSERT_RUNNING, max_attempts, attempt, json.dumps(metadata or {}), count
    )
    return sorted((JobRow.from_record(r) for r in records), key=lambda r: r.id)


def outcome(
    row: JobRow,
    kind: OutcomeKind,
    *,
    delay: float | None = None,
    error: str | None = None,
    queue_wait: float = 0.5,
    run: float = 0.25,
) -> Outcome:
    """An outcome as a job task makes it, finished now."""
    if kind is OutcomeKind.FAILED and error is None:
        error = json.dumps({"attempt": row.attempt, "error": "boom", "trace": ""})
    return Outcome(
        job=row,
        kind=kind,
        error=error,
        delay=delay,
        queue_wait_duration=queue_wait,
        run_duration=run,
        finished_at=trio.current_time(),
    )


async def states(driver: Driver, ids: list[int]) -> dict[int, str]:
    """The stored state of each row that still exists."""
    rows = await driver.fetch(
        "SELECT id, state::text FROM /*schema*/river_job WHERE id = any($1::bigint[])", ids
    )
    return {r["id"]: r["state"] for r in rows}


class FaultyDriver:
    """A real driver that fails or holds its next calls, for fault injection.

    Each call sets ``entered``. While ``gate`` is set, a call waits for it first;
    then ``fail_next`` calls raise `DatabaseConnectionError` without reaching Postgres.
    """

    def __init__(self, inner: Driver) -> None:
        self.inner = inner
        self.fail_next = 0
        self.calls = 0
        self.gate: trio.Event | None = None
        self.entered = trio.Event()

    @property
    def configured_schema(self) -> str | None:
        """The wrapped driver's schema."""
        return self.inner.configured_schema

    async def run(self, fn: Callable[..., Coroutine[Any, Any, T]], /, *args: Any) -> T:
        """Fail, hold, or run ``fn`` on the real driver."""
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next > 0:
            self.fail_next -= 1
            await trio.lowlevel.checkpoint()
            raise DatabaseConnectionError("cannot reach Postgres at test: injected failure")
        return await self.inner.run(fn, *args)


async def drain_output(
    source: trio.MemoryReceiveChannel[Sequence[Event]], into: list[Sequence[Event]]
) -> None:
    """Read a completer's output until it closes, as the subscription manager would."""
    async for batch in source:
        into.append(batch)  # noqa: PERF401 -- visible as it arrives, not only at the end


async def read_all(events: trio.MemoryReceiveChannel[Event], into: list[Event]) -> None:
    """Read a subscription until its channel closes."""
    async for event in events:
        into.append(event)  # noqa: PERF401 -- visible as it arrives, not only at the end


class Pipeline(Service):
    """A completer and a subscription manager wired as the client wires them.

    Stopping it closes the completer's original input; it has stopped once both have.
    """

    def __init__(self, completer: Completer, manager: SubscriptionManager) -> None:
        super().__init__()
        self.completer = completer
        self.manager = manager

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.completer.run)
            self.manager.attach(self.completer.output)
            await nursery.start(self.manager.run)
            task_status.started()
            try:
                await self._stop_event.wait()
            finally:
                self.completer.stop()


def send_all(
    channel: trio.MemorySendChannel[CompletionItem], items: Sequence[CompletionItem]
) -> None:
    """Send every item without a checkpoint, so they reach the completer as one backlog."""
    for item in items:
        channel.send_nowait(item)
