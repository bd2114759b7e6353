"""Schema migrations: River's ``main`` line and rivertrio's ``rivertrio_flow``
line, applied and inspected from Trio, or printed.

A database migrated by River (Go) is recognised as it is: its ``river_migration``
rows say which versions it has, in either shape of that table, and only the
missing versions run. Versions a newer River release recorded are left alone.
The ``rivertrio_flow`` line (flow control: limits, sequences, workflows) keeps
its own rows in that table and adds objects of its own only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import trio

from ._driver import open_driver
from ._driver._flow_migrations import (
    FLOW_LINE,
    FLOW_MIGRATIONS,
    FlowState,
    check_flow_target,
    read_flow_state,
    render_flow_step,
    run_flow_migrations,
    run_lines,
)
from ._driver._migrations import (
    LATEST_VERSION,
    LINE,
    MIGRATIONS,
    Migration,
    SchemaState,
    Step,
    check_request,
    read_state,
    render_step,
    run_migrations,
    script,
)
from ._exceptions import ConfigError, MigrationError
from ._validate import schema_name_problem
from .embedded import resolve_database_url

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterable

T = TypeVar("T")

#: The migration lines rivertrio knows, by name.
_LINES: dict[str, tuple[Migration, ...]] = {LINE: MIGRATIONS, FLOW_LINE: FLOW_MIGRATIONS}

__all__ = [
    "FLOW_LINE",
    "LATEST_VERSION",
    "MigrateResult",
    "MigrationError",
    "MigrationInfo",
    "MigrationStatus",
    "MigrationVersion",
    "ValidateResult",
    "migrate",
    "migrate_get",
    "migrate_list",
    "migrate_validate",
]


@dataclass(frozen=True, slots=True)
class MigrationVersion:
    """One version that a migrate call ran (or, on a dry run, would run)."""

    version: int
    name: str
    """River's name for the version, e.g. ``"bulk unique"``."""
    sql: str
    """The version's SQL with its ``river_migration`` bookkeeping; runs in one transaction."""


@dataclass(frozen=True, slots=True)
class MigrateResult:
    """What `migrate` did.

    ``versions`` lists the versions applied (up, ascending) or rolled back (down,
    descending); empty when there was nothing to do. On a dry run nothing was
    changed and ``versions``/``sql`` say what would have run.
    """

    direction: Literal["up", "down"]
    schema: str
    """The schema migrated (the one given, or the search path's current one)."""
    dry_run: bool
    from_version: int
    """The highest version of `line` applied before the call (0: none)."""
    to_version: int
    """The highest version of `line` applied after the call (or after it, had it not been a
    dry run)."""
    versions: tuple[MigrationVersion, ...]
    line: str = LINE
    """The migration line these versions belong to."""
    also: tuple[MigrateResult, ...] = ()
    """The other lines migrated by the same call: ``rivertrio_flow`` after ``main``
    on the way up, before it on the way down (see `migrate`)."""

    @property
    def version_numbers(self) -> tuple[int, ...]:
        """The version numbers in ``versions``, in the order they ran."""
        return tuple(v.version for v in self.versions)

    @property
    def sql(self) -> str:
        """The SQL text of `versions` run (or to run): ``BEGIN; ... COMMIT;`` per version.

        The lines in `also` have their own.
        """
        return script(Step(v.version, v.name, self.direction, v.sql) for v in self.versions).rstrip(
            "\n"
        )


@dataclass(frozen=True, slots=True)
class MigrationInfo:
    """One known version and whether the schema has it."""

    version: int
    name: str
    applied: bool


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    """Which versions of a migration line a schema has (`migrate_list`)."""

    schema: str
    migrations: tuple[MigrationInfo, ...]
    """Every version rivertrio knows, ascending."""
    applied: tuple[int, ...]
    """Versions recorded in the database, ascending (may include ones newer than known)."""
    line: str = LINE
    """The migration line: ``"main"`` (River's) or ``"rivertrio_flow"``."""

    @property
    def current_version(self) -> int:
        """The highest applied version (0: none)."""
        return max(self.applied, default=0)

    @property
    def latest_version(self) -> int:
        """The newest version rivertrio knows."""
        return max(m.version for m in self.migrations)

    @property
    def pending(self) -> tuple[int, ...]:
        """Known versions not applied yet, ascending."""
        return tuple(m.version for m in self.migrations if not m.applied)

    @property
    def unknown(self) -> tuple[int, ...]:
        """Applied versions rivertrio does not know (a newer River release applied them)."""
        known = {m.version for m in self.migrations}
        return tuple(v for v in self.applied if v not in known)


@dataclass(frozen=True, slots=True)
class ValidateResult:
    """Whether a schema has every known version (`migrate_validate`)."""

    schema: str
    ok: bool
    unapplied: tuple[int, ...]
    messages: tuple[str, ...]
    """Why not ok, one line each; empty when ok."""


async def migrate(
    database_url: str | None = None,
    *,
    direction: Literal["up", "down"] = "up",
    target_version: int | None = None,
    schema: str | None = None,
    dry_run: bool = False,
    line: str | None = None,
) -> MigrateResult:
    """Migrate a database along River's ``main`` line, and rivertrio's line with it.

    Up applies every pending version through `target_version` (default: the
    latest). Down rolls back one version by default, or every version above
    `target_version` (0 rolls back everything, removing all of River's objects).
    Each version runs in its own transaction together with its
    ``river_migration`` row, so a failure leaves the versions before it applied.

    By default (`line` None) the ``rivertrio_flow`` line (the schema of flow
    control: limits, sequences, workflows) follows ``main``: a full up (no
    `target_version`) applies its pending versions after ``main``'s, and a down
    that reaches ``main``'s version 5 removes it first. Its results are in
    ``also``. Pass ``line="main"`` for River's line alone, or
    ``line="rivertrio_flow"`` to migrate that line alone (its versions are then
    the ones `target_version` counts, and down to 0 removes it).

    A checkpoint. Cancel-safe at version granularity: a cancelled call leaves
    each version fully applied or not at all.

    Args:
        database_url: A ``postgresql://`` URL; None uses ``RIVERTRIO_DATABASE_URL``,
            else the embedded Postgres.
        direction: ``"up"`` or ``"down"``.
        target_version: Up: the last version to apply (already applied: nothing
            to do). Down: the version to stop at (must be applied), or 0 for none.
        schema: The schema to hold River's objects (it must exist); None uses the
            search path.
        dry_run: Change nothing; report what would run, with its SQL.
        line: None (``main``, and ``rivertrio_flow`` with it), ``"main"`` or
            ``"rivertrio_flow"``.

    Versions recorded in the database that rivertrio does not know (a newer
    River release applied them) are left alone, as River's migrator leaves
    them: up does not touch them, and down reverts only known versions.

    Raises:
        ConfigError: `direction`, `target_version`, `schema` or `line` is invalid.
        MigrationError: A down target is not applied, the schema does not exist,
            another tool manages its River tables, or ``rivertrio_flow`` is
            asked for while ``main`` is below version 5.
        DatabaseConnectionError: Postgres cannot be reached (names host and port).
        DatabaseError: A migration failed (names the version; it was rolled back).
    """
    _check_line(line)
    if line == FLOW_LINE:
        if direction not in ("up", "down"):
            raise ConfigError(f"direction must be 'up' or 'down', not {direction!r}")
        check_flow_target(direction, target_version)
    else:
        check_request(direction, target_version)
    _check_schema(schema)
    if line == LINE:
        state, steps = await _call(
            database_url, schema, run_migrations, schema, direction, target_version, dry_run=dry_run
        )
        return _result(LINE, direction, dry_run, state.schema, state.applied, steps)
    if line == FLOW_LINE:
        flow, steps = await _call(
            database_url,
            schema,
            run_flow_migrations,
            schema,
            direction,
            target_version,
            dry_run=dry_run,
        )
        return _result(FLOW_LINE, direction, dry_run, flow.schema, flow.applied, steps)
    state, steps, flow_state, flow_steps = await _call(
        database_url, schema, run_lines, schema, direction, target_version, dry_run=dry_run
    )
    also: tuple[MigrateResult, ...] = ()
    if flow_state is not None:
        also = (
            _result(
                FLOW_LINE, direction, dry_run, flow_state.schema, flow_state.applied, flow_steps
            ),
        )
    result = _result(LINE, direction, dry_run, state.schema, state.applied, steps)
    return dataclasses.replace(result, also=also)


def _result(
    line: str,
    direction: Literal["up", "down"],
    dry_run: bool,
    schema: str,
    applied: tuple[int, ...],
    steps: list[Step],
) -> MigrateResult:
    ran = {s.version for s in steps}
    after = set(applied) | ran if direction == "up" else set(applied) - ran
    return MigrateResult(
        direction=direction,
        schema=schema,
        dry_run=dry_run,
        from_version=max(applied, default=0),
        to_version=max(after, default=0),
        versions=tuple(MigrationVersion(s.version, s.name, s.sql) for s in steps),
        line=line,
    )


def _check_line(line: str | None) -> None:
    if line is not None and line not in _LINES:
        raise ConfigError(
            f"migration line does not exist: {line!r} (the lines are "
            + ", ".join(map(repr, _LINES))
            + ")"
        )


async def migrate_list(
    database_url: str | None = None, *, schema: str | None = None, line: str = LINE
) -> MigrationStatus:
    """Report the known versions of a line (default ``main``) and which the schema has.

    A checkpoint; read-only.

    Raises:
        ConfigError: `schema` is not a valid schema name, or `line` is unknown.
        MigrationError: The schema does not exist, or another tool manages its
            River tables.
        DatabaseConnectionError: Postgres cannot be reached (names host and port).
    """
    _check_line(line)
    if line == FLOW_LINE:
        _check_schema(schema)
        flow: FlowState = await _call(database_url, schema, read_flow_state, schema)
        name, applied = flow.schema, flow.applied
    else:
        state = await _read(database_url, schema)
        name, applied = state.schema, state.applied
    done = set(applied)
    return MigrationStatus(
        schema=name,
        migrations=tuple(MigrationInfo(m.version, m.name, m.version in done) for m in _LINES[line]),
        applied=applied,
        line=line,
    )


async def migrate_validate(
    database_url: str | None = None, *, schema: str | None = None, line: str = LINE
) -> ValidateResult:
    """Check that the schema has every known version of a line (default ``main``).

    Ok when none is missing. Versions a newer River release recorded do not
    count against it (River's validation ignores them too). A checkpoint; read-only.

    Raises:
        ConfigError: `schema` is not a valid schema name, or `line` is unknown.
        MigrationError: The schema does not exist, or another tool manages its
            River tables.
        DatabaseConnectionError: Postgres cannot be reached (names host and port).
    """
    status = await migrate_list(database_url, schema=schema, line=line)
    unapplied = status.pending
    messages: tuple[str, ...] = ()
    if unapplied:
        what = "unapplied migrations" if line == LINE else f"unapplied {line} migrations"
        messages = (f"{what}: " + ", ".join(str(v) for v in unapplied),)
    return ValidateResult(status.schema, not unapplied, unapplied, messages)


def migrate_get(
    versions: int | Iterable[int] | None = None,
    *,
    direction: Literal["up", "down"] = "up",
    schema: str | None = None,
    line: str = LINE,
    exclude: Iterable[int] = (),
    record: bool = True,
    transactions: bool = False,
) -> str:
    """The SQL of migrations, to run with another migration tool; no database is involved.

    For projects whose schema is managed by Alembic, Flyway, sqitch and the
    like: embed the text in their migrations. Each version starts with a
    ``-- River main migration NNN [up|down]`` line, as River's ``migrate-get``
    prints it, and versions are separated by a blank line. Run each version in
    its own transaction, as ``migrate`` does: version 6 uses an enum value that
    version 4 adds, which Postgres allows only once 4 has committed. Migration
    tools do that when each version is one of their migrations; for a script
    run in one go (``psql -f``, one ``execute``), ask for `transactions`.

    Args:
        versions: A version or versions, printed in the order given; None for
            every version (descending when `direction` is ``"down"``).
        direction: ``"up"`` or ``"down"``.
        schema: Qualify every object with this schema; None leaves names to the
            search path.
        line: The migration line: ``"main"`` (River's; its Postgres driver has
            no other), or ``"rivertrio_flow"`` (rivertrio's flow control, which
            needs ``main`` at version 5 or later).
        exclude: Versions to leave out (River's ``--exclude-version``).
        record: Also add or remove each version's ``river_migration`` row, as
            ``migrate`` does, so that ``migrate list`` and River's migrator see
            what was applied. River's ``migrate-get`` prints no such rows.
        transactions: Wrap each version in ``BEGIN;`` ... ``COMMIT;``. Leave it
            off for a tool that runs each of its migrations in a transaction.

    Raises:
        ConfigError: An argument is invalid (a version rivertrio does not know,
            another line, a bad schema name, or version 1 excluded while
            recording in the table it creates); the message says which.
    """
    if direction not in ("up", "down"):
        raise ConfigError(f"direction must be 'up' or 'down', not {direction!r}")
    _check_line(line)
    _check_schema(schema)
    known = [m.version for m in _LINES[line]]
    if versions is None:
        chosen = known if direction == "up" else known[::-1]
    else:
        chosen = [versions] if isinstance(versions, int) else list(versions)
    skipped = set(exclude)
    for version in [*chosen, *skipped]:
        if isinstance(version, bool) or not isinstance(version, int) or version not in known:
            raise ConfigError(
                f"migration {version!r} not found (available versions: "
                f"{', '.join(map(str, known))})"
            )
    if record and line == LINE and 1 in skipped:
        raise ConfigError(
            "version 1 creates river_migration, where each version is recorded: without "
            "it, leave the records out too (record=False, or --no-record)"
        )
    render = render_step if line == LINE else render_flow_step
    steps = [render(v, direction, schema, record=record) for v in chosen if v not in skipped]
    if transactions:
        return script(steps).rstrip("\n") + "\n" if steps else ""
    return "\n".join(step.sql for step in steps)


def _check_schema(schema: str | None) -> None:
    problem = None if schema is None else schema_name_problem(schema)
    if problem is not None:
        raise ConfigError(f"schema {problem}")


async def _read(database_url: str | None, schema: str | None) -> SchemaState:
    _check_schema(schema)
    return await _call(database_url, schema, read_state, schema)


async def _call(
    database_url: str | None,
    schema: str | None,
    fn: Callable[..., Coroutine[Any, Any, T]],
    *args: Any,
    **kwargs: Any,
) -> T:
    """Run the asyncio-side `fn(conn, *args)` on a one-connection driver of its own."""
    url = await resolve_database_url(database_url)
    try:
        async with open_driver(url, schema=schema, min_size=1, max_size=1) as driver:
            return await driver.run(fn, *args, **kwargs)
    except BaseExceptionGroup as group:
        # The driver's nurseries are an implementation detail here: one failure
        # comes out as itself (with the driver's own cause), not inside groups.
        sole = _sole_error(group)
        if sole is None:
            raise
        raise sole from sole.__cause__


def _sole_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(exc.exceptions)
        else:
            leaves.append(exc)
    errors = [e for e in leaves if not isinstance(e, trio.Cancelled)]
    if len(errors) == 1:
        return errors[0]
    return None
