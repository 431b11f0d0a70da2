"""A conversation's state: idle / in_progress / error, which turn runs, how the last one ended —
and the continuations waiting for it.

A message for a conversation whose turn is running is a continuation (KDCube's model): `offer`
decides atomically whether it starts the turn, waits as a continuation, or (a steer) is answered
without running; the running turn may `take_pending` it; `finish` ends a turn and, atomically,
promotes the first waiting follow-up to be the next turn (steers never run as turns: they are
handed back as dropped). Atomic in memory (no checkpoint between check and write) and in Redis
(one script each), so a message arriving as a turn ends either joins it or runs next: never lost.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass
from typing import Literal

import trio

from kdc_trio.processor.turn import Turn

# Conversations the memory store remembers; the least recently updated go first.
MEMORY_MAX_CONVERSATIONS = 100_000


@dataclass(kw_only=True)
class ConvStatus:
    conversation_id: str
    session_id: str | None = None  # the owner; another session asking gets "not found"
    state: str = "idle"  # idle | created | in_progress | error
    updated_at: float = 0.0
    current_turn_id: str | None = None
    completion: str | None = None  # success | error | rollback | queued_next
    origin_stream_id: str | None = None

    def public(self) -> dict:
        d = asdict(self)
        d.pop("session_id")
        return d


# started: the conversation was idle, the turn runs; continued: it waits for the running turn;
# no_active_turn / mismatch: a steer with no running turn, or for another turn (answered, not run);
# full: too many waiting already; foreign: another session's conversation.
OfferOutcome = Literal["started", "continued", "no_active_turn", "mismatch", "full", "foreign"]


@dataclass(frozen=True)
class Offer:
    outcome: OfferOutcome
    previous: ConvStatus | None


def offer_outcome(cur: ConvStatus | None, turn: Turn, pending: int, max_pending: int) -> OfferOutcome:
    """The decision `offer` makes, given the current status and the waiting count (memory store;
    the Redis script makes the same one)."""
    if cur is not None and cur.session_id and cur.session_id != turn.session.session_id:
        return "foreign"
    steer = turn.message.is_steer
    if cur is None or cur.state != "in_progress":
        return "no_active_turn" if steer else "started"
    target = turn.message.active_turn_id
    if steer and target and target != cur.current_turn_id:
        return "mismatch"
    return "full" if pending >= max_pending else "continued"


class ConvStatusStore(ABC):
    @abstractmethod
    async def get(self, conversation_id: str) -> ConvStatus | None: ...

    @abstractmethod
    async def begin_turn(self, status: ConvStatus, *, allow_busy: bool) -> tuple[bool, ConvStatus | None]:
        """Atomically mark the conversation in progress. Returns (accepted, previous status):
        not accepted when another session owns it, or it is busy and `allow_busy` is False."""

    @abstractmethod
    async def set(self, status: ConvStatus) -> None: ...

    @abstractmethod
    async def offer(self, status: ConvStatus, turn: Turn, *, max_pending: int) -> Offer:
        """Start `turn` (writing `status`) or keep it waiting for the running turn, atomically."""

    @abstractmethod
    async def take_pending(self, conversation_id: str, turn_id: str) -> Turn | None:
        """The oldest waiting continuation, taken by the running turn `turn_id` (None otherwise)."""

    @abstractmethod
    async def finish(self, status: ConvStatus) -> tuple[Turn | None, list[Turn]]:
        """End the turn: the next turn (the first waiting follow-up, now current, `queued_next`) or
        None (then `status` is written); and the waiting steers dropped on the way."""

    async def wait_pending(self, conversation_id: str) -> None:
        """Return when a continuation may have arrived (callers bound it with a deadline)."""
        await trio.sleep_forever()


class MemoryConvStatusStore(ConvStatusStore):
    def __init__(self, max_conversations: int = MEMORY_MAX_CONVERSATIONS) -> None:
        self._d: OrderedDict[str, ConvStatus] = OrderedDict()
        self.max = max_conversations
        self._pending: dict[str, deque[Turn]] = {}  # bounded: max_pending per running conversation
        self._arrived: dict[str, trio.Event] = {}

    async def get(self, conversation_id: str) -> ConvStatus | None:
        await trio.lowlevel.checkpoint()
        return self._d.get(conversation_id)

    async def begin_turn(self, status: ConvStatus, *, allow_busy: bool) -> tuple[bool, ConvStatus | None]:
        await trio.lowlevel.checkpoint()
        cur = self._d.get(status.conversation_id)
        if cur is not None and cur.session_id and cur.session_id != status.session_id:
            return False, cur
        if cur is not None and cur.state == "in_progress" and not allow_busy:
            return False, cur
        status.updated_at = time.time()
        self._put(status)
        return True, cur

    async def set(self, status: ConvStatus) -> None:
        await trio.lowlevel.checkpoint()
        status.updated_at = time.time()
        self._put(status)

    def _put(self, status: ConvStatus) -> None:
        self._d[status.conversation_id] = status
        self._d.move_to_end(status.conversation_id)
        while len(self._d) > self.max:
            self._d.popitem(last=False)

    async def offer(self, status: ConvStatus, turn: Turn, *, max_pending: int) -> Offer:
        await trio.lowlevel.checkpoint()
        cur = self._d.get(status.conversation_id)
        waiting = self._pending.get(status.conversation_id)
        outcome = offer_outcome(cur, turn, len(waiting or ()), max_pending)
        if outcome == "started":
            status.updated_at = time.time()
            self._put(status)
        elif outcome == "continued":
            self._pending.setdefault(status.conversation_id, deque()).append(turn)
            event = self._arrived.pop(status.conversation_id, None)
            if event is not None:
                event.set()
        return Offer(outcome, cur)

    async def take_pending(self, conversation_id: str, turn_id: str) -> Turn | None:
        await trio.lowlevel.checkpoint()
        cur = self._d.get(conversation_id)
        waiting = self._pending.get(conversation_id)
        if not waiting or cur is None or cur.state != "in_progress" or cur.current_turn_id != turn_id:
            return None
        turn = waiting.popleft()
        if not waiting:
            del self._pending[conversation_id]
        return turn

    async def finish(self, status: ConvStatus) -> tuple[Turn | None, list[Turn]]:
        await trio.lowlevel.checkpoint()
        waiting = self._pending.pop(status.conversation_id, deque())
        dropped: list[Turn] = []
        while waiting and waiting[0].message.is_steer:
            dropped.append(waiting.popleft())
        if not waiting:
            status.updated_at = time.time()
            self._put(status)
            return None, dropped
        nxt = waiting.popleft()
        if waiting:
            self._pending[status.conversation_id] = waiting
        promoted = ConvStatus(conversation_id=status.conversation_id, session_id=status.session_id,
                              state="in_progress", updated_at=time.time(), current_turn_id=nxt.turn_id,
                              completion="queued_next", origin_stream_id=nxt.stream_id)
        self._put(promoted)
        return nxt, dropped

    async def wait_pending(self, conversation_id: str) -> None:
        if self._pending.get(conversation_id):
            await trio.lowlevel.checkpoint()
            return
        event = self._arrived.setdefault(conversation_id, trio.Event())
        try:
            await event.wait()
        finally:  # one turn runs per conversation: its waiter is the only one
            if self._arrived.get(conversation_id) is event:
                del self._arrived[conversation_id]
