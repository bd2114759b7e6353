"""Flow control rules: checked when built, and the keys they stamp on a job."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

import rivertrio
from rivertrio import ConfigError, FlowControl, FlowKey, InvalidInputError, RateLimit
from rivertrio._config import Config
from rivertrio._prepare import prepare_job


@dataclass
class Export(rivertrio.JobArgs, kind="unit_export"):
    customer: Any = None
    region: str = "eu"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: FlowControl(), "sets no rule"),
        (lambda: FlowControl(concurrency=0), "concurrency"),
        (lambda: FlowControl(concurrency=True), "concurrency"),
        (lambda: FlowControl(partition_concurrency=1), "needs partition_by"),
        (
            lambda: FlowControl(concurrency=1, rate=RateLimit(5, 1.0, per_partition=True)),
            "needs partition_by",
        ),
        (lambda: FlowControl(concurrency=1, max_partitions=0), "max_partitions"),
        (
            lambda: FlowControl(concurrency=1, partition_by=["a"]),  # type: ignore[arg-type]
            "must be a rivertrio.FlowKey",
        ),
        (
            lambda: FlowControl(
                sequence_by=FlowKey(kind=True),
                sequence_on_failure="skip",  # type: ignore[arg-type]
            ),
            "'stop'",
        ),
        (lambda: FlowKey(), "at least one"),
        (lambda: FlowKey(args="customer"), "list of names"),
        (lambda: FlowKey(args=["a", "a"]), "listed twice"),
        (lambda: FlowKey(metadata=[""]), "not a name"),
        (lambda: RateLimit(0, 1.0), "RateLimit.limit"),
        (lambda: RateLimit(1, 0), "RateLimit.period"),
        (lambda: Config(flow={"Bad Name": FlowControl(concurrency=1)}), "flow: queue name"),
        (
            lambda: Config(flow={"q": {"concurrency": 1}}),  # type: ignore[dict-item]
            "must be a rivertrio.FlowControl",
        ),
    ],
)
def test_bad_rules_are_refused_with_what_is_wrong(build: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build()


def _prepared(rules: FlowControl, args: Export, opts: rivertrio.InsertOpts | None = None) -> Any:
    config = Config(flow={"q": rules})
    return prepare_job(args, opts or rivertrio.InsertOpts(queue="q"), config, _NOW)


_NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_job_of_a_flow_queue_is_held_with_its_keys() -> None:
    rules = FlowControl(
        partition_by=FlowKey(args=["customer", "region"]),
        partition_concurrency=1,
        sequence_by=FlowKey(metadata=["order"], kind=True),
    )
    job = _prepared(
        rules, Export(customer=7), rivertrio.InsertOpts(queue="q", metadata={"order": "A-1"})
    )
    assert job.pending
    assert json.loads(job.metadata) == {
        "order": "A-1",
        "rivertrio:part": '[7, "eu"]',
        "rivertrio:seq": '["A-1", "unit_export"]',
        "rivertrio:flow": 's:["A-1", "unit_export"]',
    }


def test_a_job_of_another_queue_is_not_held() -> None:
    config = Config(flow={"q": FlowControl(concurrency=1)})
    job = prepare_job(Export(), rivertrio.InsertOpts(queue="other"), config, _NOW)
    assert not job.pending
    assert job.metadata == "{}"


def test_a_queue_without_partitions_or_sequences_has_one_group() -> None:
    job = _prepared(FlowControl(concurrency=2), Export(customer=1))
    assert job.metadata == '{"rivertrio:flow":"p:"}'


@pytest.mark.parametrize("value", [1.5, [1], {"a": 1}])
def test_a_key_value_must_be_a_plain_scalar(value: Any) -> None:
    rules = FlowControl(partition_by=FlowKey(args=["customer"]), partition_concurrency=1)
    with pytest.raises(InvalidInputError, match="flow key args field 'customer' must be a string"):
        _prepared(rules, Export(customer=value))


def test_the_key_is_json_build_array_text() -> None:
    key = FlowKey(args=["a", "b", "missing"], kind=True)
    text = key.value("k", {"a": 'x"y', "b": True}, {})
    assert text == '["x\\"y", true, null, "k"]'
    assert (
        key.sql("j")
        == "json_build_array(j.args -> 'a', j.args -> 'b', j.args -> 'missing', j.kind)::text"
    )
    # A quote in a name is doubled, never closes the literal.
    assert FlowKey(metadata=["it's"]).sql("j") == "json_build_array(j.metadata -> 'it''s')::text"
