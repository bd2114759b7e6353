"""Sequences: each customer's webhooks, one at a time and in order, even through a retry."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import trio

import rivertrio


@dataclass
class Webhook(rivertrio.JobArgs, kind="stripe_webhook"):
    customer_id: str
    event: int


async def main(database_url: str | None = None, schema: str | None = None) -> dict[str, list[int]]:
    """Handle 6 webhooks of 2 customers, one failing once; return each customer's order."""
    handled: dict[str, list[int]] = defaultdict(list)
    workers = rivertrio.Workers()

    @workers.register(Webhook)
    async def handle(job: rivertrio.Job[Webhook]) -> None:
        if job.args.event == 2 and job.attempt == 1:
            raise RuntimeError("the ledger was busy")  # retried; event 3 waits for it
        handled[job.args.customer_id].append(job.args.event)

    # --8<-- [start:config]
    config = rivertrio.Config(
        queues={"webhooks": rivertrio.QueueConfig(max_workers=10)},
        workers=workers,
        flow={
            "webhooks": rivertrio.FlowControl(
                sequence_by=rivertrio.FlowKey(args=["customer_id"]),
                # A job discarded or cancelled holds its customer's line ("stop"),
                # or lets the next one run ("continue").
                sequence_on_failure="stop",
            )
        },
        retry_policy=lambda job: 0.1,
        schema=schema,
    )
    # --8<-- [end:config]
    async with (
        rivertrio.open_client(config, database_url=database_url) as client,
        client.subscribe(rivertrio.EventKind.JOB_COMPLETED) as events,
    ):
        # --8<-- [start:insert]
        await client.insert_many(
            [
                (Webhook(customer_id=customer, event=n), rivertrio.InsertOpts(queue="webhooks"))
                for n in (1, 2, 3)
                for customer in ("cus_a", "cus_b")
            ]
        )
        # --8<-- [end:insert]
        done = 0
        async for _ in events:
            done += 1
            if done == 6:
                break
    return dict(sorted(handled.items()))


if __name__ == "__main__":
    print(trio.run(main))
