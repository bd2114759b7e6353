"""Middleware and hooks: stamp every insert with its tenant, time every job, gate one kind."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar

import trio

import rivertrio

# The tenant of the request being served (set by your web framework).
current_tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="none")


# --8<-- [start:middleware]
class TenantMiddleware(rivertrio.Middleware):
    """Carries the request's tenant into every job it inserts, and back while it runs."""

    async def insert_many(
        self,
        params: list[rivertrio.JobInsertParams],
        call_next: Callable[[], Awaitable[list[rivertrio.InsertResult]]],
    ) -> list[rivertrio.InsertResult]:
        for job in params:
            job.metadata["tenant"] = current_tenant.get()
        return await call_next()

    async def work(self, job: rivertrio.JobRow, call_next: Callable[[], Awaitable[None]]) -> None:
        token = current_tenant.set(job.metadata.get("tenant", "none"))
        try:
            await call_next()
        finally:
            current_tenant.reset(token)


class TimingMiddleware(rivertrio.Middleware):
    """Times each run, whatever its outcome."""

    def __init__(self) -> None:
        self.timings: list[tuple[str, float]] = []

    async def work(self, job: rivertrio.JobRow, call_next: Callable[[], Awaitable[None]]) -> None:
        started = time.perf_counter()
        try:
            await call_next()
        finally:
            self.timings.append((job.kind, time.perf_counter() - started))


# --8<-- [end:middleware]


# --8<-- [start:hooks]
class Maintenance(rivertrio.Hook):
    """Refuses to run payouts while the ledger is closed: they fail and are retried."""

    ledger_open = False

    async def work_begin(self, job: rivertrio.JobRow) -> None:
        if not self.ledger_open:
            raise RuntimeError("the ledger is closed for maintenance")


@dataclass
class Payout(rivertrio.JobArgs, kind="payout"):
    hooks: ClassVar[list[rivertrio.Hook]] = [Maintenance()]  # payouts only
    amount: int


# --8<-- [end:hooks]


@dataclass
class Welcome(rivertrio.JobArgs, kind="welcome"):
    email: str


async def main(database_url: str | None = None, schema: str | None = None) -> dict[str, object]:
    """Insert a welcome and a payout for a tenant; return what the jobs saw and became."""
    tenants_seen: list[str] = []
    workers = rivertrio.Workers()

    @workers.register(Welcome)
    async def welcome(job: rivertrio.Job[Welcome]) -> None:
        tenants_seen.append(current_tenant.get())

    @workers.register(Payout)
    async def payout(job: rivertrio.Job[Payout]) -> None:
        tenants_seen.append(current_tenant.get())

    timing = TimingMiddleware()
    # --8<-- [start:config]
    config = rivertrio.Config(
        queues={"default": rivertrio.QueueConfig(max_workers=5)},
        workers=workers,
        middleware=[TenantMiddleware(), timing],  # the first is outermost
        schema=schema,
    )
    # --8<-- [end:config]
    async with (
        rivertrio.open_client(config, database_url=database_url) as client,
        client.subscribe(
            rivertrio.EventKind.JOB_COMPLETED, rivertrio.EventKind.JOB_FAILED
        ) as events,
    ):
        token = current_tenant.set("acme")
        try:
            await client.insert(Welcome(email="ann@example.com"))
            payout_job = (await client.insert(Payout(amount=100))).job
        finally:
            current_tenant.reset(token)
        kinds: dict[str, str] = {}
        with trio.fail_after(30):
            async for event in events:
                assert event.job is not None
                kinds[event.job.kind] = str(event.kind)
                if len(kinds) == 2:
                    break
        stored = await client.job_get(payout_job.id)
    return {
        "tenants": sorted(tenants_seen),
        "outcomes": kinds,
        "payout_error": stored.errors[0].error,
        "timed": sorted({kind for kind, _ in timing.timings}),
    }


if __name__ == "__main__":
    print(trio.run(main))
