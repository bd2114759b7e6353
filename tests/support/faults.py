"""Infrastructure faults for the fault scenarios (tests/scenarios).

- `FaultProxy`: a TCP proxy in front of Postgres that drops or black-holes
  connections on command, chosen by what they are (pool, LISTEN, liveness lock).
- `TempPostgres`: a Postgres server of the test's own, which it may stop and start.
- `PgBouncer`: a pgbouncer process in front of the test server.
- `LogWatch`: a logging handler a test can wait on (the services' log lines are
  their signals for faults that have no event of their own).
- `Load` (a stream of inserts that rides out faults), `Recorder` (a lossless
  subscriber), `job_states`, `wait_none_available`: the work under test.
- `Tally`: the figures each scenario prints, as one summary line.

When the tests run as root (CI), Postgres and pgbouncer run as the ``postgres``
user through ``runuser``, in directories of their own under the system temp dir.
A test that starts either carries ``@pytest.mark.requires_program`` (see
`support.programs`), so that it is skipped, not failed, where they are missing.

Everything here talks to real processes and sockets; nothing mocks Postgres.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import logging
import os
import pwd
import re
import shutil
import socket
import struct
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import trio

import rivertrio
from rivertrio._driver import Driver
from rivertrio._exceptions import DatabaseError
from support import programs
from support.common import Task

# --------------------------------------------------------------------------------------
# URLs


@dataclass(frozen=True)
class PgTarget:
    """Where a Postgres URL points, and as whom."""

    user: str
    password: str
    database: str
    host: str  # a host name or address, or a socket directory (starts with "/")
    port: int

    @classmethod
    def from_url(cls, url: str) -> PgTarget:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        host = parts.hostname or (query.get("host") or ["127.0.0.1"])[0]
        port = parts.port or int((query.get("port") or ["5432"])[0])
        database = unquote(parts.path.lstrip("/")) or "postgres"
        return cls(
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password or ""),
            database=database,
            host=host,
            port=port,
        )

    @property
    def is_unix_socket(self) -> bool:
        return self.host.startswith("/")

    def url_via(self, host: str, port: int) -> str:
        """A URL with the same credentials and database, through ``host:port``, without TLS.

        TLS off: the proxy reads the startup packet to tell connections apart.
        """
        auth = self.user + (f":{self.password}" if self.password else "")
        return f"postgresql://{auth}@{host}:{port}/{self.database}?sslmode=disable"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------------------
# The proxy

Kind = Literal["pool", "listener", "liveness", "cancel", "other"]
KINDS: tuple[Kind, ...] = ("pool", "listener", "liveness", "cancel", "other")
#: rivertrio names its connections (application_name): that is how the proxy tells them apart.
_KIND_BY_APPLICATION: dict[str, Kind] = {
    "rivertrio": "pool",
    "rivertrio-listener": "listener",
    "rivertrio-liveness": "liveness",
}
_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102
#: The tag `hold_reply_to` knows a PortalSuspended message by: the end of the answer
#: to an Execute that stopped at its row limit (asyncpg's ``fetchval`` and
#: ``fetchrow`` ask for one row), which has no CommandComplete.
SUSPENDED = b"(portal suspended)"


class _Valve:
    """Lets one direction of a link flow, or holds it."""

    def __init__(self) -> None:
        self._open = trio.Event()
        self._open.set()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def close(self) -> None:
        if self._open.is_set():
            self._open = trio.Event()

    def open(self) -> None:
        self._open.set()

    async def wait_open(self) -> None:
        await self._open.wait()


@dataclass(eq=False)
class Link:
    """One proxied connection: the client's socket, the server's, two directions."""

    number: int
    kind: Kind | None = None  # None until its startup packet has been read
    application: str = ""
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    up: _Valve = field(default_factory=_Valve)  # client to server
    down: _Valve = field(default_factory=_Valve)  # server to client
    ready: int = 0  # ReadyForQuery messages from the server: 1 = handshake done
    held_ready: int = 0  # of them, held back by `hold_replies`
    hold_after_handshake: bool = False
    hold_on_tag: bytes | None = None  # hold the answer whose CommandComplete has this tag
    hold_after: bytes | None = None  # ...once an answer tagged so has passed on this link
    _after_seen: bool = False
    _startup: bytearray = field(default_factory=bytearray)
    _down_header: bytearray = field(default_factory=bytearray)
    _down_body: bytearray = field(default_factory=bytearray)
    _down_type: int = 0
    _down_left: int = 0

    def feed_client_bytes(self, data: bytes | bytearray) -> bool:
        """Read the startup packet from the client's first bytes; True once the kind is known."""
        if self.kind is not None:
            return True
        buf = self._startup
        buf += data
        while len(buf) >= 8:
            (length,) = struct.unpack("!i", buf[:4])
            if len(buf) < length:
                return False
            (code,) = struct.unpack("!i", buf[4:8])
            body = bytes(buf[8:length])
            del buf[:length]
            if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                continue  # the server answers 'N'; the startup packet follows
            if code == _CANCEL_REQUEST:
                self.kind = "cancel"
                return True
            fields = body.split(b"\0")
            params = dict(zip(fields[0::2], fields[1::2], strict=False))
            self.application = params.get(b"application_name", b"").decode()
            self.kind = _KIND_BY_APPLICATION.get(self.application, "other")
            return True
        return False

    def holds_now(self, messages: list[tuple[int, bytes]]) -> bool:
        """Whether `messages` (from `frame`) end the answer `hold_on_tag` picks."""
        for kind, tag in messages:
            if kind == 115:  # 's': PortalSuspended
                tag = SUSPENDED
            elif kind != 67:
                continue
            if self.hold_after is not None and not self._after_seen:
                self._after_seen = tag == self.hold_after
            elif tag == self.hold_on_tag:
                return True
        return False

    def frame(self, data: bytes | bytearray) -> list[tuple[int, bytes]]:
        """Frame the server's messages; returns the ReadyForQuery ('Z'),
        CommandComplete ('C', with its tag) and PortalSuspended ('s') messages
        that `data` ends."""
        found: list[tuple[int, bytes]] = []
        i = 0
        while i < len(data):
            if self._down_left:
                step = min(self._down_left, len(data) - i)
                if self._down_type == 67:  # keep a CommandComplete's tag
                    self._down_body += data[i : i + step]
                self._down_left -= step
                i += step
                if not self._down_left and self._down_type == 67:
                    found.append((67, bytes(self._down_body).rstrip(b"\0")))
                    self._down_body.clear()
                continue
            at_start = self.ready == 0 and not self._down_header
            if self.kind == "cancel" or (at_start and data[i] == 78):
                # 'N': the one-byte answer to an SSL request, not a message.
                i += 1
                continue
            need = 5 - len(self._down_header)
            self._down_header += data[i : i + need]
            i += min(need, len(data) - i)
            if len(self._down_header) == 5:
                self._down_type = self._down_header[0]
                (length,) = struct.unpack("!i", self._down_header[1:5])
                self._down_header.clear()
                self._down_left = length - 4
                if self._down_type == 90:  # 'Z'
                    found.append((90, b""))
                elif self._down_type == 115:  # 's'
                    found.append((115, b""))
        return found


class FaultProxy:
    """A TCP proxy to Postgres on 127.0.0.1 whose connections a test can cut or stall.

    Run it with ``await nursery.start(proxy.run)`` (or `open_fault_proxy`). Every
    connection is a `Link`, classified by its ``application_name``: ``pool`` (the
    driver's pool), ``listener`` (the notifier's LISTEN connection), ``liveness``
    (the liveness lock), ``cancel`` (asyncpg's cancel requests), ``other``.

    - `drop` closes links now (both sides see the connection end: as when a
      proxy or a firewall kills a connection).
    - `stall` stops forwarding in both directions while both sockets stay open:
      a black hole, as on a dead network; nothing tells either side.
    - `hold_replies` forwards the client's statements but holds the server's
      answers: the statement runs, and commits, but its reply is not delivered.
      `hold_reply_to` does so for one statement, chosen by its command tag.
    - `heal` undoes `stall` and `hold_replies`.
    """

    def __init__(self, target: PgTarget) -> None:
        self.target = target
        self.port = 0
        self.links: list[Link] = []
        self.opened: dict[Kind, int] = dict.fromkeys(KINDS, 0)
        self.hold_new_replies: set[Kind] = set()
        self.hold_tags: dict[Kind, tuple[bytes, bytes | None]] = {}
        self._numbers = 0
        self._changed = trio.Event()

    def url(self) -> str:
        """The URL that reaches Postgres through this proxy."""
        return self.target.url_via("127.0.0.1", self.port)

    def live(self, *kinds: Kind) -> list[Link]:
        """The open links of the given kinds (every kind if none given)."""
        return [link for link in self.links if not kinds or link.kind in kinds]

    def drop(self, *kinds: Kind) -> int:
        """Close every open link of these kinds; returns how many."""
        doomed = self.live(*kinds)
        for link in doomed:
            link.scope.cancel()
        return len(doomed)

    def stall(self, *kinds: Kind) -> int:
        """Black-hole every open link of these kinds; returns how many."""
        targets = self.live(*kinds)
        for link in targets:
            link.up.close()
            link.down.close()
        return len(targets)

    def hold_reply_to(self, kind: Kind, tag: bytes, *, after: bytes | None = None) -> None:
        """On links of `kind`, hold the answer of the first statement whose tag is `tag`.

        (``b"UPDATE 3"``: an UPDATE that changed three rows; `SUSPENDED`: a
        statement whose caller asked for one row.) The statement ran
        (and committed, if it was a COMMIT or outside a transaction); its client
        never hears so. With `after`, only an answer that follows one tagged
        `after` on the same link counts (``b"COMMIT"`` after ``b"UPDATE 3"``).
        """
        self.hold_tags[kind] = (tag, after)
        for link in self.live(kind):
            link.hold_on_tag, link.hold_after = tag, after

    def hold_replies(self, *kinds: Kind) -> int:
        """Hold the server's answers on these links, and on new ones after their handshake."""
        self.hold_new_replies.update(kinds)
        targets = self.live(*kinds)
        for link in targets:
            link.down.close()
        return len(targets)

    def heal(self) -> None:
        """Forward again on every link, and hold no new one."""
        self.hold_new_replies.clear()
        self.hold_tags.clear()
        for link in self.links:
            link.hold_on_tag = None
            link.up.open()
            link.down.open()

    @property
    def changed(self) -> trio.Event:
        """Set at the next change: a link opened or closed, a held reply arrived."""
        return self._changed

    def held_replies(self) -> int:
        """How many statements' answers the server sent that `hold_replies` held back."""
        return sum(link.held_ready for link in self.links)

    async def wait_held(self, count: int) -> None:
        """Wait until `count` answers are held (statements that ran, unanswered). A checkpoint."""
        while self.held_replies() < count:
            await self._changed.wait()
        await trio.lowlevel.checkpoint()

    def _signal(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled."""
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1")
            )
            self.port = int(listeners[0].socket.getsockname()[1])
            task_status.started()

    async def _connect_upstream(self) -> trio.abc.Stream:
        if self.target.is_unix_socket:
            path = os.path.join(self.target.host, f".s.PGSQL.{self.target.port}")
            return await trio.open_unix_socket(path)
        return await trio.open_tcp_stream(self.target.host, self.target.port)

    async def _handle(self, client: trio.SocketStream) -> None:
        self._numbers += 1
        link = Link(self._numbers)
        try:
            with link.scope:
                async with await self._connect_upstream() as server:
                    self.links.append(link)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._pump_up, link, client, server)
                        nursery.start_soon(self._pump_down, link, server, client)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            if link in self.links:
                self.links.remove(link)
            with trio.move_on_after(1, shield=True):
                await client.aclose()
            self._signal()

    async def _pump_up(self, link: Link, src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
        try:
            while data := await src.receive_some(65536):
                if link.kind is None and link.feed_client_bytes(data):
                    assert link.kind is not None
                    self.opened[link.kind] += 1
                    link.hold_after_handshake = link.kind in self.hold_new_replies
                    link.hold_on_tag, link.hold_after = self.hold_tags.get(link.kind, (None, None))
                    self._signal()
                # A closed valve holds what it read and reads no more: a black hole.
                await link.up.wait_open()
                await dst.send_all(data)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        # One side closed: close the whole link, as a real connection would end.
        link.scope.cancel()

    async def _pump_down(self, link: Link, src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
        try:
            while data := await src.receive_some(65536):
                messages = link.frame(data)
                ready = sum(1 for kind, _ in messages if kind == 90)
                if link.ready and link.hold_after_handshake:
                    link.down.close()  # the handshake went through; what follows is held
                    link.hold_after_handshake = False
                if link.hold_on_tag is not None and link.holds_now(messages):
                    # That statement's answer, and everything after it, is held.
                    link.down.close()
                    self.hold_tags.clear()
                    for other in self.links:
                        other.hold_on_tag = None
                link.ready += ready
                if not link.down.is_open:
                    link.held_ready += ready
                    self._signal()
                await link.down.wait_open()
                await dst.send_all(data)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        link.scope.cancel()


@asynccontextmanager
async def open_fault_proxy(database_url: str) -> AsyncIterator[FaultProxy]:
    """A running `FaultProxy` in front of the server `database_url` points to."""
    proxy = FaultProxy(PgTarget.from_url(database_url))
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.run)
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------------------
# Processes run as the postgres user (Postgres and pgbouncer refuse to run as root)


def _program(name: str) -> None:
    """Fail if the program `name` cannot run: the test lacks its ``requires_program`` mark."""
    reason = programs.missing(name)
    if reason is not None:
        pytest.fail(f"{reason}; mark the test @pytest.mark.requires_program({name!r})")


def _service_user() -> str | None:
    """Who runs the servers: None (ourselves) unless we are root, then ``postgres``."""
    return programs.SERVICE_USER if os.geteuid() == 0 else None


def _as_service_user(argv: Sequence[str]) -> list[str]:
    user = _service_user()
    if user is None:
        return list(argv)
    runuser = programs.which("runuser")
    assert runuser is not None, "checked by the test's requires_program mark"
    return [runuser, "-u", user, "--", *argv]


def _private_dir(prefix: str) -> Path:
    """A new directory the service user owns (under the system temp dir: pytest's own
    base directory is private to root, and the service user could not enter it)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    user = _service_user()
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


async def _run(argv: Sequence[str], what: str) -> str:
    result = await trio.run_process(
        _as_service_user(argv), capture_stdout=True, capture_stderr=True, check=False
    )
    out = (result.stdout + result.stderr).decode(errors="replace")
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}): {' '.join(argv)}\n{out}")
    return out


def postgres_bindir() -> Path:
    """The directory holding initdb and pg_ctl (see `programs.find_postgres_bindir`)."""
    _program("pg_ctl")
    bindir = programs.find_postgres_bindir()
    assert bindir is not None
    return bindir


class TempPostgres:
    """A Postgres server of the test's own: its own data directory and port.

    Trust authentication, user ``postgres``, TCP on 127.0.0.1 only. `stop` and
    `start` make an outage of exactly the length the test wants.
    """

    def __init__(self, base: Path, bindir: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.log = base / "server.log"
        self.bindir = bindir
        self.port = 0
        self.running = False

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres?sslmode=disable"

    async def init(self) -> None:
        """Create the data directory (initdb). A checkpoint."""
        await _run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
            "initdb",
        )

    async def start(self) -> None:
        """Start the server (on its old port after the first start) and wait until it accepts."""
        again = bool(self.port)  # a restart: clients will come back to this port
        for attempt in range(1 if again else 3):
            if not again:
                self.port = free_port()
            options = (
                f"-p {self.port} -c listen_addresses=127.0.0.1 "
                f"-c unix_socket_directories={self.base} -c fsync=off "
                "-c max_connections=60 -c shared_buffers=16MB"
            )
            try:
                await _run(
                    [
                        str(self.bindir / "pg_ctl"),
                        "start",
                        "-D",
                        str(self.data),
                        "-l",
                        str(self.log),
                        "-w",
                        "-t",
                        "30",
                        "-o",
                        options,
                    ],
                    "pg_ctl start",
                )
            except RuntimeError:
                if again or attempt == 2 or "already in use" not in self.log_tail():
                    raise
                continue  # the port was taken meanwhile: pick another
            self.running = True
            return

    async def stop(self, mode: Literal["smart", "fast", "immediate"] = "fast") -> None:
        """Stop the server; ``fast`` disconnects every client (as a restart does)."""
        await _run(
            [str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data), "-m", mode, "-w"],
            "pg_ctl stop",
        )
        self.running = False

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@asynccontextmanager
async def temp_postgres() -> AsyncIterator[TempPostgres]:
    """A started `TempPostgres`; stopped and deleted afterwards."""
    bindir = postgres_bindir()
    pg = TempPostgres(_private_dir("rivertrio-pg-"), bindir)
    try:
        with trio.fail_after(60):
            await pg.init()
            await pg.start()
        yield pg
    finally:
        with trio.move_on_after(30, shield=True):
            if pg.data.exists():
                with contextlib.suppress(RuntimeError):
                    await pg.stop("immediate")
        shutil.rmtree(pg.base, ignore_errors=True)


# --------------------------------------------------------------------------------------
# pgbouncer


def pgbouncer_binary() -> str:
    """The pgbouncer executable (see `programs.find_pgbouncer`)."""
    _program("pgbouncer")
    found = programs.find_pgbouncer()
    assert found is not None
    return found


class PgBouncer:
    """A pgbouncer in front of a Postgres server, in the pooling mode the test chooses."""

    def __init__(self, target: PgTarget, pool_mode: str, base: Path) -> None:
        self.target = target
        self.pool_mode = pool_mode
        self.base = base
        self.port = free_port()
        self.ini = base / "pgbouncer.ini"
        self.log = base / "pgbouncer.log"

    def url(self) -> str:
        """A URL that connects through pgbouncer."""
        return self.target.url_via("127.0.0.1", self.port)

    def write_config(self) -> None:
        users = self.base / "users.txt"
        # auth_type = trust still wants the user listed in the auth file.
        users.write_text(f'"{self.target.user}" "{self.target.password}"\n')
        host = self.target.host
        self.ini.write_text(
            "[databases]\n"
            f"* = host={host} port={self.target.port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {users}\n"
            f"pool_mode = {self.pool_mode}\n"
            "max_client_conn = 200\n"
            # Transaction pooling: fewer server connections than the clients
            # hold, so statements of one client connection really do land on
            # different server connections. Session pooling ties a server
            # connection to each client connection for its whole session, so
            # there the pool must hold every connection a client opens, or the
            # extra ones wait for a free server connection until they time out.
            f"default_pool_size = {4 if self.pool_mode == 'transaction' else 40}\n"
            f"logfile = {self.log}\n"
            f"pidfile = {self.base / 'pgbouncer.pid'}\n"
            # Tracked parameters pass; others would fail the connection.
            "ignore_startup_parameters = extra_float_digits\n"
        )
        user = _service_user()
        if user is not None:
            entry = pwd.getpwnam(user)
            for path in (users, self.ini):
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def wait_ready(self, process: trio.Process) -> None:
        """Wait until pgbouncer accepts connections (or fail with its log)."""
        delay = 0.01
        while True:
            if process.returncode is not None:
                raise RuntimeError(
                    f"pgbouncer exited with {process.returncode}:\n{self.log_tail()}"
                )
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", self.port)
            except OSError as exc:
                if exc.errno not in (errno.ECONNREFUSED, None):
                    raise
            else:
                await stream.aclose()
                return
            # Polling a port that is about to open: nothing could signal it.
            await trio.sleep(delay)
            delay = min(0.2, delay * 2)


@asynccontextmanager
async def run_pgbouncer(database_url: str, *, pool_mode: str) -> AsyncIterator[PgBouncer]:
    """A pgbouncer in `pool_mode` in front of the server `database_url` names; stopped after.

    No nursery around the block: errors from it come out as themselves.
    """
    binary = pgbouncer_binary()
    target = PgTarget.from_url(database_url)
    async with contextlib.AsyncExitStack() as stack:
        if target.is_unix_socket:
            # The embedded server listens on a socket directory the service user
            # may not enter: pgbouncer reaches it through a TCP proxy of ours.
            proxy = await stack.enter_async_context(open_fault_proxy(database_url))
            target = dataclasses.replace(target, host="127.0.0.1", port=proxy.port)
        async with _pgbouncer(binary, target, pool_mode) as bouncer:
            yield bouncer


@asynccontextmanager
async def _pgbouncer(binary: str, target: PgTarget, pool_mode: str) -> AsyncIterator[PgBouncer]:
    bouncer = PgBouncer(target, pool_mode, _private_dir("rivertrio-pgb-"))
    bouncer.write_config()
    try:
        # -q: its log goes to the log file only.
        process = await trio.lowlevel.open_process(
            _as_service_user([binary, "-q", str(bouncer.ini)]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with trio.fail_after(20):
                await bouncer.wait_ready(process)
            yield bouncer
        finally:
            process.terminate()
            with trio.move_on_after(10, shield=True):
                await process.wait()
            if process.returncode is None:
                process.kill()
    finally:
        shutil.rmtree(bouncer.base, ignore_errors=True)


# --------------------------------------------------------------------------------------
# Waiting on log lines, and the figures


class LogWatch(logging.Handler):
    """Collects rivertrio's log records; a test can wait for one that matches.

    Records are emitted on the Trio thread (the services log from their tasks),
    so `emit` may set a Trio event directly.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._changed.set()
        self._changed = trio.Event()

    def matching(self, pattern: str, *, level: int = logging.DEBUG) -> list[logging.LogRecord]:
        """The records at `level` or above whose message matches `pattern` (a regex)."""
        regex = re.compile(pattern)
        return [r for r in self.records if r.levelno >= level and regex.search(r.getMessage())]

    async def wait_for(self, pattern: str, count: int = 1, *, level: int = logging.DEBUG) -> None:
        """Wait until `count` records match. A checkpoint."""
        await self.wait_until(lambda watch: len(watch.matching(pattern, level=level)) >= count)

    async def wait_until(self, predicate: Callable[[LogWatch], bool]) -> None:
        """Wait until `predicate(self)` holds, checked at each record. A checkpoint."""
        while not predicate(self):
            await self._changed.wait()
        await trio.lowlevel.checkpoint()


@contextlib.contextmanager
def watch_logs(logger: str = "rivertrio") -> Iterator[LogWatch]:
    """Attach a `LogWatch` to `logger` (DEBUG and up) for the block."""
    watch = LogWatch()
    target = logging.getLogger(logger)
    old_level = target.level
    target.addHandler(watch)
    target.setLevel(logging.DEBUG)
    try:
        yield watch
    finally:
        target.removeHandler(watch)
        target.setLevel(old_level)


@dataclass
class Tally:
    """The figures of one scenario, printed as one summary line."""

    scenario: str
    jobs_in: int = 0
    jobs_completed: int = 0
    jobs_run_twice: int = 0
    events_delivered: int = 0
    duplicate_events: int = 0
    recover_seconds: float | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def line(self) -> str:
        recover = "n/a" if self.recover_seconds is None else f"{self.recover_seconds:.2f}s"
        extras = "".join(f" {k}={v}" for k, v in self.extra.items())
        return (
            f"[{self.scenario}] jobs in={self.jobs_in} completed={self.jobs_completed} "
            f"run twice={self.jobs_run_twice} events delivered={self.events_delivered} "
            f"duplicate events={self.duplicate_events} time to recover={recover}{extras}"
        )

    def print(self) -> None:
        print("\n" + self.line())


# --------------------------------------------------------------------------------------
# A stream of work, and a lossless subscriber


class Load:
    """Inserts jobs continuously (batches of `batch`), riding out faults, until `total`.

    An insert that fails is retried; one that failed ambiguously (the connection
    died around the commit) may have gone in anyway, so the rows, not this count,
    are the truth about what went in.
    """

    def __init__(
        self, client: rivertrio.Client, total: int, *, batch: int = 10, insert_timeout: float = 5
    ) -> None:
        self.client = client
        self.total = total
        self.batch = batch
        self.insert_timeout = insert_timeout
        self.inserted = 0
        self.failures = 0
        self.done = trio.Event()
        self._changed = trio.Event()

    async def run(self) -> None:
        """Insert until `total` went in. A checkpoint."""
        while self.inserted < self.total:
            size = min(self.batch, self.total - self.inserted)
            # User code bounds its own statements: on a black-holed connection an
            # insert would otherwise wait as long as the connection lives.
            went_in = False
            with trio.move_on_after(self.insert_timeout):
                try:
                    await self.client.insert_many(
                        [Task(n=self.inserted + i, name="load") for i in range(size)]
                    )
                except DatabaseError:
                    pass
                else:
                    went_in = True
            if not went_in:
                self.failures += 1
                # Pacing the retries of a load generator while the server is away.
                await trio.sleep(0.05)
                continue
            self.inserted += size
            self._changed.set()
            self._changed = trio.Event()
        self.done.set()


class Recorder:
    """A lossless subscriber that keeps every event; tests wait on what it has seen."""

    def __init__(self) -> None:
        self.events: list[rivertrio.Event] = []
        self._changed = trio.Event()

    async def run(self, events: trio.MemoryReceiveChannel[rivertrio.Event]) -> None:
        """Read `events` until the channel ends (or the task is cancelled)."""
        async for event in events:
            self.events.append(event)
            self._changed.set()
            self._changed = trio.Event()

    @property
    def changed(self) -> trio.Event:
        """Set at the next event."""
        return self._changed

    def ids(self, kind: rivertrio.EventKind = rivertrio.EventKind.JOB_COMPLETED) -> list[int]:
        """The job ids of the events of `kind`, in arrival order (repeats kept)."""
        return [e.job.id for e in self.events if e.kind == kind and e.job is not None]

    def duplicates(self) -> int:
        """How many job events repeat one already delivered: (job id, kind, attempt)."""
        keys = [(e.job.id, str(e.kind), e.job.attempt) for e in self.events if e.job is not None]
        return len(keys) - len(set(keys))

    async def wait_until(self, predicate: Callable[[Recorder], bool]) -> None:
        """Wait until `predicate(self)` holds. A checkpoint."""
        while not predicate(self):
            await self.changed.wait()
        await trio.lowlevel.checkpoint()

    async def wait_completed(self, ids: Iterable[int]) -> None:
        """Wait until every job of `ids` has a completed event. A checkpoint."""
        wanted = set(ids)
        await self.wait_until(lambda r: wanted <= set(r.ids()))


async def job_states(driver: Driver) -> dict[int, str]:
    """Every job's state, by id."""
    recs = await driver.fetch("SELECT id, state::text FROM /*schema*/river_job")
    return {r["id"]: r["state"] for r in recs}


async def wait_none_available(driver: Driver, recorder: Recorder) -> None:
    """Wait until no job is `available`: the running client has taken every one.

    Progress shows as events, so each check waits for the next one. A checkpoint.
    """
    while True:
        changed = recorder.changed
        count = await driver.fetchval(
            "SELECT count(*) FROM /*schema*/river_job WHERE state = 'available'"
        )
        if count == 0:
            return
        await changed.wait()


def print_figures(
    tally: Tally, final: dict[int, str], recorder: Recorder, runs: dict[int, int]
) -> None:
    """Fill in `tally`'s common figures and print its line.

    `final` is every job's end state (`job_states`), `runs` the worker's count
    of runs per job id.
    """
    tally.jobs_in = len(final)
    tally.jobs_completed = len(set(recorder.ids()))
    tally.jobs_run_twice = sum(1 for count in runs.values() if count > 1)
    tally.events_delivered = len(recorder.events)
    tally.duplicate_events = recorder.duplicates()
    tally.print()
