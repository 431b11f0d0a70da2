"""The turn queue between ingress and the workers: the interface and the embedded one.

Overflow policy: a full queue refuses the turn (`QueueFull` → 503 + `queue.enqueue_rejected`);
nothing waits unboundedly and nothing is dropped after it was accepted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import trio

from kdc_trio.errors import ClientError
from kdc_trio.processor.turn import Turn
from kdc_trio.util.batch_queue import BatchQueue


# Seconds a refused sender is told to wait (Retry-After) before posting again.
QUEUE_FULL_RETRY_AFTER_S = 5


class QueueFull(ClientError):
    """The turn queue is full: 503 `queue_full` with Retry-After."""

    def __init__(self, detail: str) -> None:
        super().__init__(503, "queue_full", detail, retry_after=QUEUE_FULL_RETRY_AFTER_S, message=detail)


class TurnQueue(ABC):
    @abstractmethod
    async def put(self, turn: Turn) -> None:
        """Enqueue or raise QueueFull."""

    @abstractmethod
    async def get(self) -> Turn:
        """The next turn for this worker (waits)."""

    async def ack(self, turn: Turn) -> None:
        """The turn is finished (success or reported error): never redeliver it."""
        await trio.lowlevel.checkpoint()

    @abstractmethod
    def release(self, turn: Turn) -> None:
        """This worker gives the turn up unfinished (its end could not be told): deliver it again."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    async def depth(self) -> int:
        """Turns waiting or running (what admission measures against KDC_TURN_QUEUE_SIZE)."""
        await trio.lowlevel.checkpoint()
        return 0

    def statistics(self) -> dict:
        return {}


class MemoryTurnQueue(TurnQueue):
    def __init__(self, maxlen: int) -> None:
        self.maxlen = maxlen
        self._q: BatchQueue[Turn] = BatchQueue(maxlen)
        self.enqueued = 0

    async def put(self, turn: Turn) -> None:
        await trio.lowlevel.checkpoint()
        if not self._q.put_nowait(turn):
            raise QueueFull(f"{self.maxlen} turns waiting (KDC_TURN_QUEUE_SIZE)")
        self.enqueued += 1

    def release(self, turn: Turn) -> None:
        turn.attempt += 1  # first in line again, past the limit: its chat_start says it is a retry
        self._q.put_front_nowait(turn)

    async def get(self) -> Turn:
        return await self._q.get()

    async def depth(self) -> int:
        await trio.lowlevel.checkpoint()
        return len(self._q)

    def statistics(self) -> dict:
        return {"waiting": len(self._q), "maxlen": self.maxlen, "enqueued": self.enqueued}
