"""Snoozing and cancelling from inside a worker."""

from __future__ import annotations

from dataclasses import dataclass

import trio

import rivertrio


@dataclass
class PollExport(rivertrio.JobArgs, kind="poll_export"):
    export_id: int


@dataclass
class ChargeCard(rivertrio.JobArgs, kind="charge_card"):
    order_id: int
    card_expired: bool = False


workers = rivertrio.Workers()


# --8<-- [start:snooze]
@workers.register(PollExport)
async def poll_export(job: rivertrio.Job[PollExport]) -> None:
    if job.metadata.get("snoozes", 0) < 2:
        # Not ready yet: run again in 0.1 s. A snooze uses no attempt;
        # metadata["snoozes"] counts them.
        raise rivertrio.JobSnooze(0.1)
    print(f"export {job.args.export_id} is ready")


# --8<-- [end:snooze]


# --8<-- [start:cancel]
@workers.register(ChargeCard)
async def charge_card(job: rivertrio.Job[ChargeCard]) -> None:
    if job.args.card_expired:
        # Retrying cannot help: cancel for good (recorded in job.errors).
        raise rivertrio.JobCancel("the card has expired")
    ...


# --8<-- [end:cancel]


async def main(database_url: str | None = None, schema: str | None = None) -> dict[str, object]:
    """Run one snoozing and one cancelled job; return their final rows' key facts."""
    config = rivertrio.Config(
        queues={"default": rivertrio.QueueConfig(max_workers=5)},
        workers=workers,
        schema=schema,
        fetch_poll_interval=0.1,
    )
    final: dict[str, object] = {}
    async with (
        rivertrio.open_client(config, database_url=database_url) as client,
        client.subscribe(
            rivertrio.EventKind.JOB_COMPLETED, rivertrio.EventKind.JOB_CANCELLED
        ) as events,
    ):
        await client.insert(PollExport(export_id=1))
        await client.insert(ChargeCard(order_id=9, card_expired=True))
        async for event in events:
            assert event.job is not None
            final[event.job.kind] = (
                event.job.state,
                event.job.attempt,
                event.job.metadata.get("snoozes"),
            )
            if len(final) == 2:
                break
    return final


if __name__ == "__main__":
    print(trio.run(main))
