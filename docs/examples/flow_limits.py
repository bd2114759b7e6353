"""Flow control: a global concurrency limit and one running export per customer."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

import trio

import rivertrio


@dataclass
class Export(rivertrio.JobArgs, kind="export"):
    customer_id: int


# --8<-- [start:rules]
# Give the same rules to every client that inserts into or works the queue.
FLOW = {
    "exports": rivertrio.FlowControl(
        concurrency=3,  # at most 3 exports running at once, across every process
        partition_by=rivertrio.FlowKey(args=["customer_id"]),
        partition_concurrency=1,  # and at most 1 per customer
    )
}
# --8<-- [end:rules]


async def main(database_url: str | None = None, schema: str | None = None) -> dict[str, object]:
    """Work 12 exports of 4 customers in two clients; return what ran at once."""
    running: Counter[int] = Counter()
    most = {"all": 0, "per_customer": 0}
    workers = rivertrio.Workers()

    @workers.register(Export)
    async def export(job: rivertrio.Job[Export]) -> None:
        running[job.args.customer_id] += 1
        most["all"] = max(most["all"], running.total())
        most["per_customer"] = max(most["per_customer"], running[job.args.customer_id])
        await trio.sleep(0.02)  # the export itself
        running[job.args.customer_id] -= 1

    # --8<-- [start:config]
    config = rivertrio.Config(
        queues={"exports": rivertrio.QueueConfig(max_workers=10)},
        workers=workers,
        flow=FLOW,
        schema=schema,
    )
    # --8<-- [end:config]
    all_done = trio.Event()
    done = 0

    async def count(
        client: rivertrio.Client, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        nonlocal done
        async with client.subscribe(rivertrio.EventKind.JOB_COMPLETED) as events:
            task_status.started()
            async for _ in events:
                done += 1
                if done == 12:
                    all_done.set()

    # Two clients, as two processes would be: the limits hold across both.
    async with (
        rivertrio.open_client(
            dataclasses.replace(config, id="exports-a"), database_url=database_url
        ) as other,
        rivertrio.open_client(
            dataclasses.replace(config, id="exports-b"), database_url=database_url
        ) as client,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(count, other)
        await nursery.start(count, client)
        # --8<-- [start:insert]
        await client.insert_many(
            [(Export(customer_id=i % 4), rivertrio.InsertOpts(queue="exports")) for i in range(12)]
        )
        # --8<-- [end:insert]
        await all_done.wait()
        nursery.cancel_scope.cancel()
    return {"within_limits": most["all"] <= 3 and most["per_customer"] == 1}


if __name__ == "__main__":
    print(trio.run(main))
