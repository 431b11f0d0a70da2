"""ChatRelayCommunicator: a session's subscription lives exactly while it has local connections.

The first connection of a session (in this process) starts the session's subscription task
in the relay's nursery; the last one to leave ends it — after `KDC_RELAY_LINGER_MS`, so a
client that reconnects at once does not cause an unsubscribe/subscribe pair. Every batch
the subscription yields is fanned out to the session's outboxes: to all of them, or to the
one connection a message targets.
"""

from __future__ import annotations

import logging
import math
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

import trio

from kdc_trio.errors import Unavailable
from kdc_trio.logs import REQUEST_ID
from kdc_trio.relay.bus import Bus, SubscriptionOverflow
from kdc_trio.relay.keys import SessionKey
from kdc_trio.relay.message import RelayMessage
from kdc_trio.relay.outbox import CloseReason, Outbox
from kdc_trio.relay.session_log import gap_notice

log = logging.getLogger("kdc_trio.relay")

# How long a connection waits for its session's subscription to be confirmed (Redis
# SUBSCRIBE round trip) before giving up: longer than a reconnect backoff step.
SUBSCRIBE_TIMEOUT_S = 10.0


@dataclass(eq=False)
class _Entry:
    key: SessionKey
    outboxes: set[Outbox] = field(default_factory=set)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    ready: trio.Event = field(default_factory=trio.Event)
    failed: BaseException | None = None
    done: bool = False


class RelayUnavailable(Unavailable):
    """The session's subscription could not be made live, or its log could not be read."""


class ChatRelayCommunicator:
    def __init__(self, bus: Bus, *, linger_s: float = 0.0,
                 observe: Callable[[list[RelayMessage]], None] | None = None) -> None:
        self.bus = bus
        self.linger_s = linger_s
        self.observe = observe  # metrics: sees each batch once, before the fan-out
        self._entries: dict[SessionKey, _Entry] = {}
        self._nursery: trio.Nursery | None = None
        self.subscriptions_started = 0
        self.subscriptions_ended = 0
        self.delivered = 0
        self.gaps_told = 0  # resumes told `stream.gap`: their resume point was no longer logged
        self.merged_gone = 0  # deltas merged in outboxes that have left (live ones count their own)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the session tasks; runs until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

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
        entry = await self._acquire(key, outbox)
        try:
            yield
        finally:
            self._release(entry, outbox)

    async def _acquire(self, key: SessionKey, outbox: Outbox) -> _Entry:
        if self._nursery is None:
            raise RelayUnavailable("relay is not running")
        entry = self._entries.get(key)
        if entry is None or not self._reusable(entry):
            entry = _Entry(key)
            self._entries[key] = entry
            self._nursery.start_soon(self._session_task, entry)
        entry.scope.deadline = math.inf  # a lingering subscription is reused
        entry.outboxes.add(outbox)
        try:
            with trio.fail_after(SUBSCRIBE_TIMEOUT_S):
                await entry.ready.wait()
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

    @staticmethod
    def _reusable(entry: _Entry) -> bool:
        """An entry a new connection may join: not ended, not cancelled, not past its linger.

        With linger 0 the last release cancels the scope at once, but the session task only
        ends at its next checkpoint: joining it then would leave the outbox in an entry that
        never delivers again and is never released.
        """
        scope = entry.scope
        return not entry.done and not scope.cancel_called and scope.deadline > trio.current_time()

    def _release(self, entry: _Entry, outbox: Outbox) -> None:
        if outbox in entry.outboxes:
            self.merged_gone += outbox.merged
        entry.outboxes.discard(outbox)
        if not entry.outboxes and not entry.done:
            if self.linger_s > 0:
                entry.scope.deadline = trio.current_time() + self.linger_s
            else:
                entry.scope.cancel()

    # ---- the session task ----------------------------------------------------------------
    async def _session_task(self, entry: _Entry) -> None:
        REQUEST_ID.set(None)  # serves every connection of the session, not the request that started it
        self.subscriptions_started += 1
        try:
            with entry.scope:
                async with self.bus.subscribe(entry.key) as sub:
                    # Fan-out happens in the bus's own call (one task switch less per event);
                    # this task lives on to own the subscription and to hear of its failure.
                    sub.deliver_to(lambda batch: self._fanout(entry, batch))
                    entry.ready.set()
                    await sub.wait_failed()
        except SubscriptionOverflow as exc:
            entry.failed = exc
            log.error("relay overflow on %s: closing its connections", entry.key.session_id)
            for ob in list(entry.outboxes):
                ob.close(CloseReason.RELAY_OVERFLOW, str(exc))
        except Exception as exc:  # the bus failed for good: tell the session's connections why
            entry.failed = exc
            log.exception("subscription for session %s failed", entry.key.session_id)
            for ob in list(entry.outboxes):
                ob.close(CloseReason.RELAY_FAILED, str(exc))
        finally:
            entry.done = True
            entry.ready.set()
            self.subscriptions_ended += 1
            if self._entries.get(entry.key) is entry:
                del self._entries[entry.key]

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
