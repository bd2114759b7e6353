"""Observability: OpenTelemetry spans and metrics under River's names, one trace from the
request to the job, and worker logs tagged with their job and kept with it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import rivertrio
import rivertrio.otel

log = logging.getLogger("shop.invoices")


@dataclass
class SendInvoice(rivertrio.JobArgs, kind="send_invoice"):
    order_id: int


async def send_invoice(job: rivertrio.Job[SendInvoice]) -> None:
    log.info("rendering the invoice of order %d", job.args.order_id)
    log.info("sent")


async def main(database_url: str | None = None, schema: str | None = None) -> dict[str, object]:
    """Enqueue inside a request span, work the job; return what telemetry and logs caught."""
    # --8<-- [start:otel]
    # Your SDK setup; in production export with BatchSpanProcessor(OTLPSpanExporter()) and a
    # PeriodicExportingMetricReader. Without tracer_provider/meter_provider, the
    # middleware uses the global ones.
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    metrics = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[metrics])

    telemetry = rivertrio.otel.OpenTelemetryMiddleware(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        duration_unit="s",  # or "ms", as otelriver offers
    )
    # --8<-- [end:otel]

    # --8<-- [start:logging]
    # Every record a worker emits carries its job: add the filter to your handler.
    handler = logging.StreamHandler()
    handler.addFilter(rivertrio.JobContextFilter())
    handler.setFormatter(
        logging.Formatter("%(levelname)s [job %(job_id)s %(job_kind)s] %(name)s: %(message)s")
    )
    log.addHandler(handler)
    log.setLevel(logging.INFO)

    # And kept with the job, one entry per attempt under "river:log" (River's riverlog).
    job_logs = rivertrio.JobLogMiddleware(formatter=logging.Formatter("%(levelname)s %(message)s"))
    # --8<-- [end:logging]

    workers = rivertrio.Workers()
    workers.register(SendInvoice)(send_invoice)
    # --8<-- [start:config]
    config = rivertrio.Config(
        queues={"default": rivertrio.QueueConfig(max_workers=5)},
        workers=workers,
        middleware=[telemetry, job_logs],
        schema=schema,
    )
    # --8<-- [end:config]
    tracer = tracer_provider.get_tracer("shop.web")
    try:
        async with (
            rivertrio.open_client(config, database_url=database_url) as client,
            client.subscribe(rivertrio.EventKind.JOB_COMPLETED) as events,
        ):
            with tracer.start_as_current_span("POST /checkout"):
                await client.insert(SendInvoice(order_id=42))
            with trio.fail_after(30):
                event = await events.receive()
    finally:
        log.removeHandler(handler)
    assert event.job is not None
    names = {span.name: span for span in spans.get_finished_spans()}
    one_trace = len({span.context.trace_id for span in names.values()}) == 1
    data = metrics.get_metrics_data()
    assert data is not None
    collected = [m.name for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics]
    return {
        "spans": sorted(names),
        "one_trace": one_trace,
        "metrics": sorted(n for n in collected if n.startswith("river.work")),
        "log": event.job.metadata["river:log"],
    }


if __name__ == "__main__":
    print(trio.run(main))
