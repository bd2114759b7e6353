"""Flow control rules: what a queue's limits, partitions, rates and sequences are.

A queue named in ``Config.flow`` is *flow-controlled*. Its jobs are inserted
**held**: in River's ``pending`` state (which no River client fetches) with
rivertrio's keys stamped into their metadata, and only the flow fetch of a
rivertrio producer releases them, one transaction at a time per queue, under
the limits below. Every client that inserts into or works such a queue must
be given the same rules.

The metadata keys (all ``rivertrio:``):

- ``rivertrio:flow``: the job's *group*, the unit the flow fetch takes turns
  between: ``"s:" + sequence key`` for a job in a sequence, else
  ``"p:" + partition key``. Every job of a flow-controlled queue has it, and
  is held by rivertrio whenever it is ``pending``.
- ``rivertrio:part``: the partition key (absent when the queue is not partitioned).
- ``rivertrio:seq``: the sequence key (absent when the queue has no sequences).

A key is the JSON array of the chosen values, written as Postgres writes a
``json_build_array`` of them, so that the SQL that adopts jobs inserted
without the rules computes the very same text.

This module imports only validation, errors and the flow fetch's description
(`FlowFetch`): the config, the inserter and the producer all use it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ._driver._flow import FlowFetch
from ._exceptions import ConfigError, InvalidInputError
from ._validate import duration, integer

__all__ = [
    "FLOW_KEY",
    "PART_KEY",
    "SEQ_KEY",
    "WAIT_KEY",
    "WORKFLOW_KEY",
    "FlowControl",
    "FlowKey",
    "RateLimit",
    "fetch_rules",
    "stamp",
]

FLOW_KEY = "rivertrio:flow"
PART_KEY = "rivertrio:part"
SEQ_KEY = "rivertrio:seq"
#: A workflow task waiting for its dependencies (see `rivertrio._workflow`).
WAIT_KEY = "rivertrio:wait"
#: The workflow a job is a task of (see `rivertrio._workflow`).
WORKFLOW_KEY = "rivertrio:workflow"

#: The most partitions (or sequences) one fetch may consider.
MAX_PARTITIONS = 10_000
_MAX_LIMIT = 1_000_000


def _names(where: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ConfigError(f"{where} must be a list of names, not {type(value).__name__}")
    names = tuple(value)
    for name in names:
        if not isinstance(name, str) or not name or "\x00" in name:
            raise ConfigError(f"{where}: {name!r} is not a name (a non-empty string)")
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: a name is listed twice: {list(names)!r}")
    return names


@dataclass(frozen=True, slots=True)
class FlowKey:
    """Which values of a job make up a key: top-level args fields, metadata keys, the kind.

    Jobs with equal values share the key. A missing field counts as null. The
    values must be strings, integers, booleans or null (checked at insert).

    Args:
        args: Names of fields of the job's args.
        metadata: Names of keys of the job's metadata (an explicit key: set it
            with ``InsertOpts(metadata={...})``).
        kind: Whether the job's kind is part of the key.

    Raises:
        ConfigError: A name is not a non-empty string, or the key is empty.
    """

    args: Sequence[str] = ()
    metadata: Sequence[str] = ()
    kind: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "args", _names("FlowKey.args", self.args))
        object.__setattr__(self, "metadata", _names("FlowKey.metadata", self.metadata))
        if not isinstance(self.kind, bool):
            raise ConfigError(f"FlowKey.kind must be a bool, not {type(self.kind).__name__}")
        if not self.args and not self.metadata and not self.kind:
            raise ConfigError("FlowKey needs at least one args field, metadata key, or kind=True")

    def value(self, kind: str, args: Mapping[str, Any], metadata: Mapping[str, Any]) -> str:
        """The key of one job, as the flow SQL would compute it.

        Raises:
            InvalidInputError: A value is not a string, integer, boolean or null.
        """
        values: list[Any] = []
        sources = ((args, self.args, "args field"), (metadata, self.metadata, "metadata key"))
        for source, names, what in sources:
            for name in names:
                value = source.get(name)
                if value is not None and not isinstance(value, str | int):
                    raise InvalidInputError(
                        f"flow key {what} {name!r} must be a string, an integer, a boolean or "
                        f"null, not {type(value).__name__}"
                    )
                values.append(value)
        if self.kind:
            values.append(kind)
        # json_build_array's own spacing; ensure_ascii=False as Postgres keeps text as is.
        return json.dumps(values, separators=(", ", ": "), ensure_ascii=False)

    def sql(self, job: str) -> str:
        """The SQL expression of the same key for a row of river_job aliased `job`."""
        parts = [f"{job}.args -> {_literal(n)}" for n in self.args]
        parts += [f"{job}.metadata -> {_literal(n)}" for n in self.metadata]
        if self.kind:
            parts.append(f"{job}.kind")
        return f"json_build_array({', '.join(parts)})::text"


def _literal(text: str) -> str:
    # standard_conforming_strings is on in every supported Postgres: only quotes double.
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `limit` job starts in any `period` seconds (a sliding window).

    Args:
        limit: Starts allowed per period, 1 to 1,000,000.
        period: The window, in seconds.
        per_partition: Apply the limit to each partition on its own (the
            queue's ``partition_by``) instead of to the whole queue.

    Raises:
        ConfigError: A value is out of range.
    """

    limit: int
    period: float
    per_partition: bool = False

    def __post_init__(self) -> None:
        integer("RateLimit.limit", self.limit, ConfigError, maximum=_MAX_LIMIT)
        object.__setattr__(self, "period", duration("RateLimit.period", self.period, ConfigError))
        if not isinstance(self.per_partition, bool):
            raise ConfigError("RateLimit.per_partition must be a bool")


@dataclass(frozen=True, slots=True)
class FlowControl:
    """A queue's flow rules; give the same ones to every client that inserts into or works it.

    Every limit holds across every client and process working the queue. A
    job starts only when every rule allows it.

    Args:
        concurrency: At most this many jobs of the queue running at once.
        partition_by: What splits the queue into partitions (for example
            ``FlowKey(args=["customer_id"])``, or ``FlowKey(kind=True)`` for
            one partition per job kind).
        partition_concurrency: At most this many running at once per
            partition (needs `partition_by`).
        rate: At most so many job starts per period, for the queue or per partition.
        sequence_by: Jobs with the same sequence key run one at a time, in the
            order they were inserted.
        sequence_on_failure: When a job of a sequence ends discarded or
            cancelled: ``"stop"`` holds the rest of its sequence until that job
            is retried (and completes) or deleted; ``"continue"`` lets the next
            one run. A job waiting for a retry always holds its sequence.
        max_partitions: The most partitions (or sequences) one fetch
            considers, taking turns from where the last fetch stopped: one busy
            partition cannot keep the others waiting.

    Raises:
        ConfigError: A value is out of range, or a rule needs another one.
    """

    concurrency: int | None = None
    partition_by: FlowKey | None = None
    partition_concurrency: int | None = None
    rate: RateLimit | None = None
    sequence_by: FlowKey | None = None
    sequence_on_failure: Literal["stop", "continue"] = "stop"
    max_partitions: int = 100

    def __post_init__(self) -> None:
        integer("concurrency", self.concurrency, ConfigError, maximum=_MAX_LIMIT, none="for none")
        integer(
            "partition_concurrency",
            self.partition_concurrency,
            ConfigError,
            maximum=_MAX_LIMIT,
            none="for none",
        )
        integer("max_partitions", self.max_partitions, ConfigError, maximum=MAX_PARTITIONS)
        for name in ("partition_by", "sequence_by"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, FlowKey):
                raise ConfigError(f"{name} must be a rivertrio.FlowKey, not {type(value).__name__}")
        if self.rate is not None and not isinstance(self.rate, RateLimit):
            raise ConfigError(f"rate must be a rivertrio.RateLimit, not {type(self.rate).__name__}")
        if self.sequence_on_failure not in ("stop", "continue"):
            raise ConfigError(
                "sequence_on_failure must be 'stop' or 'continue', "
                f"not {self.sequence_on_failure!r}"
            )
        if self.partition_by is None:
            if self.partition_concurrency is not None:
                raise ConfigError("partition_concurrency needs partition_by (what a partition is)")
            if self.rate is not None and self.rate.per_partition:
                raise ConfigError("RateLimit(per_partition=True) needs partition_by")
        if (
            self.concurrency is None
            and self.partition_concurrency is None
            and self.rate is None
            and self.sequence_by is None
        ):
            raise ConfigError(
                "FlowControl sets no rule: give concurrency, partition_concurrency, rate or "
                "sequence_by"
            )

    def stamp(self, kind: str, args: Mapping[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
        """`metadata` with this queue's keys for a job about to be inserted held.

        Raises:
            InvalidInputError: A key value is not a string, integer, boolean or null.
        """
        stamped = dict(metadata)
        part = ""
        if self.partition_by is not None:
            part = self.partition_by.value(kind, args, metadata)
            stamped[PART_KEY] = part
        if self.sequence_by is not None:
            seq = self.sequence_by.value(kind, args, metadata)
            stamped[SEQ_KEY] = seq
            stamped[FLOW_KEY] = "s:" + seq
        else:
            stamped[FLOW_KEY] = "p:" + part
        return stamped


def stamp(
    rules: FlowControl, kind: str, encoded_args: str, metadata: Mapping[str, Any]
) -> dict[str, Any]:
    """The metadata of a job inserted held into a queue with `rules` (see `FlowControl.stamp`).

    Raises:
        InvalidInputError: A key value is not a string, integer, boolean or null.
    """
    args = json.loads(encoded_args) if rules.partition_by or rules.sequence_by else {}
    return rules.stamp(kind, args, dict(metadata))


def fetch_rules(rules: FlowControl) -> FlowFetch:
    """What the flow fetch needs of a queue's rules."""
    return FlowFetch(
        concurrency=rules.concurrency,
        partition_concurrency=rules.partition_concurrency,
        rate_limit=None if rules.rate is None else rules.rate.limit,
        rate_period=0.0 if rules.rate is None else rules.rate.period,
        rate_per_partition=rules.rate is not None and rules.rate.per_partition,
        sequence_continue=rules.sequence_on_failure == "continue",
        max_groups=rules.max_partitions,
        part_sql=None if rules.partition_by is None else rules.partition_by.sql("j"),
    )
