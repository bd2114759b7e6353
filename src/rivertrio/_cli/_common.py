"""What every ``rivertrio`` command shares: options, the root group, error reporting."""

from __future__ import annotations

import functools
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import click
import trio

from .._client import Client, open_client
from .._config import Config
from .._exceptions import RivertrioError
from .._util import relative_time
from .._validate import schema_name_problem
from ..embedded import DATABASE_URL_ENV

__all__ = [
    "CliError",
    "RivertrioGroup",
    "admin_client",
    "database_url_option",
    "describe_error",
    "fail",
    "format_time",
    "run_trio",
    "schema_option",
]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

_URL_SCHEMES = ("postgresql://", "postgres://")


class CliError(click.ClickException):
    """An error reported as one ``error: ...`` line on stderr, with exit status 1."""

    def show(self, file: Any = None) -> None:
        """Print the one line."""
        click.echo(f"error: {self.format_message()}", err=True)


def fail(message: str) -> NoReturn:
    """Stop the command with one ``error:`` line and exit status 1."""
    raise CliError(message)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe_error(exc: BaseException) -> str:
    """One line saying what went wrong: the library's own message, or the type and message."""
    leaves = [e for e in _leaves(exc) if not isinstance(e, trio.Cancelled)] or [exc]
    first = leaves[0]
    if isinstance(first, RivertrioError):
        message = _first_line(first)
    else:
        message = f"unexpected {type(first).__name__}: {_first_line(first)}"
    if len(leaves) > 1:
        message += f" (and {len(leaves) - 1} more error{'s' if len(leaves) > 2 else ''})"
    return message


def _only_interrupts(exc: BaseException) -> bool:
    return all(isinstance(e, KeyboardInterrupt | trio.Cancelled) for e in _leaves(exc))


class RivertrioGroup(click.Group):
    """The root group: every failure becomes one ``error:`` line and a non-zero exit.

    The library's errors (bad URL, unreachable database, unknown job, ...) and
    click's usage errors are printed as one line, never as a traceback; with
    ``rivertrio --debug`` unexpected errors keep their traceback.
    """

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand, turning exceptions into `CliError`."""
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt as exc:
            raise click.Abort from exc
        except (Exception, BaseExceptionGroup) as exc:
            if isinstance(exc, BaseExceptionGroup) and _only_interrupts(exc):
                raise click.Abort from exc
            if ctx.params.get("debug") and not isinstance(exc, RivertrioError):
                raise
            message = describe_error(exc)
            if not isinstance(exc, RivertrioError) and message.startswith("unexpected"):
                message += " (run 'rivertrio --debug ...' for the traceback)"
            raise CliError(message) from exc

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Click's ``main``, with usage errors and aborts reported in one line too."""
        if not kwargs.get("standalone_mode", True):
            return super().main(*args, **kwargs)
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "rivertrio"
            click.echo(f"error: {exc.format_message()} (see '{where} --help')", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(130)
        sys.exit(result if isinstance(result, int) else 0)


def _check_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not value.startswith(_URL_SCHEMES):
        raise click.BadParameter(
            f"{value!r} is not a Postgres URL: expected postgresql://user@host:port/dbname",
            ctx=ctx,
            param=param,
        )
    return value


def database_url_option(fn: F) -> F:
    """``--database-url URL``: default ``$RIVERTRIO_DATABASE_URL``, else the embedded Postgres."""
    return click.option(
        "--database-url",
        envvar=DATABASE_URL_ENV,
        default=None,
        metavar="URL",
        callback=_check_url,
        help=f"Postgres URL. Default: ${DATABASE_URL_ENV}, else the embedded Postgres.",
    )(fn)


def _check_schema(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    problem = schema_name_problem(value)
    if problem is not None:
        raise click.BadParameter(problem, ctx=ctx, param=param)
    return value


def schema_option(
    default: str | None = None,
    help: str = "Schema holding River's tables. Default: the search path's.",
) -> Callable[[F], F]:
    """``--schema NAME``, validated as a Postgres identifier."""
    return click.option(
        "--schema",
        default=default,
        metavar="NAME",
        callback=_check_schema,
        show_default=default is not None,
        help=help,
    )


def run_trio(fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """Run an async function under its own ``trio.run``. Blocking."""
    return trio.run(functools.partial(fn, *args, **kwargs))


@asynccontextmanager
async def admin_client(database_url: str | None, schema: str | None) -> AsyncIterator[Client]:
    """An insert-only client, for managing jobs and queues. Stopped when the block ends."""
    async with open_client(Config(schema=schema), database_url=database_url) as client:
        yield client


def format_time(value: datetime | None, *, short: bool = False) -> str:
    """A time as ``2026-01-02 15:04:05 (3m ago)`` in UTC; `short`: only ``3m ago``."""
    if value is None:
        return "-"
    when = relative_time(value, datetime.now(UTC))
    if short:
        return when
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S} ({when})"
