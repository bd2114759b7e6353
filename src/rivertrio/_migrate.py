"""Schema migrations: River's ``main`` line, applied and inspected from Trio.

A database migrated by River (Go) is recognised as it is: its ``river_migration``
rows say which versions it has, in either shape of that table, and only the
missing versions run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import trio

from ._driver import open_driver
from ._driver._migrations import (
    LATEST_VERSION,
    MIGRATIONS,
    MigrationError,
    SchemaState,
    Step,
    check_request,
    read_state,
    run_migrations,
    script,
)
from .embedded import resolve_database_url

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

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
        target_version: Up: the last version to apply (must be pending). Down:
            the version to stop at (must be applied), or 0 for none.
        schema: The schema to hold River's objects (it must exist); None uses the
            search path.
        dry_run: Change nothing; report what would run, with its SQL.

    Raises:
        ConfigError: `direction` or `target_version` is invalid.
        MigrationError: The target does not fit the versions applied, the schema
            does not exist, or another tool manages its River tables.
        DatabaseConnectionError: Postgres cannot be reached (names host and port).
        DatabaseError: A migration failed (names the version; it was rolled back).
    """
    check_request(direction, target_version)
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

    A checkpoint; read-only.

    Raises:
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


async def _read(database_url: str | None, schema: str | None) -> SchemaState:
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
