"""Developer tasks: `nox -s tests lint typecheck`, `nox -s demo`, `nox -s bench`, `nox -s docs`."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "typecheck"]

PYPROJECT = nox.project.load_toml("pyproject.toml")


def _group(name: str) -> list[str]:
    return nox.project.dependency_groups(PYPROJECT, name)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (against RIVERTRIO_DATABASE_URL, else the embedded Postgres)."""
    session.install("-e", ".[embedded,ui]", *_group("test"))
    session.run("pytest", *(session.posargs or ["-n", "2"]))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install(*_group("lint"))
    session.run("ruff", "check", "src", "tests", "noxfile.py", "docs")
    session.run("ruff", "format", "--check", "src", "tests", "noxfile.py", "docs")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package and the tests."""
    session.install("-e", ".[embedded,ui]", *_group("typecheck"))
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
    """Build the documentation site with warnings as errors; check it needs no other host."""
    session.install("-e", ".[embedded]", *_group("docs"))
    session.run("mkdocs", "build", "--strict", "--site-dir", str(SITE_DIR))
    problems = _site_script_problems(SITE_DIR)
    if problems:
        session.error("the built site is not self-contained:\n  " + "\n  ".join(problems))


SITE_DIR = Path("site")
# The site's own copy of mermaid (docs/assets/vendor/mermaid/README.md).
MERMAID_JS = "assets/vendor/mermaid/mermaid.min.js"


class _PageScan(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.has_diagram = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script" and attributes.get("src"):
            self.scripts.append(attributes["src"] or "")
        if "mermaid" in (attributes.get("class") or "").split():
            self.has_diagram = True


def _site_script_problems(site: Path) -> list[str]:
    """Pages that load a script from another host, or have a diagram but not our mermaid.

    Material fetches mermaid from a CDN when a page has not loaded it, so a site
    built without the vendored copy would show its diagrams as raw text offline.
    """
    problems = []
    pages = sorted(site.rglob("*.html"))
    if not pages:
        return [f"no HTML pages under {site}/"]
    for page in pages:
        scan = _PageScan()
        scan.feed(page.read_text(encoding="utf-8"))
        name = page.relative_to(site)
        problems += [
            f"{name}: script from another host: {src}"
            for src in scan.scripts
            if src.startswith(("http:", "https:", "//"))
        ]
        if scan.has_diagram and not any(src.endswith(MERMAID_JS) for src in scan.scripts):
            problems.append(f"{name}: has a diagram but does not load {MERMAID_JS}")
    return problems
