"""The ``rivertrio`` command line: demo, worker, bench, migrate, jobs, queues, ui."""

from __future__ import annotations

import click

from ._common import RivertrioGroup
from .bench import bench, bench_child
from .demo import demo
from .jobs import jobs
from .migrate import migrate
from .queues import queues
from .ui import ui
from .worker import worker

__all__ = ["cli", "main"]


@click.group(
    name="rivertrio", cls=RivertrioGroup, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.option("--debug", is_flag=True, help="Show the full traceback of unexpected errors.")
@click.version_option(package_name="rivertrio", prog_name="rivertrio")
def cli(debug: bool) -> None:
    """rivertrio: a Postgres-backed job queue for Trio, schema-compatible with River.

    Start with `rivertrio demo`. Every command takes --database-url (default
    $RIVERTRIO_DATABASE_URL, else an embedded Postgres started on demand).
    """


cli.add_command(demo)
cli.add_command(worker)
cli.add_command(bench)
cli.add_command(bench_child)
cli.add_command(migrate)
cli.add_command(jobs)
cli.add_command(queues)
cli.add_command(ui)


def main() -> None:
    """Entry point of the ``rivertrio`` console script and ``python -m rivertrio``."""
    cli.main(prog_name="rivertrio")
