"""Developer tasks: `nox -s tests lint typecheck`, `nox -s demo`, `nox -s bench`, `nox -s docs`."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "typecheck"]

PYPROJECT = nox.project.load_toml("pyproject.toml")


def _group(name: str) -> list[str]:
    return nox.project.dependency_groups(PYPROJECT, name)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (against RIVERTRIO_DATABASE_URL, else the embedded Postgres)."""
    session.install("-e", ".[embedded]", *_group("test"))
    session.run("pytest", *(session.posargs or ["-n", "2"]))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install(*_group("lint"))
    session.run("ruff", "check", "src", "tests", "noxfile.py", "docs")
    session.run("ruff", "format", "--check", "src", "tests", "noxfile.py", "docs")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[embedded]", *_group("typecheck"))
    session.run("mypy")


@nox.session
def demo(session: nox.Session) -> None:
    """Run the demo on the embedded Postgres (or RIVERTRIO_DATABASE_URL)."""
    session.install("-e", ".[embedded]")
    session.run("rivertrio", "demo", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmark; pass options after --, e.g. `nox -s bench -- --json`."""
    session.install("-e", ".[embedded]")
    session.run("rivertrio", "bench", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site with warnings as errors."""
    session.install("-e", ".[embedded]", *_group("docs"))
    session.run("mkdocs", "build", "--strict")
