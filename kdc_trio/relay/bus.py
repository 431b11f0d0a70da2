"""The Bus: publish to a session's channel, subscribe to it, read its recent log.

`MemoryBus` is the embedded one (one process); `RedisBus` (kdc_trio/relay/redis_bus.py)
does the same through Redis. A subscription hands its owner *batches* (everything that
arrived since the owner last looked), never one await per message.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import AsyncIterator, Callable

import trio

from kdc_trio.relay.keys import SessionKey
from kdc_trio.relay.message import RelayMessage
from kdc_trio.util.batch_queue import BatchQueue
from kdc_trio.relay.session_log import LogSlice, SessionLogs

# Messages one subscription may hold before its owner drains them. The owner (the relay)
# only moves messages into outboxes, so reaching this means the process is starved; the
# subscription then fails with SubscriptionOverflow and the relay closes the session's
# connections, which resume from the session log.
SUBSCRIPTION_BUFFER = 50_000
# Longest a producer publishing back to back runs before letting other tasks (the writers) run.
YIELD_BUDGET_S = 0.0005


class SubscriptionOverflow(Exception):
    pass


class YieldBudget:
    """A producer in a tight loop yields to the scheduler at most every YIELD_BUDGET_S, not after
    every event: the writers then take many events per wake-up and per send_all (one syscall for
    a batch instead of one per event), at a bounded cost in latency."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = 0.0

    def due(self) -> bool:
        """The budget is spent: yield to the scheduler now (the budget starts again)."""
        now = time.perf_counter()
        if now - self._last >= YIELD_BUDGET_S:
            self._last = now
            return True
        return False

    async def spend(self) -> None:
        if self.due():
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()


class Poster:
    """One producer's events (a running turn's), in the order it posts them.

    This one publishes each event and waits for it (`post` returns its seq); RedisBus's keeps
    many in flight (relay/pipelined_poster.py: `post` returns None, `flush` waits). Either way a
    failure is never silent: `post` raises it, or the next `post`, or `flush` at the latest.
    """

    __slots__ = ("bus", "confirmed")

    def __init__(self, bus: "Bus") -> None:
        self.bus = bus
        self.confirmed = 0  # events the bus confirmed published

    async def post(self, key: SessionKey, *, event: str, data: dict, target_sid: str | None = None) -> int | None:
        seq = await self.bus.publish(key, event=event, data=data, target_sid=target_sid)
        self.confirmed += 1
        return seq

    async def flush(self) -> None:
        """Wait until every posted event is published; raise the error of one that was not."""
        await trio.lowlevel.checkpoint()


class Subscription:
    """Between a bus's receiving side and one relay session task.

    Two ways to consume it: iterate (batches from a bounded buffer), or `deliver_to(sink)`: from
    then on every message is handed to `sink` synchronously, in the pusher's own call (no task
    switch per event); the owner then only waits for `wait_failed()` to learn the bus gave up.
    """

    __slots__ = ("key", "_q", "_error", "_failed", "limit", "_sink", "_on_fail")

    def __init__(self, key: SessionKey, limit: int = SUBSCRIPTION_BUFFER) -> None:
        self.key = key
        self.limit = limit
        # Overflow policy: a full buffer fails the subscription (SubscriptionOverflow). Made on
        # first use: a subscription that delivers to a sink from the start never buffers (one
        # per session; an idle one should cost little).
        self._q: BatchQueue[RelayMessage] | None = None
        self._error: BaseException | None = None
        self._failed: trio.Event | None = None  # wait_failed's, made when it first waits
        self._sink: Callable[[list[RelayMessage]], None] | None = None
        self._on_fail: Callable[[BaseException], None] | None = None

    def _queue(self) -> BatchQueue[RelayMessage]:
        if self._q is None:
            self._q = BatchQueue(self.limit)
            if self._error is not None:
                self._q.close()
        return self._q

    def deliver_to(self, sink: Callable[[list[RelayMessage]], None],
                   on_fail: Callable[[BaseException], None] | None = None) -> None:
        """From now on hand every message to `sink`, and the bus's failure to `on_fail` (called
        at once if it has already failed): the owner needs no task waiting on the subscription."""
        self._sink = sink
        self._on_fail = on_fail
        queued = self._q.take_nowait() if self._q is not None else None
        if queued:
            sink(queued)
        if self._error is not None and on_fail is not None:
            on_fail(self._error)

    def push(self, msg: RelayMessage) -> None:
        if self._sink is not None:
            self._sink([msg])
            return
        if self._error is None and not self._queue().put_nowait(msg):
            self.fail(SubscriptionOverflow(f"{self.limit} messages undelivered on {self.key}"))

    def push_many(self, msgs: list[RelayMessage]) -> None:
        if self._sink is not None:
            self._sink(msgs)
            return
        for m in msgs:
            self.push(m)

    def fail(self, exc: BaseException) -> None:
        self._error = exc
        if self._q is not None:
            self._q.close()
        if self._failed is not None:
            self._failed.set()
        if self._on_fail is not None:
            self._on_fail(exc)

    async def wait_failed(self) -> None:
        """Park until the bus fails this subscription, then raise its error (after `deliver_to`,
        when nothing is buffered)."""
        if self._error is None:
            if self._failed is None:
                self._failed = trio.Event()
            await self._failed.wait()
        else:
            await trio.lowlevel.checkpoint()
        raise self._error

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> list[RelayMessage]:
        q = self._queue()
        while not q:
            if self._error is not None:
                raise self._error
            await q.wait_nonempty()
        await trio.lowlevel.checkpoint_if_cancelled()
        return q.take_nowait()


class Bus(ABC):
    name = "bus"

    @abstractmethod
    async def publish(self, key: SessionKey, *, event: str, data: dict,
                      target_sid: str | None = None) -> int:
        """Append to the session log and deliver to its subscribers; returns the session seq."""

    @abstractmethod
    def subscribe(self, key: SessionKey) -> "AsyncIterator[Subscription]":
        """Async context manager: a Subscription that exists while the block runs."""

    @abstractmethod
    async def history(self, key: SessionKey, after_seq: int) -> LogSlice:
        """The session log after `after_seq`: its messages, oldest first, and what it still holds."""

    def poster(self, window: int) -> Poster:
        """An ordered stream of publishes for one producer, with at most `window` events
        unconfirmed at once (see Poster)."""
        return Poster(self)

    async def last_seq(self, key: SessionKey) -> int:
        """The session's latest sequence (0: none yet)."""
        return (await self.history(key, 2**62)).last_seq

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background work the bus needs (the Redis reader); returns when cancelled."""
        task_status.started()
        await trio.sleep_forever()

    async def ping(self) -> bool:
        return True

    def statistics(self) -> dict:
        return {}


class _MemorySubscribing:
    """MemoryBus.subscribe's context manager: registered on enter, gone on exit."""

    __slots__ = ("_subs", "_sub")

    def __init__(self, subs: dict[SessionKey, set[Subscription]], key: SessionKey) -> None:
        self._subs = subs
        self._sub = Subscription(key)

    async def __aenter__(self) -> Subscription:
        sub = self._sub
        self._subs.setdefault(sub.key, set()).add(sub)
        return sub

    async def __aexit__(self, *exc: object) -> None:
        sub = self._sub
        subs = self._subs.get(sub.key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.key]


class MemoryBus(Bus):
    """In-process bus: seq and log per session (relay/session_log.py), subscribers in this process only."""

    name = "memory"

    def __init__(self, *, log_size: int = 1000, log_ttl_s: float = 3600, max_logs: int = 10_000,
                 log_budget_bytes: int = 256 << 20, log_session_bytes: int = 4 << 20) -> None:
        self.logs = SessionLogs(size=log_size, ttl_s=log_ttl_s, max_sessions=max_logs,
                                budget_bytes=log_budget_bytes, session_bytes=log_session_bytes)
        self._subs: dict[SessionKey, set[Subscription]] = {}
        self._yield = YieldBudget()
        self.published = 0

    async def publish(self, key: SessionKey, *, event: str, data: dict, target_sid: str | None = None) -> int:
        msg = self.logs.append(key, event=event, data=data, target_sid=target_sid)
        self.published += 1
        for sub in self._subs.get(key, ()):
            sub.push(msg)
        await self._yield.spend()
        return msg.seq

    def subscribe(self, key: SessionKey) -> "_MemorySubscribing":
        """`async with` it: the session's Subscription while inside (a slotted object, not a
        generator context manager: the relay holds one per live session for hours)."""
        return _MemorySubscribing(self._subs, key)

    async def history(self, key: SessionKey, after_seq: int) -> LogSlice:
        await trio.lowlevel.checkpoint()
        return self.logs.read(key, after_seq)

    async def last_seq(self, key: SessionKey) -> int:
        await trio.lowlevel.checkpoint()
        return self.logs.last_seq(key)

    def subscribed_keys(self) -> set[SessionKey]:
        return set(self._subs)

    def statistics(self) -> dict:
        return {"published": self.published, "subscribed_sessions": len(self._subs), **self.logs.statistics()}
