"""`rivertrio.otel`: otelriver's spans and metrics, checked with the SDK's in-memory exporters.

Job runs go through the real executor (`work_job`), inserts through the
inserter's chain; the cross-client trace and the queue gauges are in
tests/db/test_otel_client.py.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import trio
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

import rivertrio
from rivertrio import JobInsertParams
from rivertrio._driver._insert import JobToInsert
from rivertrio._middleware import Extensions
from rivertrio._prepare import prepare_job
from rivertrio.otel import METADATA_TRACE_CONTEXT
from rivertrio.testing import work_job
from support.otel import Telemetry

pytestmark = pytest.mark.timeout(60)


@dataclass
class Ping(rivertrio.JobArgs, kind="ping"):
    what: str = "ok"


class Panic(BaseException):
    """Neither an Exception nor a cancellation: otelriver's "panic"."""


def worker(behave: Callable[[], Awaitable[None]] | None = None) -> Any:
    async def work(job: rivertrio.Job[Ping]) -> None:
        if behave is not None:
            await behave()

    return work


def prepared(**opts: Any) -> JobToInsert:
    return prepare_job(Ping(), rivertrio.InsertOpts(**opts), rivertrio.Config(), datetime.now(UTC))


async def insert(
    ext: Extensions, jobs: list[JobToInsert], fail: BaseException | None = None
) -> list[JobToInsert]:
    got: list[JobToInsert] = []

    async def inner(checked: list[JobToInsert]) -> list[rivertrio.InsertResult]:
        await trio.lowlevel.checkpoint()
        if fail is not None:
            raise fail
        got.extend(checked)
        return []

    await ext.insert([Ping()] * len(jobs), jobs, inner, returns_rows=False)
    return got


# -- inserts --


async def test_insert_many_span_and_metrics() -> None:
    tel = Telemetry.new()
    ext = Extensions([tel.middleware()])
    await insert(ext, [prepared(), prepared(), prepared()])
    (span,) = tel.finished()
    assert span.name == "river.insert_many"
    assert span.kind is SpanKind.PRODUCER
    assert span.status.status_code is StatusCode.OK
    assert dict(span.attributes or {}) == {"status": "ok"}
    metrics = tel.metrics()
    assert metrics["river.insert_count"].only().value == 3
    assert metrics["river.insert_count"].unit == "{job}"
    assert metrics["river.insert_many_count"].only().value == 1
    assert metrics["river.insert_many_count"].unit == "{job_batch}"
    for name in ("river.insert_many_duration", "river.insert_many_duration_histogram"):
        point = metrics[name].only()
        assert metrics[name].unit == "s"
        assert point.attributes == {"status": "ok"}
    assert metrics["river.insert_many_duration_histogram"].only().value == 1
    assert 0 <= metrics["river.insert_many_duration"].only().value < 5


@pytest.mark.parametrize(
    ("failure", "status", "description"),
    [(RuntimeError("db down"), "error", "db down"), (Panic(), "panic", "panic")],
)
async def test_insert_many_error_and_panic(
    failure: BaseException, status: str, description: str
) -> None:
    tel = Telemetry.new()
    with pytest.raises(type(failure)):
        await insert(Extensions([tel.middleware()]), [prepared()], fail=failure)
    (span,) = tel.finished()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == description
    assert dict(span.attributes or {}) == {"status": status}
    assert tel.metrics()["river.insert_count"].only().attributes == {"status": status}


async def test_the_inserting_span_context_goes_into_each_jobs_metadata() -> None:
    tel = Telemetry.new()
    got = await insert(Extensions([tel.middleware()]), [prepared(metadata={"mine": 1})] * 2)
    (span,) = tel.finished()
    expected = f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-"
    for job in got:
        metadata = json.loads(job.metadata)
        assert metadata["mine"] == 1
        assert metadata[METADATA_TRACE_CONTEXT]["traceparent"].startswith(expected)

    tel = Telemetry.new()
    got = await insert(Extensions([tel.middleware(propagate_context=False)]), [prepared()])
    assert json.loads(got[0].metadata) == {}


# -- work --


async def test_work_span_and_metrics() -> None:
    tel = Telemetry.new()
    config = rivertrio.Config(middleware=[tel.middleware()])
    opts = rivertrio.InsertOpts(queue="mail", priority=2, tags=["vip", "eu-west"])
    result = await work_job(worker(), Ping(), opts=opts, config=config)
    assert result.kind == "completed"
    (span,) = tel.finished()
    job = result.job
    assert span.name == "river.work/ping"
    assert span.kind is SpanKind.CONSUMER
    assert span.status.status_code is StatusCode.OK
    attrs = dict(span.attributes or {})
    assert attrs == {
        "attempt": 1,
        "kind": "ping",
        "priority": 2,
        "queue": "mail",
        "status": "ok",
        "tag": ("vip", "eu-west"),
        "id": job.id,
        "created_at": job.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "scheduled_at": job.scheduled_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    metrics = tel.metrics()
    expected = {k: attrs[k] for k in ("attempt", "kind", "priority", "queue", "status", "tag")}
    assert metrics["river.work_count"].only().value == 1
    assert metrics["river.work_count"].only().attributes == expected
    assert metrics["river.work_duration"].unit == "s"
    assert metrics["river.work_duration"].only().attributes == expected
    assert metrics["river.work_duration_histogram"].only().value == 1
    assert "messaging.client.consumed.messages" not in metrics


async def test_the_work_span_is_current_while_the_job_runs_and_its_metrics() -> None:
    tel = Telemetry.new()
    tracer = tel.tracer_provider.get_tracer("app")
    seen: list[trace.Span] = []

    async def child() -> None:
        seen.append(trace.get_current_span())
        with tracer.start_as_current_span("send"):
            pass

    config = rivertrio.Config(middleware=[tel.middleware()])
    await work_job(worker(child), Ping(), config=config)
    assert not trace.get_current_span().get_span_context().is_valid  # restored after the run
    (working,) = tel.finished("river.work/ping")
    (sent,) = tel.finished("send")
    assert seen[0].get_span_context().span_id == working.context.span_id
    assert sent.parent is not None and sent.parent.span_id == working.context.span_id
    # The measurements were taken while the work span was current: their exemplars point at it.
    metrics = tel.metrics()  # (once: a collection takes the exemplars)
    for name in ("river.work_count", "river.work_duration_histogram"):
        (exemplar,) = metrics[name].only().raw.exemplars
        assert exemplar.span_id == working.context.span_id, name


async def test_each_job_gets_its_own_times_on_its_span() -> None:
    tel = Telemetry.new()
    config = rivertrio.Config(middleware=[tel.middleware()])
    past = datetime(2024, 5, 6, 7, 8, 9, 500, tzinfo=UTC)
    times = [past, past, past + timedelta(seconds=1), past.astimezone(timezone(timedelta(hours=2)))]
    for at in times:
        await work_job(worker(), Ping(), opts=rivertrio.InsertOpts(scheduled_at=at), config=config)
    texts = [dict(s.attributes or {})["scheduled_at"] for s in tel.finished()]
    expected = ["2024-05-06T07:08:09Z"] * 2 + ["2024-05-06T07:08:10Z", "2024-05-06T07:08:09Z"]
    assert texts == expected


async def boom() -> None:
    raise ValueError("boom")


async def snooze() -> None:
    raise rivertrio.JobSnooze(5)


async def cancel() -> None:
    raise rivertrio.JobCancel("gone")


async def panic() -> None:
    raise Panic()


@pytest.mark.parametrize(
    ("behave", "status", "extra"),
    [
        (boom, "error", {}),
        (snooze, "error", {"snooze": True}),
        (cancel, "error", {"cancel": True}),
        (panic, "panic", {}),
    ],
)
async def test_work_status_of_each_outcome(
    behave: Callable[[], Awaitable[None]], status: str, extra: dict[str, Any]
) -> None:
    tel = Telemetry.new()
    await work_job(worker(behave), Ping(), config=rivertrio.Config(middleware=[tel.middleware()]))
    (span,) = tel.finished()
    assert span.status.status_code is StatusCode.ERROR
    attrs = dict(span.attributes or {})
    assert attrs["status"] == status
    for key, value in extra.items():
        assert attrs[key] == value
    point = tel.metrics()["river.work_count"].only()
    assert point.attributes["status"] == status
    assert {k: point.attributes[k] for k in extra} == extra


async def test_a_timeout_is_an_error_and_the_span_records_it() -> None:
    tel = Telemetry.new()
    config = rivertrio.Config(middleware=[tel.middleware()], job_timeout=0.05)
    result = await work_job(worker(trio.sleep_forever), Ping(), config=config)
    assert result.kind == "failed"
    (span,) = tel.finished()
    assert dict(span.attributes or {})["status"] == "error"
    assert [e.name for e in span.events] == ["exception"]


async def test_duration_unit_ms_and_semantic_metrics() -> None:
    tel = Telemetry.new()
    mw = tel.middleware(duration_unit="ms", enable_semantic_metrics=True)
    await work_job(worker(), Ping(), config=rivertrio.Config(middleware=[mw]))
    await insert(Extensions([mw]), [prepared(), prepared()])
    metrics = tel.metrics()
    for name in (
        "river.work_duration",
        "river.work_duration_histogram",
        "river.insert_many_duration",
        "river.insert_many_duration_histogram",
        "messaging.client.operation.duration",
        "messaging.process.duration",
    ):
        assert metrics[name].unit == "ms", name
    semantic = {"messaging.operation.name": "work", "messaging.system": "river"}
    assert metrics["messaging.client.consumed.messages"].only().attributes == semantic
    sent = metrics["messaging.client.sent.messages"].only()
    assert sent.value == 2 and sent.attributes["messaging.operation.name"] == "insert_many"
    with pytest.raises(rivertrio.ConfigError, match="duration_unit"):
        tel.middleware(duration_unit="us")


# -- the trace through the job --


async def test_the_work_span_continues_the_inserting_trace() -> None:
    tel = Telemetry.new()
    tracer = tel.tracer_provider.get_tracer("app")
    ext = Extensions([tel.middleware()])
    with tracer.start_as_current_span("request") as request:
        (job,) = await insert(ext, [prepared()])
    metadata = json.loads(job.metadata)
    config = rivertrio.Config(middleware=[tel.middleware()])
    await work_job(worker(), Ping(), opts=rivertrio.InsertOpts(metadata=metadata), config=config)
    (inserting,) = tel.finished("river.insert_many")
    (working,) = tel.finished("river.work/ping")
    trace_id = request.get_span_context().trace_id
    assert inserting.context.trace_id == working.context.trace_id == trace_id
    assert working.parent is not None and working.parent.span_id == inserting.context.span_id
    assert working.links == ()


async def test_a_work_span_with_its_own_parent_links_to_the_inserting_span() -> None:
    tel = Telemetry.new()
    tracer = tel.tracer_provider.get_tracer("app")
    (job,) = await insert(Extensions([tel.middleware()]), [prepared()])
    config = rivertrio.Config(middleware=[tel.middleware()])
    opts = rivertrio.InsertOpts(metadata=json.loads(job.metadata))
    with tracer.start_as_current_span("worker process") as ambient:
        await work_job(worker(), Ping(), opts=opts, config=config)
    (inserting,) = tel.finished("river.insert_many")
    (working,) = tel.finished("river.work/ping")
    assert working.parent is not None
    assert working.parent.span_id == ambient.get_span_context().span_id
    (link,) = working.links
    assert link.context.span_id == inserting.context.span_id
    assert link.context.trace_id == inserting.context.trace_id


async def test_a_job_without_a_trace_context_starts_a_new_trace() -> None:
    tel = Telemetry.new()
    opts = rivertrio.InsertOpts(metadata={METADATA_TRACE_CONTEXT: {"traceparent": "garbage"}})
    await work_job(
        worker(), Ping(), opts=opts, config=rivertrio.Config(middleware=[tel.middleware()])
    )
    (working,) = tel.finished()
    assert working.parent is None and working.links == ()


def test_queue_gauges_report_what_the_leader_measured() -> None:
    tel = Telemetry.new()
    mw = tel.middleware(duration_unit="ms")
    assert "river.queue_depth" not in tel.metrics()
    mw.observe_queues(
        [rivertrio.QueueStats("default", 12, 3.5), rivertrio.QueueStats("mail", 0, 0.0)]
    )
    metrics = tel.metrics()
    depth = {p.attributes["queue"]: p.value for p in metrics["river.queue_depth"].points}
    lag = {p.attributes["queue"]: p.value for p in metrics["river.queue_lag"].points}
    assert depth == {"default": 12, "mail": 0}
    assert lag == {"default": 3500.0, "mail": 0.0}
    assert metrics["river.queue_lag"].unit == "ms"
    mw.observe_queues([])  # leadership lost: nothing reported
    gone = tel.metrics().get("river.queue_depth")
    assert gone is None or gone.points == []


def test_params_type_is_exported() -> None:
    assert rivertrio.JobInsertParams is JobInsertParams


async def test_a_cancelled_run_ends_its_span_as_an_error_and_is_not_swallowed() -> None:
    tel = Telemetry.new()
    started = trio.Event()

    async def hang() -> None:
        started.set()
        await trio.sleep_forever()

    config = rivertrio.Config(middleware=[tel.middleware()])
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: work_job(worker(hang), Ping(), config=config))
            await started.wait()
            scope.cancel()
    assert scope.cancelled_caught
    (span,) = tel.finished()
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["status"] == "error"
    assert span.events == ()  # a cancellation is no exception to record
    assert tel.metrics()["river.work_count"].only().attributes["status"] == "error"
