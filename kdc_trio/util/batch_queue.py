"""The one bounded batch queue: producers never block, a consumer takes everything in one wake-up.

Every hand-off queue in the gateway is one of these: a connection's outbox (relay/outbox.py), a
relay subscription's buffer (relay/bus.py), the embedded turn queue (processor/queue.py), the
Redis turn queue's ready turns (processor/redis_queue.py) and an Engine.IO socket's outgoing
frames (transports/eio_server.py).

Overflow policy: `put_nowait` never blocks and never grows the queue past `maxlen`; when full
it keeps nothing and returns False, and the owner does what its docstring states (an outbox or
an Engine.IO socket closes its connection, the turn queue refuses the turn with 503, a
subscription fails). Nothing is dropped silently: the caller always learns.

Wake-ups: waiters park only while the queue is empty, and each put wakes at most one of them
(the queue counts its parked waiters, so a put with nobody parked costs no call): a batch
consumer pays one wake-up per batch however many items arrive meanwhile, and N idle getters
(`get`, e.g. 2,000 workers) are not all woken for one item. A producer that must not run ahead
of the consumer waits with `wait_empty` (woken when a take empties the queue). A lone consumer that waits with no timeout
(an idle connection's writer, 10,000 of them) parks without a parking lot or a cancel scope: the
queue holds its task, and a put, `wake` or `close` reschedules it. A consumer that waits on
something else (an Engine.IO socket's writer parks on the socket's frames) sets `notify` instead:
it is called when a put finds the queue empty (the consumer takes everything each time, so one
call per batch), and on `wake` and `close`.

Rewriting what is queued (`last` / `replace_last` / `rewrite`) is for an owner that merges
items the consumer has not taken yet (a slow connection's deltas, relay/outbox.py).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Callable, Generic, Iterable, TypeVar

import trio

T = TypeVar("T")
_NOTHING: tuple = ()  # what an empty queue holds instead of a deque


class BatchQueue(Generic[T]):
    __slots__ = ("maxlen", "_items", "_lot", "_parked", "_waiter", "_empty_lot", "closed", "taken", "notify")

    def __init__(self, maxlen: int) -> None:
        if maxlen < 1:
            raise ValueError("a BatchQueue holds at least one item")
        self.maxlen = maxlen
        # Made on first use and let go when emptied: an idle queue (10,000 idle connections'
        # outboxes) holds no deque block and no parking lot it does not need.
        self._items: deque[T] | tuple = _NOTHING
        self._lot: trio.lowlevel.ParkingLot | None = None
        self._parked = 0  # waiters in _lot that no put has woken yet
        self._waiter: trio.lowlevel.Task | None = None  # a lone wait_nonempty() without timeout, parked bare
        self._empty_lot: trio.lowlevel.ParkingLot | None = None  # wait_empty's waiters
        self.closed = False
        self.taken = 0
        self.notify: Callable[[], None] | None = None  # told of a first item, a wake, a close

    def __len__(self) -> int:
        return len(self._items)

    # ---- producing (sync, never blocks) ---------------------------------------------------
    def put_nowait(self, item: T) -> bool:
        """Queue `item`; False (and nothing queued) when full or closed."""
        items = self._items
        if len(items) >= self.maxlen or self.closed:
            return False
        if items is _NOTHING:
            items = self._items = deque()
        items.append(item)
        if self._waiter is not None:
            self._wake_waiter()
        elif self._parked:
            self._parked -= 1
            self._lot.unpark()  # type: ignore[union-attr]
        elif self.notify is not None and len(items) == 1:
            self.notify()
        return True

    def put_front_nowait(self, item: T) -> None:
        """Queue `item` first in line, even past `maxlen` (an item handed back: it was counted
        once already and must not be refused). Refused only by a closed queue (ValueError)."""
        if self.closed:
            raise ValueError("the queue is closed")
        if self._items is _NOTHING:
            self._items = deque()
        self._items.appendleft(item)  # type: ignore[union-attr]
        if self._waiter is not None:
            self._wake_waiter()
        elif self._parked:
            self._parked -= 1
            self._lot.unpark()  # type: ignore[union-attr]
        elif self.notify is not None:
            self.notify()

    def extend_nowait(self, new: Iterable[T]) -> bool:
        """Queue all of `new`, or none of it (False) when they would not fit or the queue is closed."""
        new = list(new)
        items = self._items
        if len(items) + len(new) > self.maxlen or self.closed:
            return False
        if not new:
            return True
        if items is _NOTHING:
            items = self._items = deque()
        was_empty = not items
        items.extend(new)
        if was_empty and self.notify is not None:
            self.notify()
        woke = 0
        if self._waiter is not None:
            self._wake_waiter()
            woke = 1
        for _ in range(min(len(new) - woke, self._parked)):
            self._parked -= 1
            self._lot.unpark()  # type: ignore[union-attr]
        return True

    # ---- rewriting what is queued (sync; the consumer has not taken it) -------------------
    def last(self) -> T | None:
        """The newest queued item (None when empty)."""
        items = self._items
        return items[-1] if items else None

    def replace_last(self, item: T) -> None:
        self._items[-1] = item

    def rewrite(self, fn: Callable[[Iterable[T]], Iterable[T]]) -> None:
        """Replace everything queued with `fn(queued items, oldest first)`; it may not grow."""
        new = list(fn(self._items))
        if len(new) > self.maxlen:
            raise ValueError("a rewrite may not grow the queue past maxlen")
        self._items = deque(new) if new else _NOTHING

    def close(self) -> None:
        """No more puts; every waiter wakes (and gets what is left, then nothing)."""
        self.closed = True
        self.wake()

    def wake(self) -> None:
        """Wake the waiters without an item: the owner changed some state they watch."""
        if self._waiter is not None:
            self._wake_waiter()
        self._parked = 0
        if self._lot is not None:
            self._lot.unpark_all()
        if self._empty_lot:
            self._empty_lot.unpark_all()
        if self.notify is not None:
            self.notify()

    def _wake_waiter(self) -> None:
        task, self._waiter = self._waiter, None
        trio.lowlevel.reschedule(task)  # type: ignore[arg-type]

    def _abort_waiter(self, _: object) -> trio.lowlevel.Abort:
        self._waiter = None  # cancelled while parked: no put woke it
        return trio.lowlevel.Abort.SUCCEEDED

    async def _park(self) -> None:
        if self._lot is None:
            self._lot = trio.lowlevel.ParkingLot()
        self._parked += 1
        try:
            await self._lot.park()
        except BaseException:  # cancelled (or timed out) while parked: no put woke us
            self._parked -= 1
            raise

    # ---- consuming ------------------------------------------------------------------------
    def take_nowait(self) -> list[T]:
        """Everything queued, oldest first (maybe nothing)."""
        items = self._items
        if not items:
            return []
        batch = list(items)
        self._items = _NOTHING
        self.taken += len(batch)
        if self._empty_lot:
            self._empty_lot.unpark_all()
        return batch

    async def wait_empty(self) -> None:
        """Return once the queue is empty (a take emptied it), closed, or `wake()` is called;
        always checkpoints."""
        if self._items and not self.closed:
            if self._empty_lot is None:
                self._empty_lot = trio.lowlevel.ParkingLot()
            await self._empty_lot.park()
        else:
            await trio.lowlevel.checkpoint()

    async def wait_nonempty(self, timeout: float = math.inf) -> None:
        """Return once something is queued, the queue closes, `wake()` is called or `timeout`
        passes; always checkpoints."""
        if not self._items and not self.closed:
            if timeout == math.inf and self._waiter is None and not self._parked:
                # The lone consumer's wait (an idle writer): its task, no lot, no cancel scope.
                self._waiter = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(self._abort_waiter)
                return
            lot = self._lot  # _park inlined: an idle consumer's stack holds one frame less
            if lot is None:
                lot = self._lot = trio.lowlevel.ParkingLot()
            with trio.CancelScope(deadline=trio.current_time() + timeout):  # cheaper than move_on_after
                self._parked += 1
                try:
                    await lot.park()
                except BaseException:  # cancelled (or timed out) while parked: no put woke us
                    self._parked -= 1
                    raise
        else:
            await trio.lowlevel.checkpoint()

    async def take_batch(self, timeout: float = math.inf) -> list[T]:
        """Everything available in one wake-up: waits for the first item (or close, or `timeout`)."""
        await self.wait_nonempty(timeout)
        return self.take_nowait()

    async def get(self) -> T:
        """One item, waiting for it (for several consumers that each take one)."""
        while not self._items:
            if self.closed:
                raise trio.EndOfChannel
            await self._park()
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
        except BaseException:  # woken for an item it will not take: wake another waiter for it
            if self._items and self._parked:
                self._parked -= 1
                self._lot.unpark()  # type: ignore[union-attr]
            raise
        self.taken += 1
        item = self._items.popleft()  # type: ignore[union-attr]
        if not self._items and self._empty_lot:
            self._empty_lot.unpark_all()
        return item

    def statistics(self) -> dict:
        return {"queued": len(self._items), "maxlen": self.maxlen, "taken": self.taken,
                "waiting_tasks": (len(self._lot) if self._lot is not None else 0) + (self._waiter is not None), "closed": self.closed}
