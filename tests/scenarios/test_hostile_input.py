"""Hostile and broken input.

What rivertrio does with it, tested below:

- Args and metadata that Postgres cannot store, or that would not read back as
  they were written (nesting deeper than `MAX_JSON_DEPTH`, NaN and Infinity,
  lone surrogates, NUL characters, object keys that are not strings, values
  that are not JSON) are rejected with an `InvalidInputError` naming the field
  and the place, before anything is written. So are kinds and queue names
  outside their rules (SQL metacharacters among them).
- Legal but odd input (SQL in strings, quotes, backslashes, non-BMP text,
  odd kinds, 10 MB args) is stored and worked as it was written.
- Rows written by hand or by another language's client whose args or
  metadata do not decode (an array instead of an object, a missing field, a
  wrong type, nesting too deep for Python, an unknown kind, a malformed error
  history) fail with a recorded error naming the problem, or are worked if the
  problem is harmless; the client keeps running.
- A worker that raises a BaseException (KeyboardInterrupt, SystemExit,
  GeneratorExit, a custom subclass) records a failed attempt and an error log;
  the client keeps running. A real Ctrl-C that Trio delivers inside a job's
  code still stops the program, and the job is interrupted, not failed.
- A worker that returns a value completes with a warning, unless the value is
  an exception (counted as raised) or an awaitable never awaited (failed); one
  that blocks without checkpoints delays the others but they all complete;
  one that ignores its cancellation is completed with a warning and holds up
  a hard stop only as long as it keeps going.

Each test runs a batch of ordinary jobs alongside and checks they all complete.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import signal
import sys
import textwrap
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import trio

import rivertrio
from rivertrio import EventKind, InvalidInputError, JobState
from rivertrio._driver import Driver
from rivertrio._job import MAX_JSON_DEPTH
from support.common import events_until, nested, row, running, states

pytestmark = pytest.mark.timeout(90)

NORMAL_JOBS = 50


@dataclass
class Anything(rivertrio.JobArgs, kind="hostile_anything"):
    value: Any = None


@dataclass
class Strict(rivertrio.JobArgs, kind="hostile_strict"):
    n: int
    tags: list[str]
    note: str | None = None


@dataclass
class Behave(rivertrio.JobArgs, kind="hostile_behave"):
    how: str = "ok"


@dataclass
class OddKind(rivertrio.JobArgs, kind="odd/kind.v2:x+y<t>[0]-z"):
    value: Any = None


@dataclass
class UnicodeKind(rivertrio.JobArgs, kind="ünïcødé_kïnd"):
    value: Any = None


async def noop(job: rivertrio.Job[Any]) -> None:
    pass


def cycle() -> list[Any]:
    value: list[Any] = [1]
    value.append(value)
    return value


async def count_jobs(driver: Driver) -> int:
    return int(await driver.fetchval("SELECT count(*) FROM /*schema*/river_job"))


async def settle(
    events: trio.MemoryReceiveChannel[rivertrio.Event], ids: set[int], within: float = 30
) -> dict[int, rivertrio.Event]:
    """Collect events until each job in `ids` has had its last one (not interrupted)."""
    last: dict[int, rivertrio.Event] = {}
    with trio.fail_after(within):
        while not ids <= last.keys():
            event = await events.receive()
            if event.job is not None and event.kind != EventKind.JOB_INTERRUPTED:
                last[event.job.id] = event
    return last


# --- rejected before anything is written ---------------------------------------------

HOSTILE_ARGS: list[tuple[str, Callable[[], Any], str]] = [
    ("nesting 10,000 levels", lambda: nested(10_000), rf"nested deeper than {MAX_JSON_DEPTH}"),
    ("nesting one level too deep", lambda: nested(MAX_JSON_DEPTH + 1), "nested deeper than"),
    ("a list that holds itself", cycle, "nested deeper than"),
    ("NaN", lambda: float("nan"), r"nan \(JSON has no NaN or Infinity\)"),
    ("Infinity, nested", lambda: {"a": [1, math.inf]}, r"at \['a'\]\[1\]: inf"),
    ("-Infinity", lambda: [-math.inf], r"at \[0\]: -inf"),
    ("a lone high surrogate", lambda: "ok\ud800", r"lone surrogate '\\ud800'"),
    ("a lone low surrogate, nested", lambda: {"k": ["\udfff"]}, r"surrogate.*\(at \['k'\]\[0\]\)"),
    ("a surrogate in a key", lambda: {"k\udc00": 1}, r"has a key that contains a lone surrogate"),
    ("a NUL character", lambda: "a\x00b", r"contains a NUL character"),
    ("a NUL in a nested key", lambda: {"x": {"\x00": 1}}, r"key that contains a NUL"),
    ("an int key", lambda: {"x": {1: "a"}}, r"key 1 at \['x'\] \(int\) is not a string"),
    ("a None key", lambda: {None: "a"}, r"key None \(NoneType\) is not a string"),
    ("a tuple key", lambda: {(1, 2): "a"}, r"key \(1, 2\) \(tuple\) is not a string"),
    ("bytes", lambda: b"raw", r"b'raw' \(bytes\) is not a JSON value"),
    ("a set, nested", lambda: {"s": {1, 2}}, r"at \['s'\]: \{1, 2\} \(set\)"),
    ("an object", lambda: [object()], r"\(object\) is not a JSON value"),
    ("an int of 5,000 digits", lambda: 10**5000, r"args do not encode to JSON: Exceeds the limit"),
]


@pytest.mark.parametrize(
    ("make", "message"),
    [(m, msg) for _, m, msg in HOSTILE_ARGS],
    ids=[i for i, _, _ in HOSTILE_ARGS],
)
async def test_hostile_args_are_rejected_before_anything_is_written(
    database_url: str, migrated_schema: str, driver: Driver, make: Callable[[], Any], message: str
) -> None:
    async with rivertrio.open_client(
        rivertrio.Config(schema=migrated_schema), database_url=database_url
    ) as client:
        with pytest.raises(InvalidInputError, match=message) as info:
            await client.insert(Anything(value=make()))
        assert "Anything" in str(info.value)
        with pytest.raises(InvalidInputError, match=rf"params\[1\]: .*{message}"):
            await client.insert_many([Anything(value=1), Anything(value=make())])
        with pytest.raises(InvalidInputError, match=rf"params\[2\]: .*{message}"):
            await client.insert_many_fast([Anything(), Anything(), Anything(value=make())])
        with pytest.raises(InvalidInputError, match=message):
            async with client.transaction() as tx:
                await client.insert_tx(tx, Anything(value=make()))
    assert await count_jobs(driver) == 0


class KeyedArgs(rivertrio.JobArgs, kind="hostile_keyed"):
    """Args whose own to_json returns something that is not a JSON object of strings."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def to_json(self) -> Any:
        return self.data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({1: "x"}, r"KeyedArgs args key 1 is not a string"),
        ({"a\x00": 1}, r"KeyedArgs args key 'a\\x00' contains a NUL"),
        ([1, 2], r"KeyedArgs.to_json\(\) returned list, not a JSON object"),
        ("text", r"returned str, not a JSON object"),
    ],
)
async def test_args_that_are_not_an_object_of_strings_are_rejected(
    database_url: str, migrated_schema: str, driver: Driver, data: Any, message: str
) -> None:
    async with rivertrio.open_client(
        rivertrio.Config(schema=migrated_schema), database_url=database_url
    ) as client:
        with pytest.raises(InvalidInputError, match=message):
            await client.insert(KeyedArgs(data))
    assert await count_jobs(driver) == 0


HOSTILE_NAMES = [
    "'; drop table river_job; --",
    "x'; delete from river_job where 't' = 't",
    "a'b",
    'a"b',
    "a\\b",
    "a;b",
    "a b",
    "--",
    "/*schema*/x",
    "$1",
    "a\x00b",
    "a\nb",
    "",
    "x" * 200,
]


async def test_kinds_and_queue_names_with_sql_metacharacters_are_rejected(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    w = rivertrio.Workers()
    w.register(Behave)(noop)
    async with rivertrio.open_client(
        rivertrio.Config(schema=migrated_schema), database_url=database_url
    ) as client:
        for name in HOSTILE_NAMES:
            with pytest.raises(InvalidInputError, match=r"job kind .* is invalid"):
                types.new_class("Bad", (rivertrio.JobArgs,), {"kind": name})
            with pytest.raises(InvalidInputError, match=r"^queue: queue name"):
                rivertrio.InsertOpts(queue=name)
            with pytest.raises(rivertrio.ConfigError, match=r"queues: queue name"):
                rivertrio.Config(queues={name: rivertrio.QueueConfig(max_workers=1)}, workers=w)
            with pytest.raises(InvalidInputError, match="queue name"):
                await client.queue_pause(name)
            with pytest.raises(InvalidInputError, match="queue name"):
                await client.queue_get(name)
    # The table is still there, and nothing was written.
    assert await count_jobs(driver) == 0


# --- legal but odd input is stored and worked as written ------------------------------

ODD_VALUES: list[Any] = [
    "'; drop table river_job; --",
    "Robert'); DROP TABLE river_job;--",
    "quote \" and ' and \\ backslash and \\\\ two",
    "\\u0000 is only text here, and so is \\ud800",
    "/*schema*/river_job $1 %s {} :name ?",
    "emoji 😀, non-BMP 𝄞, RTL \u202e, separators \u2028\u2029, <>&",
    "tab\t newline\n return\r bell\x07 unit separator\x1f delete\x7f",
    "",
    {"ключ": "значение", "": "empty key", "a b;c'd": [None, True, False]},
    [0, -1, 10**30, -(10**30), 1.5, 0.1, -2.5e-7],
    nested(MAX_JSON_DEPTH),
    "y" * 100_000,
]


async def test_odd_but_legal_input_is_stored_and_worked_as_written(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    seen: dict[int, tuple[str, Any]] = {}
    workers = rivertrio.Workers()

    @workers.register(Anything)
    async def anything(job: rivertrio.Job[Anything]) -> None:
        seen[job.id] = (job.kind, job.args.value)

    @workers.register(OddKind)
    async def odd(job: rivertrio.Job[OddKind]) -> None:
        seen[job.id] = (job.kind, job.args.value)

    @workers.register(UnicodeKind)
    async def uni(job: rivertrio.Job[UnicodeKind]) -> None:
        seen[job.id] = (job.kind, job.args.value)

    long_queue = "q" * 31 + "-" + "z" * 32  # 64 characters, the longest allowed
    cfg = rivertrio.Config(
        schema=migrated_schema,
        queues={
            "default": rivertrio.QueueConfig(max_workers=10),
            long_queue: rivertrio.QueueConfig(max_workers=10),
        },
        workers=workers,
    )
    metadata = {"note": ODD_VALUES[0], "nested": {"x": ODD_VALUES[2]}}
    async with running(cfg, database_url) as client, client.subscribe(*EventKind) as events:
        params: list[Any] = [
            (Anything(value=v), rivertrio.InsertOpts(metadata=metadata)) for v in ODD_VALUES
        ]
        params += [OddKind(value=ODD_VALUES[0]), UnicodeKind(value=ODD_VALUES[5])]
        params += [(Anything(value=v), rivertrio.InsertOpts(queue=long_queue)) for v in ODD_VALUES]
        results = await client.insert_many(params)
        fast = await client.insert_many_fast([Anything(value=v) for v in ODD_VALUES])
        assert fast == len(ODD_VALUES)
        # Uniqueness by args treats a metacharacter string as any other.
        unique = rivertrio.InsertOpts(unique=rivertrio.UniqueOpts(by_args=True))
        first = await client.insert(Anything(value=ODD_VALUES[1]), unique)
        again = await client.insert(Anything(value=ODD_VALUES[1]), unique)
        assert not first.unique_skipped_as_duplicate and again.unique_skipped_as_duplicate
        total = len(params) + fast + 1
        got = await events_until(events, total, within=30)

    assert all(e.kind == EventKind.JOB_COMPLETED for e in got), [e.kind for e in got]
    assert len(seen) == total
    expected = [
        (type(args).kind, args.value)
        for args in (p[0] if isinstance(p, tuple) else p for p in params)
    ]
    assert [seen[r.job.id] for r in results] == expected
    for r in results[: len(ODD_VALUES)]:
        assert (await row(driver, r.job.id)).metadata == metadata
    assert seen[first.job.id] == ("hostile_anything", ODD_VALUES[1])
    assert await states(driver) == {"completed": total}


async def test_10_mb_args_are_stored_and_worked(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    digests: dict[int, str] = {}
    workers = rivertrio.Workers()

    @workers.register(Anything)
    async def anything(job: rivertrio.Job[Anything]) -> None:
        digests[job.id] = hashlib.sha256(str(job.args.value).encode()).hexdigest()

    cfg = rivertrio.Config(
        schema=migrated_schema,
        queues={"default": rivertrio.QueueConfig(max_workers=10)},
        workers=workers,
    )
    payload = os.urandom(5 * 1024 * 1024).hex()  # 10 MiB of text
    started = trio.current_time()
    async with running(cfg, database_url) as client, client.subscribe(*EventKind) as events:
        big = (await client.insert(Anything(value=payload))).job
        normal = await client.insert_many([Anything(value=i) for i in range(NORMAL_JOBS)])
        last = await settle(events, {big.id} | {r.job.id for r in normal})
    took = trio.current_time() - started
    print(f"\n10 MiB args: inserted, worked and completed in {took:.2f} s")
    assert last[big.id].kind == EventKind.JOB_COMPLETED
    assert digests[big.id] == hashlib.sha256(payload.encode()).hexdigest()
    assert all(e.kind == EventKind.JOB_COMPLETED for e in last.values())
    stored = await row(driver, big.id)
    assert len(stored.encoded_args) > 10 * 1024 * 1024


# --- rows another client wrote ---------------------------------------------------------

DEEP = "[" * 10_000 + "]" * 10_000

# (what, kind, args, metadata, errors, expected state, text expected in the last error)
# fmt: off
HOSTILE_ROWS: list[tuple[str, str, str, str, list[str] | None, str, str]] = [
    ("args array", "hostile_strict", "[1, 2]", "{}", None, "discarded",
     "args of kind 'hostile_strict' do not decode into Strict: the args are a JSON array"),
    ("args string", "hostile_strict", '"n=1"', "{}", None, "discarded",
     "the args are a JSON string, not an object"),
    ("args number", "hostile_anything", "42", "{}", None, "discarded",
     "the args are a JSON number"),
    ("args null", "hostile_anything", "null", "{}", None, "discarded", "the args are a JSON null"),
    ("missing field", "hostile_strict", '{"n": 1}', "{}", None, "discarded",
     "field 'tags' is missing (it has no default)"),
    ("wrong type", "hostile_strict", '{"n": "7", "tags": []}', "{}", None, "discarded",
     "field 'n' should be int, got JSON string '7'"),
    ("float for int", "hostile_strict", '{"n": 7.5, "tags": []}', "{}", None, "discarded",
     "field 'n' should be int, got JSON number 7.5"),
    ("bool for int", "hostile_strict", '{"n": true, "tags": []}', "{}", None, "discarded",
     "field 'n' should be int, got JSON boolean True"),
    ("wrong element type", "hostile_strict", '{"n": 1, "tags": ["a", 5]}', "{}", None,
     "discarded", "field 'tags'[1] should be str, got JSON number 5"),
    ("wrong optional", "hostile_strict", '{"n": 1, "tags": [], "note": 3}', "{}", None,
     "discarded", "field 'note' should be str | None, got JSON number 3"),
    ("args 10,000 deep", "hostile_anything", '{"value": ' + DEEP + "}", "{}", None, "discarded",
     "do not decode into Anything: RecursionError"),
    ("metadata array", "hostile_anything", "{}", "[1]", None, "discarded",
     "its metadata is a JSON array, not an object"),
    ("metadata 10,000 deep", "hostile_anything", "{}", '{"m": ' + DEEP + "}", None, "discarded",
     "its metadata cannot be decoded: RecursionError"),
    ("unknown kind with SQL", "'; drop table river_job; --", "{}", "{}", None, "discarded",
     "no worker is registered for job kind \"'; drop table river_job; --\""),
    # A count the completion statement could not add to would fail its whole batch.
    ("snoozes not a count", "hostile_anything", '{"value": "snooze"}', '{"snoozes": "many"}',
     None, "discarded", "cannot be snoozed: its metadata's 'snoozes' is 'many', not a count"),
    ("snoozes not an integer", "hostile_anything", '{"value": "snooze"}', '{"snoozes": 2.0}',
     None, "discarded", "'snoozes' is 2.0, not a count"),
    ("snoozes a count", "hostile_anything", '{"value": "snooze"}', '{"snoozes": 2}', None,
     "scheduled", ""),
    # Harmless problems: the job is worked.
    ("unknown fields", "hostile_strict", '{"n": 1, "tags": ["a"], "extra": {"x": [1]}}', "{}",
     None, "completed", ""),
    ("malformed error history", "hostile_strict", '{"n": 1, "tags": []}', "{}",
     ['"not an error object"', '{"at": "yesterday"}', "[1, 2]"], "completed", ""),
]
# fmt: on


async def test_rows_whose_args_do_not_decode_fail_with_a_recorded_error(
    database_url: str, migrated_schema: str, driver: Driver
) -> None:
    decoded: list[Strict] = []
    workers = rivertrio.Workers()

    @workers.register(Strict)
    async def strict(job: rivertrio.Job[Strict]) -> None:
        assert isinstance(job.args.n, int)
        decoded.append(job.args)

    @workers.register(Anything)
    async def anything(job: rivertrio.Job[Anything]) -> None:
        if job.args.value == "snooze":
            raise rivertrio.JobSnooze(600)

    ids: dict[str, int] = {}
    for what, kind, args, metadata, errors, _, _ in HOSTILE_ROWS:
        ids[what] = await driver.fetchval(
            "INSERT INTO /*schema*/river_job (kind, args, metadata, errors, max_attempts)"
            " VALUES ($1, $2::jsonb, $3::jsonb, $4::jsonb[], 1) RETURNING id",
            kind,
            args,
            metadata,
            errors,
        )
    cfg = rivertrio.Config(
        schema=migrated_schema,
        queues={"default": rivertrio.QueueConfig(max_workers=20)},
        workers=workers,
    )
    async with running(cfg, database_url) as client, client.subscribe(*EventKind) as events:
        normal = await client.insert_many(
            [Strict(n=i, tags=["t"]) for i in range(NORMAL_JOBS)]
            + [Anything(value=i) for i in range(NORMAL_JOBS)]
        )
        normal_ids = {r.job.id for r in normal}
        last = await settle(events, set(ids.values()) | normal_ids)
        # Still serving.
        after = await client.insert(Strict(n=-1, tags=[]))
        assert (await settle(events, {after.job.id}))[after.job.id].kind == EventKind.JOB_COMPLETED
        assert client.started

    failures = {}
    for what, _, _, _, _, state, message in HOSTILE_ROWS:
        stored = await row(driver, ids[what])
        assert stored.state == state, f"{what}: {stored.state}"
        if state == "discarded":
            assert last[ids[what]].kind == EventKind.JOB_FAILED, what
            error = stored.errors[-1].error
            assert error.startswith("JobDecodeError") or "UnknownJobKindError" in error, what
            assert message in error, f"{what}: {error}"
            failures[what] = error
        elif state == "scheduled":
            assert last[ids[what]].kind == EventKind.JOB_SNOOZED, what
            assert stored.metadata["snoozes"] == 3
        else:
            assert last[ids[what]].kind == EventKind.JOB_COMPLETED, what
    history = await row(driver, ids["malformed error history"])
    assert [e.error for e in history.errors] == [
        '(undecodable error record) "not an error object"',
        '(undecodable error record) {"at": "yesterday"}',
        "(undecodable error record) [1, 2]",
    ]
    assert all(last[i].kind == EventKind.JOB_COMPLETED for i in normal_ids)
    assert len(decoded) == NORMAL_JOBS + 3  # the normal ones, two harmless rows, `after`
    print(f"\nhostile rows: {len(HOSTILE_ROWS)} in, {len(failures)} failed with a recorded error")


# --- misbehaving workers ------------------------------------------------------------------


class CustomBase(BaseException):
    """Not an Exception: escapes `except Exception` in user code."""


async def never_awaited() -> None:
    pass


class Misbehaving(rivertrio.Worker[Behave]):
    def __init__(self) -> None:
        self.blocking = trio.Event()

    async def work(self, job: rivertrio.Job[Behave]) -> Any:
        how = job.args.how
        if how == "raise-keyboard-interrupt":
            raise KeyboardInterrupt
        if how == "sys-exit":
            sys.exit(3)
        if how == "generator-exit":
            raise GeneratorExit
        if how == "custom-base-exception":
            raise CustomBase("custom failure")
        if how == "base-exception-group":
            raise BaseExceptionGroup("several", [KeyboardInterrupt(), ValueError("v")])
        if how == "return-value":
            return 42
        if how == "return-exception":
            return ValueError("returned, not raised")
        if how == "return-coroutine":
            return never_awaited()
        if how == "return-snooze":
            return rivertrio.JobSnooze(600)
        if how == "block":
            self.blocking.set()
            time.sleep(0.5)  # noqa: ASYNC251 (no checkpoint: the whole client waits)
            return None
        if how == "unstorable-error":
            raise ValueError("NUL \x00 and lone \ud800 surrogate")
        if how == "huge-error":
            raise ValueError("x" * 1_000_000)
        if how in ("naive-next-retry", "handler-raises", "policy-nan"):
            raise ValueError(how)
        assert how == "ok", how
        return None

    def next_retry(self, job: rivertrio.Job[Behave]) -> datetime | None:
        if job.args.how == "naive-next-retry":
            return datetime(2030, 1, 1)  # no timezone
        return None


# how -> (final state, event kind, text in the last error or None, text in the log or None)
MISBEHAVIOURS: dict[str, tuple[str, EventKind, str | None, str | None]] = {
    "raise-keyboard-interrupt": (
        "discarded",
        EventKind.JOB_FAILED,
        "KeyboardInterrupt",
        "raised KeyboardInterrupt, a BaseException: recorded as a failed attempt",
    ),
    "sys-exit": ("discarded", EventKind.JOB_FAILED, "SystemExit: 3", "raised SystemExit"),
    "generator-exit": ("discarded", EventKind.JOB_FAILED, "GeneratorExit", "raised GeneratorExit"),
    "custom-base-exception": (
        "discarded",
        EventKind.JOB_FAILED,
        "CustomBase: custom failure",
        "raised CustomBase",
    ),
    "base-exception-group": (
        "discarded",
        EventKind.JOB_FAILED,
        "BaseExceptionGroup: several",
        "raised BaseExceptionGroup",
    ),
    "return-value": ("completed", EventKind.JOB_COMPLETED, None, "work() returned 42"),
    "return-exception": (
        "discarded",
        EventKind.JOB_FAILED,
        "ValueError: returned, not raised",
        "instead of raising it",
    ),
    "return-coroutine": (
        "discarded",
        EventKind.JOB_FAILED,
        "WorkResultError: work() returned coroutine",
        None,
    ),
    "return-snooze": ("scheduled", EventKind.JOB_SNOOZED, None, "instead of raising it"),
    "block": ("completed", EventKind.JOB_COMPLETED, None, None),
    "unstorable-error": (
        "discarded",
        EventKind.JOB_FAILED,
        "ValueError: NUL \\x00 and lone \\ud800 surrogate",
        None,
    ),
    "huge-error": ("discarded", EventKind.JOB_FAILED, "characters cut)", None),
    "naive-next-retry": ("discarded", EventKind.JOB_FAILED, "ValueError", "next_retry failed"),
    "handler-raises": ("discarded", EventKind.JOB_FAILED, "ValueError", "error handler raised"),
    "policy-nan": ("discarded", EventKind.JOB_FAILED, "ValueError", "retry policy failed"),
}


async def test_misbehaving_workers_fail_alone_and_the_client_keeps_running(
    database_url: str, migrated_schema: str, driver: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="rivertrio")
    worker = Misbehaving()
    workers = rivertrio.Workers()
    workers.add(worker)

    async def error_handler(job: rivertrio.JobRow, error: BaseException) -> None:
        if "handler-raises" in job.encoded_args:
            raise KeyboardInterrupt  # a hook's BaseException is contained too

    def retry_policy(job: rivertrio.JobRow) -> float:
        return math.nan if "policy-nan" in job.encoded_args else 1.0

    cfg = rivertrio.Config(
        schema=migrated_schema,
        queues={"default": rivertrio.QueueConfig(max_workers=20)},
        workers=workers,
        error_handler=error_handler,
        retry_policy=retry_policy,
    )
    once = rivertrio.InsertOpts(max_attempts=1)
    async with running(cfg, database_url) as client, client.subscribe(*EventKind) as events:
        hostile = await client.insert_many([(Behave(how=how), once) for how in MISBEHAVIOURS])
        before = await client.insert_many([Behave() for _ in range(NORMAL_JOBS)])
        # Jobs inserted while one blocks the loop: completed once it lets go.
        await worker.blocking.wait()
        after = await client.insert_many([Behave() for _ in range(NORMAL_JOBS)])
        ids = {r.job.id for r in hostile + before + after}
        last = await settle(events, ids)
        # Still serving, and stops cleanly afterwards.
        extra = await client.insert(Behave())
        assert (await settle(events, {extra.job.id}))[extra.job.id].kind == (
            EventKind.JOB_COMPLETED
        )

    for result, (how, (state, kind, error, logged)) in zip(
        hostile, MISBEHAVIOURS.items(), strict=True
    ):
        stored = await row(driver, result.job.id)
        assert stored.state == state, f"{how}: {stored.state}"
        assert last[result.job.id].kind == kind, how
        if error is not None:
            assert error in stored.errors[-1].error, f"{how}: {stored.errors[-1].error[:200]}"
        if logged is not None:
            assert any(logged in r.getMessage() for r in caplog.records), how
    huge = await row(driver, hostile[list(MISBEHAVIOURS).index("huge-error")].job.id)
    assert len(huge.errors[-1].error) < 101_000
    for r in before + after:
        assert last[r.job.id].kind == EventKind.JOB_COMPLETED
    assert await states(driver) == {
        "completed": 2 * NORMAL_JOBS + 3,
        "discarded": len(MISBEHAVIOURS) - 3,
        "scheduled": 1,
    }
    print(
        f"\nmisbehaving workers: {len(MISBEHAVIOURS)} hostile + {2 * NORMAL_JOBS + 1} normal "
        f"jobs in, {len(last) + 1} events delivered, all normal jobs completed"
    )


async def test_a_job_that_ignores_its_timeout_completes_with_a_warning(
    database_url: str, migrated_schema: str, driver: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="rivertrio")

    async def work(job: rivertrio.Job[Behave]) -> None:
        if job.args.how == "deaf":
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                # Keeps going, deaf to its timeout, without a checkpoint.
                time.sleep(0.3)  # noqa: ASYNC251
                return  # swallowing Cancelled is the misbehaviour under test

    workers = rivertrio.Workers()
    workers.register(Behave)(work)
    cfg = rivertrio.Config(
        schema=migrated_schema,
        queues={"default": rivertrio.QueueConfig(max_workers=10)},
        workers=workers,
        job_timeout=0.2,
    )
    async with running(cfg, database_url) as client, client.subscribe(*EventKind) as events:
        deaf = await client.insert(Behave(how="deaf"))
        normal = await client.insert_many([Behave() for _ in range(NORMAL_JOBS)])
        last = await settle(events, {deaf.job.id} | {r.job.id for r in normal})
    assert last[deaf.job.id].kind == EventKind.JOB_COMPLETED
    assert (await row(driver, deaf.job.id)).state == JobState.COMPLETED
    assert all(last[r.job.id].kind == EventKind.JOB_COMPLETED for r in normal)
    assert any(
        f"job {deaf.job.id} (kind 'hostile_behave') returned after its timeout of 0.2 s"
        in r.getMessage()
        for r in caplog.records
    )


async def test_a_job_that_ignores_a_hard_stop_holds_it_only_while_it_keeps_going(
    database_url: str, migrated_schema: str, driver: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="rivertrio")
    started = 0
    all_started = trio.Event()
    stubborn_done = trio.Event()
    others = 5

    async def work(job: rivertrio.Job[Behave]) -> None:
        nonlocal started
        started += 1
        if started == others + 1:
            all_started.set()
        if job.args.how == "stubborn":
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                with trio.CancelScope(shield=True):
                    await trio.sleep(0.5)  # its own work, going on after the cancellation
                stubborn_done.set()
                return  # swallowing Cancelled is the misbehaviour under test
        await trio.sleep_forever()

    workers = rivertrio.Workers()
    workers.register(Behave)(work)
    cfg = rivertrio.Config(
        schema=migrated_schema,
        queues={"default": rivertrio.QueueConfig(max_workers=10)},
        workers=workers,
        job_timeout=None,
    )
    async with running(cfg, database_url) as client:
        stubborn = await client.insert(Behave(how="stubborn"))
        normal = await client.insert_many([Behave(how="wait") for _ in range(others)])
        await all_started.wait()
        stop_started = trio.current_time()
        await client.stop_and_cancel()
        took = trio.current_time() - stop_started
        assert stubborn_done.is_set()
    print(f"\nhard stop held by a job ignoring its cancellation: {took:.2f} s")
    assert 0.45 <= took < 10
    assert (await row(driver, stubborn.job.id)).state == JobState.COMPLETED
    for r in normal:
        stored = await row(driver, r.job.id)
        assert (stored.state, stored.attempt, stored.errors) == (JobState.AVAILABLE, 0, [])
    assert any(
        "returned after the client's stop cancelled it" in r.getMessage() for r in caplog.records
    )


CTRL_C_CHILD = """
import os, signal, sys
from dataclasses import dataclass
import trio
import rivertrio


@dataclass
class Behave(rivertrio.JobArgs, kind="hostile_behave"):
    how: str = "ok"


async def work(job):
    if job.args.how == "raise":
        raise KeyboardInterrupt  # a bug: recorded as a failure
    os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, arriving inside the job's code
    while True:  # busy without a checkpoint: Trio raises KeyboardInterrupt right here
        pass


async def main(url, schema):
    workers = rivertrio.Workers()
    workers.register(Behave)(work)
    cfg = rivertrio.Config(
        schema=schema,
        queues={"default": rivertrio.QueueConfig(max_workers=2)},
        workers=workers,
    )
    async with rivertrio.open_client(cfg, database_url=url) as client:
        async with client.subscribe(*rivertrio.EventKind) as events:
            once = rivertrio.InsertOpts(max_attempts=1)
            await client.insert(Behave(how="raise"), once)
            event = await events.receive()
            print("first job:", event.kind, flush=True)
            await client.insert(Behave(how="ctrl-c"), once)
            await trio.sleep_forever()


trio.run(main, sys.argv[1], sys.argv[2])
"""


async def test_a_real_ctrl_c_inside_a_job_still_stops_the_program(
    tmp_path: Path, database_url: str, migrated_schema: str, driver: Driver
) -> None:
    script = tmp_path / "ctrl_c_child.py"
    script.write_text(textwrap.dedent(CTRL_C_CHILD))
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, str(script), database_url, migrated_schema],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    out = result.stdout.decode() + result.stderr.decode()
    # Python ends a program on an uncaught KeyboardInterrupt by dying of SIGINT.
    assert result.returncode in (-signal.SIGINT, 1, 130), out
    assert "first job: job_failed" in out, out
    assert "KeyboardInterrupt" in out, out
    jobs = await driver.fetch("SELECT * FROM /*schema*/river_job ORDER BY id")
    raised, interrupted = [await row(driver, r["id"]) for r in jobs]
    assert raised.state == JobState.DISCARDED
    assert raised.errors[-1].error == "KeyboardInterrupt"
    # The real Ctrl-C interrupted its job: back to available, the attempt given back.
    assert (interrupted.state, interrupted.attempt, interrupted.errors) == (
        JobState.AVAILABLE,
        0,
        [],
    )
