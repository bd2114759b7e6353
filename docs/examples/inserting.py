"""Inserting: options, class defaults, many at once, and the COPY fast path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import trio

import rivertrio


# --8<-- [start:opts]
@dataclass
class GenerateInvoice(rivertrio.JobArgs, kind="generate_invoice"):
    order_id: int

    # Defaults for every insert of this kind; insert-time options win field by field.
    insert_opts: ClassVar[rivertrio.InsertOpts] = rivertrio.InsertOpts(
        queue="billing", max_attempts=5
    )


# --8<-- [end:opts]


async def main(database_url: str | None = None, schema: str | None = None) -> dict[str, object]:
    """Insert in the three ways; return what was stored."""
    # --8<-- [start:insert]
    # A Config without queues is an insert-only client: it inserts and manages
    # jobs, and works none (any kind may be inserted).
    config = rivertrio.Config(schema=schema)
    async with rivertrio.open_client(config, database_url=database_url) as client:
        one = await client.insert(
            GenerateInvoice(order_id=1),
            rivertrio.InsertOpts(priority=2, tags=["europe"], metadata={"customer": 42}),
        )
        print(one.job.queue, one.job.priority, one.job.max_attempts)  # billing 2 5

        # One statement for many jobs; all or none. Each item is args or (args, opts).
        many = await client.insert_many(
            [
                GenerateInvoice(order_id=2),
                (GenerateInvoice(order_id=3), rivertrio.InsertOpts(queue="urgent")),
            ]
        )

        # COPY: the fastest way to insert thousands; returns only a count.
        count = await client.insert_many_fast([GenerateInvoice(order_id=n) for n in range(1000)])
    # --8<-- [end:insert]
    return {
        "one": (one.job.queue, one.job.priority, one.job.max_attempts, one.job.tags),
        "many": [r.job.queue for r in many],
        "count": count,
    }


if __name__ == "__main__":
    print(trio.run(main))
