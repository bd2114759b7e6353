"""``rivertrio migrate up|down|list|validate|get``: River's ``main`` migration line, and
rivertrio's ``rivertrio_flow`` line, from a shell."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeVar

import click
import trio

from .._driver._migrations import LATEST_VERSION
from .._migrate import (
    MigrateResult,
    MigrationStatus,
    ValidateResult,
    migrate_get,
    migrate_list,
    migrate_validate,
)
from .._migrate import (
    migrate as migrate_async,
)
from ..embedded import DATABASE_URL_ENV

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["migrate", "run_migrate", "run_migrate_list", "run_migrate_validate"]

T = TypeVar("T")
F = TypeVar("F", bound="Callable[..., Any]")


def _run_sync(fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    return trio.run(functools.partial(fn, *args, **kwargs))


def run_migrate(
    database_url: str | None = None,
    *,
    direction: Literal["up", "down"] = "up",
    target_version: int | None = None,
    schema: str | None = None,
    dry_run: bool = False,
    line: str | None = None,
) -> MigrateResult:
    """Synchronous `rivertrio.migrate`: runs it under its own ``trio.run``. Blocking."""
    return _run_sync(
        migrate_async,
        database_url,
        direction=direction,
        target_version=target_version,
        schema=schema,
        dry_run=dry_run,
        line=line,
    )


def run_migrate_list(
    database_url: str | None = None, *, schema: str | None = None, line: str = "main"
) -> MigrationStatus:
    """Synchronous `migrate_list`. Blocking."""
    return _run_sync(migrate_list, database_url, schema=schema, line=line)


def run_migrate_validate(
    database_url: str | None = None, *, schema: str | None = None, line: str = "main"
) -> ValidateResult:
    """Synchronous `migrate_validate`. Blocking."""
    return _run_sync(migrate_validate, database_url, schema=schema, line=line)


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    raise click.exceptions.Exit(1)


def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call `fn`, turning any failure into one ``error:`` line and exit status 1."""
    try:
        return fn(*args, **kwargs)
    except click.exceptions.Exit:
        raise
    except Exception as exc:  # the CLI contract: one line, never a traceback
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, BaseExceptionGroup):
            message = f"{len(exc.exceptions)} errors: {message}"
        _fail(message)


_database_url_option = click.option(
    "--database-url",
    envvar=DATABASE_URL_ENV,
    default=None,
    metavar="URL",
    help=f"Postgres URL. Default: ${DATABASE_URL_ENV}, else the embedded Postgres.",
)
_schema_option = click.option(
    "--schema",
    default=None,
    metavar="NAME",
    help="Schema holding River's tables (must exist). Default: the search path's.",
)
_run_line_option = click.option(
    "--line",
    default=None,
    metavar="LINE",
    help="Migrate only this line: main (River's) or rivertrio_flow (flow control). "
    "Default: main, with rivertrio_flow following it (see the command's help).",
)
_read_line_option = click.option(
    "--line",
    default="main",
    show_default=True,
    metavar="LINE",
    help="The migration line: main (River's) or rivertrio_flow (flow control).",
)
_dry_run_option = click.option(
    "--dry-run",
    is_flag=True,
    help="Change nothing; print the SQL that would run.",
)


def _target_version_option(help: str) -> Callable[[F], F]:
    """``--target-version N``; `help` says what N means in the command's direction."""
    return click.option("--target-version", type=int, default=None, metavar="N", help=help)


@click.group()
def migrate() -> None:
    """Migrate the database along River's `main` line (versions 1 to 8), and
    rivertrio's `rivertrio_flow` line (flow control) with it.

    A database that River (Go) migrated is recognised: only missing versions run.
    `get` prints the SQL for other migration tools, with no database.
    """


@migrate.command()
@_database_url_option
@_schema_option
@_target_version_option("Apply pending versions up to and including N. Default: all.")
@_dry_run_option
@_run_line_option
def up(
    database_url: str | None,
    schema: str | None,
    target_version: int | None,
    dry_run: bool,
    line: str | None,
) -> None:
    """Apply pending migrations, each in its own transaction.

    Without --line, main goes up, then (when main went all the way up, with no
    --target-version) every pending version of rivertrio_flow.
    """
    _migrate("up", database_url, schema, target_version, dry_run, line)


@migrate.command()
@_database_url_option
@_schema_option
@_target_version_option("Roll back every version above N (0: all). Default: one version.")
@_dry_run_option
@_run_line_option
def down(
    database_url: str | None,
    schema: str | None,
    target_version: int | None,
    dry_run: bool,
    line: str | None,
) -> None:
    """Roll back migrations: one by default, or down to --target-version.

    Without --line, main goes down, and rivertrio_flow is removed first when
    main goes to version 5 or below. `--line rivertrio_flow --target-version 0`
    removes flow control's schema alone.
    """
    _migrate("down", database_url, schema, target_version, dry_run, line)


@migrate.command(name="list")
@_database_url_option
@_schema_option
@_read_line_option
def list_(database_url: str | None, schema: str | None, line: str) -> None:
    """List the known migrations of a line and whether each is applied."""
    status = _call(run_migrate_list, database_url, schema=schema, line=line)
    what = "version" if line == "main" else f"{line} version"
    click.echo(
        f'schema "{status.schema}": {what} {status.current_version} '
        f"(latest {status.latest_version})"
    )
    width = max(len(m.name) for m in status.migrations)
    for m in status.migrations:
        mark = "applied" if m.applied else "pending"
        click.echo(f"  {m.version:03d}  {m.name:<{width}}  {mark}")
    if status.unknown:
        click.echo(
            "  also applied, by a newer River release (rivertrio leaves them alone): "
            + ", ".join(map(str, status.unknown))
        )


@migrate.command()
@_database_url_option
@_schema_option
@_read_line_option
def validate(database_url: str | None, schema: str | None, line: str) -> None:
    """Exit 0 if every migration of a line is applied, else list the unapplied ones and exit 1."""
    result = _call(run_migrate_validate, database_url, schema=schema, line=line)
    if not result.ok:
        for message in result.messages:
            click.echo(f'schema "{result.schema}": {message}', err=True)
        raise click.exceptions.Exit(1)
    click.echo(f'schema "{result.schema}": ok, every migration is applied')


def _versions(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[int, ...]:
    """Versions given as ``--version 3 --version 4`` or ``--version 3,4`` (River's forms)."""
    out: list[int] = []
    for value in values:
        for part in value.split(","):
            try:
                out.append(int(part.strip()))
            except ValueError:
                raise click.BadParameter(f"{part.strip()!r} is not a version number") from None
    return tuple(out)


@migrate.command(name="get")
@click.option(
    "--version",
    "versions",
    multiple=True,
    callback=_versions,
    metavar="N[,N...]",
    help="Version(s) to print, in the order given; repeat or separate with commas.",
)
@click.option("--all", "all_", is_flag=True, help="Every version (descending with --down).")
@click.option("--up", "up_", is_flag=True, help="Print up migrations.")
@click.option("--down", "down_", is_flag=True, help="Print down migrations.")
@click.option(
    "--exclude-version",
    "exclude",
    multiple=True,
    callback=_versions,
    metavar="N[,N...]",
    help="Leave these versions out (with --no-record, often 1: River's own bookkeeping table).",
)
@click.option(
    "--line",
    default="main",
    show_default=True,
    help="Migration line: main (River's Postgres driver has no other) or rivertrio_flow.",
)
@click.option(
    "--schema",
    default=None,
    metavar="NAME",
    help="Qualify every object with this schema. Default: none (the search path's).",
)
@click.option(
    "--record/--no-record",
    default=True,
    show_default=True,
    help="Also add or remove each version's river_migration row, as `migrate up` does "
    "(River's migrate-get prints none).",
)
@click.option(
    "--transactions",
    is_flag=True,
    help="Wrap each version in BEGIN/COMMIT, to run the output in one go (psql -f); "
    "leave it off for tools that run each migration in a transaction of their own.",
)
def get(
    versions: tuple[int, ...],
    all_: bool,
    up_: bool,
    down_: bool,
    exclude: tuple[int, ...],
    line: str,
    schema: str | None,
    record: bool,
    transactions: bool,
) -> None:
    """Print the SQL of migrations, for other migration tools; needs no database.

    \b
    rivertrio migrate get --version 8 --up > river8.up.sql
    rivertrio migrate get --all --down > river_all.down.sql

    Run each version in a transaction of its own, as `migrate up` does
    (--transactions writes them into the output).
    """
    if up_ == down_:
        _fail("give one of --up and --down")
    if versions and all_:
        _fail("give --version or --all, not both")
    if not versions and not all_:
        _fail(f"give --version N (1 to {LATEST_VERSION}) or --all")
    text = _call(
        migrate_get,
        None if all_ else versions,
        direction="up" if up_ else "down",
        schema=schema,
        line=line,
        exclude=exclude,
        record=record,
        transactions=transactions,
    )
    click.echo(text, nl=False)


def _migrate(
    direction: Literal["up", "down"],
    database_url: str | None,
    schema: str | None,
    target_version: int | None,
    dry_run: bool,
    line: str | None = None,
) -> None:
    """Migrate in `direction` and print each version done (with `dry_run`, the SQL)."""
    result = _call(
        run_migrate,
        database_url,
        direction=direction,
        target_version=target_version,
        schema=schema,
        dry_run=dry_run,
        line=line,
    )
    # Down removes rivertrio_flow before main; up applies it after. River's line
    # has the last word, as when it was the only one.
    results = [*result.also, result] if direction == "down" else [result, *result.also]
    summaries = [_report(one) for one in results]
    for _line, summary in sorted(summaries, key=lambda pair: pair[0] == "main"):
        if summary:
            click.echo(summary)


def _report(result: MigrateResult) -> tuple[str, str]:
    """Print what `migrate` did to one line (the SQL, for a dry run); return its
    line and its summary ("" for none)."""
    # River's own line keeps River's wording; another line is named.
    what = "version" if result.line == "main" else f"{result.line} version"
    if result.dry_run:
        if result.versions:
            click.echo(result.sql)
            return result.line, ""
        return result.line, (
            f'-- nothing to migrate {result.direction}: schema "{result.schema}" '
            f"is at {what} {result.from_version}"
        )
    verb = "applied" if result.direction == "up" else "rolled back"
    prefix = "" if result.line == "main" else f"{result.line} "
    for v in result.versions:
        click.echo(f"{verb} {prefix}{v.version:03d} {v.name}")
    if not result.versions:
        return result.line, (
            f'nothing to migrate {result.direction}: schema "{result.schema}" '
            f"is at {what} {result.from_version}"
        )
    return result.line, f'schema "{result.schema}" is now at {what} {result.to_version}'
