"""Periodic jobs: inserted on a schedule by the leader."""

from __future__ import annotations

from dataclasses import dataclass

import trio

import rivertrio


@dataclass
class PruneSessions(rivertrio.JobArgs, kind="prune_sessions"):
    pass


@dataclass
class DailyDigest(rivertrio.JobArgs, kind="daily_digest"):
    pass


async def main(
    database_url: str | None = None, schema: str | None = None
) -> tuple[bool, str, bool]:
    """Run a periodic job on start; return its periodic flag and id, and whether the
    other job could be removed by its id."""
    workers = rivertrio.Workers()

    @workers.register(PruneSessions)
    async def prune(job: rivertrio.Job[PruneSessions]) -> None:
        pass

    @workers.register(DailyDigest)
    async def digest(job: rivertrio.Job[DailyDigest]) -> None:
        pass

    # --8<-- [start:periodic]
    config = rivertrio.Config(
        queues={"default": rivertrio.QueueConfig(max_workers=10)},
        workers=workers,
        periodic_jobs=[
            # Every 15 minutes, and once at start.
            rivertrio.PeriodicJob(15 * 60, PruneSessions, run_on_start=True, id="prune"),
            # Cron syntax: every day at 07:00, Paris time (summer and winter).
            rivertrio.PeriodicJob("0 7 * * *", DailyDigest, id="digest", timezone="Europe/Paris"),
        ],
        schema=schema,
    )
    # --8<-- [end:periodic]
    async with (
        rivertrio.open_client(config, database_url=database_url) as client,
        client.subscribe(rivertrio.EventKind.JOB_COMPLETED) as events,
    ):
        event = await events.receive()
        assert event.job is not None
        # --8<-- [start:remove]
        # The inserted job names its periodic job, as River's do.
        periodic_id = event.job.metadata["river:periodic_job_id"]  # "prune"
        # Stop the digest while the client runs (False if no job has that id).
        removed = client.periodic_jobs.remove_by_id("digest")
        # --8<-- [end:remove]
        return bool(event.job.metadata.get("periodic")), periodic_id, removed


if __name__ == "__main__":
    print(trio.run(main))
