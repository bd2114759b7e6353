"""The embedded Postgres: a private server in a local data directory (``pgserver``).

With no database URL given (argument or ``RIVERTRIO_DATABASE_URL``), rivertrio
starts this server, so the demo and the tests need nothing installed but Python.
Several processes may use one data directory at once: the first starts the
server, the last to exit stops it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import trio

from ._exceptions import EmbeddedPostgresError

__all__ = ["DATABASE_URL_ENV", "default_data_dir", "embedded_url", "resolve_database_url"]

#: The environment variable naming the database when no URL is passed.
DATABASE_URL_ENV = "RIVERTRIO_DATABASE_URL"

_lock = threading.Lock()
_servers: dict[Path, object] = {}


def default_data_dir() -> Path:
    """Where the embedded server keeps its data.

    ``RIVERTRIO_EMBEDDED_DIR`` if set, else ``$XDG_CACHE_HOME/rivertrio/pgdata``
    (``~/.cache/rivertrio/pgdata``), else ``./.rivertrio/pgdata`` when there is no
    usable home directory.
    """
    if configured := os.environ.get("RIVERTRIO_EMBEDDED_DIR"):
        return Path(configured).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if cache.startswith("~"):
        return Path(".rivertrio", "pgdata").resolve()
    return Path(cache, "rivertrio", "pgdata")


@contextlib.contextmanager
def _quiet_runtime_dir() -> Iterator[None]:
    # pgserver asks platformdirs for a runtime directory it never needs here;
    # containers and CI often have no XDG_RUNTIME_DIR, and the warning is noise.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        yield


def embedded_url(data_dir: Path | str | None = None) -> str:
    """Start (or reuse) the embedded Postgres and return its URL. Blocking.

    The server stays up while this process lives and is stopped at exit by the
    last process using it.

    Raises:
        EmbeddedPostgresError: ``pgserver`` is missing, or the server did not start.
    """
    path = Path(data_dir) if data_dir is not None else default_data_dir()
    try:
        with _quiet_runtime_dir():
            import pgserver
    except ImportError as exc:
        raise EmbeddedPostgresError(
            "no database URL was given and the embedded Postgres is not installed: "
            f"set {DATABASE_URL_ENV} or install rivertrio[embedded]"
        ) from exc
    with _lock:
        server = _servers.get(path)
        if server is None:
            try:
                path.mkdir(parents=True, exist_ok=True)
                with _quiet_runtime_dir():
                    server = pgserver.get_server(path, cleanup_mode="stop")  # type: ignore[attr-defined]
            except Exception as exc:
                raise EmbeddedPostgresError(
                    f"could not start the embedded Postgres in {path}: {exc}"
                ) from exc
            _servers[path] = server
    return str(server.get_uri())  # type: ignore[attr-defined]


async def resolve_database_url(url: str | None = None) -> str:
    """The URL to use: `url`, else ``RIVERTRIO_DATABASE_URL``, else the embedded server's.

    A checkpoint; starting the embedded server runs in a worker thread.
    """
    if url:
        return url
    if env := os.environ.get(DATABASE_URL_ENV):
        return env
    return await trio.to_thread.run_sync(embedded_url)
