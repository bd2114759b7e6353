"""How fast the dashboard answers on a large table: a benchmark script, not a test.

    RIVERTRIO_DATABASE_URL=postgresql://... python tests/support/ui_bench.py [--rows 1000000]

Fills a schema of its own (``rivertrio_ui_bench``, kept between runs and
refilled only when its row count differs) with jobs shaped like a busy day:
mostly completed, finished over the last 24 hours, a few percent failed,
cancelled, waiting or running, in four queues (one rare), ten kinds, and
periodic jobs among them. Then it serves the dashboard over HTTP on
127.0.0.1, times each page and API call, and prints the query plan of every
read behind them (EXPLAIN ANALYZE, as the dashboard runs it: custom plans).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

import httpx
import trio

import rivertrio
from rivertrio.ui import _filter, _overview, _queries, create_app, serve

SCHEMA = "rivertrio_ui_bench"

# A day of work, `g` from 1 to the row count, finished in order over the last
# 24 hours. The newest 1% is still waiting or running; otherwise 1 in 97
# failed for good, 1 in 193 was cancelled, 1 in 211 (recent ones) is being
# retried; a handful of old ones wait on a dependency (pending). Queue
# "billing" is rare and old; 1 in 1,440 jobs is a periodic one.
FILL = """
INSERT INTO /*schema*/river_job (state, attempt, max_attempts, attempted_at, created_at,
    finalized_at, scheduled_at, priority, args, attempted_by, errors, kind, metadata, queue, tags)
SELECT
    s.state::/*schema*/river_job_state,
    CASE WHEN s.state IN ('available', 'scheduled', 'pending') THEN 0 ELSE 1 END,
    25,
    CASE WHEN s.state IN ('available', 'scheduled', 'pending') THEN NULL
        ELSE t.at - interval '1 second' END,
    t.at - interval '2 seconds',
    CASE WHEN s.state IN ('completed', 'discarded', 'cancelled') THEN t.at END,
    CASE WHEN s.state = 'scheduled' THEN now() + interval '1 hour'
        ELSE t.at - interval '2 seconds' END,
    1,
    jsonb_build_object('customer_id', g % 50000, 'email', 'user' || (g % 100000) || '@example.com',
        'batch', g / 1000),
    CASE WHEN s.state IN ('available', 'scheduled', 'pending') THEN NULL
        ELSE ARRAY['worker' || (g % 4) || '_01JBENCH'] END,
    CASE WHEN s.state IN ('discarded', 'retryable') THEN ARRAY[jsonb_build_object(
        'at', t.at, 'attempt', 1, 'error', 'connection refused (job ' || g || ')',
        'trace', 'Traceback (most recent call last): ...')] END,
    (ARRAY['send_email', 'send_email', 'send_email', 'resize_image', 'resize_image',
        'sync_account', 'charge_card', 'report', 'cleanup', 'webhook'])[1 + g % 10],
    CASE WHEN g % 1440 = 0 THEN '{"periodic": true}'::jsonb ELSE '{}'::jsonb END,
    CASE WHEN g % 5000 = 17 AND g < $1::bigint * 0.3 THEN 'billing'
        ELSE (ARRAY['default', 'default', 'default', 'default', 'default', 'default',
            'email', 'email', 'email', 'reports'])[1 + (g / 7) % 10] END,
    '{}'
FROM generate_series(1, $1::bigint) AS g,
LATERAL (SELECT now() - interval '24 hours' + (g * (interval '24 hours' / $1::bigint)) AS at) AS t,
LATERAL (SELECT CASE
    WHEN g > $1::bigint * 0.99 AND g % 3 = 0 THEN 'available'
    WHEN g > $1::bigint * 0.99 AND g % 3 = 1 THEN 'scheduled'
    WHEN g > $1::bigint * 0.998 AND g % 7 = 0 THEN 'running'
    WHEN g % 97 = 0 THEN 'discarded'
    WHEN g % 193 = 0 THEN 'cancelled'
    WHEN g % 211 = 0 AND g > $1::bigint * 0.9 THEN 'retryable'
    WHEN g < 200 THEN 'pending'
    ELSE 'completed' END AS state) AS s
"""

# The pages timed, as an operator opens them.
PAGES = [
    ("overview", "/"),
    ("overview (API)", "/api/overview"),
    ("jobs, newest", "/jobs"),
    ("jobs, discarded", "/jobs?state=discarded"),
    ("jobs, discarded, deep page", "/jobs?state=discarded&before={deep}"),
    ("jobs, pending (rare state)", "/jobs?state=pending"),
    ("jobs, queue billing (rare)", "/jobs?queue=billing"),
    ("jobs, kind report + discarded", "/jobs?kind=report&state=discarded"),
    ("jobs, args value", "/jobs?q=user4242%40example.com"),
    ("jobs, args path", "/jobs?q=customer_id%3D4242"),
    ("jobs, args JSON + queue", "/jobs?q=%7B%22batch%22%3A500%7D&queue=email"),
    ("jobs (API), discarded", "/api/jobs?state=discarded"),
    ("job page", "/jobs/{job}"),
    ("periodic", "/periodic"),
]

# The list reads behind the pages, for their plans.
PLANS: list[tuple[str, _filter.Filter, str | None]] = [
    ("newest", _filter.Filter(), None),
    ("discarded", _filter.Filter.parse(states=["discarded"]), None),
    ("discarded, deep page", _filter.Filter.parse(states=["discarded"]), "deep"),
    ("pending", _filter.Filter.parse(states=["pending"]), None),
    ("queue billing", _filter.Filter.parse(queues=["billing"]), None),
    (
        "kind report + discarded",
        _filter.Filter.parse(kinds=["report"], states=["discarded"]),
        None,
    ),
    ("args value", _filter.Filter.parse(args="user4242@example.com"), None),
    ("args path", _filter.Filter.parse(args="customer_id=4242"), None),
    ("args JSON + queue", _filter.Filter.parse(args='{"batch": 500}', queues=["email"]), None),
]


async def fill(client: rivertrio.Client, rows: int) -> None:
    have = await client.driver.fetchval("SELECT count(*) FROM /*schema*/river_job")
    if have == rows:
        print(f"{SCHEMA}: {rows:,} jobs already there", file=sys.stderr)
        return
    print(f"{SCHEMA}: writing {rows:,} jobs ...", file=sys.stderr)
    started = time.perf_counter()
    await client.driver.execute("TRUNCATE /*schema*/river_job, /*schema*/river_queue")
    async with client.transaction() as tx:
        await tx.execute("SET LOCAL statement_timeout = 0")
        await tx.execute(FILL, rows)
        await tx.execute(
            "INSERT INTO /*schema*/river_queue (name, created_at, updated_at) "
            "SELECT DISTINCT queue, now(), now() FROM /*schema*/river_job"
        )
    await client.driver.execute("VACUUM ANALYZE /*schema*/river_job")
    print(f"  done in {time.perf_counter() - started:.0f} s", file=sys.stderr)


async def plans(client: rivertrio.Client, deep: int) -> None:
    print("\n## Query plans (EXPLAIN ANALYZE, BUFFERS)\n")
    reads = [
        ("overview: counts by queue and state", _overview._COUNTS, [_overview.COUNT_CAP]),
        ("overview: throughput per minute", _overview._THROUGHPUT, []),
        ("overview: clients seen recently", _overview._SEEN, []),
        ("jobs page: known kinds", _queries._KINDS, []),
    ]
    for name, filter, before in PLANS:
        sql, args = _queries.job_page_sql(filter, deep if before else None, _queries.PAGE_SIZE)
        reads.append((f"jobs page: {name}", sql, args))
    for name, sql, args in reads:
        async with _queries.reading(client) as tx:
            rows = await tx.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *args)
        print(f"### {name}\n\n```")
        print("\n".join(r[0] for r in rows))
        print("```\n")


async def timings(url: str, job: int, deep: int, repeat: int) -> None:
    print(f"\n## Response times over HTTP ({repeat} requests each, after 3 to warm up)\n")
    print("| page | median ms | p95 ms | max ms |")
    print("| --- | ---: | ---: | ---: |")
    async with httpx.AsyncClient(base_url=url.rstrip("/"), timeout=30) as http:
        for name, path in PAGES:
            path = path.format(job=job, deep=deep)
            times = []
            for i in range(repeat + 3):
                started = time.perf_counter()
                response = await http.get(path)
                took = (time.perf_counter() - started) * 1000
                response.raise_for_status()
                if i >= 3:
                    times.append(took)
            times.sort()
            p95 = times[min(len(times) - 1, round(len(times) * 0.95) - 1)]
            print(
                f"| {name} `{path}` | {statistics.median(times):.1f} | {p95:.1f} | "
                f"{times[-1]:.1f} |"
            )


async def main(database_url: str, rows: int, repeat: int) -> None:
    async with rivertrio.open_client(rivertrio.Config(), database_url=database_url) as admin:
        await admin.driver.execute(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"')
    await rivertrio.migrate(database_url, schema=SCHEMA)
    config = rivertrio.Config(schema=SCHEMA)
    async with rivertrio.open_client(config, database_url=database_url) as client:
        await fill(client, rows)
        job = await client.driver.fetchval(
            "SELECT max(id) FROM /*schema*/river_job WHERE state = 'discarded'"
        )
        # A page near the end of the failed list: keyset paging must not slow down there.
        deep = await client.driver.fetchval("SELECT min(id) + 5000 FROM /*schema*/river_job")
        app = create_app(database_url=database_url, schema=SCHEMA)
        async with trio.open_nursery() as nursery:
            url = await nursery.start(functools.partial(serve, app, port=0))
            async with httpx.AsyncClient(timeout=60) as http:
                # Counts past the cap come from a full count the first overview starts
                # in the background: wait for it, so that the timings are of the
                # steady state.
                (await http.get(url + "api/overview")).raise_for_status()
                await app.state.dashboard.counted.wait()
            await timings(url, job, deep, repeat)
            nursery.cancel_scope.cancel()
        await plans(client, deep)


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--database-url", default=os.environ.get("RIVERTRIO_DATABASE_URL"))
    options = parser.parse_args(argv)
    if not options.database_url:
        parser.error("set RIVERTRIO_DATABASE_URL or pass --database-url")
    trio.run(main, options.database_url, options.rows, options.repeat)


if __name__ == "__main__":
    cli()
