"""Several worker processes under one supervisor: ``rivertrio worker --processes N``.

Python runs one core per process, so a whole machine takes several processes.
The supervisor starts them, passes on the stop requests it receives (the first
SIGINT or SIGTERM is a soft stop, the second a hard stop, in each child as in a
lone worker), restarts a child that dies unexpectedly (after a growing pause,
logged), and reports whether every child stopped cleanly.

Each child runs in a session of its own, so a Ctrl-C at the terminal reaches the
supervisor alone, which passes it on once. Each also holds the read end of a
pipe whose write end only the supervisor has (its *lifeline*): if the supervisor
dies without passing anything on (SIGKILL), the pipe closes and the child stops
softly by itself instead of working on, unwatched (see `stop_requests`).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

import trio

__all__ = ["LIFELINE_ENV", "Supervisor", "stop_requests"]

log = logging.getLogger("rivertrio.supervisor")

#: The environment variable that gives a child the file descriptor of its lifeline.
LIFELINE_ENV = "RIVERTRIO_SUPERVISOR_FD"

#: The pause before restarting a child that died, doubled for each quick death in a row.
RESTART_PAUSE = 0.5
#: The longest pause between restarts.
RESTART_PAUSE_MAX = 30.0
#: A child that ran this long before dying is restarted after the shortest pause again.
HEALTHY_AFTER = 30.0


class _Slot:
    """One of the N places a child runs in, with its current child."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: trio.Process | None = None
        self.lifeline: int | None = None  # the write end, held by the supervisor
        self.started_at = 0.0
        self.clean = False  # the last child stopped, when asked to, with status 0

    def close_lifeline(self) -> None:
        if self.lifeline is not None:
            os.close(self.lifeline)
            self.lifeline = None


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class Supervisor:
    """Runs `processes` copies of `command` until stopped; see the module's docstring.

    Args:
        command: The child's command line (``sys.executable -m rivertrio ...``).
        processes: How many children run at once.
        env: The children's environment (default: the supervisor's).
        restart: Restart a child that exits before a stop is asked for. Without
            it, such an exit stops the others (and the run is not clean).
        pipes: Give each child a stdin and a stdout pipe (`children`), for a
            parent that talks to them; otherwise they share the supervisor's.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        processes: int,
        env: Mapping[str, str] | None = None,
        restart: bool = True,
        pipes: bool = False,
    ) -> None:
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        self._command = list(command)
        self._env = dict(os.environ if env is None else env)
        self._restart = restart
        self._pipes = pipes
        self._slots = [_Slot(i) for i in range(processes)]
        self._stops: list[int] = []  # the signals passed on so far
        self._stopping = trio.Event()

    @property
    def children(self) -> list[trio.Process]:
        """The children running now, one per slot that has one."""
        return [s.process for s in self._slots if s.process is not None]

    @property
    def stopping(self) -> bool:
        """Whether a stop was asked for."""
        return self._stopping.is_set()

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Pass a stop request on to every child: the first is a soft stop, the next a hard one.

        No child is started or restarted after the first.
        """
        self._stops.append(signum)
        self._stopping.set()
        for slot in self._slots:
            if slot.process is not None and slot.process.returncode is None:
                slot.process.send_signal(signum)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> bool:
        """Start the children and keep them running until stopped. A checkpoint.

        Started (for ``nursery.start``) once every child is spawned. Returns
        once every child has exited: True if each one exited with status 0
        after the stop was asked for.
        """
        try:
            async with trio.open_nursery() as nursery:
                for slot in self._slots:
                    await self._spawn(slot)
                task_status.started()
                for slot in self._slots:
                    nursery.start_soon(self._watch, slot)
        finally:
            with trio.CancelScope(shield=True):
                await self._reap()
        return all(slot.clean for slot in self._slots)

    async def _spawn(self, slot: _Slot) -> None:
        read_end, write_end = os.pipe()
        try:
            slot.process = await trio.lowlevel.open_process(
                self._command,
                env={**self._env, LIFELINE_ENV: str(read_end)},
                pass_fds=(read_end,),
                # Out of the terminal's process group: a Ctrl-C reaches the
                # supervisor alone, which passes it on once.
                start_new_session=True,
                stdin=subprocess.PIPE if self._pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if self._pipes else None,
            )
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        slot.lifeline = write_end
        slot.started_at = trio.current_time()
        slot.clean = False
        log.info(
            "worker process %d of %d started (pid %d)",
            slot.index + 1,
            len(self._slots),
            slot.process.pid,
        )
        # A stop asked for while it was being started reaches it too.
        for signum in self._stops:
            slot.process.send_signal(signum)

    async def _watch(self, slot: _Slot) -> None:
        pause = RESTART_PAUSE
        while True:
            assert slot.process is not None
            code = await slot.process.wait()
            slot.close_lifeline()
            lived = trio.current_time() - slot.started_at
            name = f"worker process {slot.index + 1} (pid {slot.process.pid})"
            if self.stopping:
                slot.clean = code == 0
                (log.info if slot.clean else log.warning)("%s stopped: %s", name, _describe(code))
                return
            if not self._restart:
                log.error("%s ended unexpectedly (%s): stopping the others", name, _describe(code))
                self.stop()
                return
            pause = RESTART_PAUSE if lived >= HEALTHY_AFTER else pause
            log.warning(
                "%s ended unexpectedly after %.1f s (%s): restarting it in %g s",
                name,
                lived,
                _describe(code),
                pause,
            )
            with trio.move_on_after(pause):
                await self._stopping.wait()
            if self.stopping:
                log.warning("%s not restarted: stopping", name)
                return
            await self._spawn(slot)
            pause = min(pause * 2, RESTART_PAUSE_MAX)

    async def _reap(self) -> None:
        """Kill and wait for children left running (the supervisor itself is failing)."""
        for slot in self._slots:
            if slot.process is not None and slot.process.returncode is None:
                slot.process.kill()
                await slot.process.wait()
            slot.close_lifeline()


@asynccontextmanager
async def stop_requests() -> AsyncIterator[trio.MemoryReceiveChannel[str]]:
    """The requests to stop this process, each named (``"SIGTERM"``), as a channel.

    SIGINT and SIGTERM, and under a supervisor the end of its lifeline (the
    supervisor is gone: ``"supervisor gone"``), which comes once.
    """
    send, receive = trio.open_memory_channel[str](math.inf)
    # Taken out of the environment: it is this process's own, not its children's.
    lifeline = os.environ.pop(LIFELINE_ENV, None)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def forward_signals() -> None:
                async for signum in signals:
                    send.send_nowait(signal.Signals(signum).name)

            nursery.start_soon(forward_signals)
            if lifeline is not None:
                nursery.start_soon(_watch_lifeline, int(lifeline), send)
            yield receive
            nursery.cancel_scope.cancel()


async def _watch_lifeline(fd: int, send: trio.MemorySendChannel[str]) -> None:
    try:
        while True:
            await trio.lowlevel.wait_readable(fd)
            if not os.read(fd, 64):
                send.send_nowait("supervisor gone")
                return
    finally:
        os.close(fd)
