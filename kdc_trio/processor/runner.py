"""Workers: take turns off the queue and run the bundle for each, one nursery owns them all.

A bundle that raises (or runs past `KDC_TURN_TIMEOUT_S`) yields `chat_error` for that turn;
the conversation's status is updated and published however the turn ended.
"""

from __future__ import annotations

import logging
import time

from typing import Callable

import trio

from kdc_trio.processor.bundle import Bundle
from kdc_trio.processor.conv_status import ConvStatus, ConvStatusStore
from kdc_trio.processor.queue import TurnQueue
from kdc_trio.processor.turn import Turn
from kdc_trio.sdk.communicator import ChatCommunicator, EventFilter, Publish
from protocol import envelope as env

log = logging.getLogger("kdc_trio.processor")

# Time the end-of-turn bookkeeping (status, conv_status) may take while being cancelled.
FINALIZE_TIMEOUT_S = 5.0


def communicator_for(turn: Turn, publish: Publish, *, event_filter: EventFilter | None = None,
                     filter_fail_open: bool = False) -> ChatCommunicator:
    s = turn.session
    svc = env.ServiceCtx(request_id=turn.request_id, tenant=s.tenant, project=s.project, user=s.user_id,
                         user_type=s.user_type.value)
    conv = env.ConvCtx(session_id=s.session_id, conversation_id=turn.conversation_id, turn_id=turn.turn_id)
    return ChatCommunicator(publish=publish, key=turn.key, svc=svc, conv=conv, origin_sid=turn.stream_id,
                            event_filter=event_filter, filter_fail_open=filter_fail_open, attempt=turn.attempt)


class Processor:
    def __init__(self, *, queue: TurnQueue, bundle: Bundle, publish: Publish, conv_store: ConvStatusStore,
                 concurrency: int, turn_timeout_s: float, event_filter: EventFilter | None = None,
                 filter_fail_open: bool = False, max_attempts: int = 3,
                 on_turn_end: Callable[[str, float], None] | None = None) -> None:
        self.on_turn_end = on_turn_end  # (outcome, seconds): metrics
        self.queue = queue
        self.bundle = bundle
        self.publish = publish
        self.conv_store = conv_store
        self.concurrency = concurrency
        self.turn_timeout_s = turn_timeout_s
        self.event_filter = event_filter
        self.filter_fail_open = filter_fail_open
        self.max_attempts = max_attempts
        self.running = 0
        self.completed = 0
        self.failed = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(self.concurrency):
                nursery.start_soon(self._worker)
            task_status.started()

    async def _worker(self) -> None:
        while True:
            turn = await self.queue.get()
            await self.process(turn)
            await self.queue.ack(turn)

    async def process(self, turn: Turn) -> None:
        comm = communicator_for(turn, self.publish, event_filter=self.event_filter,
                                filter_fail_open=self.filter_fail_open)
        self.running += 1
        started = trio.current_time()
        completion, state, outcome = "error", "error", "cancelled"
        try:
            refusal = turn.error
            if refusal is None and turn.attempt > self.max_attempts:
                refusal = (f"the turn was started {turn.attempt - 1} times and its worker stopped each time "
                           f"(KDC_TURN_MAX_ATTEMPTS={self.max_attempts})")
            if refusal is not None:
                self.failed += 1
                outcome = "error"
                log.error("turn %s cannot run: %s", turn.turn_id, refusal)
                await comm.error(refusal, step="turn", title="Turn failed")
            else:
                with trio.fail_after(self.turn_timeout_s):
                    await self.bundle.run(turn, comm)
                completion, state, outcome = "success", "idle", "success"
                self.completed += 1
        except trio.TooSlowError:
            self.failed += 1
            outcome = "timeout"
            log.error("turn %s timed out after %ss", turn.turn_id, self.turn_timeout_s)
            await comm.error(f"the turn took longer than {self.turn_timeout_s}s and was stopped",
                             step="turn", title="Turn timed out")
        except Exception as exc:
            self.failed += 1
            outcome = "error"
            log.exception("bundle failed on turn %s", turn.turn_id)
            await comm.error(f"the bundle failed: {type(exc).__name__}", step="turn", title="Turn failed")
        finally:
            self.running -= 1
            if self.on_turn_end is not None:
                self.on_turn_end(outcome, trio.current_time() - started)
            with trio.CancelScope(shield=True), trio.move_on_after(FINALIZE_TIMEOUT_S):
                status = ConvStatus(conversation_id=turn.conversation_id, session_id=turn.session.session_id,
                                    state=state, current_turn_id=turn.turn_id, completion=completion,
                                    origin_stream_id=turn.stream_id)
                await self.conv_store.set(status)
                await comm.conv_status(state=status.state, updated_at=status.updated_at,
                                       current_turn_id=status.current_turn_id, completion=status.completion,
                                       origin_stream_id=status.origin_stream_id)

    def statistics(self) -> dict:
        return {"running": self.running, "completed": self.completed, "failed": self.failed}
