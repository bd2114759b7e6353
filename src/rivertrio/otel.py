"""OpenTelemetry for rivertrio: River's otelriver spans and metrics, plus trace propagation.

Install with ``pip install 'rivertrio[otel]'`` (the OpenTelemetry API; bring
your SDK and exporters), then::

    config = rivertrio.Config(..., middleware=[rivertrio.otel.OpenTelemetryMiddleware()])

The names are otelriver's, so dashboards built for River's Go clients read a
rivertrio client's telemetry unchanged:

- spans ``river.insert_many`` (PRODUCER) around each insert and
  ``river.work/<kind>`` (CONSUMER) around each run of a job;
- metrics ``river.insert_count``, ``river.insert_many_count``,
  ``river.insert_many_duration``, ``river.insert_many_duration_histogram``,
  ``river.work_count``, ``river.work_duration`` and
  ``river.work_duration_histogram``, with River's attributes (``status``:
  ``ok``, ``error``, or ``panic`` for an exception that is not an ``Exception``;
  on work: ``attempt``, ``kind``, ``priority``, ``queue``, ``tag``);
- with ``enable_semantic_metrics``, OpenTelemetry's messaging metrics too.

Beyond otelriver: the inserting span's context travels with the job, in its
metadata under ``"otel"`` (W3C ``traceparent`` through the configured
propagator), and the work span continues that trace (its parent, or a link
when the work span already has a parent of its own): a request that enqueued a
job and the job's run show in one trace. And the leader reports each queue's
depth (``river.queue_depth``, available jobs) and lag (``river.queue_lag``, how
long its oldest available job has been due) as gauges.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import trio

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, propagate, trace
    from opentelemetry.context import Context
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover (the extra is installed for the tests)
    raise ImportError(
        "rivertrio.otel needs the OpenTelemetry API: pip install 'rivertrio[otel]'"
    ) from exc

from ._exceptions import ConfigError, JobCancel, JobSnooze
from ._hooks import JobInsertParams, Middleware, QueueStats
from ._job import InsertResult, JobRow
from ._validate import duration

__all__ = ["METADATA_TRACE_CONTEXT", "OpenTelemetryMiddleware"]

#: The instrumentation scope's name.
NAME = "rivertrio.otel"
_PREFIX = "river."
#: The metadata key holding the inserting span's context (a propagator's carrier).
METADATA_TRACE_CONTEXT = "otel"


def _is_cancellation(exc: BaseException) -> bool:
    if isinstance(exc, trio.Cancelled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_cancellation(e) for e in exc.exceptions)
    return False


def _status(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    if isinstance(exc, Exception) or _is_cancellation(exc):
        return "error"
    return "panic"


# Immutable, so one for every successful span rather than one built per job.
_STATUS_OK = Status(StatusCode.OK)


def _set_span_status(span: trace.Span, status: str, exc: BaseException | None) -> None:
    if status == "ok":
        span.set_status(_STATUS_OK)
        return
    if status == "panic":
        span.set_status(Status(StatusCode.ERROR, "panic"))
    else:
        span.set_status(Status(StatusCode.ERROR, str(exc) or type(exc).__name__))
    if exc is not None and not _is_cancellation(exc):
        span.record_exception(exc)


class OpenTelemetryMiddleware(Middleware):
    """Spans and metrics for every insert and job run, under River's names; see the module.

    Put it in ``Config(middleware=[...])``: it wraps inserts and job runs alike.

    Args:
        tracer_provider: Default: the global one.
        meter_provider: Default: the global one.
        duration_unit: ``"s"`` (default) or ``"ms"``, for the duration metrics
            and the queue lag (otelriver's ``DurationUnit``).
        enable_semantic_metrics: Also emit OpenTelemetry's messaging metrics
            (``messaging.client.sent.messages``, ``messaging.client.consumed.messages``,
            ``messaging.client.operation.duration``, ``messaging.process.duration``).
        propagate_context: Write the inserting span's context into each job's
            metadata, and continue it in the work span.
        propagator: Writes and reads that context; default the global one
            (W3C trace context and baggage unless configured otherwise).
        queue_stats_interval: Seconds between the leader's measurements of
            queue depth and lag; None for no queue gauges.

    Raises:
        ConfigError: An unknown duration unit, or an invalid interval.
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        duration_unit: Literal["s", "ms"] = "s",
        enable_semantic_metrics: bool = False,
        propagate_context: bool = True,
        propagator: TextMapPropagator | None = None,
        queue_stats_interval: float | None = 15.0,
    ) -> None:
        if duration_unit not in ("s", "ms"):
            raise ConfigError(f'duration_unit must be "s" or "ms", not {duration_unit!r}')
        self.duration_unit = duration_unit
        self._scale = 1.0 if duration_unit == "s" else 1000.0
        self.enable_semantic_metrics = enable_semantic_metrics
        self.propagate_context = propagate_context
        self._propagator = propagator
        self.queue_stats_interval = duration(
            "queue_stats_interval",
            queue_stats_interval,
            ConfigError,
            none="for no queue gauges",
        )
        self._queue_stats: Sequence[QueueStats] = ()
        # The jobs of one insert share their created_at (the transaction's now())
        # and, unless scheduled, their scheduled_at: formatted once, not per job.
        self._created_at = _TimeText()
        self._scheduled_at = _TimeText()
        provider = tracer_provider or trace.get_tracer_provider()
        self._tracer = provider.get_tracer(NAME)
        meter = (meter_provider or metrics.get_meter_provider()).get_meter(NAME)
        unit = duration_unit
        self._insert_count = meter.create_counter(
            _PREFIX + "insert_count", unit="{job}", description="Number of jobs inserted"
        )
        self._insert_many_count = meter.create_counter(
            _PREFIX + "insert_many_count",
            unit="{job_batch}",
            description="Number of job batches inserted (all jobs are inserted in a batch, "
            "but batches may be one job)",
        )
        self._insert_many_duration = meter.create_gauge(
            _PREFIX + "insert_many_duration",
            unit=unit,
            description="Duration of job batch insertion",
        )
        self._insert_many_histogram = meter.create_histogram(
            _PREFIX + "insert_many_duration_histogram",
            unit=unit,
            description="Duration of job batch insertion (histogram)",
        )
        self._work_count = meter.create_counter(
            _PREFIX + "work_count", unit="{job}", description="Number of jobs worked"
        )
        self._work_duration = meter.create_gauge(
            _PREFIX + "work_duration", unit=unit, description="Duration of job being worked"
        )
        self._work_histogram = meter.create_histogram(
            _PREFIX + "work_duration_histogram",
            unit=unit,
            description="Duration of job being worked (histogram)",
        )
        if enable_semantic_metrics:
            self._sent = meter.create_counter(
                "messaging.client.sent.messages",
                description="Number of messages producer attempted to send to the broker.",
            )
            self._consumed = meter.create_counter(
                "messaging.client.consumed.messages",
                description="Number of messages that were delivered to the application.",
            )
            self._operation_duration = meter.create_histogram(
                "messaging.client.operation.duration",
                unit=unit,
                description="Duration of messaging operation initiated by a producer or "
                "consumer client.",
            )
            self._process_duration = meter.create_histogram(
                "messaging.process.duration",
                unit=unit,
                description="Duration of processing operation.",
            )
        if self.queue_stats_interval is not None:
            meter.create_observable_gauge(
                _PREFIX + "queue_depth",
                callbacks=[self._observe_depth],
                unit="{job}",
                description="Number of available jobs waiting in a queue (reported by the leader)",
            )
            meter.create_observable_gauge(
                _PREFIX + "queue_lag",
                callbacks=[self._observe_lag],
                unit=unit,
                description="How long the oldest available job of a queue has been due "
                "(reported by the leader)",
            )

    def __repr__(self) -> str:
        return f"OpenTelemetryMiddleware(duration_unit={self.duration_unit!r})"

    # -- inserts --

    async def insert_many(
        self,
        params: list[JobInsertParams],
        call_next: Callable[[], Awaitable[list[InsertResult]]],
    ) -> list[InsertResult]:
        with self._tracer.start_as_current_span(
            _PREFIX + "insert_many",
            kind=SpanKind.PRODUCER,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            if self.propagate_context:
                carrier: dict[str, str] = {}
                self._inject(carrier)
                if carrier:
                    for job_params in params:
                        job_params.metadata[METADATA_TRACE_CONTEXT] = dict(carrier)
            begin = time.perf_counter()
            failure: BaseException | None = None
            try:
                return await call_next()
            except BaseException as exc:
                failure = exc
                raise
            finally:
                elapsed = (time.perf_counter() - begin) * self._scale
                status = _status(failure)
                _set_span_status(span, status, failure)
                attrs = {"status": status}
                span.set_attributes(attrs)
                self._insert_count.add(len(params), attrs)
                self._insert_many_count.add(1, attrs)
                self._insert_many_duration.set(elapsed, attrs)
                self._insert_many_histogram.record(elapsed, attrs)
                if self.enable_semantic_metrics:
                    semantic = {
                        "messaging.operation.name": "insert_many",
                        "messaging.system": "river",
                    }
                    self._operation_duration.record(elapsed, semantic)
                    self._sent.add(len(params), semantic)

    def _inject(self, carrier: dict[str, str]) -> None:
        if self._propagator is not None:
            self._propagator.inject(carrier)
        else:
            propagate.inject(carrier)

    def _extract(self, carrier: dict[str, Any]) -> Context:
        if self._propagator is not None:
            return self._propagator.extract(carrier)
        return propagate.extract(carrier)

    # -- work --

    def _origin(self, job: JobRow) -> tuple[Context | None, list[Link] | None]:
        """The work span's parent context and links, from the inserter's context in `job`."""
        carrier = job.metadata.get(METADATA_TRACE_CONTEXT) if self.propagate_context else None
        if not isinstance(carrier, dict):
            return None, None
        extracted = self._extract({k: v for k, v in carrier.items() if isinstance(v, str)})
        origin = trace.get_current_span(extracted).get_span_context()
        if not origin.is_valid:
            return None, None
        if trace.get_current_span().get_span_context().is_valid:
            # The run has a parent of its own: it links to the inserter instead.
            return None, [Link(origin)]
        return extracted, None

    async def work(self, job: JobRow, call_next: Callable[[], Awaitable[None]]) -> None:
        parent, links = self._origin(job)
        # What `start_as_current_span` does (start, make current, end), minus its
        # two generator-based context managers: a few microseconds a job, a good
        # part of this middleware's own cost. With record_exception and
        # set_status_on_exception off, `use_span` adds nothing else.
        span = self._tracer.start_span(
            f"{_PREFIX}work/{job.kind}",
            context=parent,
            kind=SpanKind.CONSUMER,
            links=links,
            record_exception=False,
            set_status_on_exception=False,
        )
        try:
            token = otel_context.attach(trace.set_span_in_context(span))
            try:
                begin = time.perf_counter()
                failure: BaseException | None = None
                try:
                    await call_next()
                except BaseException as exc:
                    failure = exc
                    raise
                finally:
                    # Still the current span: the measurements' exemplars point at it.
                    self._record_work(span, job, failure, time.perf_counter() - begin)
            finally:
                otel_context.detach(token)
        finally:
            span.end()

    def _record_work(
        self, span: trace.Span, job: JobRow, failure: BaseException | None, seconds: float
    ) -> None:
        elapsed = seconds * self._scale
        status = _status(failure)
        attrs: dict[str, Any] = {
            "attempt": job.attempt,
            "kind": job.kind,
            "priority": job.priority,
            "queue": job.queue,
            "status": status,
            "tag": tuple(job.tags),
        }
        if isinstance(failure, JobCancel):
            attrs["cancel"] = True
        elif isinstance(failure, JobSnooze):
            attrs["snooze"] = True
        _set_span_status(span, status, failure)
        # Higher-cardinality attributes on the span only, as otelriver.
        span.set_attributes(
            {
                **attrs,
                "id": job.id,
                "created_at": self._created_at.rfc3339(job.created_at),
                "scheduled_at": self._scheduled_at.rfc3339(job.scheduled_at),
            }
        )
        self._work_count.add(1, attrs)
        self._work_duration.set(elapsed, attrs)
        self._work_histogram.record(elapsed, attrs)
        if self.enable_semantic_metrics:
            semantic = {"messaging.operation.name": "work", "messaging.system": "river"}
            self._consumed.add(1, semantic)
            self._operation_duration.record(elapsed, semantic)
            self._process_duration.record(elapsed, semantic)

    # -- queue gauges --

    def observe_queues(self, stats: Sequence[QueueStats]) -> None:
        self._queue_stats = tuple(stats)

    def _observe_depth(self, options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        return [metrics.Observation(s.available, {"queue": s.queue}) for s in self._queue_stats]

    def _observe_lag(self, options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        return [
            metrics.Observation(s.oldest_available_age * self._scale, {"queue": s.queue})
            for s in self._queue_stats
        ]


def _rfc3339(value: datetime) -> str:
    """Go's time.RFC3339, as otelriver writes times: whole seconds, UTC as ``Z``."""
    if value.tzinfo is not UTC:  # rows come in UTC already: no conversion to pay for
        value = value.astimezone(UTC)
    # "YYYY-MM-DDTHH:MM:SS" from isoformat: twice as fast as strftime, which also
    # fails to pad years before 1000 as Go does.
    return value.isoformat(timespec="seconds")[:19] + "Z"


class _TimeText:
    """`_rfc3339` remembering its last answer for a UTC time (as rows have)."""

    def __init__(self) -> None:
        # One tuple, replaced whole: a reader never pairs a time with another's text.
        self._last: tuple[datetime | None, str] = (None, "")

    def rfc3339(self, value: datetime) -> str:
        last, text = self._last
        # `last` is in UTC: an equal datetime is the same instant (a naive one never
        # equals it). Only UTC is kept because equality ignores `fold` within a zone.
        if value == last:
            return text
        text = _rfc3339(value)
        if value.tzinfo is UTC:
            self._last = (value, text)
        return text
