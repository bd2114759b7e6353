"""OpenTelemetry's SDK wired to in-memory exporters, and readers of what they caught."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import rivertrio.otel


@dataclass
class Telemetry:
    """Providers whose spans and metrics are kept in memory."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader

    @classmethod
    def new(cls) -> Telemetry:
        spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
        reader = InMemoryMetricReader()
        return cls(tracer_provider, MeterProvider(metric_readers=[reader]), spans, reader)

    def middleware(self, **options: Any) -> rivertrio.otel.OpenTelemetryMiddleware:
        return rivertrio.otel.OpenTelemetryMiddleware(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **options
        )

    def finished(self, name: str | None = None) -> list[ReadableSpan]:
        spans = list(self.spans.get_finished_spans())
        return [s for s in spans if name is None or s.name == name]

    def metrics(self) -> dict[str, Metric]:
        """Every metric collected now, by name."""
        data: MetricsData | None = self.reader.get_metrics_data()
        found: dict[str, Metric] = {}
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points = [Point(dict(p.attributes or {}), p) for p in metric.data.data_points]
                    found[metric.name] = Metric(metric.name, metric.unit or "", points)
        return found


@dataclass
class Point:
    attributes: dict[str, Any]
    raw: Any

    @property
    def value(self) -> Any:
        """A sum's or a gauge's value, or a histogram's count."""
        return getattr(self.raw, "value", None) if hasattr(self.raw, "value") else self.raw.count


@dataclass
class Metric:
    name: str
    unit: str
    points: list[Point]

    def only(self) -> Point:
        (point,) = self.points
        return point
