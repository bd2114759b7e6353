"""``rivertrio worker MODULE:ATTR``: run a client for a Config until signalled.

The first SIGINT or SIGTERM is a soft stop (no new jobs; running jobs finish),
a second one a hard stop (running jobs are interrupted and go back to
``available``). Either way the process exits with status 0 once every outcome
is persisted. With ``--processes N`` a supervisor runs N such processes (see
`rivertrio._supervisor`), passes each signal on to them, and restarts one that
dies unexpectedly.
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
from .._driver import describe_url, open_driver
from .._supervisor import Supervisor, stop_requests
from ..embedded import DATABASE_URL_ENV, resolve_database_url
from ._common import CliError, database_url_option, run_trio, schema_option
from ._tuning import tune_worker_process

__all__ = ["ProcessCount", "load_config", "serve", "supervise", "worker"]

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
    async with stop_requests() as requests, open_client(config, database_url=url) as client:
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
            async for name in requests:
                received += 1
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


#: Most worker processes one supervisor runs.
MAX_PROCESSES = 256


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class ProcessCount(click.ParamType[int]):
    """``--processes``: a number of processes, or ``auto`` for one per available core."""

    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        """The number of processes `value` asks for."""
        if isinstance(value, int) and not isinstance(value, bool):
            count = value
        elif str(value).strip().lower() == "auto":
            return available_cores()
        else:
            try:
                count = int(str(value))
            except ValueError:
                self.fail(f"{value!r} is not a number of processes, nor 'auto'", param, ctx)
        if not 1 <= count <= MAX_PROCESSES:
            self.fail(f"{count} is not between 1 and {MAX_PROCESSES}", param, ctx)
        return count


async def supervise(
    command: list[str], processes: int, database_url: str | None, schema: str | None
) -> bool:
    """Run `processes` worker processes of `command` until SIGINT/SIGTERM; see `Supervisor`.

    Each signal (the first two) is passed on to every child: once = soft stop,
    twice = hard stop. A checkpoint; returns whether every child stopped cleanly.

    Raises:
        DatabaseConnectionError: The database cannot be reached (checked once,
            before any child starts: one error, not N children failing in turn).
    """
    url = await resolve_database_url(database_url)
    async with open_driver(url, schema=schema, max_size=1):
        pass
    supervisor = Supervisor(command, processes=processes, env={**os.environ, DATABASE_URL_ENV: url})
    clean = False
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def run(*, task_status: trio.TaskStatus[None]) -> None:
                nonlocal clean
                clean = await supervisor.run(task_status=task_status)
                nursery.cancel_scope.cancel()

            await nursery.start(run)
            log.info(
                "rivertrio supervisor started: %d worker processes, database %s, pid %d; "
                "SIGINT/SIGTERM once = soft stop, twice = hard stop",
                processes,
                describe_url(url),
                os.getpid(),
            )
            received = 0
            async for signum in signals:
                received += 1
                name = signal.Signals(signum).name
                if received <= 2:
                    how = "soft" if received == 1 else "hard"
                    log.info("%s: %s stop: passed on to every worker process", name, how)
                    supervisor.stop(signum)
                else:
                    log.info("%s: already stopping; waiting for the worker processes", name)
    if clean:
        log.info("rivertrio supervisor stopped: every worker process stopped cleanly")
    else:
        log.error("rivertrio supervisor stopped: a worker process did not stop cleanly")
    return clean


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
@click.option(
    "--processes",
    type=ProcessCount(),
    default=None,
    help="Run N worker processes under a supervisor ('auto': one per core).",
)
def worker(
    target: str,
    database_url: str | None,
    schema: str | None,
    app_dir: str,
    log_level: str,
    processes: int | None,
) -> int:
    """Run a worker process for the Config at MODULE:ATTR.

    MODULE:ATTR names a rivertrio.Config, or a zero-argument callable returning
    one, e.g. `myapp.jobs:config`. The process works the Config's queues until
    it receives SIGINT or SIGTERM: the first one is a soft stop (no new jobs,
    running jobs finish), a second one a hard stop (running jobs are
    interrupted and go back to `available`). It exits with status 0 once
    stopped. Run as many worker processes, on as many hosts, as you like.

    With --processes N (or auto, one per core) a supervisor runs N worker
    processes: Python works one core per process. It passes each signal on to
    all of them, restarts one that dies unexpectedly (after a pause that grows
    while it keeps dying), and exits with status 0 only if every one stopped
    cleanly.
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
    if processes is None:
        tune_worker_process()
        run_trio(serve, config, database_url)
        return 0
    command = [sys.executable, "-m", "rivertrio", *(["--debug"] if _debugging() else [])]
    command += ["worker", target, "--app-dir", path, "--log-level", log_level]
    if schema is not None:
        command += ["--schema", schema]
    return 0 if run_trio(supervise, command, processes, database_url, config.schema) else 1
