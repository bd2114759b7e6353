"""Child process of test_complete_tx_crash: a worker that dies right after `job_complete_tx`.

Usage: python complete_tx_child.py URL SCHEMA CLIENT_ID

It starts a client (its id carries the liveness marker: fast rescue) working
the queue "ledger", and prints "ready". A `Pay` job writes its ledger row and
completes itself in one transaction, prints "committed <id>", then hangs, so its
outcome never reaches the completer; a `Hang` job prints "running <id>" and
hangs. The test SIGKILLs the process.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import trio

import rivertrio


@dataclass
class Pay(rivertrio.JobArgs, kind="pay"):
    amount: int = 0


@dataclass
class Hang(rivertrio.JobArgs, kind="hang"):
    pass


async def main(url: str, schema: str, client_id: str) -> None:
    workers = rivertrio.Workers()

    @workers.register(Pay)
    async def pay(job: rivertrio.Job[Pay]) -> None:
        client = rivertrio.current_client()
        async with client.transaction() as tx:
            await tx.execute(
                "INSERT INTO /*schema*/ledger (job_id, amount) VALUES ($1, $2)",
                job.id,
                job.args.amount,
            )
            await rivertrio.job_complete_tx(tx, job)
        print(f"committed {job.id}", flush=True)
        await trio.sleep_forever()

    @workers.register(Hang)
    async def hang(job: rivertrio.Job[Hang]) -> None:
        print(f"running {job.id}", flush=True)
        await trio.sleep_forever()

    cfg = rivertrio.Config(
        schema=schema,
        id=client_id,
        queues={"ledger": rivertrio.QueueConfig(max_workers=5)},
        workers=workers,
        job_timeout=None,
        fetch_poll_interval=0.1,
        fetch_cooldown=0.01,
    )
    async with rivertrio.open_client(cfg, database_url=url):
        print("ready", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3])
