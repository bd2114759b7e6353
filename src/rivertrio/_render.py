"""Inserts rendered as SQL and parameters, for programs that run them on their own connection.

Synchronous applications (Django, Flask, SQLAlchemy, psycopg) already hold a
database connection and a transaction; `render_insert` gives them the very
statement the Trio client sends, with the job prepared the same way (options,
defaults, unique key), to run on their own cursor. The job and its
notification then commit, or roll back, with their transaction.
"""

from __future__ import annotations

import functools
import json
import re
from datetime import UTC, datetime
from typing import Any, Literal

from ._args import InsertOpts, JobArgs
from ._config import Config
from ._driver._insert import insert_statement
from ._driver._topics import INSERT_TOPIC, channel
from ._exceptions import InvalidInputError
from ._prepare import prepare_job
from ._validate import schema_name_problem

__all__ = ["Paramstyle", "render_insert"]

#: ``"format"``: ``%s`` placeholders (psycopg, psycopg2, Django's cursors,
#: SQLAlchemy's ``exec_driver_sql`` on psycopg); ``"numeric_dollar"``: ``$1``,
#: ``$2``... (asyncpg).
Paramstyle = Literal["format", "numeric_dollar"]

# A placeholder, or a quoted name or string, which is left as it is: a schema
# name may hold "$1" and must keep it.
_PLACEHOLDER = re.compile(r'"(?:[^"]|"")*"' r"|'(?:[^']|'')*'" r"|\$(\d+)")

# Without a schema, the statement names its tables through search_path, and
# the notification goes to the channel of the schema they resolve to, as the
# clients listening there name it.
_CURRENT_CHANNEL = f"(current_schema() || '.{INSERT_TOPIC}')"


def render_insert(
    args: JobArgs,
    opts: InsertOpts | None = None,
    *,
    schema: str | None = None,
    paramstyle: Paramstyle = "format",
    config: Config | None = None,
) -> tuple[str, list[Any]]:
    """One job's insert, as SQL and parameters to run on your own connection.

    The statement is the one the clients send: it inserts the job (or, for a
    unique job whose duplicate exists, returns the existing row) and notifies
    the job's queue, so a listening worker fetches it at once. Run it inside
    your transaction: the job and its notification commit with your other
    writes, or neither happens. It returns one row, with the job's columns and
    ``unique_skipped_as_duplicate``.

    Args:
        args: The job's args.
        opts: Its insert options (unset fields fall back as in `Client.insert`).
        schema: The schema of River's tables; default: the connection's
            ``search_path``.
        paramstyle: The placeholders of your driver: ``"format"`` (``%s``,
            psycopg, psycopg2, Django) or ``"numeric_dollar"`` (``$1``, asyncpg).
        config: Supplies ``max_attempts`` and, if it has workers, the kinds
            accepted; default ``Config()``.

    Raises:
        InvalidInputError: The args, options, schema or paramstyle are invalid.
        UnknownJobKindError: `config` has workers and none works this kind.
    """
    if paramstyle not in ("format", "numeric_dollar"):
        raise InvalidInputError(
            f"paramstyle must be 'format' (%s) or 'numeric_dollar' ($1), not {paramstyle!r}"
        )
    if schema is not None:
        problem = schema_name_problem(schema)
        if problem is not None:
            raise InvalidInputError(f"schema {problem}")
    job = prepare_job(args, opts, config or _default_config(), datetime.now(UTC))
    queues = [] if job.pending else [job.queue]
    payloads = [json.dumps({"queue": q}, separators=(",", ":")) for q in queues]
    marker = object()
    target: Any = marker if schema is None else channel(schema, INSERT_TOPIC)
    sql, params = insert_statement(schema, [job], target, queues, payloads)
    inline = {i + 1: _CURRENT_CHANNEL for i, p in enumerate(params) if p is marker}
    return _restyle(sql, params, inline, paramstyle)


@functools.cache
def _default_config() -> Config:
    return Config()


def _restyle(
    sql: str, params: list[Any], inline: dict[int, str], paramstyle: Paramstyle
) -> tuple[str, list[Any]]:
    """`sql` with its ``$n`` placeholders in `paramstyle`, and the parameters in their order.

    Placeholders in `inline` are replaced by the SQL given; the others are
    numbered by first use.
    """
    if paramstyle == "format":
        sql = sql.replace("%", "%%")
    ordered: list[Any] = []
    numbers: dict[int, int] = {}

    def placeholder(match: re.Match[str]) -> str:
        if match.group(1) is None:
            return match.group(0)
        n = int(match.group(1))
        if n in inline:
            return inline[n]
        if paramstyle == "format":
            ordered.append(params[n - 1])
            return "%s"
        if n not in numbers:
            ordered.append(params[n - 1])
            numbers[n] = len(ordered)
        return f"${numbers[n]}"

    return _PLACEHOLDER.sub(placeholder, sql), ordered
