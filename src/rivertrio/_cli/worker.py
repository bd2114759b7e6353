"""``rivertrio worker MODULE:ATTR``: run a client for a Config until signalled.

The first SIGINT or SIGTERM is a soft stop (no new jobs; running jobs finish),
a second one a hard stop (running jobs are interrupted and go back to
``available``). Either way the process exits with status 0 once every outcome
is persisted.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import signal
import sys
import time
from typing import Any

import click
import trio

from .._client import open_client
from .._config import Config
from .._driver import describe_url
from ..embedded import resolve_database_url
from ._common import CliError, database_url_option, run_trio, schema_option

__all__ = ["load_config", "serve", "worker"]

log = logging.getLogger("rivertrio.worker")

_LOG_LEVELS = ("debug", "info", "warning", "error")


def _debugging() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.find_root().params.get("debug"))


def _import_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == name or name.startswith(missing + "."):
            raise click.BadParameter(
                f"no module named {missing!r} (check the name, the current directory "
                "and PYTHONPATH; --app-dir adds a directory)",
                param_hint="MODULE:ATTR",
            ) from exc
        if _debugging():
            raise
        raise CliError(f"importing module {name!r} failed: {exc}") from exc
    except Exception as exc:
        if _debugging():
            raise
        raise CliError(
            f"importing module {name!r} raised {type(exc).__name__}: {exc} "
            "(run 'rivertrio --debug worker ...' for the traceback)"
        ) from exc


def load_config(target: str) -> Config:
    """The Config at ``MODULE:ATTR``: a Config, or a zero-argument callable returning one.

    ``ATTR`` may be dotted (``pkg.mod:settings.config``).

    Raises:
        click.BadParameter: The path is malformed or names nothing usable.
        CliError: Importing the module raised an error.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr or ":" in attr:
        raise click.BadParameter(
            f"{target!r} is not MODULE:ATTR (for example myapp.jobs:config)",
            param_hint="MODULE:ATTR",
        )
    obj: Any = _import_module(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise click.BadParameter(
                f"module {module_name!r} has no attribute {attr!r}", param_hint="MODULE:ATTR"
            ) from None
    if isinstance(obj, Config):
        return obj
    if not callable(obj):
        raise click.BadParameter(
            f"{target} is a {type(obj).__name__}, not a rivertrio.Config "
            "or a callable returning one",
            param_hint="MODULE:ATTR",
        )
    result = obj()
    if not isinstance(result, Config):
        raise click.BadParameter(
            f"{target}() returned a {type(result).__name__}, not a rivertrio.Config",
            param_hint="MODULE:ATTR",
        )
    return result


def _describe_queues(config: Config) -> str:
    return ", ".join(f"{name} (max_workers {q.max_workers})" for name, q in config.queues.items())


async def serve(config: Config, database_url: str | None) -> None:
    """Run a client for `config` until SIGINT/SIGTERM: once = soft stop, twice = hard stop.

    A checkpoint; returns when the client has stopped and every outcome is persisted.

    Raises:
        DatabaseError: The client could not start (or failed while running).
    """
    url = await resolve_database_url(database_url)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_client(config, database_url=url) as client:
            started = time.monotonic()
            log.info(
                "rivertrio worker started: client %s, queues %s, schema %s, database %s, pid %d; "
                "SIGINT/SIGTERM once = soft stop, twice = hard stop",
                client.id,
                _describe_queues(config),
                config.schema or "(search path)",
                describe_url(url),
                os.getpid(),
            )
            how = "soft"
            async with trio.open_nursery() as nursery:

                async def soft_stop() -> None:
                    await client.stop()
                    nursery.cancel_scope.cancel()

                received = 0
                async for signum in signals:
                    received += 1
                    name = signal.Signals(signum).name
                    if received == 1:
                        log.info(
                            "%s: soft stop: fetching no new jobs, letting running jobs finish "
                            "(send it again to interrupt them)",
                            name,
                        )
                        nursery.start_soon(soft_stop)
                    elif received == 2:
                        how = "hard"
                        log.info(
                            "%s: hard stop: interrupting running jobs (they go back to available)",
                            name,
                        )
                        await client.stop_and_cancel()
                        nursery.cancel_scope.cancel()
    log.info("rivertrio worker stopped (%s stop) after %.1f s", how, time.monotonic() - started)


@click.command()
@click.argument("target", metavar="MODULE:ATTR")
@database_url_option
@schema_option(help="Override the Config's schema.")
@click.option(
    "--app-dir",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Directory put first on sys.path before importing MODULE.",
)
@click.option(
    "--log-level",
    type=click.Choice(_LOG_LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
    help="Logging level (logs go to stderr).",
)
def worker(
    target: str, database_url: str | None, schema: str | None, app_dir: str, log_level: str
) -> None:
    """Run a worker process for the Config at MODULE:ATTR.

    MODULE:ATTR names a rivertrio.Config, or a zero-argument callable returning
    one, e.g. `myapp.jobs:config`. The process works the Config's queues until
    it receives SIGINT or SIGTERM: the first one is a soft stop (no new jobs,
    running jobs finish), a second one a hard stop (running jobs are
    interrupted and go back to `available`). It exits with status 0 once
    stopped. Run as many worker processes, on as many hosts, as you like.
    """
    path = os.path.abspath(app_dir)
    if path not in sys.path:
        sys.path.insert(0, path)
    config = load_config(target)
    if schema is not None:
        config = dataclasses.replace(config, schema=schema)
    if config.insert_only:
        raise click.BadParameter(
            f"the Config at {target} has no queues: a worker needs at least one queue to work",
            param_hint="MODULE:ATTR",
        )
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    run_trio(serve, config, database_url)
