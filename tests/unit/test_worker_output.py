"""What a worker records without a database: output, log context, log collection's bounds."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import pytest
import structlog
import trio

import rivertrio
from rivertrio._joblog import METADATA_LOG, _Collector, bounded
from rivertrio._output import MAX_OUTPUT_BYTES
from rivertrio.testing import work_job

pytestmark = pytest.mark.timeout(60)


@dataclass
class Ping(rivertrio.JobArgs, kind="ping"):
    what: str = "ok"


async def test_recorded_output_comes_back_with_the_outcome() -> None:
    async def work(job: rivertrio.Job[Ping]) -> None:
        rivertrio.record_output({"first": True})
        rivertrio.record_output({"url": "https://example.com/report.pdf", "pages": 3})

    result = await work_job(work, Ping())
    assert result.kind == "completed"
    assert result.output == {"url": "https://example.com/report.pdf", "pages": 3}


async def test_output_is_kept_when_the_job_fails() -> None:
    async def work(job: rivertrio.Job[Ping]) -> None:
        rivertrio.record_output([1, 2])
        raise ValueError("after the output")

    result = await work_job(work, Ping())
    assert result.kind == "failed" and result.output == [1, 2]


async def test_output_over_rivers_limit_or_not_json_is_refused() -> None:
    refused: list[str] = []

    async def work(job: rivertrio.Job[Ping]) -> None:
        for value in ("x" * MAX_OUTPUT_BYTES, {"n": float("nan")}, {1: "key"}, object()):
            try:
                rivertrio.record_output(value)
            except rivertrio.InvalidInputError as exc:
                refused.append(str(exc))
        rivertrio.record_output("x" * (MAX_OUTPUT_BYTES - 2))  # with its quotes: exactly 32 MiB

    result = await work_job(work, Ping())
    assert result.kind == "completed"
    assert len(refused) == 4
    assert "33,554,434 bytes of JSON; at most 33,554,432 (32 MiB)" in refused[0]
    assert "NaN" in refused[1] and "not a string" in refused[2] and "not a JSON value" in refused[3]
    assert isinstance(result.output, str) and len(result.output) == MAX_OUTPUT_BYTES - 2


def test_record_output_outside_a_job_says_so() -> None:
    with pytest.raises(RuntimeError, match=r"record_output\(\) can only be called inside"):
        rivertrio.record_output(1)


async def test_progress_outside_a_job_and_bad_values() -> None:
    with pytest.raises(RuntimeError, match=r"report_progress\(\) can only be called inside"):
        await rivertrio.report_progress(1)
    errors: list[str] = []

    async def work(job: rivertrio.Job[Ping]) -> None:
        for value, message in ((float("inf"), ""), (True, ""), (1, "m" * 201), (1, 3)):
            try:
                await rivertrio.report_progress(value, message)  # type: ignore[arg-type]
            except rivertrio.InvalidInputError as exc:
                errors.append(str(exc))

    await work_job(work, Ping())
    assert len(errors) == 4
    assert "finite number" in errors[0] and "finite number" in errors[1]
    assert "at most 200 characters" in errors[2] and "not int" in errors[3]


# -- log context --


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_records_a_worker_emits_are_tagged_with_its_job() -> None:
    keep = Keep()
    keep.addFilter(rivertrio.JobContextFilter())
    logger = logging.getLogger("test_worker_output.tagged")
    logger.addHandler(keep)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    async def work(job: rivertrio.Job[Ping]) -> None:
        logger.info("in the job")

        async def child() -> None:
            logger.info("in a task the job started")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)

    try:
        result = await work_job(work, Ping(), opts=rivertrio.InsertOpts(queue="mail"))
        logger.info("outside")
    finally:
        logger.removeHandler(keep)
        logger.propagate = True
    tags = [
        (r.getMessage(), r.job_id, r.job_kind, r.job_queue, r.job_attempt)  # type: ignore[attr-defined]
        for r in keep.records
    ]
    job = result.job
    assert tags == [
        ("in the job", job.id, "ping", "mail", 1),
        ("in a task the job started", job.id, "ping", "mail", 1),
        ("outside", None, None, None, None),
    ]


async def test_structlog_events_are_tagged_with_their_job() -> None:
    seen: list[dict[str, Any]] = []

    def keep(logger: Any, method: str, event: Any) -> Any:
        seen.append(dict(event))
        raise structlog.DropEvent

    log = structlog.wrap_logger(
        structlog.PrintLogger(), processors=[rivertrio.add_job_context, keep]
    )

    async def work(job: rivertrio.Job[Ping]) -> None:
        log.info("working", job_queue="kept as given")

    result = await work_job(work, Ping())
    log.info("outside")
    assert seen == [
        {
            "event": "working",
            "job_id": result.job.id,
            "job_kind": "ping",
            "job_queue": "kept as given",
            "job_attempt": 1,
        },
        {"event": "outside"},
    ]


# -- log collection's bounds --


def record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("app", level, __file__, 1, message, None, None)


def test_one_attempts_log_is_cut_at_its_limit_and_says_how_much() -> None:
    collector = _Collector(logging.INFO, logging.Formatter("%(message)s"), limit=10)
    collector.add(record("12345"))  # 6 bytes with its newline
    collector.add(record("abcdefgh"))  # 9 bytes: 4 fit
    collector.add(record("more"))  # 5 bytes: none fit
    assert collector.size == 10
    assert collector.text() == "12345\nabcd... (10 more bytes of log not kept)\n"


def test_total_log_drops_oldest_entries_first_and_keeps_the_newest() -> None:
    entries = [json.dumps({"attempt": n, "log": "x" * 10}) for n in range(1, 6)]
    size = len(entries[0])
    # Room for the array of the newest three entries exactly.
    kept = bounded(entries, 2 + 3 * size + 2)
    assert kept == entries[2:]
    assert bounded(entries, 10**6) == entries
    assert bounded(entries, 1) == entries[-1:]  # the newest always stays


async def test_the_log_middleware_collects_what_the_job_logs() -> None:
    logger = logging.getLogger("test_worker_output.collected")
    logger.setLevel(logging.DEBUG)
    mw = rivertrio.JobLogMiddleware(formatter=logging.Formatter("%(levelname)s %(message)s"))

    async def work(job: rivertrio.Job[Ping]) -> None:
        logger.debug("below the level")
        logger.info("hello %s", job.args.what)
        logger.warning("careful")
        raise ValueError("failed after logging")

    earlier = [{"attempt": 0, "log": "an earlier attempt\n"}]
    result = await work_job(
        work,
        Ping(what="there"),
        opts=rivertrio.InsertOpts(metadata={METADATA_LOG: earlier}),
        config=rivertrio.Config(middleware=[mw]),
    )
    assert result.kind == "failed"
    assert result.metadata[METADATA_LOG] == [
        *earlier,
        {"attempt": 1, "log": "INFO hello there\nWARNING careful\n"},
    ]
    logger.info("outside any job: not collected, no error")
