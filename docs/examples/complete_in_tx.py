"""Transactional completion: a worker's writes and its job's completion commit together."""

from __future__ import annotations

from dataclasses import dataclass

import trio

import rivertrio


@dataclass
class ChargeOrder(rivertrio.JobArgs, kind="charge_order"):
    order_id: int
    cents: int


# --8<-- [start:worker]
async def charge_order(job: rivertrio.Job[ChargeOrder]) -> None:
    client = rivertrio.current_client()
    async with client.transaction() as tx:
        await tx.execute(
            "INSERT INTO /*schema*/payments (order_id, cents) VALUES ($1, $2)",
            job.args.order_id,
            job.args.cents,
        )
        # Completed in the same transaction: the payment and the completion commit
        # together or not at all, so a crash can never charge twice.
        await rivertrio.job_complete_tx(tx, job)


# --8<-- [end:worker]


async def main(database_url: str | None = None, schema: str | None = None) -> dict[str, object]:
    """Charge one order; return its job's state and how many payments were written."""
    workers = rivertrio.Workers()
    workers.register(ChargeOrder)(charge_order)
    config = rivertrio.Config(
        queues={"default": rivertrio.QueueConfig(max_workers=2)}, workers=workers, schema=schema
    )
    async with (
        rivertrio.open_client(config, database_url=database_url) as client,
        client.subscribe(rivertrio.EventKind.JOB_COMPLETED) as events,
    ):
        async with client.transaction() as tx:
            await tx.execute(
                "CREATE TABLE IF NOT EXISTS /*schema*/payments (order_id bigint, cents int)"
            )
        inserted = await client.insert(ChargeOrder(order_id=1, cents=1999))
        with trio.fail_after(30):
            event = await events.receive()
        async with client.transaction() as tx:
            payments = await tx.fetchval("SELECT count(*) FROM /*schema*/payments")
    assert event.job is not None and event.job.id == inserted.job.id
    return {"state": str(event.job.state), "payments": payments}


if __name__ == "__main__":
    print(trio.run(main))
