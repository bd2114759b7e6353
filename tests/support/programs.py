"""System programs that some scenario tests start, and that the README's install does not bring.

A pytest plugin (tests/conftest.py loads it). A test that needs such a program
is marked ``@pytest.mark.requires_program(NAME)``, NAME a key of `PROGRAMS`.
Before its fixtures start, the test is skipped where the program is missing,
the reason naming the program and its install command. CI installs these
programs and sets `REQUIRE_ENV`, so there a missing program fails the test
instead: CI cannot pass by skipping them.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Set to 1 where the programs are installed on purpose (CI): a missing one fails.
REQUIRE_ENV = "RIVERTRIO_REQUIRE_SYSTEM_PROGRAMS"

#: Who runs Postgres and pgbouncer when the tests run as root (both refuse root).
SERVICE_USER = "postgres"

# Debian installs pgbouncer and runuser in /usr/sbin, which a PATH often lacks.
_SBIN = ("/usr/sbin", "/usr/local/sbin")


def which(name: str) -> str | None:
    """The executable `name`, looked for on PATH and then in the sbin directories."""
    path = os.pathsep.join([os.environ.get("PATH", os.defpath), *_SBIN])
    return shutil.which(name, path=path)


def find_pgbouncer() -> str | None:
    """The pgbouncer executable."""
    return which("pgbouncer")


def find_postgres_bindir() -> Path | None:
    """The directory holding initdb and pg_ctl: the newest system install, else pgserver's."""

    def version(bindir: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", bindir.parent.name))

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).parent)
    with contextlib.suppress(ImportError):
        import pgserver

        candidates.append(Path(pgserver.__file__).parent / "pginstall" / "bin")
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    return None


def _service_user_missing() -> str | None:
    """Why the servers cannot be started as the service user, if the tests run as root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return (
            f"no `{SERVICE_USER}` user to run the servers as (they refuse to run as root): "
            f"useradd --system {SERVICE_USER}"
        )
    if which("runuser") is None:
        return "runuser not found (to start the servers as postgres): apt-get install -y util-linux"
    return None


@dataclass(frozen=True)
class Program:
    """How to find a program, what installs it, and if root must run it as `SERVICE_USER`."""

    what: str
    find: Callable[[], object | None]
    install: str
    refuses_root: bool = True


PROGRAMS: dict[str, Program] = {
    "pgbouncer": Program("pgbouncer", find_pgbouncer, "apt-get install -y pgbouncer"),
    "pg_ctl": Program(
        "initdb and pg_ctl",
        find_postgres_bindir,
        "apt-get install -y postgresql (or pip install pgserver)",
    ),
    # The dashboard's browser tests drive Debian's chromium with Playwright.
    "chromium": Program(
        "chromium", lambda: which("chromium"), "apt-get install -y chromium", refuses_root=False
    ),
}


def missing(name: str) -> str | None:
    """Why the program `name` cannot be run here (its install command included), or None."""
    program = PROGRAMS[name]
    if program.find() is None:
        return f"{program.what} not found: {program.install}"
    return _service_user_missing() if program.refuses_root else None


def require(name: str) -> None:
    """Skip the running test if the program `name` is missing; fail it instead under CI."""
    reason = missing(name)
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: this run must have it)", pytrace=False)
    pytest.skip(reason)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "requires_program(name): needs a system program the README does not install "
        "(tests/support/programs.py)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture starts: skip (or fail, see `require`) a test whose program is missing."""
    for marker in item.iter_markers("requires_program"):
        require(*marker.args)
