"""The small rules (durations, integers, queue and schema names) and every place that applies them.

Each rule is written once, in ``rivertrio._validate``; the tables below drive
every former copy of it through the same bad values, so that a site that stops
using the rule (or a rule that drifts) fails here. The tests named after a
drift pin a behaviour that differed between copies before they were merged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

import pytest

from rivertrio import (
    Config,
    ConfigError,
    InvalidInputError,
    JobArgs,
    JobDeleteManyParams,
    JobListCursor,
    JobListParams,
    JobSnooze,
    PeriodicJob,
    QueueConfig,
    UniqueOpts,
)
from rivertrio._args import InsertOpts, Job, validate_kind
from rivertrio._completer import Completer
from rivertrio._driver import Driver
from rivertrio._elector import Elector
from rivertrio._liveness import Liveness
from rivertrio._maintenance import JobCleaner, JobRescuer, JobScheduler, MaintenanceSettings
from rivertrio._maintenance._queue_cleaner import QueueCleaner
from rivertrio._notifier import Notifier
from rivertrio._validate import (
    BIGINT_MAX,
    duration,
    integer,
    job_id,
    queue_name,
    queue_name_problem,
    schema_name_problem,
)
from rivertrio._worker import Worker, resolve_timeout
from rivertrio.testing import RequireInsertedOpts, stress_start_stop

# Validation happens before any I/O: the services get no usable driver.
NO_DRIVER = cast(Driver, SimpleNamespace(schema=None, configured_schema=None))


# --- the rules themselves ---


@pytest.mark.parametrize("value", [1, 0.5, 1e9, 86400])
def test_duration_accepts_positive_finite_numbers_as_floats(value: float) -> None:
    checked = duration("wait", value, ConfigError)
    assert checked == value
    assert type(checked) is float


@pytest.mark.parametrize(
    "value", [0, -1, -0.0, math.nan, math.inf, -math.inf, True, False, "1", None, 10**400]
)
def test_duration_refuses_what_is_not_a_positive_finite_number(value: object) -> None:
    with pytest.raises(
        ConfigError, match=r"^wait must be a finite number of seconds, greater than 0; got "
    ):
        duration("wait", value, ConfigError)


def test_duration_bounds_and_none() -> None:
    assert duration("grace", 0, ConfigError, at_least=0) == 0.0
    with pytest.raises(ConfigError, match=r"grace must be a finite number of seconds, 0 or more"):
        duration("grace", -0.001, ConfigError, at_least=0)
    assert duration("cooldown", 0.001, ConfigError, at_least=0.001) == 0.001
    with pytest.raises(ConfigError, match=r"cooldown must be .*, at least 0\.001; got 0"):
        duration("cooldown", 0, ConfigError, at_least=0.001)
    assert duration("limit", None, ConfigError, none="for no limit") is None
    with pytest.raises(ConfigError, match=r", or None for no limit; got inf$"):
        duration("limit", math.inf, ConfigError, none="for no limit")


def test_the_caller_chooses_the_error_class() -> None:
    for error in (ConfigError, InvalidInputError, ValueError):
        with pytest.raises(error):
            duration("x", -1, error)
        with pytest.raises(error):
            integer("x", -1, error)
        with pytest.raises(error):
            queue_name("X", error)


@pytest.mark.parametrize(
    ("minimum", "maximum", "good", "bad", "rule"),
    [
        (1, None, [1, 2**70], [0, -1, True, 1.0, "1", None], "an int, 1 or more"),
        (0, None, [0, 7], [-1, False], "an int, 0 or more"),
        (1, 4, [1, 4], [0, 5, True], "an int from 1 to 4"),
        (1, 10_000, [10_000], [10_001], "an int from 1 to 10,000"),
        (1, BIGINT_MAX, [BIGINT_MAX], [BIGINT_MAX + 1], r"an int from 1 to 2\*\*63 - 1"),
    ],
)
def test_integer_rules(
    minimum: int, maximum: int | None, good: list[int], bad: list[object], rule: str
) -> None:
    for value in good:
        assert integer("n", value, ConfigError, minimum=minimum, maximum=maximum) == value
    for wrong in bad:
        with pytest.raises(ConfigError, match=rf"^n must be {rule}; got "):
            integer("n", wrong, ConfigError, minimum=minimum, maximum=maximum)


def test_integer_may_allow_none_and_says_so() -> None:
    assert integer("limit", None, InvalidInputError, none="for no limit") is None
    with pytest.raises(InvalidInputError, match=r"an int, 1 or more, or None for no limit; got 0"):
        integer("limit", 0, InvalidInputError, none="for no limit")


def test_job_id_is_a_positive_bigint() -> None:
    assert job_id(BIGINT_MAX, InvalidInputError) == BIGINT_MAX
    for bad in (0, -1, BIGINT_MAX + 1, True, 1.0, "1"):
        with pytest.raises(InvalidInputError, match=r"^job id must be an int from 1 to 2\*\*63"):
            job_id(bad, InvalidInputError)


@pytest.mark.parametrize(
    "name", ["default", "a", "q1", "high_priority", "email-outbound", "a_b-c", "x" * 64]
)
def test_queue_names_river_accepts(name: str) -> None:
    assert queue_name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "must be 1 to 64 characters"),
        ("x" * 65, "must be 1 to 64 characters"),
        ("Default", "is invalid"),
        ("a b", "is invalid"),
        ("a__b", "is invalid"),
        ("-a", "is invalid"),
        ("a-", "is invalid"),
        ("a|b", "is invalid"),
        ("a\n", "is invalid"),
        ("é", "is invalid"),
        (5, "must be a string, not int"),
        (None, "must be a string, not NoneType"),
    ],
)
def test_queue_names_river_refuses(name: object, problem: str) -> None:
    found = queue_name_problem(name)
    assert found is not None and problem in found
    assert found.startswith("queue name")


# Any name Postgres can hold, as River takes them: every statement quotes it.
@pytest.mark.parametrize(
    "name",
    ["river", "_x", "a$1", "A" * 63, "1abc", "a-b", "Mixed Case", 'x"; DROP TABLE river_job; --'],
)
def test_schema_names_accepted(name: str) -> None:
    assert schema_name_problem(name) is None


@pytest.mark.parametrize("name", ["", "A" * 64, "é" * 32, "a\x00b", "\ud800", 5, None])
def test_schema_names_refused(name: object) -> None:
    problem = schema_name_problem(name)
    assert problem is not None and "is not a valid Postgres schema name" in problem


# --- every duration site follows the one rule ---

# (site, field, error class, rule text): each site builds its object with the
# field set to a value, so the table covers every former copy of the check.
DurationSite = tuple[Callable[[Any], object], str, type[Exception], str]


class _Timed(Worker[Any]):
    def __init__(self, value: object) -> None:
        self.value = value

    async def work(self, job: Job[Any]) -> None:
        pass

    def timeout(self, job: Job[Any]) -> Any:
        return self.value


def _worker_timeout(value: object) -> object:
    return resolve_timeout(_Timed(value), cast("Job[Any]", None), 60.0)


POSITIVE = "greater than 0"
ZERO_OK = "0 or more"
DURATION_SITES: list[DurationSite] = [
    (lambda v: Config(job_timeout=v), "job_timeout", ConfigError, POSITIVE),
    (lambda v: Config(rescue_stuck_jobs_after=v), "rescue_stuck_jobs_after", ConfigError, POSITIVE),
    (lambda v: Config(fetch_cooldown=v), "fetch_cooldown", ConfigError, "at least 0.001"),
    (lambda v: Config(fetch_poll_interval=v), "fetch_poll_interval", ConfigError, "at least 0.001"),
    (lambda v: Config(completed_job_retention=v), "completed_job_retention", ConfigError, ZERO_OK),
    (lambda v: Config(soft_stop_timeout=v), "soft_stop_timeout", ConfigError, ZERO_OK),
    (lambda v: QueueConfig(1, fetch_cooldown=v), "fetch_cooldown", ConfigError, "at least 0.001"),
    (lambda v: PeriodicJob(v, lambda: None), "PeriodicJob.schedule", ConfigError, POSITIVE),
    (lambda v: MaintenanceSettings(rescuer_interval=v), "rescuer_interval", ConfigError, POSITIVE),
    (lambda v: MaintenanceSettings(orphan_grace=v), "orphan_grace", ConfigError, ZERO_OK),
    (lambda v: JobScheduler(NO_DRIVER, interval=v), "JobScheduler interval", ConfigError, POSITIVE),
    (
        lambda v: JobCleaner(NO_DRIVER, discarded_retention=v),
        "discarded_retention",
        ConfigError,
        ZERO_OK,
    ),
    (lambda v: QueueCleaner(NO_DRIVER, retention=v), "queue retention", ConfigError, POSITIVE),
    (
        lambda v: JobRescuer(NO_DRIVER, Config(), orphan_interval=v),
        "orphan_interval",
        ConfigError,
        POSITIVE,
    ),
    (
        lambda v: Elector(NO_DRIVER, "c", elect_interval=v, ttl=10**9),
        "elect_interval",
        ConfigError,
        POSITIVE,
    ),
    (lambda v: Liveness(NO_DRIVER, "c", max_backoff=v), "max_backoff", ConfigError, POSITIVE),
    (lambda v: Notifier(NO_DRIVER, ping_interval=v), "ping_interval", ConfigError, POSITIVE),
    (lambda v: Notifier(NO_DRIVER, ping_timeout=v), "ping_timeout", ConfigError, POSITIVE),
    (
        lambda v: Completer(NO_DRIVER, flush_interval=v),
        "Completer flush_interval",
        ConfigError,
        POSITIVE,
    ),
    (
        lambda v: Completer(NO_DRIVER, retry_backoff=v),
        "Completer retry_backoff",
        ConfigError,
        ZERO_OK,
    ),
    (lambda v: JobSnooze(v), "JobSnooze seconds", InvalidInputError, ZERO_OK),
    (lambda v: UniqueOpts(by_period=v), "UniqueOpts.by_period", InvalidInputError, "at least 1"),
    (_worker_timeout, "_Timed.timeout()", InvalidInputError, POSITIVE),
]


@pytest.mark.parametrize(
    ("site", "field", "error", "rule"),
    [pytest.param(*site, id=f"{i}-{site[1]}") for i, site in enumerate(DURATION_SITES)],
)
@pytest.mark.parametrize("value", [-1, math.nan, math.inf, -math.inf, True, b"5", 10**400])
def test_every_duration_site_refuses_the_same_values(
    site: Callable[[Any], object], field: str, error: type[Exception], rule: str, value: object
) -> None:
    with pytest.raises(error) as raised:
        site(value)
    message = str(raised.value)
    assert message.startswith(f"{field} must be a finite number of seconds, {rule}"), message
    assert f"got {value!r}"[:40] in message


async def _stress(**kwargs: Any) -> object:
    return await stress_start_stop(lambda: None, **kwargs)


# --- the drifts found while merging the copies, one test each ---


def test_drift_maintenance_batch_sizes_name_their_own_field() -> None:
    # The scheduler's batch size was reported as "batch_size".
    with pytest.raises(ConfigError, match=r"^scheduler_batch_size must be an int, 1 or more"):
        MaintenanceSettings(scheduler_batch_size=0)
    with pytest.raises(ConfigError, match=r"^batch_size must be an int, 1 or more"):
        MaintenanceSettings(batch_size=0)


def test_drift_worker_timeout_refuses_infinity_as_job_timeout_does() -> None:
    # A worker's timeout() of inf passed, while Config(job_timeout=inf) was
    # refused: None is how both say "no limit".
    with pytest.raises(ConfigError, match=r"job_timeout must be .*, or None for no limit; got inf"):
        Config(job_timeout=math.inf)
    with pytest.raises(InvalidInputError, match=r"_Timed\.timeout\(\) must be .*; got inf"):
        _worker_timeout(math.inf)
    assert _worker_timeout(None) is None
    assert _worker_timeout(1e6) == 1e6


def test_drift_notifier_checks_its_durations_as_liveness_does() -> None:
    # The notifier took any value (0 made its ping loop spin); its twin on the
    # liveness lock connection refused it.
    with pytest.raises(ConfigError, match=r"^check_interval must"):
        Liveness(NO_DRIVER, "c", check_interval=0)
    for field in ("ping_interval", "ping_timeout", "max_backoff"):
        with pytest.raises(ConfigError, match=rf"^{field} must"):
            Notifier(NO_DRIVER, **{field: 0})


def test_drift_limits_sent_as_bigint_are_bounded() -> None:
    # job_delete_many's limit had no upper bound (queue_list's neither; see
    # tests/db/test_queues.py): past 2**63 - 1 it failed in Postgres instead.
    assert JobDeleteManyParams(limit=BIGINT_MAX).limit == BIGINT_MAX
    with pytest.raises(InvalidInputError, match=r"^limit must be an int from 1 to 2\*\*63 - 1"):
        JobDeleteManyParams(limit=BIGINT_MAX + 1)


def test_drift_cursor_id_follows_the_job_id_rule() -> None:
    # A cursor's id was any int; every other job id is a positive bigint.
    for bad in (0, -5, BIGINT_MAX + 1):
        with pytest.raises(InvalidInputError, match=r"cursor: id must be an int from 1 to 2\*\*63"):
            JobListParams(after=JobListCursor(order_by="id", id=bad))
    outside = JobListCursor(order_by="id", id=BIGINT_MAX + 1).encode()
    with pytest.raises(InvalidInputError, match="cursor: id must be"):
        JobListCursor.decode(outside)
    assert JobListParams(after=JobListCursor(order_by="id", id=BIGINT_MAX)).after is not None


def test_drift_require_inserted_opts_checks_ranges_as_job_list_filters_do() -> None:
    # RequireInsertedOpts took any int for priority and max_attempts (an
    # assertion that could never match); job_list's priorities filter and
    # InsertOpts check the range.
    with pytest.raises(InvalidInputError, match=r"priorities\[0\] must be an int from 1 to 4"):
        JobListParams(priorities=[5])
    with pytest.raises(InvalidInputError, match=r"^priority must be an int from 1 to 4; got 5"):
        InsertOpts(priority=5)
    with pytest.raises(InvalidInputError, match=r"^priority must be an int from 1 to 4; got 5"):
        RequireInsertedOpts(priority=5)
    with pytest.raises(InvalidInputError, match=r"^max_attempts must be an int from 1 to 32,767"):
        RequireInsertedOpts(max_attempts=0)
    assert RequireInsertedOpts(priority=4, max_attempts=32767).priority == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tasks": 2.5}, r"^tasks must be an int, 1 or more; got 2\.5"),
        ({"rounds": True}, r"^rounds must be an int, 1 or more; got True"),
        ({"stop_timeout": math.inf}, r"^stop_timeout must be a finite number of seconds"),
        ({"start_timeout": True}, r"^start_timeout must be a finite number of seconds"),
    ],
)
async def test_drift_stress_harness_arguments_follow_the_rules(
    kwargs: dict[str, Any], message: str
) -> None:
    # stress_start_stop compared its arguments with `< 1` and `> 0` only, so
    # floats and bools passed as counts, and bools or inf as timeouts.
    with pytest.raises(ValueError, match=message):
        await _stress(**kwargs)


@pytest.mark.parametrize(
    "site",
    [
        lambda: Config(job_timeout=10**400),
        lambda: MaintenanceSettings(rescuer_interval=10**400),
        lambda: JobSnooze(10**400),
        lambda: UniqueOpts(by_period=10**400),
    ],
)
def test_drift_an_int_too_large_for_a_float_is_a_clear_error(site: Callable[[], object]) -> None:
    # Such an int made float() or math.isfinite() raise OverflowError.
    with pytest.raises((ConfigError, InvalidInputError), match="must be a finite number"):
        site()


def test_drift_job_kind_with_a_trailing_newline_is_refused() -> None:
    # The kind rule matched with "$", which also matches before a final newline
    # (the tag rule used fullmatch and refused it).
    assert validate_kind("email.send") == "email.send"
    with pytest.raises(InvalidInputError, match="job kind 'email\\\\n' is invalid"):
        validate_kind("email\n")
    with pytest.raises(InvalidInputError, match="is invalid"):

        @dataclass
        class Bad(JobArgs, kind="bad\n"):
            pass
