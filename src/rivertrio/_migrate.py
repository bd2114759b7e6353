"""Schema migrations: River's ``main`` line, applied and inspected from Trio, or printed.

A database migrated by River (Go) is recognised as it is: its ``river_migration``
rows say which versions it has, in either shape of that table, and only the
missing versions run. Versions a newer River release recorded are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import trio

from ._driver import open_driver
from ._driver._migrations import (
    LATEST_VERSION,
    LINE,
    MIGRATIONS,
    SchemaState,
    Step,
    check_request,
    read_state,
    render_step,
    run_migrations,
    script,
    unknown_versions,
)
from ._exceptions import ConfigError, MigrationError
from ._validate import schema_name_problem
from .embedded import resolve_database_url

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterable

T = TypeVar("T")

__all__ = [
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
    """The highest version applied before the call (0: none)."""
    to_version: int
    """The highest version applied after the call (or after it, had it not been a dry run)."""
    versions: tuple[MigrationVersion, ...]

    @property
    def version_numbers(self) -> tuple[int, ...]:
        """The version numbers in ``versions``, in the order they ran."""
        return tuple(v.version for v in self.versions)

    @property
    def sql(self) -> str:
        """The full SQL text run (or to run): ``BEGIN; ... COMMIT;`` per version."""
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
    """Which versions of the ``main`` line a schema has (`migrate_list`)."""

    schema: str
    migrations: tuple[MigrationInfo, ...]
    """Every version rivertrio knows, ascending."""
    applied: tuple[int, ...]
    """Versions recorded in the database, ascending (may include ones newer than known)."""

    @property
    def current_version(self) -> int:
        """The highest applied version (0: none)."""
        return max(self.applied, default=0)

    @property
    def latest_version(self) -> int:
        """The newest version rivertrio knows."""
        return LATEST_VERSION

    @property
    def pending(self) -> tuple[int, ...]:
        """Known versions not applied yet, ascending."""
        return tuple(m.version for m in self.migrations if not m.applied)

    @property
    def unknown(self) -> tuple[int, ...]:
        """Applied versions rivertrio does not know (a newer River release applied them)."""
        return tuple(unknown_versions(self.applied))


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
) -> MigrateResult:
    """Migrate a database along River's ``main`` line.

    Up applies every pending version through `target_version` (default: the
    latest). Down rolls back one version by default, or every version above
    `target_version` (0 rolls back everything, removing all of River's objects).
    Each version runs in its own transaction together with its
    ``river_migration`` row, so a failure leaves the versions before it applied.

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

    Versions recorded in the database that rivertrio does not know (a newer
    River release applied them) are left alone, as River's migrator leaves
    them: up does not touch them, and down reverts only known versions.

    Raises:
        ConfigError: `direction`, `target_version` or `schema` is invalid.
        MigrationError: A down target is not applied, the schema does not exist,
            or another tool manages its River tables.
        DatabaseConnectionError: Postgres cannot be reached (names host and port).
        DatabaseError: A migration failed (names the version; it was rolled back).
    """
    check_request(direction, target_version)
    _check_schema(schema)
    state, steps = await _call(
        database_url, schema, run_migrations, schema, direction, target_version, dry_run=dry_run
    )
    ran = {s.version for s in steps}
    after = set(state.applied) | ran if direction == "up" else set(state.applied) - ran
    return MigrateResult(
        direction=direction,
        schema=state.schema,
        dry_run=dry_run,
        from_version=max(state.applied, default=0),
        to_version=max(after, default=0),
        versions=tuple(MigrationVersion(s.version, s.name, s.sql) for s in steps),
    )


async def migrate_list(
    database_url: str | None = None, *, schema: str | None = None
) -> MigrationStatus:
    """Report the known versions and which of them the schema has.

    A checkpoint; read-only.

    Raises:
        ConfigError: `schema` is not a valid schema name.
        MigrationError: The schema does not exist, or another tool manages its
            River tables.
        DatabaseConnectionError: Postgres cannot be reached (names host and port).
    """
    state = await _read(database_url, schema)
    done = set(state.applied)
    return MigrationStatus(
        schema=state.schema,
        migrations=tuple(MigrationInfo(m.version, m.name, m.version in done) for m in MIGRATIONS),
        applied=state.applied,
    )


async def migrate_validate(
    database_url: str | None = None, *, schema: str | None = None
) -> ValidateResult:
    """Check that the schema has every known version; ok when none is missing.

    Versions a newer River release recorded do not count against it (River's
    validation ignores them too). A checkpoint; read-only.

    Raises:
        ConfigError: `schema` is not a valid schema name.
        MigrationError: The schema does not exist, or another tool manages its
            River tables.
        DatabaseConnectionError: Postgres cannot be reached (names host and port).
    """
    status = await migrate_list(database_url, schema=schema)
    unapplied = status.pending
    messages: tuple[str, ...] = ()
    if unapplied:
        messages = ("unapplied migrations: " + ", ".join(str(v) for v in unapplied),)
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
        line: The migration line; River's Postgres driver has only ``"main"``.
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
    if line != LINE:
        raise ConfigError(f"migration line does not exist: {line!r} (the only line is {LINE!r})")
    _check_schema(schema)
    known = [m.version for m in MIGRATIONS]
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
    if record and 1 in skipped:
        raise ConfigError(
            "version 1 creates river_migration, where each version is recorded: without "
            "it, leave the records out too (record=False, or --no-record)"
        )
    steps = [render_step(v, direction, schema, record=record) for v in chosen if v not in skipped]
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
