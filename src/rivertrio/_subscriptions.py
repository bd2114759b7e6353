"""The subscription manager: fans persisted outcomes out to subscribers.

It reads the completer's output channel (one ``list[Event]`` per persisted
batch) until the completer closes it, delivers each event to every
subscription that asked for its kind, and when that channel closes, closes
every subscriber's channel: that close is how a subscriber's ``async for``
learns the client has stopped.

Each subscription picks what a full buffer means: ``overflow="drop"`` drops
the event, counts and logs it (River's behaviour); ``overflow="block"`` waits,
so a slow subscriber back-pressures the completer and through it the job
tasks. A subscriber that leaves its ``subscribe`` block is removed at once and
a send blocked on it ends quietly: a consumer that goes away never stalls the
client.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

import trio

from ._events import Event, EventBatch, EventKind
from ._exceptions import InvalidInputError
from ._service import Service
from ._validate import integer

__all__ = ["Overflow", "Subscription", "SubscriptionContext", "SubscriptionManager"]

log = logging.getLogger("rivertrio.subscriptions")

#: What a subscription does when its buffer is full.
Overflow = Literal["drop", "block"]

_OVERFLOWS: tuple[Overflow, ...] = ("drop", "block")


@dataclass(eq=False, slots=True)
class Subscription:
    """One subscriber's registration; its counters are readable while and after it lives."""

    id: int
    kinds: frozenset[EventKind]
    buffer: int
    overflow: Overflow
    send: trio.MemorySendChannel[Event] = field(repr=False)
    receive: trio.MemoryReceiveChannel[Event] = field(repr=False)
    delivered: int = 0
    """Events put in the subscriber's buffer."""
    dropped: int = 0
    """Events dropped because the buffer was full (``overflow="drop"`` only)."""
    active: bool = True
    """False once the subscriber left or the run ended."""
    dropped_unlogged: int = field(default=0, repr=False)


class SubscriptionManager(Service):
    """Delivers the completer's events to subscribers; a shielded service.

    Give each run its source with :meth:`attach` (the completer's
    :attr:`~rivertrio._completer.Completer.output` for that run) before starting
    it. A run ends only when that source is closed, which the completer does
    after its final flush. As in River, :meth:`stop` does not cut delivery
    short: the run keeps distributing until the source closes. Cancelling the
    enclosing scope does not interrupt it either (it is shielded).
    """

    def __init__(self) -> None:
        super().__init__()
        self._source: trio.MemoryReceiveChannel[Sequence[Event]] | None = None
        self._subscriptions: dict[int, Subscription] = {}
        # Each kind's subscriptions, worked out when first needed after a change.
        self._targets: dict[EventKind, tuple[Subscription, ...]] = {}
        self._ids = itertools.count(1)
        self.counts: Counter[EventKind] = Counter()
        """Events received from the completer, per kind, over every run."""
        self.events_total = 0
        """Events received from the completer over every run; an event's index in that
        sequence is this value when its delivery begins."""
        self.dropped = 0
        """Events dropped across all ``overflow="drop"`` subscriptions."""

    @property
    def subscriptions(self) -> list[Subscription]:
        """The live subscriptions, oldest first."""
        return list(self._subscriptions.values())

    def attach(self, source: trio.MemoryReceiveChannel[Sequence[Event]]) -> None:
        """Set the channel the next run reads; not a checkpoint.

        The run owns it from then on: it reads until end-of-channel and closes it.
        """
        self._source = source

    def subscribe(
        self, *kinds: EventKind | str, buffer: int = 1000, overflow: Overflow = "block"
    ) -> SubscriptionContext:
        """Subscribe to events of ``kinds``; use as ``async with ... as events``.

        The block yields a receive channel; ``async for event in events`` ends when
        the run delivering to it ends. A subscription opened while the manager is
        not running is registered for its next run. Leaving the block removes the
        subscription at once; a send blocked on it ends without error.

        Args:
            kinds: Event kinds (`EventKind` or its string value); at least one.
            buffer: Events held for the subscriber before ``overflow`` applies (>= 0).
            overflow: ``"block"`` (never drop; a slow subscriber back-pressures the
                completer) or ``"drop"`` (drop, count and log, as River does).

        Raises:
            InvalidInputError: No kinds, an unknown kind, a negative or non-integer
                buffer, or an unknown overflow; raised here, at the call.
        """
        if not kinds:
            raise InvalidInputError(
                "subscribe() needs at least one event kind, e.g. EventKind.JOB_COMPLETED"
            )
        wanted: set[EventKind] = set()
        for kind in kinds:
            try:
                wanted.add(EventKind(kind))
            except ValueError:
                valid = ", ".join(k.value for k in EventKind)
                raise InvalidInputError(
                    f"unknown event kind {kind!r}: expected one of {valid}"
                ) from None
        integer("subscription buffer", buffer, InvalidInputError, minimum=0)
        if overflow not in _OVERFLOWS:
            raise InvalidInputError(
                f"unknown overflow {overflow!r}: expected 'block' (lossless) or 'drop'"
            )
        return SubscriptionContext(self, frozenset(wanted), buffer, overflow)

    def _register(
        self, kinds: frozenset[EventKind], buffer: int, overflow: Overflow
    ) -> Subscription:
        send, receive = trio.open_memory_channel[Event](buffer)
        sub = Subscription(next(self._ids), kinds, buffer, overflow, send, receive)
        self._subscriptions[sub.id] = sub
        self._targets = {}
        return sub

    def _unregister(self, sub: Subscription) -> None:
        self._subscriptions.pop(sub.id, None)
        self._targets = {}
        sub.active = False
        # Closing the receive side wakes a send blocked on it with
        # BrokenResourceError, which _deliver treats as "gone". The send side stays
        # open: closing it would hit that blocked send with ClosedResourceError.
        sub.receive.close()

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        """One run: distribute until the attached source closes, then close subscribers.

        Shielded: cancelling the enclosing scope does not end it; only the
        source's end-of-channel does.

        Raises:
            RuntimeError: No source was attached (raised before ``started()``).
        """
        source, self._source = self._source, None
        if source is None:
            raise RuntimeError(
                "SubscriptionManager.attach(completer.output) must be called before each run"
            )
        try:
            # Ending early would leave the completer sending to nobody.
            with trio.CancelScope(shield=True):
                task_status.started()
                async with source:
                    async for batch in source:
                        await self._distribute(batch)
        finally:
            self._close_all()

    def _close_all(self) -> None:
        # Not a checkpoint: every subscriber sees end-of-channel after what is
        # buffered. Later subscriptions register for the next run.
        subs, self._subscriptions = self._subscriptions, {}
        self._targets = {}
        for sub in subs.values():
            sub.active = False
            sub.send.close()

    async def _distribute(self, batch: Sequence[Event]) -> None:
        # An event nobody subscribed to is counted, never built (see EventBatch).
        kinds = batch.kinds if isinstance(batch, EventBatch) else [e.kind for e in batch]
        self.counts.update(kinds)
        for index, kind in enumerate(kinds):
            self.events_total += 1
            # Chosen before the first send: a subscription made while this event is
            # being delivered starts with the next one.
            targets = self._targets.get(kind)
            if targets is None:
                targets = self._targets[kind] = tuple(
                    s for s in self._subscriptions.values() if kind in s.kinds
                )
            if not targets:
                continue
            event = batch[index]
            for sub in targets:
                if not sub.active:
                    continue  # left while an earlier send of this event was blocked
                if sub.overflow == "block":
                    await self._send(sub, event)
                else:
                    self._offer(sub, event)
        for sub in self._subscriptions.values():
            if sub.dropped_unlogged:
                self._log_drops(sub)
        # One schedule point per batch, even when only drop subscriptions took it.
        await trio.lowlevel.checkpoint()

    @staticmethod
    async def _send(sub: Subscription, event: Event) -> None:
        """Lossless delivery: wait for room; ends quietly if the subscriber leaves."""
        try:
            await sub.send.send(event)
        except trio.BrokenResourceError:
            # The subscriber left (closed its receive side) while we were waiting.
            await trio.lowlevel.checkpoint()
            return
        sub.delivered += 1

    def _offer(self, sub: Subscription, event: Event) -> None:
        """River's delivery: put the event in the buffer if there is room, else drop it."""
        try:
            sub.send.send_nowait(event)
        except trio.WouldBlock:
            sub.dropped += 1
            sub.dropped_unlogged += 1
            self.dropped += 1
            return
        except trio.BrokenResourceError:
            return  # the subscriber left
        sub.delivered += 1

    @staticmethod
    def _log_drops(sub: Subscription) -> None:
        # One line per batch and subscriber, not per event: a flood of drops must
        # not turn into a flood of log lines.
        log.warning(
            "subscription %d (%s) buffer of %d full: dropped %d events (%d in total)",
            sub.id,
            ", ".join(sorted(k.value for k in sub.kinds)),
            sub.buffer,
            sub.dropped_unlogged,
            sub.dropped,
        )
        sub.dropped_unlogged = 0


class SubscriptionContext:
    """The async context manager :meth:`SubscriptionManager.subscribe` returns."""

    def __init__(
        self,
        manager: SubscriptionManager,
        kinds: frozenset[EventKind],
        buffer: int,
        overflow: Overflow,
    ) -> None:
        self._manager = manager
        self._kinds = kinds
        self._buffer = buffer
        self._overflow = overflow
        self.subscription: Subscription | None = None
        """The registration, once the block is entered (its counters stay readable)."""

    async def __aenter__(self) -> trio.MemoryReceiveChannel[Event]:
        """Register; a checkpoint before registering, so a cancelled enter registers nothing."""
        if self.subscription is not None:
            raise RuntimeError("this subscribe() context was already entered")
        await trio.lowlevel.checkpoint()
        # No checkpoint from here to the caller: the subscription sees every event
        # whose delivery begins after this point.
        self.subscription = self._manager._register(self._kinds, self._buffer, self._overflow)
        return self.subscription.receive

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Remove the subscription at once; never raises, not cancellable."""
        if self.subscription is not None:
            self._manager._unregister(self.subscription)
        await trio.lowlevel.cancel_shielded_checkpoint()
