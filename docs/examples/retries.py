"""Retries: a custom retry policy, a worker's next_retry, an error handler, discarding."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import trio

import rivertrio


@dataclass
class CallPartner(rivertrio.JobArgs, kind="call_partner"):
    partner: str


class PartnerGone(Exception):
    """The partner's API says this resource no longer exists."""


# --8<-- [start:policy]
def quick_retries(job: rivertrio.JobRow) -> float:
    """Seconds after the failed attempt: 0.1, 0.2, 0.3, ... (the default is n**4)."""
    return 0.1 * (len(job.errors) + 1)


async def cancel_when_gone(
    job: rivertrio.JobRow, error: BaseException
) -> rivertrio.ErrorHandlerResult | None:
    """Called on every failure; cancelling stops the retries."""
    if isinstance(error, PartnerGone):
        return rivertrio.ErrorHandlerResult(set_cancelled=True)
    return None  # the retry policy applies


# --8<-- [end:policy]


# --8<-- [start:worker]
class CallPartnerWorker(rivertrio.Worker[CallPartner]):
    async def work(self, job: rivertrio.Job[CallPartner]) -> None:
        if job.args.partner == "gone":
            raise PartnerGone(job.args.partner)
        if job.args.partner == "flaky" and job.attempt < 3:
            raise ConnectionError("partner timed out")
        if job.args.partner == "down":
            raise ConnectionError("partner is down")

    def next_retry(self, job: rivertrio.Job[CallPartner]) -> datetime | None:
        # A worker may pick the retry time itself; None = use the retry policy.
        if job.args.partner == "flaky":
            return datetime.now(UTC) + timedelta(seconds=0.05)
        return None


# --8<-- [end:worker]


async def main(database_url: str | None = None, schema: str | None = None) -> dict[str, object]:
    """Run one flaky, one gone and one down partner call; return each one's final state."""
    workers = rivertrio.Workers()
    workers.add(CallPartnerWorker())
    # --8<-- [start:config]
    config = rivertrio.Config(
        queues={"default": rivertrio.QueueConfig(max_workers=5)},
        workers=workers,
        retry_policy=quick_retries,
        error_handler=cancel_when_gone,
        max_attempts=3,  # the default is 25; a job out of attempts is discarded
        fetch_poll_interval=0.1,
        schema=schema,
    )
    # --8<-- [end:config]
    final: dict[str, object] = {}
    finished = {
        rivertrio.JobState.COMPLETED,
        rivertrio.JobState.CANCELLED,
        rivertrio.JobState.DISCARDED,
    }
    async with (
        rivertrio.open_client(config, database_url=database_url) as client,
        client.subscribe(*rivertrio.EventKind) as events,
    ):
        for partner in ("flaky", "gone", "down"):
            await client.insert(CallPartner(partner=partner))
        async for event in events:
            job = event.job
            if job is None:
                continue
            if job.state in finished:
                partner = json.loads(job.encoded_args)["partner"]
                final[partner] = (job.state, job.attempt, len(job.errors))
            if len(final) == 3:
                break
    return final


if __name__ == "__main__":
    print(trio.run(main))
