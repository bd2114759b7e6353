"""Unique by selected args fields, and the period's time: keys byte for byte River's.

The golden cases are River's own unique-key tests (``TestUniqueKey`` and
``TestUniqueKeyPeriodUsesUTC`` in River's ``internal/dbunique/db_unique_test.go``):
each gives the args JSON that Go's encoder writes for River's test struct, the
unique field paths River derives from its ``river:"unique"`` tags, and the key
string River asserts. The second half builds the same args as Python dataclasses
marked the Python way and checks that an insert derives the same key.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any

import pytest

import rivertrio
from rivertrio import Config, InsertOpts, JobArgs, UniqueOpts
from rivertrio._prepare import prepare_job
from rivertrio._unique import unique_key, unique_key_string
from rivertrio._unique_fields import unique_fields

NOW = datetime(2026, 9, 24, 12, 34, 56, 789000, tzinfo=UTC)


def unique_str() -> Any:
    """A str field marked unique the metadata way (a fresh Field for each use)."""
    return field(default="", metadata={"river": "unique"})


BY_ARGS = UniqueOpts(by_args=True)


def key_string(
    opts: UniqueOpts,
    kind: str,
    encoded_args: str,
    fields: tuple[tuple[str, ...], ...] = (),
    *,
    queue: str = "email_queue",
    now: datetime = NOW,
    scheduled_at: datetime | None = None,
) -> str:
    text = unique_key_string(
        opts,
        kind=kind,
        encoded_args=encoded_args,
        queue=queue,
        now=now,
        scheduled_at=scheduled_at,
        fields=fields,
    )
    key = unique_key(
        opts,
        kind=kind,
        encoded_args=encoded_args,
        queue=queue,
        now=now,
        scheduled_at=scheduled_at,
        fields=fields,
    )
    assert key == hashlib.sha256(text.encode()).digest()
    return text


# --- River's golden cases: (args JSON as Go writes it, River's unique paths, key string) ---

GOLDEN: dict[str, tuple[str, str, tuple[tuple[str, ...], ...], str]] = {
    "ByArgsWithMultipleUniqueStructTagsAndDefaultStates": (
        "worker_1",
        '{"recipient":"user@example.com","subject":"Test Email","body":"This is a test email.",'
        '"template_id":101,"scheduled_at":"2024-09-15T10:00:00Z"}',
        (("recipient",), ("subject",)),
        '&kind=worker_1&args={"recipient":"user@example.com","subject":"Test Email"}',
    ),
    "ByArgsWithUniqueFieldsSomeEmpty": (
        "worker_2",
        '{"phone_number":"555-5678","template_id":202}',
        (("message",), ("phone_number",)),
        '&kind=worker_2&args={"phone_number":"555-5678"}',
    ),
    "ByArgsUniqueWithNoJSONTagsUsesFieldName": (
        "worker_1",
        '{"Recipient":"john@example.com","Subject":"Another Test Email","TemplateID":102}',
        (("Recipient",), ("Subject",)),
        '&kind=worker_1&args={"Recipient":"john@example.com","Subject":"Another Test Email"}',
    ),
    "ByArgsUniqueWithUnnamedJSONTagUsesFieldName": (
        "worker_1",
        '{"Recipient":"john@example.com","subject":"Another Test Email","TemplateID":102}',
        (("Recipient",), ("subject",)),
        '&kind=worker_1&args={"Recipient":"john@example.com","subject":"Another Test Email"}',
    ),
    "ByArgsWithCompatibleJSONNames": (
        "worker_1",
        '{"$x":"dollar","nested":{"a\\u0026b":1,"Y":"nested"},"\u00e9\\u003c":"unicode",'
        '"Y":"upper"}',
        (("$x",), ("Y",), ("nested", "Y"), ("nested", "a&b"), ("\u00e9<",)),
        '&kind=worker_1&args={"$x":"dollar","Y":"upper","nested":{"Y":"nested","a&b":1},'
        '"\u00e9\\u003c":"unicode"}',
    ),
    "ByArgsUniqueWithPathSyntaxInJSONTags": (
        "worker_1",
        '{"!bang":"bang",":x":"colon","alice@example.com":"email",'
        '"outer.key.inner@key":"literal","outer.key":{"inner@key":"nested"},"user.id":"u1",'
        '"x":"x"}',
        (
            ("!bang",),
            (":x",),
            ("alice@example.com",),
            ("outer.key", "inner@key"),
            ("outer.key.inner@key",),
            ("user.id",),
            ("x",),
        ),
        '&kind=worker_1&args={"!bang":"bang",":x":"colon","alice@example.com":"email",'
        '"outer.key":{"inner@key":"nested"},"outer.key.inner@key":"literal","user.id":"u1",'
        '"x":"x"}',
    ),
    "ByArgsWithSubstructNonPointer": (
        "worker_1",
        '{"addresses":{"recipient":"john@example.com","bcc":""},'
        '"subject":"Another Test Email","body":"This is another test email."}',
        (("addresses", "recipient"), ("subject",)),
        '&kind=worker_1&args={"addresses":{"recipient":"john@example.com"},'
        '"subject":"Another Test Email"}',
    ),
    "ByArgsWithEmbeddedSubstruct": (
        "worker_1",
        '{"recipient":"john@example.com","bcc":"","subject":"Another Test Email",'
        '"body":"This is another test email."}',
        (("recipient",), ("subject",)),
        '&kind=worker_1&args={"recipient":"john@example.com","subject":"Another Test Email"}',
    ),
    "ByArgsWithEmbeddedNonStruct": (
        "worker_7",
        '{"MyString":"my_string_in_anonymous_field"}',
        (),
        '&kind=worker_7&args={"MyString":"my_string_in_anonymous_field"}',
    ),
    "ByArgsWithAllSubstructUntagged": (
        "worker_1",
        '{"addresses":{"recipient":"john@example.com","bcc":""},'
        '"subject":"Another Test Email","body":"This is another test email."}',
        (("addresses",), ("subject",)),
        '&kind=worker_1&args={"addresses":{"recipient":"john@example.com","bcc":""},'
        '"subject":"Another Test Email"}',
    ),
    "ByArgsWithMultiLevelSubstructPointer": (
        "worker_1",
        '{"headers":{"addresses":{"recipient":"john@example.com"},'
        '"subject":"Another Test Email"},"body":"This is another test email."}',
        (("headers", "addresses", "recipient"), ("headers", "subject")),
        '&kind=worker_1&args={"headers":{"addresses":{"recipient":"john@example.com"},'
        '"subject":"Another Test Email"}}',
    ),
    "ByArgsUnexportedSkipped": (
        "worker_1",
        '{"subject":"Another Test Email","body":"This is another test email."}',
        (("subject",),),
        '&kind=worker_1&args={"subject":"Another Test Email"}',
    ),
    "ByArgsWithNoUniqueFields": (
        "worker_3",
        '{"description":"A generic job without unique fields.","count":10}',
        (),
        '&kind=worker_3&args={"count":10,"description":"A generic job without unique fields."}',
    ),
    "ByArgsWithEmptyEncodedArgs": ("worker_1", "{}", (), "&kind=worker_1&args={}"),
    "ByArgsRecursiveType": (
        "worker_7",
        '{"Recursive":{"NotUnique":"","Recursive":{"NotUnique":"","Recursive":null,'
        '"String":"level2"},"String":"level1"}}',
        (("Recursive", "Recursive"), ("Recursive", "String")),
        '&kind=worker_7&args={"Recursive":{"Recursive":{"NotUnique":"","Recursive":null,'
        '"String":"level2"},"String":"level1"}}',
    ),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_river_golden_by_args(name: str) -> None:
    """River's ``TestUniqueKey/<name>``: the same args JSON and paths give River's string."""
    kind, encoded, paths, expected = GOLDEN[name]
    assert key_string(BY_ARGS, kind, encoded, paths) == expected


def test_river_golden_options_without_args() -> None:
    """River's ``TestUniqueKey``: CustomByStateWithPeriod, PeriodFromScheduledAt,
    ExcludeKindByArgs, ByQueue and EmptyUniqueOpts."""
    hour = UniqueOpts(by_period=3600)
    completed = UniqueOpts(
        by_period=3600, by_state=["available", "pending", "running", "scheduled", "completed"]
    )
    assert key_string(completed, "worker_4", '{"TaskID":"task_123"}') == (
        "&kind=worker_4&period=2026-09-24T12:00:00Z"
    )
    assert key_string(hour, "worker_4", "{}", scheduled_at=NOW + timedelta(hours=1)) == (
        "&kind=worker_4&period=2026-09-24T13:00:00Z"
    )
    exclude = UniqueOpts(by_args=True, exclude_kind=True)
    assert key_string(exclude, "worker_5", '{"task_id":"task_123"}') == (
        '&args={"task_id":"task_123"}'
    )
    by_queue = UniqueOpts(by_queue=True)
    assert key_string(by_queue, "worker_6", '{"task_id":"task_123"}') == (
        "&kind=worker_6&queue=email_queue"
    )
    assert key_string(UniqueOpts(), "worker_7", '{"task_id":"task_123"}') == "&kind=worker_7"


def test_river_golden_period_is_absolute_and_written_in_utc() -> None:
    """River's ``TestUniqueKeyPeriodUsesUTC``: NonUTCClock, NonUTCScheduledAt,
    PeriodBoundaryIsAbsolute and UTCClock."""
    chicago = timezone(timedelta(hours=-5))
    now = datetime(2026, 9, 24, 12, 34, 56, tzinfo=UTC)
    hour = UniqueOpts(by_period=3600)
    want = "&kind=worker_1&period=2026-09-24T12:00:00Z"
    assert key_string(hour, "worker_1", "{}", queue="default", now=now) == want
    assert key_string(hour, "worker_1", "{}", queue="default", now=now.astimezone(chicago)) == want
    assert (
        key_string(hour, "worker_1", "{}", queue="default", scheduled_at=now.astimezone(chicago))
        == want
    )
    local = datetime(2026, 9, 24, 6, 59, 59, tzinfo=chicago)
    assert key_string(hour, "worker_1", "{}", queue="default", scheduled_at=local) == (
        "&kind=worker_1&period=2026-09-24T11:00:00Z"
    )


def test_missing_unique_fields_leave_the_args_empty() -> None:
    # gjson finds none of the paths: River's buffer stays empty, "&args=" alone.
    assert key_string(BY_ARGS, "k", '{"other":1}', (("a",), ("b", "c"))) == "&kind=k&args="
    # A null parent has no child to find; the null itself is a value.
    assert key_string(BY_ARGS, "k", '{"a":null,"b":null}', (("a",), ("b", "c"))) == (
        '&kind=k&args={"a":null}'
    )


def test_values_are_written_as_go_writes_them() -> None:
    # Go writes floats without a trailing ".0" and with short exponents; strings
    # in UTF-8 with <, > and & escaped; object keys inside values escaped too.
    encoded = '{"f":[1.0,0.5,1e-07,1.5e+21,-0.0,100.0,1e+20],"s":"\\u00e9<&>","o":{"<k>":true}}'
    assert key_string(BY_ARGS, "k", encoded) == (
        '&kind=k&args={"f":[1,0.5,1e-7,1.5e+21,-0,100,100000000000000000000],'
        '"o":{"\\u003ck\\u003e":true},"s":"\u00e9\\u003c\\u0026\\u003e"}'
    )


def test_top_level_keys_are_written_as_river_writes_them() -> None:
    # Verbatim unless a key has a control or non-ASCII character, a quote or a
    # backslash; then as Go's encoder writes a string.
    encoded = '{"a&b":1,"\u00e9<":2,"q\\"":3,"t\\t":4}'
    assert key_string(BY_ARGS, "k", encoded) == (
        '&kind=k&args={"a&b":1,"q\\"":3,"t\\t":4,"\u00e9\\u003c":2}'
    )


# --- the same args as Python dataclasses, marked the Python way ---


def args_key(args: JobArgs, opts: InsertOpts | None = None) -> bytes | None:
    return prepare_job(args, opts, Config(), NOW).unique_key


def expected_key(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


@dataclass
class EmailTagged(JobArgs, kind="worker_1"):
    recipient: str = field(default="", metadata={"river": "unique"})
    subject: Annotated[str, rivertrio.Unique] = ""
    body: str = ""
    template_id: int = 0
    scheduled_at: str = ""
    insert_opts = InsertOpts(unique=BY_ARGS)


def test_python_marks_select_fields() -> None:
    """River's ``TestUniqueKey/ByArgsWithMultipleUniqueStructTagsAndDefaultStates``."""
    assert unique_fields(EmailTagged) == (("recipient",), ("subject",))
    args = EmailTagged(
        recipient="user@example.com",
        subject="Test Email",
        body="This is a test email.",
        template_id=101,
        scheduled_at="2024-09-15T10:00:00Z",
    )
    assert args_key(args) == expected_key(
        GOLDEN["ByArgsWithMultipleUniqueStructTagsAndDefaultStates"][3]
    )
    # Fields that are not marked do not count.
    assert args_key(dataclasses.replace(args, body="other", template_id=7)) == args_key(args)
    assert args_key(dataclasses.replace(args, subject="other")) != args_key(args)


@dataclass
class SMS(JobArgs, kind="worker_2"):
    phone_number: str = field(default="", metadata={"river": "unique"})
    message: str = field(default="", metadata={"river": "other, unique"})
    template_id: int = 0
    insert_opts = InsertOpts(unique=BY_ARGS)

    def to_json(self) -> dict[str, Any]:
        # Go's omitempty: an empty message is left out of the JSON.
        data = super().to_json()
        if not data["message"]:
            del data["message"]
        return data


def test_python_missing_field_is_left_out() -> None:
    """River's ``TestUniqueKey/ByArgsWithUniqueFieldsSomeEmpty`` (a tag list holding unique)."""
    assert unique_fields(SMS) == (("message",), ("phone_number",))
    args = SMS(phone_number="555-5678", template_id=202)
    assert args_key(args) == expected_key(GOLDEN["ByArgsWithUniqueFieldsSomeEmpty"][3])


@dataclass
class Addresses:
    recipient: str = field(default="", metadata={"river": "unique"})
    bcc: str = ""


@dataclass
class EmailNested(JobArgs, kind="worker_1"):
    addresses: Addresses | None = None
    subject: str = unique_str()
    body: str = ""
    insert_opts = InsertOpts(unique=BY_ARGS)


@dataclass
class EmailNestedTagged(JobArgs, kind="worker_1"):
    addresses: Addresses = field(default_factory=Addresses, metadata={"river": "unique"})
    subject: str = unique_str()
    body: str = ""
    insert_opts = InsertOpts(unique=BY_ARGS)


@dataclass
class EmailEmbedded(Addresses, JobArgs, kind="worker_1"):
    subject: str = unique_str()
    body: str = ""
    insert_opts = InsertOpts(unique=BY_ARGS)


def test_python_nested_dataclasses() -> None:
    """River's ``TestUniqueKey``: ByArgsWithSubstructNonPointer, ByArgsWithSubstructPointer,
    ByArgsWithSubstructTagged and ByArgsWithEmbeddedSubstruct (a base class here)."""
    want = expected_key(GOLDEN["ByArgsWithSubstructNonPointer"][3])
    addresses = Addresses(recipient="john@example.com")
    for cls in (EmailNested, EmailNestedTagged):
        assert unique_fields(cls) == (("addresses", "recipient"), ("subject",))
        args = cls(addresses=addresses, subject="Another Test Email", body="body")
        assert args_key(args) == want
    embedded = EmailEmbedded(recipient="john@example.com", subject="Another Test Email")
    assert unique_fields(EmailEmbedded) == (("recipient",), ("subject",))
    assert args_key(embedded) == expected_key(GOLDEN["ByArgsWithEmbeddedSubstruct"][3])


@dataclass
class PlainAddresses:
    recipient: str = ""
    bcc: str = ""


@dataclass
class EmailWholeStruct(JobArgs, kind="worker_1"):
    addresses: Annotated[PlainAddresses | None, rivertrio.Unique] = None
    subject: str = unique_str()
    body: str = ""
    insert_opts = InsertOpts(unique=BY_ARGS)


def test_python_marked_dataclass_without_marks_counts_whole() -> None:
    """River's ``TestUniqueKey/ByArgsWithAllSubstructUntagged``."""
    assert unique_fields(EmailWholeStruct) == (("addresses",), ("subject",))
    args = EmailWholeStruct(
        addresses=PlainAddresses(recipient="john@example.com"), subject="Another Test Email"
    )
    assert args_key(args) == expected_key(GOLDEN["ByArgsWithAllSubstructUntagged"][3])


@dataclass
class HeaderAddresses:
    recipient: str = unique_str()


@dataclass
class Headers:
    addresses: HeaderAddresses | None = field(default=None, metadata={"river": "unique"})
    subject: str = unique_str()


@dataclass
class EmailMultiLevel(JobArgs, kind="worker_1"):
    headers: Headers | None = field(default=None, metadata={"river": "unique"})
    body: str = ""
    insert_opts = InsertOpts(unique=BY_ARGS)


def test_python_multi_level_nesting() -> None:
    """River's ``TestUniqueKey/ByArgsWithMultiLevelSubstructPointer``."""
    assert unique_fields(EmailMultiLevel) == (
        ("headers", "addresses", "recipient"),
        ("headers", "subject"),
    )
    args = EmailMultiLevel(
        headers=Headers(HeaderAddresses("john@example.com"), "Another Test Email"), body="b"
    )
    assert args_key(args) == expected_key(GOLDEN["ByArgsWithMultiLevelSubstructPointer"][3])


@dataclass
class RecursiveType:
    NotUnique: str = ""
    Recursive: RecursiveType | None = field(default=None, metadata={"river": "unique"})
    String: str = unique_str()


@dataclass
class TaskRecursive(JobArgs, kind="worker_7"):
    Recursive: RecursiveType = field(default_factory=RecursiveType, metadata={"river": "unique"})
    insert_opts = InsertOpts(unique=BY_ARGS)


def test_python_recursive_dataclass() -> None:
    """River's ``TestUniqueKey/ByArgsRecursiveType``: a type met again counts as a whole."""
    assert unique_fields(TaskRecursive) == (("Recursive", "Recursive"), ("Recursive", "String"))
    args = TaskRecursive(RecursiveType(Recursive=RecursiveType(String="level2"), String="level1"))
    assert args_key(args) == expected_key(GOLDEN["ByArgsRecursiveType"][3])


@dataclass
class Generic(JobArgs, kind="worker_3"):
    description: str
    count: int
    insert_opts = InsertOpts(unique=BY_ARGS)


def test_python_unmarked_class_counts_every_key() -> None:
    """River's ``TestUniqueKey/ByArgsWithNoUniqueFields``."""
    assert unique_fields(Generic) == ()
    args = Generic(description="A generic job without unique fields.", count=10)
    assert args_key(args) == expected_key(GOLDEN["ByArgsWithNoUniqueFields"][3])


def test_nested_dataclass_round_trips_through_json() -> None:
    args = EmailMultiLevel(headers=Headers(HeaderAddresses("a@b.c"), "s"), body="b")
    decoded = EmailMultiLevel.from_json(args.to_json())
    assert decoded == args
    assert isinstance(decoded.headers, Headers)
    with pytest.raises(rivertrio.JobDecodeError, match="field 'headers': field 'subject'"):
        EmailMultiLevel.from_json({"headers": {"subject": 5}})
    with pytest.raises(rivertrio.JobDecodeError, match="field 'headers' should be"):
        EmailMultiLevel.from_json({"headers": "nope"})


# --- the period counts from scheduled_at when the job has one (River's rule) ---


@dataclass
class Report(JobArgs, kind="report"):
    pass


def test_period_counts_from_scheduled_at_else_insert_time() -> None:
    """River's ``TestUniqueKey/PeriodFromScheduledAt``, through an insert's options."""
    hourly = UniqueOpts(by_period=3600)
    now_key = args_key(Report(), InsertOpts(unique=hourly))
    assert now_key == expected_key("&kind=report&period=2026-09-24T12:00:00Z")
    later = InsertOpts(unique=hourly, scheduled_at=NOW + timedelta(hours=1))
    assert args_key(Report(), later) == expected_key("&kind=report&period=2026-09-24T13:00:00Z")
    same_hour = InsertOpts(unique=hourly, scheduled_at=NOW.replace(minute=59))
    assert args_key(Report(), same_hour) == now_key
