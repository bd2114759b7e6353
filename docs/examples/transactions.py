"""Transactional inserts: a job commits (and is notified) with your own writes, or not at all."""

from __future__ import annotations

from dataclasses import dataclass

import trio

import rivertrio


@dataclass
class ShipOrder(rivertrio.JobArgs, kind="ship_order"):
    order_id: int


class OutOfStock(Exception):
    pass


async def main(database_url: str | None = None, schema: str | None = None) -> dict[str, int]:
    """Place one order that commits and one that rolls back; count orders and jobs."""
    orders = f'"{schema}".orders' if schema else "orders"
    jobs = f'"{schema}".river_job' if schema else "river_job"
    config = rivertrio.Config(schema=schema)
    async with rivertrio.open_client(config, database_url=database_url) as client:
        async with client.transaction() as tx:
            await tx.execute(f"CREATE TABLE IF NOT EXISTS {orders} (id bigint PRIMARY KEY)")

        # --8<-- [start:tx]
        async with client.transaction() as tx:
            await tx.execute(f"INSERT INTO {orders} (id) VALUES ($1)", 1)
            await client.insert_tx(tx, ShipOrder(order_id=1))
        # Committed: the order row and its job exist together.

        try:
            async with client.transaction() as tx:
                await tx.execute(f"INSERT INTO {orders} (id) VALUES ($1)", 2)
                await client.insert_tx(tx, ShipOrder(order_id=2))
                raise OutOfStock("order 2")
        except OutOfStock:
            pass
        # Rolled back: neither the order nor its job exists; no worker ever saw it.
        # --8<-- [end:tx]

        async with client.transaction() as tx:
            n_orders = await tx.fetchval(f"SELECT count(*) FROM {orders}")
            n_jobs = await tx.fetchval(f"SELECT count(*) FROM {jobs} WHERE kind = 'ship_order'")
    return {"orders": n_orders, "jobs": n_jobs}


if __name__ == "__main__":
    print(trio.run(main))
