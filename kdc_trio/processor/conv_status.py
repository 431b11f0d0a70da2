"""A conversation's state: idle / in_progress / error, which turn runs, how the last one ended."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import asdict, dataclass

import trio

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


class ConvStatusStore(ABC):
    @abstractmethod
    async def get(self, conversation_id: str) -> ConvStatus | None: ...

    @abstractmethod
    async def begin_turn(self, status: ConvStatus, *, allow_busy: bool) -> tuple[bool, ConvStatus | None]:
        """Atomically mark the conversation in progress. Returns (accepted, previous status):
        not accepted when another session owns it, or it is busy and `allow_busy` is False."""

    @abstractmethod
    async def set(self, status: ConvStatus) -> None: ...


class MemoryConvStatusStore(ConvStatusStore):
    def __init__(self, max_conversations: int = MEMORY_MAX_CONVERSATIONS) -> None:
        self._d: OrderedDict[str, ConvStatus] = OrderedDict()
        self.max = max_conversations

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
