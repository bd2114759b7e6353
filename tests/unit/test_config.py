"""Config validation (every rule, each naming its field), periodic jobs, the retry policy."""

from __future__ import annotations

import dataclasses
import re
import socket
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from rivertrio import ConfigError
from rivertrio._args import Job, JobArgs
from rivertrio._config import Config, ErrorHandlerResult, QueueConfig, default_client_id
from rivertrio._job import AttemptError, JobRow
from rivertrio._maintenance_config import PeriodicJob
from rivertrio._retry import MAX_RETRY_DELAY, default_retry_policy
from rivertrio._worker import Worker, Workers
from support.common import running_row


@dataclass
class Ping(JobArgs, kind="config_ping"):
    n: int = 0


class PingWorker(Worker[Ping]):
    async def work(self, job: Job[Ping]) -> None:
        pass


def workers() -> Workers:
    w = Workers()
    w.add(PingWorker())
    return w


def working(**kwargs: Any) -> Config:
    """A config that works the default queue."""
    return Config(queues={"default": QueueConfig(max_workers=5)}, workers=workers(), **kwargs)


def kwargs(name: str, value: Any) -> dict[str, Any]:
    return {name: value}


# --- defaults ---


def test_defaults_are_rivers() -> None:
    config = Config()
    assert config.queues == {}
    assert config.workers is None
    # River's minimum, not its 0.1 default: cross-process start latency under 5 ms.
    assert config.fetch_cooldown == 0.001
    assert config.fetch_poll_interval == 1.0
    assert config.job_timeout == 60.0
    assert config.rescue_stuck_jobs_after == 3600.0
    assert config.max_attempts == 25
    assert config.retry_policy is default_retry_policy
    assert config.error_handler is None
    assert list(config.periodic_jobs) == []
    assert config.completed_job_retention == 86400
    assert config.cancelled_job_retention == 86400
    assert config.discarded_job_retention == 604800
    assert config.soft_stop_timeout is None
    assert config.poll_only is False
    assert config.schema is None
    assert config.insert_only


def test_default_id_is_host_and_start_time_with_the_liveness_marker() -> None:
    before = datetime.now(UTC)
    config = Config()
    host = re.sub(r"[^A-Za-z0-9_\-]", "_", socket.gethostname())[:60]
    assert config.id.startswith(host + "_")
    assert config.id.endswith(".rt")  # holds a liveness lock: fast rescue applies
    stamp = datetime.strptime(config.id[len(host) + 1 : -10], "%Y_%m_%dT%H_%M_%S_%f")
    assert abs(stamp.replace(tzinfo=UTC) - before).total_seconds() < 5
    assert 1 <= len(config.id) <= 100
    # Computed per construction, not once at import.
    later = default_client_id(datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=UTC), marked=False)
    assert re.fullmatch(r".*_2030_01_02T03_04_05_000006_[0-9a-f]{6}", later)


def test_clients_made_in_the_same_microsecond_get_different_ids() -> None:
    # Worker processes started together once drew the same id, and all but one
    # refused to start: another live client held its liveness lock.
    now = datetime.now(UTC)
    ids = {default_client_id(now) for _ in range(100)}
    assert len(ids) == 100


def test_poll_only_ids_carry_no_liveness_marker() -> None:
    # Transaction-pooling proxies cannot keep a session lock, so a poll_only
    # client must not promise one: its live jobs would be rescued.
    assert not Config(poll_only=True).id.endswith(".rt")
    assert not dataclasses.replace(Config(), poll_only=True).id.endswith(".rt")
    assert Config(poll_only=True, id="worker-1").id == "worker-1"
    with pytest.raises(ConfigError, match=r"id 'worker-1\.rt' ends with '\.rt'.*poll_only"):
        Config(poll_only=True, id="worker-1.rt")


def test_config_is_frozen_and_owns_its_queues() -> None:
    queues = {"default": QueueConfig(max_workers=1)}
    config = Config(queues=queues, workers=workers())
    queues["other"] = QueueConfig(max_workers=1)
    assert list(config.queues) == ["default"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_attempts = 3  # type: ignore[misc]


def test_replace_validates_again() -> None:
    with pytest.raises(ConfigError, match="max_attempts"):
        dataclasses.replace(Config(), max_attempts=0)


def test_durations_are_stored_as_floats() -> None:
    config = working(fetch_cooldown=1, fetch_poll_interval=2, job_timeout=3)
    assert isinstance(config.fetch_cooldown, float)
    assert isinstance(config.job_timeout, float)


# --- invalid configuration raises ConfigError naming the field ---


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Config(fetch_cooldown=2.0, fetch_poll_interval=1.0), "fetch_poll_interval"),
        (lambda: Config(job_timeout=120, rescue_stuck_jobs_after=60), "rescue_stuck_jobs_after"),
        (lambda: QueueConfig(max_workers=0), "max_workers"),
        (lambda: QueueConfig(max_workers=10_001), "max_workers"),
        (lambda: Config(schema="bad\x00schema"), "schema"),
    ],
    ids=["poll-under-cooldown", "rescue-under-timeout", "workers-0", "workers-10001", "schema"],
)
def test_behaviour_98_invalid_config_names_the_field(build: Any, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        build()


# --- queues ---


@pytest.mark.parametrize(
    "name", ["default", "a", "q1", "my_queue", "my-queue", "a1_b2-c3", "x" * 64]
)
def test_valid_queue_names(name: str) -> None:
    assert name in Config(queues={name: QueueConfig(max_workers=1)}, workers=workers()).queues


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Default",
        "has space",
        "_lead",
        "trail_",
        "-lead",
        "trail-",
        "double__u",
        "a-_b",
        "é",
        "x" * 65,
    ],
)
def test_invalid_queue_names(name: str) -> None:
    with pytest.raises(ConfigError, match=r"^queues: queue name"):
        Config(queues={name: QueueConfig(max_workers=1)}, workers=workers())


def test_queue_name_near_miss_is_rejected_quickly() -> None:
    # The documented regex backtracks exponentially on this input; ours must not.
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="queues"):
        Config(queues={"a" * 63 + "!": QueueConfig(max_workers=1)}, workers=workers())
    assert time.perf_counter() - started < 1.0


def test_queue_name_must_be_a_string() -> None:
    with pytest.raises(ConfigError, match="queue name must be a string"):
        Config(queues={1: QueueConfig(max_workers=1)}, workers=workers())  # type: ignore[dict-item]


def test_queue_config_must_be_a_queue_config() -> None:
    with pytest.raises(ConfigError, match=r"queues\['default'\] must be a QueueConfig"):
        Config(queues={"default": 5}, workers=workers())  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="queues must be a dict"):
        Config(queues=["default"], workers=workers())  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [1, 10_000])
def test_max_workers_bounds_accepted(n: int) -> None:
    assert QueueConfig(max_workers=n).max_workers == n


@pytest.mark.parametrize("n", [0, -1, 10_001])
def test_max_workers_out_of_range(n: int) -> None:
    with pytest.raises(ConfigError, match=r"max_workers must be an int from 1 to 10,000"):
        QueueConfig(max_workers=n)


@pytest.mark.parametrize("n", [1.5, True, "3"])
def test_max_workers_must_be_an_int(n: Any) -> None:
    with pytest.raises(ConfigError, match="max_workers must be an int"):
        QueueConfig(max_workers=n)


def test_queue_overrides_are_validated() -> None:
    with pytest.raises(
        ConfigError, match=r"^fetch_cooldown must be a finite number of seconds, at least 0\.001"
    ):
        QueueConfig(max_workers=1, fetch_cooldown=-1)
    with pytest.raises(ConfigError, match=r"fetch_poll_interval \(0.5\) must be >= fetch_cooldown"):
        QueueConfig(max_workers=1, fetch_cooldown=1, fetch_poll_interval=0.5)
    # An override combined with the config's other value.
    with pytest.raises(ConfigError, match=r"queues\['default'\]\.fetch_poll_interval"):
        Config(
            queues={"default": QueueConfig(max_workers=1, fetch_poll_interval=0.05)},
            fetch_cooldown=0.1,
            workers=workers(),
        )
    with pytest.raises(ConfigError, match=r"queues\['default'\]\.fetch_poll_interval"):
        Config(
            queues={"default": QueueConfig(max_workers=1, fetch_cooldown=5)},
            workers=workers(),
        )
    config = Config(
        queues={
            "default": QueueConfig(max_workers=1, fetch_cooldown=0.5, fetch_poll_interval=2),
            "other": QueueConfig(max_workers=1),
        },
        workers=workers(),
    )
    assert config.queue_fetch_cooldown("default") == 0.5
    assert config.queue_fetch_poll_interval("default") == 2.0
    assert config.queue_fetch_cooldown("other") == config.fetch_cooldown == 0.001
    assert config.queue_fetch_poll_interval("other") == 1.0


# --- workers ---


def test_workers_required_with_queues() -> None:
    with pytest.raises(ConfigError, match="workers is required when queues are configured"):
        Config(queues={"default": QueueConfig(max_workers=1)})


def test_workers_with_no_worker_rejected_with_queues() -> None:
    with pytest.raises(ConfigError, match="workers has no worker registered"):
        Config(queues={"default": QueueConfig(max_workers=1)}, workers=Workers())


def test_workers_must_be_a_registry() -> None:
    with pytest.raises(ConfigError, match=r"workers must be a rivertrio\.Workers"):
        Config(workers={"k": PingWorker()})  # type: ignore[arg-type]


def test_insert_only_config_may_carry_workers() -> None:
    config = Config(workers=workers())
    assert config.insert_only


# --- durations ---


@pytest.mark.parametrize(
    "field",
    [
        "fetch_cooldown",
        "fetch_poll_interval",
        "job_timeout",
        "rescue_stuck_jobs_after",
        "completed_job_retention",
        "cancelled_job_retention",
        "discarded_job_retention",
        "soft_stop_timeout",
    ],
)
def test_negative_durations_are_rejected(field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{field} must"):
        Config(**kwargs(field, -1.0))


@pytest.mark.parametrize("field", ["fetch_cooldown", "job_timeout", "completed_job_retention"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), "1", True])
def test_durations_must_be_finite_numbers(field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=rf"^{field} must"):
        Config(**kwargs(field, value))


def test_fetch_cooldown_has_a_floor() -> None:
    with pytest.raises(
        ConfigError, match=r"fetch_cooldown must be a finite number of seconds, at least 0\.001"
    ):
        Config(fetch_cooldown=0)


def test_poll_interval_may_equal_cooldown() -> None:
    assert Config(fetch_cooldown=0.5, fetch_poll_interval=0.5).fetch_poll_interval == 0.5


def test_job_timeout_zero_rejected_none_accepted() -> None:
    with pytest.raises(
        ConfigError, match="job_timeout must be a finite number of seconds, greater than 0"
    ):
        Config(job_timeout=0)
    # No timeout: any rescue delay is fine.
    assert Config(job_timeout=None, rescue_stuck_jobs_after=1).job_timeout is None


def test_rescue_may_equal_timeout() -> None:
    assert Config(job_timeout=10, rescue_stuck_jobs_after=10).rescue_stuck_jobs_after == 10


@pytest.mark.parametrize(
    "field",
    ["completed_job_retention", "cancelled_job_retention", "discarded_job_retention"],
)
def test_retention_none_keeps_forever_zero_allowed(field: str) -> None:
    assert getattr(Config(**kwargs(field, None)), field) is None
    assert getattr(Config(**kwargs(field, 0)), field) == 0


def test_rescue_stuck_jobs_after_cannot_be_none() -> None:
    with pytest.raises(
        ConfigError, match="rescue_stuck_jobs_after must be a finite number of seconds"
    ):
        Config(rescue_stuck_jobs_after=None)  # type: ignore[arg-type]


# --- other fields ---


@pytest.mark.parametrize("value", [0, -3, 32768, 2.0, True])
def test_max_attempts_rule(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"max_attempts must be an int from 1 to 32,767"):
        Config(max_attempts=value)


def test_pool_size_defaults_to_six_plus_one_per_queue() -> None:
    assert Config().effective_pool_size == 6
    assert Config().reserved_connections == 2
    cfg = working()
    assert (cfg.effective_pool_size, cfg.reserved_connections) == (7, 3)
    assert working(pool_size=4).effective_pool_size == 4


@pytest.mark.parametrize("value", [3, 0, -1, 10_001, 5.0, True, "8"])
def test_pool_size_leaves_a_connection_for_transactions(value: Any) -> None:
    # One queue: 3 connections are the client's own, so 4 is the least.
    with pytest.raises(ConfigError, match=r"pool_size must be an int from 4 to 10,000"):
        working(pool_size=value)


def test_max_attempts_bounds_accepted() -> None:
    assert Config(max_attempts=1).max_attempts == 1
    assert Config(max_attempts=32767).max_attempts == 32767


@pytest.mark.parametrize(
    "schema",
    ["public", "rt_0123abc", "_x", "My$Schema", "1abc", "a b", 'x"; drop', "s" * 46],
)
def test_valid_schemas(schema: str) -> None:
    assert Config(schema=schema).schema == schema


@pytest.mark.parametrize("schema", ["", "s" * 64, "é" * 32, "a\x00", 5])
def test_invalid_schemas(schema: Any) -> None:
    with pytest.raises(ConfigError, match=r"^schema .* is not a valid Postgres schema name"):
        Config(schema=schema)


def test_schemas_too_long_for_notification_channels() -> None:
    # "<schema>.river_leadership" must fit Postgres' 63-byte channel names.
    with pytest.raises(ConfigError, match=r"^schema 's{47}' is too long for notifications"):
        Config(schema="s" * 47)


def test_reindexer_settings() -> None:
    default = Config()
    assert (default.reindexer_schedule, default.reindexer_index_names) == ("0 0 * * *", None)
    assert default.reindexer_timeout == 60.0
    custom = Config(
        reindexer_schedule=3600, reindexer_index_names=["a", "b"], reindexer_timeout=None
    )
    assert (custom.reindexer_schedule, custom.reindexer_index_names) == (3600.0, ("a", "b"))
    assert custom.reindexer_timeout is None
    assert Config(reindexer_schedule=None).reindexer_schedule is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"reindexer_schedule": "not cron"}, "reindexer_schedule 'not cron' is not a valid cron"),
        ({"reindexer_schedule": 0}, "reindexer_schedule must be"),
        ({"reindexer_index_names": "river_job_kind"}, "must be a list of index names"),
        ({"reindexer_index_names": [""]}, "is not a valid Postgres index name"),
        ({"reindexer_index_names": [3]}, "is not a valid Postgres index name"),
        ({"reindexer_timeout": -1}, "reindexer_timeout must be"),
    ],
)
def test_invalid_reindexer_settings(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Config(**fields)


@pytest.mark.parametrize("client_id", ["x" * 101, 7, None])
def test_invalid_client_id(client_id: Any) -> None:
    with pytest.raises(ConfigError, match=r"^id must be a string of 1 to 100"):
        Config(id=client_id)


def test_empty_client_id_means_generate_one() -> None:
    assert Config(id="").id.endswith(".rt")


def test_poll_only_must_be_bool() -> None:
    with pytest.raises(ConfigError, match="poll_only must be a bool"):
        Config(poll_only=1)  # type: ignore[arg-type]


def test_retry_policy_must_be_callable() -> None:
    with pytest.raises(ConfigError, match="retry_policy must be a callable"):
        Config(retry_policy=5)  # type: ignore[arg-type]
    assert Config(retry_policy=lambda job: 1.0).retry_policy(None) == 1.0  # type: ignore[arg-type]


async def async_handler(job: JobRow, error: BaseException) -> ErrorHandlerResult | None:
    return ErrorHandlerResult(set_cancelled=True)


class HandlerObject:
    async def __call__(self, job: JobRow, error: BaseException) -> ErrorHandlerResult | None:
        return None


def sync_handler(job: JobRow, error: BaseException) -> ErrorHandlerResult | None:
    return None


def test_error_handler_must_be_async() -> None:
    assert Config(error_handler=async_handler).error_handler is async_handler
    handler = HandlerObject()
    assert Config(error_handler=handler).error_handler is handler
    with pytest.raises(ConfigError, match="error_handler must be an async function"):
        Config(error_handler=sync_handler)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="error_handler must be an async callable"):
        Config(error_handler="nope")  # type: ignore[arg-type]


def test_error_handler_result_default() -> None:
    assert ErrorHandlerResult().set_cancelled is False
    assert ErrorHandlerResult(set_cancelled=True).set_cancelled is True


# --- periodic jobs ---


def make_ping() -> Ping:
    return Ping()


def test_periodic_job_accepts_interval_and_cron() -> None:
    every = PeriodicJob(15, make_ping, run_on_start=True, id="ping")
    assert every.schedule == 15.0
    assert isinstance(every.schedule, float)
    cron = PeriodicJob("*/5 * * * *", make_ping)
    assert cron.schedule == "*/5 * * * *"
    config = Config(periodic_jobs=[every, cron])
    assert tuple(config.periodic_jobs) == (every, cron)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"schedule": "every minute"}, "not a valid cron expression"),
        ({"schedule": "61 * * * *"}, "not a valid cron expression"),
        (
            {"schedule": 0},
            "PeriodicJob.schedule must be a finite number of seconds, greater than 0",
        ),
        ({"schedule": -1.0}, "PeriodicJob.schedule must be a finite number of seconds"),
        ({"schedule": float("inf")}, "PeriodicJob.schedule must be a finite number of seconds"),
        ({"constructor": "make_ping"}, "PeriodicJob.constructor must be callable"),
        ({"run_on_start": "yes"}, "PeriodicJob.run_on_start must be a bool"),
        ({"id": ""}, "PeriodicJob.id must be a string of 1 to 128"),
        ({"id": "x" * 129}, "PeriodicJob.id must be a string of 1 to 128"),
    ],
)
def test_periodic_job_validation(kwargs: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {"schedule": 60, "constructor": make_ping} | kwargs
    with pytest.raises(ConfigError, match=re.escape(message)):
        PeriodicJob(**fields)


def test_periodic_jobs_field_rules() -> None:
    with pytest.raises(ConfigError, match="id 'ping' is used twice"):
        Config(periodic_jobs=[PeriodicJob(1, make_ping, id="ping")] * 2)
    with pytest.raises(ConfigError, match="periodic_jobs must hold PeriodicJob"):
        Config(periodic_jobs=[make_ping])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="periodic_jobs must be a list"):
        Config(periodic_jobs=PeriodicJob(1, make_ping))  # type: ignore[arg-type]


# --- the default retry policy: n**4 s after the n-th error, +-10% ---


def row_with_errors(n: int) -> JobRow:
    now = datetime.now(UTC)
    errors = [AttemptError(at=now, attempt=i + 1, error="boom", trace="") for i in range(n)]
    return running_row(attempt=n + 1, errors=errors)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_default_retry_policy_is_n_to_the_fourth_with_jitter(n: int) -> None:
    # The n-th error: the row holds n - 1 errors when the policy is asked.
    row = row_with_errors(n - 1)
    base = n**4
    samples = [default_retry_policy(row) for _ in range(2000)]
    assert all(base * 0.9 <= s <= base * 1.1 for s in samples)
    # The jitter really varies and spreads over most of the +-10% band.
    assert len(set(samples)) > 1900
    assert min(samples) < base * 0.93
    assert max(samples) > base * 1.07
    assert abs(statistics.fmean(samples) - base) < base * 0.01


def test_default_retry_policy_is_capped() -> None:
    assert default_retry_policy(row_with_errors(10_000)) <= MAX_RETRY_DELAY
