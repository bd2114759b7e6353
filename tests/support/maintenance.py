"""Helpers for the leadership and maintenance tests: raw rows and driver wrappers."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from rivertrio._driver import Driver
from rivertrio._maintenance import Maintainer
from rivertrio._maintenance._base import IntervalService


async def make_job(
    driver: Driver,
    *,
    state: str = "available",
    queue: str = "default",
    kind: str = "noop",
    args: dict[str, Any] | None = None,
    attempt: int = 0,
    max_attempts: int = 25,
    scheduled_in: float = 0.0,
    attempted_ago: float | None = None,
    attempted_by: list[str] | None = None,
    finalized_ago: float | None = None,
    metadata: dict[str, Any] | None = None,
    unique_key: bytes | None = None,
    unique_states: int | None = None,
) -> int:
    """Insert one job row as given, with times relative to the database clock; returns its id."""
    if finalized_ago is None and state in ("completed", "cancelled", "discarded"):
        finalized_ago = 0.0
    return int(
        await driver.fetchval(
            """
            INSERT INTO /*schema*/river_job (
                state, queue, kind, args, attempt, max_attempts, scheduled_at, attempted_at,
                attempted_by, finalized_at, metadata, unique_key, unique_states)
            VALUES (
                $1::text::/*schema*/river_job_state, $2, $3, $4::jsonb, $5, $6,
                now() + make_interval(secs => $7),
                now() - make_interval(secs => $8::float8),
                $9, now() - make_interval(secs => $10::float8), $11::jsonb, $12,
                CASE WHEN $13::int IS NULL THEN NULL ELSE $13::int::bit(8) END)
            RETURNING id
            """,
            state,
            queue,
            kind,
            json.dumps(args or {}),
            attempt,
            max_attempts,
            scheduled_in,
            attempted_ago,
            attempted_by,
            finalized_ago,
            json.dumps(metadata or {}),
            unique_key,
            unique_states,
        )
    )


async def job_state(driver: Driver, job_id: int) -> str | None:
    """The job's state, or None if it is gone."""
    value = await driver.fetchval(
        "SELECT state::text FROM /*schema*/river_job WHERE id = $1", job_id
    )
    return None if value is None else str(value)


class HookedDriver:
    """The real driver, with an awaitable hook run before each call of one driver function.

    Used to interleave a concurrent change between two statements of a
    service (for example between the rescuer's select and its update).
    """

    def __init__(self, driver: Driver, target: object, hook: Callable[[], Awaitable[None]]) -> None:
        self._driver = driver
        self._target = target
        self._hook = hook
        self.hooked = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._driver, name)

    async def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if fn is self._target:
            self.hooked += 1
            await self._hook()
        return await self._driver.run(fn, *args, **kwargs)


async def first_passes_done(maintainer: Maintainer, passes: int = 1) -> None:
    """Wait until every interval service of the maintainer has finished `passes` passes.

    Cancelling a pass while the pool is still opening its connection can leave
    an asyncio future with an unretrieved error, which trio-asyncio's default
    handler raises into the driver's loop (a driver issue, reported); letting
    the first passes end keeps these tests about the maintainer.
    """
    for service in maintainer.services:
        if isinstance(service, IntervalService):
            await service.passes.wait_for(passes)
