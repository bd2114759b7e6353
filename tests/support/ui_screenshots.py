"""The dashboard screenshots of the docs (docs/img/dashboard-*.png): a script, not a test.

    RIVERTRIO_DATABASE_URL=postgresql://... python tests/support/ui_screenshots.py

Fills a schema of its own (``rivertrio_ui_demo``, dropped first) with an hour
of finished jobs, then runs a real client for half a minute: workers that
send mail, resize images and sync a CRM, some failing with real tracebacks,
a slow report that is still running, a periodic job. It then serves the
dashboard and photographs the overview, a failed jobs list and a failed
job's page in chromium (support.ui_browser, in a process of its own:
Playwright's asyncio loop must not meet trio-asyncio).
"""

from __future__ import annotations

import functools
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import trio

import rivertrio
from rivertrio.ui import create_app, serve

SCHEMA = "rivertrio_ui_demo"
TESTS = Path(__file__).resolve().parents[1]
IMAGES = TESTS.parent / "docs" / "img"

# An hour of history, minute by minute: a daily rhythm's slope, a failure now and then.
HISTORY = """
WITH finished AS (
    SELECT q.queue, q.kind, q.fail, n,
        date_trunc('minute', now()) - make_interval(mins => 60 - m)
            + random() * interval '59 seconds' AS at
    FROM (VALUES ('email', 'send_email', 90, 0.02), ('default', 'resize_image', 140, 0.004),
                 ('default', 'sync_crm', 40, 0.03), ('reports', 'monthly_report', 2, 0.0))
        AS q(queue, kind, rate, fail),
    generate_series(1, 60) AS m,
    LATERAL generate_series(
        1, (q.rate * (0.75 + 0.25 * sin(m / 7.0)) * (0.8 + 0.4 * random()))::int) AS n
)
INSERT INTO /*schema*/river_job (state, attempt, max_attempts, attempted_at, attempted_by,
    created_at, finalized_at, scheduled_at, kind, queue, args, errors)
SELECT
    (CASE WHEN failed THEN 'discarded' ELSE 'completed' END)::/*schema*/river_job_state,
    1, 1, at - interval '1 second', ARRAY['web-' || (n % 3 + 1) || '_01JDEMO'],
    at - interval '2 seconds', at, at - interval '2 seconds', kind, queue,
    CASE kind
        WHEN 'send_email' THEN jsonb_build_object('to', 'user' || n || '@example.com',
            'template', 'receipt')
        WHEN 'resize_image' THEN
            jsonb_build_object('image_id', 9000 + n, 'sizes', '[64, 256]'::jsonb)
        WHEN 'sync_crm' THEN jsonb_build_object('account_id', 300 + n)
        ELSE jsonb_build_object('month', '2026-10')
    END,
    CASE WHEN failed THEN ARRAY[jsonb_build_object('at', at, 'attempt', 1,
        'error', CASE kind WHEN 'sync_crm' THEN 'ConnectionError: crm.example.com:443: timed out'
            ELSE 'TimeoutError: worker timed out after 60 s' END,
        'trace', 'Traceback (most recent call last): ...')] END
FROM (SELECT *, random() < fail AS failed FROM finished WHERE at < now()) AS rows
ORDER BY at
"""


@dataclass
class SendEmail(rivertrio.JobArgs, kind="send_email"):
    to: str
    template: str


@dataclass
class ResizeImage(rivertrio.JobArgs, kind="resize_image"):
    image_id: int
    sizes: list[int]


@dataclass
class SyncCrm(rivertrio.JobArgs, kind="sync_crm"):
    account_id: int


@dataclass
class MonthlyReport(rivertrio.JobArgs, kind="monthly_report"):
    month: str


@dataclass
class PruneSessions(rivertrio.JobArgs, kind="prune_sessions"):
    pass


@dataclass
class ChargeCard(rivertrio.JobArgs, kind="charge_card"):
    invoice: str


class SmtpRefused(Exception):
    pass


def demo_workers() -> rivertrio.Workers:
    workers = rivertrio.Workers()

    @workers.register(SendEmail)
    async def send_email(job: rivertrio.Job[SendEmail]) -> None:
        await trio.sleep(random.uniform(0.01, 0.05))
        if job.args.to.endswith("@bounce.example"):
            raise SmtpRefused(
                f"550 5.1.1 <{job.args.to}>: recipient address rejected: user unknown"
            )

    @workers.register(ResizeImage)
    async def resize_image(job: rivertrio.Job[ResizeImage]) -> None:
        await trio.sleep(random.uniform(0.01, 0.03))

    @workers.register(SyncCrm)
    async def sync_crm(job: rivertrio.Job[SyncCrm]) -> None:
        await trio.sleep(0.02)
        if job.args.account_id % 17 == 0:
            raise ConnectionError("crm.example.com:443: connection reset by peer")

    @workers.register(MonthlyReport)
    async def monthly_report(job: rivertrio.Job[MonthlyReport]) -> None:
        await trio.sleep(3600)

    @workers.register(PruneSessions)
    async def prune(job: rivertrio.Job[PruneSessions]) -> None:
        pass

    @workers.register(ChargeCard)
    async def charge_card(job: rivertrio.Job[ChargeCard]) -> None:
        pass

    return workers


async def traffic(client: rivertrio.Client, seconds: float) -> None:
    deadline = trio.current_time() + seconds
    n = 0
    await client.insert(MonthlyReport(month="2026-11"), rivertrio.InsertOpts(queue="reports"))
    while trio.current_time() < deadline:
        n += 1
        domain = "bounce.example" if n % 10 == 0 else "example.com"
        await client.insert_many(
            [
                (
                    SendEmail(to=f"user{n}@{domain}", template="welcome"),
                    rivertrio.InsertOpts(queue="email", max_attempts=3 if n % 10 == 0 else 25),
                ),
                (ResizeImage(image_id=n, sizes=[64, 256, 1024]), None),
                (ResizeImage(image_id=n + 1, sizes=[64, 256]), None),
                (SyncCrm(account_id=n), rivertrio.InsertOpts(max_attempts=1 if n % 3 else 25)),
            ]
        )
        # About the pace of the hour before, so that the last bar is like the others.
        await trio.sleep(0.8)


async def main(database_url: str) -> None:
    async with rivertrio.open_client(rivertrio.Config(), database_url=database_url) as admin:
        await admin.driver.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
        await admin.driver.execute(f'CREATE SCHEMA "{SCHEMA}"')
    await rivertrio.migrate(database_url, schema=SCHEMA)
    config = rivertrio.Config(
        schema=SCHEMA,
        queues={
            "default": rivertrio.QueueConfig(max_workers=20),
            "email": rivertrio.QueueConfig(max_workers=10),
            "reports": rivertrio.QueueConfig(max_workers=2),
            "billing": rivertrio.QueueConfig(max_workers=1),
        },
        workers=demo_workers(),
        periodic_jobs=[rivertrio.PeriodicJob(5, PruneSessions, run_on_start=True, id="prune")],
        # Failed jobs come back in 2 s: a bounced e-mail uses its three attempts in the run.
        retry_policy=lambda row: 2.0,
    )
    async with rivertrio.open_client(config, database_url=database_url) as client:
        await client.driver.execute(HISTORY)
        await client.queue_pause("billing")
        for n in range(7):
            await client.insert(
                ChargeCard(invoice=f"INV-{2041 + n}"), rivertrio.InsertOpts(queue="billing")
            )
        await traffic(client, 30)
        app = create_app(database_url=database_url, schema=SCHEMA)
        async with trio.open_nursery() as nursery:
            url = await nursery.start(functools.partial(serve, app, port=0))
            failed = await client.driver.fetchval(
                "SELECT id FROM /*schema*/river_job WHERE state = 'discarded' "
                "AND kind = 'send_email' ORDER BY cardinality(errors) DESC, id DESC LIMIT 1"
            )
            await trio.run_process(
                [
                    sys.executable,
                    "-m",
                    "support.ui_browser",
                    "--screenshots",
                    url,
                    str(failed),
                    str(IMAGES),
                ],
                cwd=TESTS,
                env={**os.environ, "PYTHONPATH": str(TESTS)},
                check=True,
            )
            nursery.cancel_scope.cancel()
        await client.stop_and_cancel()


if __name__ == "__main__":
    IMAGES.mkdir(exist_ok=True)
    database_url = os.environ.get("RIVERTRIO_DATABASE_URL")
    if not database_url:
        sys.exit("set RIVERTRIO_DATABASE_URL")
    trio.run(main, database_url)
