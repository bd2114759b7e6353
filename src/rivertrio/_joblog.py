"""Logging from workers: records tagged with their job, and collected into the job as riverlog.

- `JobContextFilter` (stdlib ``logging``) and `add_job_context` (a structlog
  processor) tag every record emitted while a job runs, in its task or the
  tasks it starts, with the job's id, kind, queue and attempt.
- `JobLogMiddleware` collects those records into the job's metadata, one
  entry per attempt under ``"river:log"``, in River's riverlog format, so
  River's UI shows them next to the job.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from typing import Any

from ._exceptions import ConfigError
from ._executor import current_job
from ._hooks import Middleware
from ._job import JobRow
from ._validate import integer

__all__ = [
    "METADATA_LOG",
    "JobContextFilter",
    "JobLogMiddleware",
    "add_job_context",
]

log = logging.getLogger("rivertrio.joblog")

#: riverlog's metadata key: a list of ``{"attempt": n, "log": text}``, oldest first.
METADATA_LOG = "river:log"

_MIB = 1024 * 1024


class JobContextFilter(logging.Filter):
    """Tags each record with ``job_id``, ``job_kind``, ``job_queue`` and ``job_attempt``.

    Add it to a handler (``handler.addFilter(rivertrio.JobContextFilter())``)
    to tag every record the handler sees; outside a job the four are None. Use
    them in a format: ``"%(levelname)s [job %(job_id)s %(job_kind)s] %(message)s"``.
    It never filters a record out.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        handle = current_job.get(None)
        if handle is None:
            record.job_id = record.job_kind = record.job_queue = record.job_attempt = None
        else:
            row = handle.row
            record.job_id = row.id
            record.job_kind = row.kind
            record.job_queue = row.queue
            record.job_attempt = row.attempt
        return True


def add_job_context(
    logger: object, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor adding ``job_id``, ``job_kind``, ``job_queue``, ``job_attempt``.

    Put it in structlog's processors (before the renderer); outside a job it
    adds nothing, and it never replaces a key the event already has.
    """
    handle = current_job.get(None)
    if handle is not None:
        row = handle.row
        event_dict.setdefault("job_id", row.id)
        event_dict.setdefault("job_kind", row.kind)
        event_dict.setdefault("job_queue", row.queue)
        event_dict.setdefault("job_attempt", row.attempt)
    return event_dict


class _Collector:
    """One attempt's log text, kept up to its size limit (the rest is counted, not kept)."""

    __slots__ = ("cut", "formatter", "level", "limit", "parts", "size")

    def __init__(self, level: int, formatter: logging.Formatter, limit: int) -> None:
        self.level = level
        self.formatter = formatter
        self.limit = limit
        self.parts: list[str] = []
        self.size = 0
        self.cut = 0

    def add(self, record: logging.LogRecord) -> None:
        line = self.formatter.format(record) + "\n"
        size = len(line.encode("utf-8", "backslashreplace"))
        room = self.limit - self.size
        if size <= room:
            self.parts.append(line)
            self.size += size
            return
        if room > 0:
            part = line.encode("utf-8", "backslashreplace")[:room].decode("utf-8", "ignore")
            self.parts.append(part)
            self.size = self.limit
            size -= len(part.encode())
        self.cut += size

    def text(self) -> str:
        text = "".join(self.parts)
        if self.cut:
            text += f"... ({self.cut:,} more bytes of log not kept)\n"
        return text


_collector: ContextVar[_Collector | None] = ContextVar("rivertrio_job_log", default=None)


class _CaptureHandler(logging.Handler):
    """On the root logger: hands each record emitted inside a collecting job to its collector."""

    def emit(self, record: logging.LogRecord) -> None:
        collector = _collector.get()
        if collector is None or record.levelno < collector.level:
            return
        try:
            collector.add(record)
        except Exception:
            self.handleError(record)


_capture = _CaptureHandler()
_install_lock = threading.Lock()


def _install() -> None:
    root = logging.getLogger()
    if _capture not in root.handlers:
        with _install_lock:
            if _capture not in root.handlers:
                root.addHandler(_capture)


class JobLogMiddleware(Middleware):
    """Collects what a job logs into its metadata, one entry per attempt (River's riverlog).

    Every record emitted while the job runs (in its task or tasks it starts),
    through any logger whose records reach the root logger, at `level` or
    above, is formatted and kept; when the attempt ends, however it ends, the
    text is added to ``metadata["river:log"]`` as ``{"attempt": n, "log":
    text}``. The loggers' own levels still apply: a record a logger drops (the
    root's default level is WARNING) is never seen, so set the level of the
    loggers your workers use.

    Args:
        level: The lowest level kept.
        formatter: Formats each record; default ``"%(asctime)s %(levelname)s
            %(name)s: %(message)s"``.
        max_bytes: Most log kept per attempt (River's 2 MiB); more is cut, and
            the entry says how much.
        max_total_bytes: Most JSON kept in ``river:log`` over all attempts
            (River's 8 MiB, at most 64 MiB); the oldest entries are dropped
            first, the newest always kept.

    Raises:
        ConfigError: A size is not a positive int.
    """

    def __init__(
        self,
        *,
        level: int = logging.INFO,
        formatter: logging.Formatter | None = None,
        max_bytes: int = 2 * _MIB,
        max_total_bytes: int = 8 * _MIB,
    ) -> None:
        self.level = integer("JobLogMiddleware level", level, ConfigError, minimum=0)
        self.formatter = formatter or logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        self.max_bytes = integer("JobLogMiddleware max_bytes", max_bytes, ConfigError)
        self.max_total_bytes = min(
            integer("JobLogMiddleware max_total_bytes", max_total_bytes, ConfigError), 64 * _MIB
        )

    def __repr__(self) -> str:
        return f"JobLogMiddleware(level={logging.getLevelName(self.level)})"

    async def work(self, job: JobRow, call_next: Callable[[], Awaitable[None]]) -> None:
        _install()
        collector = _Collector(self.level, self.formatter, self.max_bytes)
        token = _collector.set(collector)
        try:
            await call_next()
        finally:
            _collector.reset(token)
            if collector.parts or collector.cut:
                self._store(job, collector.text())

    def _store(self, job: JobRow, text: str) -> None:
        handle = current_job.get(None)
        if handle is None or handle.row.id != job.id:
            return
        existing = job.metadata.get(METADATA_LOG, [])
        if not isinstance(existing, list):
            log.error(
                "job %d: its metadata's %r is not a list; this attempt's log is not stored",
                job.id,
                METADATA_LOG,
            )
            return
        entries = [json.dumps(e, separators=(",", ":")) for e in existing]
        entries.append(json.dumps({"attempt": job.attempt, "log": text}, separators=(",", ":")))
        handle.set_update(
            METADATA_LOG, "[" + ",".join(bounded(entries, self.max_total_bytes)) + "]"
        )


def bounded(entries: list[str], max_total: int) -> list[str]:
    """The newest `entries` (JSON texts, oldest first) whose array fits in `max_total` bytes.

    The newest is always kept, even alone over the limit (as riverlog does).
    """
    total = 2 + sum(len(e) for e in entries) + len(entries) - 1
    start = 0
    while total > max_total and start < len(entries) - 1:
        total -= len(entries[start]) + 1
        start += 1
    if start:
        log.warning(
            "dropped the %d oldest log entries of a job to keep its logs within %d bytes",
            start,
            max_total,
        )
    return entries[start:]
