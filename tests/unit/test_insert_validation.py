"""Insert options and queue names checked when they are built, before anything is written."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import pytest

from rivertrio import ConfigError, InvalidInputError
from rivertrio._args import InsertOpts, Job, JobArgs
from rivertrio._config import Config, QueueConfig
from rivertrio._worker import Workers
from support.common import nested


@dataclass
class Ping(JobArgs, kind="ins_ping"):
    pass


async def ping(job: Job[Ping]) -> None:
    pass


def test_tags_must_be_a_list_of_strings() -> None:
    with pytest.raises(InvalidInputError, match="tags must be a list of strings, not str"):
        InsertOpts(tags="abc")
    with pytest.raises(InvalidInputError, match="tag 5 is not a string"):
        InsertOpts(tags=[5])  # type: ignore[list-item]


def test_invalid_queue_name_is_rejected_in_args_class_and_config() -> None:
    with pytest.raises(InvalidInputError, match="queue: queue name 'Nope'"):

        @dataclass
        class Broken(JobArgs, kind="ins_broken"):
            insert_opts: ClassVar[InsertOpts | None] = InsertOpts(queue="Nope")

    workers = Workers()
    workers.register(Ping)(ping)
    with pytest.raises(ConfigError, match="queues: queue name 'Nope'"):
        Config(queues={"Nope": QueueConfig(max_workers=1)}, workers=workers)


def bad_opts(**kwargs: Any) -> InsertOpts:
    """InsertOpts built from ill-typed values on purpose."""
    return InsertOpts(**kwargs)


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (lambda: InsertOpts(max_attempts=0), "max_attempts must be an int from 1 to 32,767"),
        (lambda: InsertOpts(max_attempts=32768), "max_attempts must be an int from 1 to 32,767"),
        (lambda: bad_opts(metadata=[1]), "metadata must be a JSON object"),
        (lambda: bad_opts(metadata={1: "x"}), "metadata key 1 is not a string"),
        (lambda: InsertOpts(metadata={"x": float("inf")}), "metadata does not encode to JSON"),
        (lambda: InsertOpts(metadata={"x": object()}), "metadata does not encode to JSON"),
        (lambda: InsertOpts(metadata={"x": "\x00"}), "metadata contains a NUL"),
        (
            lambda: InsertOpts(scheduled_at=datetime(2030, 1, 1)),
            "scheduled_at must be timezone-aware",
        ),
        (lambda: bad_opts(scheduled_at="2030-01-01"), "scheduled_at must be a datetime"),
        (lambda: bad_opts(unique=True), "unique must be a rivertrio.UniqueOpts"),
        (lambda: bad_opts(pending=1), "pending must be a bool"),
    ],
)
def test_invalid_options_name_the_problem(opts: Callable[[], InsertOpts], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        opts()


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"deep": nested(10_000)}, "metadata is nested deeper than"),
        ({"x": "\ud800"}, r"metadata contains a lone surrogate '\\ud800' \(at \['x'\]\)"),
        ({"x": [{"y": "\x00"}]}, r"metadata contains a NUL character \(\\x00\) \(at \['x'\]\[0\]"),
        ({"x": {2: 1}}, r"metadata does not encode to JSON: key 2 at \['x'\]"),
        ({"x": {"y": math.nan}}, r"metadata does not encode to JSON: at \['x'\]\['y'\]: nan"),
        ({"\udc80": 1}, r"metadata has a key that contains a lone surrogate"),
    ],
)
def test_hostile_metadata_is_rejected(metadata: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        InsertOpts(metadata=metadata)
