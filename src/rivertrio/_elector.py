"""Leader election on ``river_leader``: exactly one client runs maintenance.

The protocol is River's, so rivertrio and River clients elect one leader
between them. The table holds at most one row. A candidate deletes an expired
row and inserts itself; the leader extends ``expires_at`` every
`elect_interval` seconds, but only while the row still holds its own term
(``leader_id`` and ``elected_at``); a leader that cannot do so within its
`ttl` steps down on its own; a stopping leader deletes its term
and notifies ``resigned`` so that waiting candidates try at once. Every
timestamp comes from the database clock.

A leader that dies cannot resign: its term lasts until it expires, unless the
candidates can tell it is gone. Clients whose id ends with ``CLIENT_ID_MARKER``
hold a liveness lock while they run (``rivertrio._liveness``); an elector that
holds one too (`Elector`'s ``liveness_lock``) removes such a leader's term at
its next attempt once that lock is free, and stands only while its own lock
is held, so it never wins a term its peers would remove at once. A live leader
whose lock connection dies is removed the same way: its next re-election finds
its term replaced and it steps down. Leaders with other ids (River's Go
clients, ``poll_only`` clients) keep the TTL rule.

Leadership reaches the rest of the client as `Term` objects: each election won
is a new term with a ``lost`` event, set once the term is over. Waiting for
the next term never blocks the elector, and terms arrive in order: a term is
lost before the next one begins.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import trio

from ._driver._leadership import elect, reelect, resign
from ._driver._liveness import CLIENT_ID_MARKER
from ._driver._topics import LEADERSHIP_TOPIC
from ._exceptions import ConfigError, DatabaseError
from ._service import Counter, Service, cancel_on
from ._validate import duration

if TYPE_CHECKING:
    from ._driver import Driver

__all__ = ["Elector", "Term", "request_resign"]

log = logging.getLogger("rivertrio.elector")

# A resigning leader wakes every candidate at once; a short random delay keeps
# them from all bidding in the same millisecond (River does the same).
_WAKE_SPREAD = 0.05
# Pause between re-election retries after a database error.
_RETRY_PAUSE = 1.0
# Bound on the shielded resignation when stopping.
_RESIGN_TIMEOUT = 5.0
# Bound on one election statement: a connection that never answers (a black
# hole) must not keep a candidate from ever standing again.
_ELECT_TIMEOUT = 10.0


@dataclass(eq=False)
class Term:
    """One term of leadership: from winning an election until it is lost."""

    number: int
    """1 for this elector's first term, then 2, ..."""
    elected_at: datetime
    """``river_leader.elected_at`` of the term (database clock)."""
    lost: trio.Event = field(default_factory=trio.Event)
    """Set when the term ends: resigned, replaced, expired or the elector stopped."""


async def request_resign(driver: Driver) -> None:
    """Ask the current leader, whoever it is, to step down; a checkpoint.

    It resigns and the candidates (including itself, after an interval) elect
    a leader again. Has no effect on clients that run without notifications.
    """
    await driver.notify(LEADERSHIP_TOPIC, json.dumps({"action": "request_resign"}))


class Elector(Service):
    """Competes for leadership and holds it; see the module docstring.

    Feed it ``river_leadership`` notifications with `handle_notification` (the
    client's notifier does); without them (``poll_only``) it still works, only
    candidates notice a resignation at their next attempt.

    Args:
        driver: The database.
        client_id: This client's id, stored as ``leader_id``.
        elect_interval: Seconds between a candidate's attempts and between a
            leader's re-elections (River: 5).
        ttl: How long a term lasts without re-election (River: 15); must exceed
            `elect_interval`.
        liveness_lock: The client holds its liveness lock while it runs (its id
            ends with ``CLIENT_ID_MARKER``). Then a dead leader with a marked id
            is replaced at the next attempt rather than when its term expires,
            and the elector stands only while its own lock is held (it cannot
            win before the client has taken the lock).

    Raises:
        ConfigError: An interval is not a positive number, ``ttl <= elect_interval``,
            or ``liveness_lock`` with an id that does not end with the marker.
    """

    def __init__(
        self,
        driver: Driver,
        client_id: str,
        *,
        elect_interval: float = 5.0,
        ttl: float = 15.0,
        liveness_lock: bool = False,
    ) -> None:
        super().__init__()
        self._driver = driver
        self.client_id = client_id
        self.elect_interval = duration("elect_interval", elect_interval, ConfigError)
        self.ttl = duration("ttl", ttl, ConfigError)
        if self.ttl <= self.elect_interval:
            raise ConfigError(
                f"ttl ({ttl}) must be greater than elect_interval ({elect_interval}): "
                "a leader must be able to re-elect before its term expires"
            )
        if liveness_lock and not client_id.endswith(CLIENT_ID_MARKER):
            raise ConfigError(
                f"client id {client_id!r} does not end with {CLIENT_ID_MARKER!r}: "
                "its peers cannot tell from its liveness lock whether it is alive"
            )
        # The resolved schema names the lock keys (as in Liveness); None: no lock.
        self._liveness_schema = driver.schema if liveness_lock else None
        self._term: Term | None = None
        self._terms = 0
        self._term_changed = trio.Event()
        self._wake = trio.Event()
        self._resign_requested = trio.Event()
        # An elect statement cut short by a stop may have committed: the stop
        # then resigns any term under our id so it does not linger for a TTL.
        self._attempt_interrupted = False
        # An elect statement that got no answer may have committed too; unlike an
        # interrupted one it is known only until an attempt wins or a resign works.
        self._stray_term = False
        # elected_at of a term whose row may still be in the table (won, and not
        # yet resigned or replaced): a stop deletes it.
        self._held_row: datetime | None = None
        self.attempts = Counter()
        """Election attempts made as a candidate (won or not)."""
        self.reelections = Counter()
        """Successful re-elections as leader."""

    # -- what the rest of the client sees --

    @property
    def is_leader(self) -> bool:
        """Whether this elector holds a term right now."""
        return self._term is not None

    @property
    def term(self) -> Term | None:
        """The term held now, or None."""
        return self._term

    async def next_term(self, after: int = 0) -> Term:
        """Wait for a term numbered above `after` and return it; a checkpoint.

        The term returned may already be lost if it ended before the caller
        woke: check ``term.lost``. Cancel-safe.
        """
        while True:
            term = self._term
            if term is not None and term.number > after:
                await trio.lowlevel.checkpoint()
                return term
            await self._term_changed.wait()

    def handle_notification(self, payload: dict[str, Any]) -> None:
        """Handle a ``river_leadership`` notification; not a checkpoint, never blocks."""
        action = payload.get("action")
        if action == "resigned" and payload.get("leader_id") != self.client_id:
            self._wake.set()
        elif action == "request_resign" and self._term is not None:
            self._resign_requested.set()

    def request_resign(self) -> None:
        """Step down now if leading (as a ``request_resign`` notification would)."""
        if self._term is not None:
            self._resign_requested.set()

    # -- the service --

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_on, self._stop_event, nursery.cancel_scope)
                task_status.started()
                while True:
                    term, deadline = await self._campaign()
                    resigned_on_request = await self._lead(term, deadline)
                    if resigned_on_request:
                        # Give the other candidates, woken by our resignation, the
                        # field: standing again at once would most likely win.
                        await trio.sleep(self.elect_interval)
        finally:
            self._lose()
            if self._held_row is not None or self._attempt_interrupted or self._stray_term:
                with trio.move_on_after(_RESIGN_TIMEOUT, shield=True):
                    await self._resign(self._held_row)

    async def _campaign(self) -> tuple[Term, float]:
        """Try to become leader until it works; returns the term and its local deadline."""
        failures = 0
        while True:
            self._wake = trio.Event()
            started = trio.current_time()
            elected_at: datetime | None = None
            self._attempt_interrupted = True
            problem: str | None = None
            with trio.move_on_after(_ELECT_TIMEOUT) as scope:
                try:
                    election = await self._driver.run(
                        elect,
                        self._driver.configured_schema,
                        self.client_id,
                        self.ttl,
                        self._liveness_schema,
                    )
                except DatabaseError as exc:
                    problem = f"leader election attempt failed: {exc}"
                else:
                    elected_at = election.elected_at
                    if election.deposed is not None:
                        log.info(
                            "client %r removed the term of leader %r: its liveness lock "
                            "is free (its process or its connection is gone)",
                            self.client_id,
                            election.deposed,
                        )
            if scope.cancelled_caught:
                # Its term, if it committed, expires within a TTL; a stop resigns it.
                self._stray_term = True
                problem = f"leader election attempt got no answer within {_ELECT_TIMEOUT:g} s"
            if problem is None:
                failures = 0
            else:
                failures += 1
                # Once per outage, not once per attempt.
                log.log(logging.WARNING if failures == 1 else logging.DEBUG, "%s", problem)
            self._attempt_interrupted = False
            self.attempts.increment()
            if elected_at is not None:
                self._stray_term = False  # the table holds one term: this one
                log.info("client %r is now the leader", self.client_id)
                return self._begin(elected_at), started + self.ttl
            with trio.move_on_after(self.elect_interval * random.uniform(1.0, 1.1)):
                await self._wake.wait()
                await trio.sleep(random.uniform(0, _WAKE_SPREAD))

    async def _lead(self, term: Term, deadline: float) -> bool:
        """Hold the term until it is lost; True if it ended on a resign request.

        `deadline` is the local (trio clock) time by which the term expires
        without a re-election: it is measured from before the statement that
        set ``expires_at``, so it falls before the database's own expiry.
        """
        try:
            while True:
                with trio.move_on_after(self.elect_interval):
                    await self._resign_requested.wait()
                if self._resign_requested.is_set():
                    log.info("client %r resigns leadership on request", self.client_id)
                    # Local first: maintenance stops before anyone else can win.
                    self._lose()
                    await self._resign(term.elected_at)
                    return True
                ok = False
                started = trio.current_time()
                with trio.move_on_at(deadline) as scope:
                    failures = 0
                    while True:
                        started = trio.current_time()
                        # Each attempt bounded: a retry on another connection may
                        # still make it before the term expires.
                        with trio.move_on_after(self.elect_interval) as attempt:
                            try:
                                ok = await self._driver.run(
                                    reelect,
                                    self._driver.configured_schema,
                                    self.client_id,
                                    term.elected_at,
                                    self.ttl,
                                )
                                break
                            except DatabaseError as exc:
                                problem = str(exc)
                        if attempt.cancelled_caught:
                            problem = f"no answer within {self.elect_interval:g} s"
                        failures += 1
                        if failures == 1:
                            log.warning("leader re-election failed, retrying: %s", problem)
                        else:
                            log.debug("leader re-election failed again: %s", problem)
                        await trio.sleep(min(_RETRY_PAUSE, self.elect_interval))
                if scope.cancelled_caught:
                    log.warning(
                        "client %r could not re-elect within its %g s TTL: stepping down",
                        self.client_id,
                        self.ttl,
                    )
                    return False
                if not ok:
                    log.warning("client %r lost leadership: its term was replaced", self.client_id)
                    self._held_row = None
                    return False
                deadline = started + self.ttl
                self.reelections.increment()
        finally:
            self._lose()

    async def _resign(self, elected_at: datetime | None) -> None:
        try:
            await self._driver.run(
                resign,
                self._driver.configured_schema,
                self.client_id,
                elected_at,
                self._driver.channel(LEADERSHIP_TOPIC),
            )
        except DatabaseError as exc:
            log.warning("could not resign leadership (it expires on its own): %s", exc)
        else:
            self._held_row = None
            self._attempt_interrupted = False
            if elected_at is None:
                self._stray_term = False

    # -- term bookkeeping (no checkpoints) --

    def _begin(self, elected_at: datetime) -> Term:
        self._terms += 1
        self._held_row = elected_at
        term = self._term = Term(self._terms, elected_at)
        self._resign_requested = trio.Event()
        self._signal_change()
        return term

    def _lose(self) -> None:
        term = self._term
        if term is None:
            return
        self._term = None
        term.lost.set()
        self._signal_change()

    def _signal_change(self) -> None:
        self._term_changed.set()
        self._term_changed = trio.Event()
