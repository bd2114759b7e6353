"""Rate limits: at most 5 job starts per second, across every client."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import trio

import rivertrio


@dataclass
class CallPartnerApi(rivertrio.JobArgs, kind="call_partner_api"):
    request: int


async def main(database_url: str | None = None, schema: str | None = None) -> dict[str, object]:
    """Start 10 jobs under a limit of 5 per second; return the most started in any second."""
    started: list[datetime] = []
    workers = rivertrio.Workers()

    @workers.register(CallPartnerApi)
    async def call(job: rivertrio.Job[CallPartnerApi]) -> None:
        assert job.attempted_at is not None
        started.append(job.attempted_at)  # when the flow fetch started it

    # --8<-- [start:config]
    config = rivertrio.Config(
        queues={"partner_api": rivertrio.QueueConfig(max_workers=10)},
        workers=workers,
        flow={
            # The partner allows 5 calls a second: any second, whatever the clients.
            "partner_api": rivertrio.FlowControl(rate=rivertrio.RateLimit(limit=5, period=1.0))
        },
        schema=schema,
    )
    # --8<-- [end:config]
    async with (
        rivertrio.open_client(config, database_url=database_url) as client,
        client.subscribe(rivertrio.EventKind.JOB_COMPLETED) as events,
    ):
        await client.insert_many(
            [
                (CallPartnerApi(request=i), rivertrio.InsertOpts(queue="partner_api"))
                for i in range(10)
            ]
        )
        done = 0
        async for _ in events:
            done += 1
            if done == 10:
                break
    started.sort()
    most = max(
        sum(1 for later in started[i:] if (later - first).total_seconds() < 1.0)
        for i, first in enumerate(started)
    )
    return {"started": len(started), "most_in_a_second": most}


if __name__ == "__main__":
    print(trio.run(main))
