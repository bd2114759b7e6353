"""`rivertrio.otel` across clients and on the leader: one trace from the request that
enqueued a job to the job's run, and the queue gauges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import trio
from opentelemetry.context import Context

import rivertrio
from rivertrio._driver import Driver
from rivertrio._maintenance import QueueMeasurer
from rivertrio.otel import METADATA_TRACE_CONTEXT
from support.common import Noop, config, events_until, row, running
from support.otel import Telemetry

pytestmark = pytest.mark.timeout(60)


async def test_the_inserting_request_and_the_jobs_run_share_one_trace(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    tel = Telemetry.new()
    tracer = tel.tracer_provider.get_tracer("web")
    web = rivertrio.Config(schema=migrated_schema, middleware=[tel.middleware()])
    worker = config(migrated_schema, middleware=[tel.middleware()])
    async with (
        running(worker, database_url) as working,
        working.subscribe(rivertrio.EventKind.JOB_COMPLETED) as events,
    ):
        # Another client, insert-only (a web process), enqueues inside a request.
        async with running(web, database_url) as inserting:
            with tracer.start_as_current_span("POST /signup") as request:
                res = await inserting.insert(Noop(n=1))
        (event,) = await events_until(events, 1)
    assert event.job is not None and event.job.id == res.job.id
    stored = await row(driver, res.job.id)
    assert "traceparent" in stored.metadata[METADATA_TRACE_CONTEXT]

    (inserting_span,) = tel.finished("river.insert_many")
    (working_span,) = tel.finished("river.work/noop")
    (request_span,) = tel.finished("POST /signup")
    trace_id = request.get_span_context().trace_id
    assert {s.context.trace_id for s in (request_span, inserting_span, working_span)} == {trace_id}
    assert inserting_span.parent is not None
    assert inserting_span.parent.span_id == request_span.context.span_id
    assert working_span.parent is not None
    assert working_span.parent.span_id == inserting_span.context.span_id
    assert dict(working_span.attributes or {})["id"] == res.job.id


async def test_a_worker_running_inside_a_span_links_to_the_inserting_span(
    database_url: str, migrated_schema: str
) -> None:
    tel = Telemetry.new()
    tracer = tel.tracer_provider.get_tracer("app")
    web = rivertrio.Config(schema=migrated_schema, middleware=[tel.middleware()])
    worker = config(migrated_schema, middleware=[tel.middleware()])
    # The worker process runs its client inside a span of its own: its jobs' tasks
    # start in that context, so their work spans have a parent already.
    with tracer.start_as_current_span("worker process") as process:
        async with (
            running(worker, database_url) as working,
            working.subscribe(rivertrio.EventKind.JOB_COMPLETED) as events,
        ):
            async with running(web, database_url) as inserting:
                # Another process's request: a trace of its own.
                with tracer.start_as_current_span("POST /signup", context=Context()):
                    await inserting.insert(Noop(n=2))
            await events_until(events, 1)
    (inserting_span,) = tel.finished("river.insert_many")
    (working_span,) = tel.finished("river.work/noop")
    assert working_span.parent is not None
    assert working_span.parent.span_id == process.get_span_context().span_id
    assert working_span.context.trace_id != inserting_span.context.trace_id
    (link,) = working_span.links
    assert link.context.trace_id == inserting_span.context.trace_id
    assert link.context.span_id == inserting_span.context.span_id


async def test_the_leader_reports_queue_depth_and_lag(
    database_url: str, migrated_schema: str
) -> None:
    tel = Telemetry.new()
    mw = tel.middleware(queue_stats_interval=3600)
    cfg = config(migrated_schema, middleware=[mw])
    long_ago = datetime.now(UTC) - timedelta(seconds=90)
    async with running(cfg, database_url) as client:
        # A queue nobody works: its jobs wait.
        await client.insert_many(
            [
                (Noop(), rivertrio.InsertOpts(queue="backlog", scheduled_at=long_ago)),
                (Noop(), rivertrio.InsertOpts(queue="backlog")),
                (Noop(), rivertrio.InsertOpts(queue="backlog", pending=True)),
            ]
        )
        measurer = client._tree.maintainer.service(QueueMeasurer)
        with trio.fail_after(20):
            # The first pass may have run before the insert: wait for one after it.
            passes = measurer.passes.value
            measurer.wake()
            await measurer.passes.wait_for(passes + 1)
        metrics = tel.metrics()
        depth = {p.attributes["queue"]: p.value for p in metrics["river.queue_depth"].points}
        lag = {p.attributes["queue"]: p.value for p in metrics["river.queue_lag"].points}
        # The default queue is worked (its row exists) and empty: reported as 0.
        assert depth == {"backlog": 2, "default": 0}
        assert 85 <= lag["backlog"] < 600
        assert lag["default"] == 0
        assert metrics["river.queue_lag"].unit == "s"
    # No longer leading (stopped): nothing reported any more.
    gone = tel.metrics().get("river.queue_depth")
    assert gone is None or gone.points == []
