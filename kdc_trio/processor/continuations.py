"""Continuations: messages a client sends to a conversation while its turn runs (KDCube's
follow-ups and steers).

The running bundle takes them through its turn (`await turn.next_continuation(timeout)`, see
`ContinuationInbox`); one it does not take runs as the conversation's next turn when this one
ends (`ConvStatusStore.finish`, then `tell_turn_end`: `conv_status` in_progress with completion
`queued_next`). A steer controls
the running turn only: one left untaken is dropped at the end of the turn, and its sender is
told (`chat_service` `event.continuation.dropped`). Where they wait, and the atomic decisions,
are the conversation-status store's (conv_status.py; Redis: redis_conv_status.py).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable

import trio

from kdc_trio.ingress.models import ChatMessage
from kdc_trio.processor.conv_status import ConvStatus, ConvStatusStore
from kdc_trio.processor.queue import QueueFull, TurnQueue
from kdc_trio.processor.turn import Turn
from kdc_trio.sdk.communicator import ChatCommunicator

log = logging.getLogger("kdc_trio.continuations")


class ContinuationInbox:
    """The continuations of one running turn, for its bundle."""

    def __init__(self, store: ConvStatusStore, conversation_id: str, turn_id: str) -> None:
        self.store = store
        self.conversation_id = conversation_id
        self.turn_id = turn_id
        self.taken = 0

    async def next(self, timeout: float | None = 0.0) -> ChatMessage | None:
        """The oldest waiting continuation, now this turn's (it will not run as a turn of its
        own); waiting up to `timeout` seconds for one (0: only what is there; None: no limit).
        None when none came."""
        turn = await self.store.take_pending(self.conversation_id, self.turn_id)
        if turn is None and timeout != 0:
            with trio.move_on_after(math.inf if timeout is None else timeout):
                while turn is None:
                    await self.store.wait_pending(self.conversation_id)
                    turn = await self.store.take_pending(self.conversation_id, self.turn_id)
        if turn is None:
            return None
        self.taken += 1
        log.info("turn %s took continuation %s", self.turn_id, turn.turn_id)
        return turn.message


async def tell_turn_end(store: ConvStatusStore, queue: TurnQueue, turn: Turn, comm: ChatCommunicator,
                        status: ConvStatus, nxt: Turn | None, dropped: list[Turn], *,
                        comm_for: Callable[[Turn], ChatCommunicator]) -> None:
    """Publish how `turn` ended, as the store recorded it (`ConvStatusStore.finish` gave `nxt` and
    `dropped`): its final `conv_status`, or, when a follow-up waited, that one as the next turn."""
    for steer in dropped:
        log.info("steer %s for turn %s arrived too late: dropped", steer.turn_id, turn.turn_id)
        await comm_for(steer).service_event("event.continuation.dropped", data={
            "turn_id": steer.turn_id, "active_turn_id": turn.turn_id, "reason": "turn_ended"})
    if nxt is None:
        await comm.conv_status(state=status.state, updated_at=status.updated_at, current_turn_id=turn.turn_id,
                               completion=status.completion, origin_stream_id=turn.stream_id)
        return
    nxt_comm = comm_for(nxt)
    await nxt_comm.conv_status(state="in_progress", updated_at=time.time(), current_turn_id=nxt.turn_id,
                               completion="queued_next", origin_stream_id=nxt.stream_id)
    try:
        await queue.put(nxt)
    except QueueFull as exc:
        rolled = ConvStatus(conversation_id=nxt.conversation_id, session_id=nxt.session.session_id, state="idle",
                            current_turn_id=nxt.turn_id, completion="rollback", origin_stream_id=nxt.stream_id)
        await store.set(rolled)
        await nxt_comm.conv_status(state="idle", updated_at=rolled.updated_at, current_turn_id=nxt.turn_id,
                                   completion="rollback", origin_stream_id=nxt.stream_id)
        await nxt_comm.error(exc.detail, step="ingress", title=exc.error, data={"code": exc.error})
