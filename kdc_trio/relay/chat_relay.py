"""ChatRelayCommunicator: a session's subscription lives exactly while it has local connections.

The first connection of a session (in this process) opens the session's subscription (a short
task in the relay's nursery makes it live: the Redis SUBSCRIBE round trip); the last one to
leave ends it — after `KDC_RELAY_LINGER_MS`, so a client that reconnects at once does not cause
an unsubscribe/subscribe pair. A live subscription holds no task: every batch it yields is
fanned out in the bus's own call to the session's outboxes (to all of them, or to the one
connection a message targets), and the bus's failure is a call too (its connections are closed).
One relay task ends the subscriptions whose linger has passed.
"""

from __future__ import annotations

import logging
import math
from contextlib import asynccontextmanager
from typing import AsyncContextManager, AsyncIterator, Callable

import trio

from kdc_trio.errors import Unavailable
from kdc_trio.logs import REQUEST_ID
from kdc_trio.relay.bus import Bus, Subscription, SubscriptionOverflow
from kdc_trio.relay.keys import SessionKey
from kdc_trio.relay.message import RelayMessage
from kdc_trio.relay.outbox import CloseReason, Outbox
from kdc_trio.relay.session_log import gap_notice

log = logging.getLogger("kdc_trio.relay")

# How long a connection waits for its session's subscription to be confirmed (Redis
# SUBSCRIBE round trip) before giving up: longer than a reconnect backoff step.
SUBSCRIBE_TIMEOUT_S = 10.0
# How long the relay's shutdown may spend ending the subscriptions still open (unsubscribing).
SHUTDOWN_UNSUBSCRIBE_S = 5.0


class _Entry:
    """One session's subscription in this process, and the outboxes it fans out to."""

    __slots__ = ("key", "outboxes", "ready", "failed", "done", "cm", "linger_until")

    def __init__(self, key: SessionKey) -> None:
        self.key = key
        self.outboxes: set[Outbox] = set()
        self.ready: trio.Event | None = trio.Event()  # None once live (or done): nobody waits any more
        self.failed: BaseException | None = None
        self.done = False  # ended (released, failed or unsubscribed): a new connection makes a new entry
        self.cm: AsyncContextManager[Subscription] | None = None  # the bus's subscription, while open
        self.linger_until = math.inf


class RelayUnavailable(Unavailable):
    """The session's subscription could not be made live, or its log could not be read."""


class ChatRelayCommunicator:
    def __init__(self, bus: Bus, *, linger_s: float = 0.0,
                 observe: Callable[[list[RelayMessage]], None] | None = None) -> None:
        self.bus = bus
        self.linger_s = linger_s
        self.observe = observe  # metrics: sees each batch once, before the fan-out
        self._entries: dict[SessionKey, _Entry] = {}
        # Entries without connections, waiting out their linger; oldest first (the linger is one
        # constant, so insertion order is deadline order). Bounded by the sessions subscribed.
        self._lingering: dict[_Entry, None] = {}
        self._linger_lot = trio.lowlevel.ParkingLot()
        self._nursery: trio.Nursery | None = None
        self.subscriptions_started = 0
        self.subscriptions_ended = 0
        self.delivered = 0
        self.gaps_told = 0  # resumes told `stream.gap`: their resume point was no longer logged
        self.merged_gone = 0  # deltas merged in outboxes that have left (live ones count their own)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the subscribe/unsubscribe tasks and end lingering subscriptions; runs until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                try:
                    await self._end_lingering()
                finally:
                    self._nursery = None
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_UNSUBSCRIBE_S):
                for entry in list(self._entries.values()):
                    entry.outboxes.clear()
                    self._retire(entry)
                    await self._close(entry)

    async def _end_lingering(self) -> None:
        while True:
            now = trio.current_time()
            for entry in list(self._lingering):
                if entry.linger_until > now:
                    break
                del self._lingering[entry]
                self._retire(entry)
            if self._lingering:
                with trio.move_on_at(next(iter(self._lingering)).linger_until):
                    await self._linger_lot.park()
            else:
                await self._linger_lot.park()

    # ---- acquire / release ---------------------------------------------------------------
    def refcount(self, key: SessionKey) -> int:
        e = self._entries.get(key)
        return len(e.outboxes) if e else 0

    def local_sessions(self) -> set[SessionKey]:
        return {k for k, e in self._entries.items() if e.outboxes}

    @asynccontextmanager
    async def session_channel(self, key: SessionKey, outbox: Outbox) -> AsyncIterator[None]:
        """The connection's membership of its session's channel, for as long as the block runs.

        Entering returns once the session's subscription is live (or raises RelayUnavailable);
        leaving — normally, by an error or by cancellation — releases it, whatever happened.
        """
        membership = await self.join(key, outbox)
        try:
            yield
        finally:
            self.leave(membership, outbox)

    async def join(self, key: SessionKey, outbox: Outbox) -> object:
        """Membership of the session's channel without a context manager object (what the
        transports use: an idle connection's bytes count): returns once live (or raises
        RelayUnavailable, having left); the caller must `leave` with what this returned, in a
        `finally`. `session_channel` is the same as a block."""
        return await self._acquire(key, outbox)

    def leave(self, membership: object, outbox: Outbox) -> None:
        assert isinstance(membership, _Entry)
        self._release(membership, outbox)

    async def _acquire(self, key: SessionKey, outbox: Outbox) -> _Entry:
        if self._nursery is None:
            raise RelayUnavailable("relay is not running")
        entry = self._entries.get(key)
        if entry is None:  # ended entries leave _entries at once: a new connection never joins one
            entry = _Entry(key)
            self._entries[key] = entry
            self._nursery.start_soon(self._open, entry)
        self._lingering.pop(entry, None)  # a lingering subscription is reused
        entry.linger_until = math.inf
        entry.outboxes.add(outbox)
        try:
            if entry.ready is not None:
                with trio.fail_after(SUBSCRIBE_TIMEOUT_S):
                    await entry.ready.wait()
            else:
                await trio.lowlevel.checkpoint()
        except trio.TooSlowError:
            self._release(entry, outbox)
            raise RelayUnavailable(f"subscription for {key} not confirmed within {SUBSCRIBE_TIMEOUT_S} s") from None
        except BaseException:
            self._release(entry, outbox)
            raise
        if entry.failed is not None or entry.done:
            self._release(entry, outbox)
            raise RelayUnavailable(f"subscription for {key} failed: {entry.failed}")
        return entry

    def _release(self, entry: _Entry, outbox: Outbox) -> None:
        if outbox in entry.outboxes:
            self.merged_gone += outbox.merged
        entry.outboxes.discard(outbox)
        if not entry.outboxes and not entry.done:
            if self.linger_s > 0:
                entry.linger_until = trio.current_time() + self.linger_s
                if not self._lingering:
                    self._linger_lot.unpark_all()
                self._lingering[entry] = None
            else:
                self._retire(entry)

    def _retire(self, entry: _Entry) -> None:
        """End the entry (no connection joins it from now on); its open subscription is left in
        a task of its own (an unsubscribe is a Redis round trip)."""
        if entry.done:
            return
        entry.done = True
        self._lingering.pop(entry, None)
        if self._entries.get(entry.key) is entry:
            del self._entries[entry.key]
        if entry.ready is not None:
            entry.ready.set()
            entry.ready = None
        if entry.cm is not None and self._nursery is not None:
            self._nursery.start_soon(self._close, entry)

    # ---- opening and closing the bus's subscription ------------------------------------
    async def _open(self, entry: _Entry) -> None:
        REQUEST_ID.set(None)  # serves every connection of the session, not the request that started it
        self.subscriptions_started += 1
        cm = self.bus.subscribe(entry.key)
        try:
            sub = await cm.__aenter__()
        except Exception as exc:  # the bus could not subscribe: the waiting connections are told
            self._on_fail(entry, exc)
            self.subscriptions_ended += 1
            return
        except BaseException:  # cancelled (the relay stops)
            self._retire(entry)
            self.subscriptions_ended += 1
            raise
        entry.cm = cm
        if entry.done:  # every connection left (or the relay stopped) while it was subscribing
            await self._close(entry)
            return
        # Fan-out happens in the bus's own call (one task switch less per event); a failure
        # of the bus is a call too: no task waits on a live subscription.
        sub.deliver_to(lambda batch: self._fanout(entry, batch), lambda exc: self._on_fail(entry, exc))
        if entry.ready is not None:
            entry.ready.set()
            entry.ready = None

    async def _close(self, entry: _Entry) -> None:
        cm, entry.cm = entry.cm, None
        if cm is None:
            return
        try:
            await cm.__aexit__(None, None, None)
        except Exception:
            log.exception("ending the subscription of session %s failed", entry.key.session_id)
        finally:
            self.subscriptions_ended += 1

    def _on_fail(self, entry: _Entry, exc: BaseException) -> None:
        """The bus gave up on the session's subscription: tell its connections why, end it."""
        if entry.failed is not None:
            return
        entry.failed = exc
        if isinstance(exc, SubscriptionOverflow):
            log.error("relay overflow on %s: closing its connections", entry.key.session_id)
            reason = CloseReason.RELAY_OVERFLOW
        else:
            log.error("subscription for session %s failed: %s", entry.key.session_id, exc, exc_info=exc)
            reason = CloseReason.RELAY_FAILED
        for ob in list(entry.outboxes):
            ob.close(reason, str(exc))
        self._retire(entry)

    def _fanout(self, entry: _Entry, batch: list[RelayMessage]) -> None:
        """The batch to each of the session's outboxes, in order: all of it, or what targets it.
        One `offer_batch` per outbox: an idle connection gets the batch written in one send."""
        if self.observe is not None:
            self.observe(batch)
        n = 0
        targeted = False
        for msg in batch:
            if msg.target_sid is not None:
                targeted = True
                break
        for ob in entry.outboxes:
            mine = [m for m in batch if m.target_sid is None or m.target_sid == ob.sid] if targeted else batch
            if mine:
                ob.offer_batch(mine)
                n += len(mine)
        self.delivered += n

    # ---- producing -----------------------------------------------------------------------
    async def publish(self, key: SessionKey, *, event: str, data: dict, target_sid: str | None = None) -> int:
        return await self.bus.publish(key, event=event, data=data, target_sid=target_sid)

    async def replay(self, key: SessionKey, outbox: Outbox, after_seq: int) -> int:
        """Queue the logged events after `after_seq` that this connection should see.

        Call inside `session_channel` with the outbox on hold (`outbox.hold()`): live messages
        wait while the log is read, then follow it without gaps or repeats. When the log no
        longer holds what followed `after_seq`, a `stream.gap` notice (with the first seq still
        held) goes first. A log that cannot be read raises RelayUnavailable (the held messages
        are released either way).
        """
        n = 0
        try:
            try:
                logged = await self.bus.history(key, after_seq)
            except Exception as exc:
                raise RelayUnavailable(f"the log of {key} could not be read: {exc}") from exc
            if logged.gap(after_seq):
                self.gaps_told += 1
                outbox.offer_replayed(gap_notice(key, after_seq, logged))
            for msg in logged.messages:
                if msg.target_sid is None or msg.target_sid == outbox.sid:
                    outbox.offer_replayed(msg)
                    n += 1
        finally:
            outbox.release()
        return n

    async def start_at_latest(self, key: SessionKey, outbox: Outbox) -> int:
        """For a connection that resumes nothing: its position is the session's latest seq, read
        with the outbox on hold (`outbox.hold()`), so everything it then gets follows that
        position and a later resume from it misses nothing. Returns the position."""
        try:
            try:
                seq = await self.bus.last_seq(key)
            except Exception as exc:
                raise RelayUnavailable(f"the sequence of {key} could not be read: {exc}") from exc
            outbox.last_seq = max(outbox.last_seq, seq)
        finally:
            outbox.release()
        return seq

    def outboxes(self) -> list[Outbox]:
        return [ob for e in self._entries.values() for ob in e.outboxes]

    def statistics(self) -> dict:
        return {"sessions": len(self._entries), "connections": sum(len(e.outboxes) for e in self._entries.values()),
                "subscriptions_started": self.subscriptions_started, "subscriptions_ended": self.subscriptions_ended,
                "delivered": self.delivered, "gaps_told": self.gaps_told,
                "merged": self.merged_gone + sum(ob.merged for ob in self.outboxes())}
