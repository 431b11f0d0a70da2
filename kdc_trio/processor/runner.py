"""Workers: take turns off the queue and run the bundle for each, one nursery owns them all.

A bundle that raises (or runs past `KDC_TURN_TIMEOUT_S`) yields `chat_error` for that turn;
the conversation's status is updated and published however the turn ended.

Each turn runs inside one failure boundary (`run_turn`) that covers the bundle, telling the
turn's end (`chat_error`, the stored and published final `conv_status`) and the ack:

- the bundle failed because Redis was unreachable (its events could not be published): the
  turn runs again once Redis answers — as the same attempt when no event of it got out, as the
  next attempt (its `chat_start` says `retried`) when the client saw part of it, up to
  `KDC_TURN_MAX_ATTEMPTS`; then it ends with `chat_error`;
- telling the end or acking fails (Redis down): retried with backoff for `KDC_TURN_RETRY_S`;
  past that the turn is handed back to the queue (its lease lapses, another worker runs it).

A turn is never dropped silently and never ends the process; only a bug in our own code
(an exception that is not a Redis failure, outside the bundle) propagates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import trio

from kdc_trio.errors import unavailable
from kdc_trio.processor.bundle import Bundle
from kdc_trio.processor.continuations import ContinuationInbox, tell_turn_end
from kdc_trio.processor.conv_status import ConvStatus, ConvStatusStore
from kdc_trio.processor.queue import TurnQueue
from kdc_trio.processor.turn import Turn
from kdc_trio.redis.connection import RedisTimeoutError
from kdc_trio.redis.retry import REDIS_FAILURES, Backoff
from kdc_trio.relay.bus import Bus, Poster
from kdc_trio.sdk.communicator import ChatCommunicator, EventFilter, Publish, load_event_filter
from protocol import envelope as env

if TYPE_CHECKING:
    from kdc_trio.config import Settings

log = logging.getLogger("kdc_trio.processor")

# Time the end-of-turn bookkeeping (status, conv_status) may take while being cancelled.
FINALIZE_TIMEOUT_S = 5.0
# Longest the runner waits for a finished run's pipelined events (a sent batch is bounded by the
# Redis client's deadline; this bounds a backlog of them).
FLUSH_TIMEOUT_S = 60.0


@dataclass
class Outcome:
    """How one turn ended, and how much of that was told already (telling is retried in steps)."""
    completion: str = "success"
    state: str = "idle"
    error: str | None = None       # the chat_error to tell; None when the bundle finished
    title: str = "Turn failed"
    label: str = "success"         # for metrics: success | error | timeout
    unreachable: bool = False      # the bundle failed because Redis could not be reached
    error_told: bool = False
    status: ConvStatus | None = None
    # After the store recorded the end (once): the follow-up that runs next, and dropped steers.
    following: tuple[Turn | None, list[Turn]] = (None, [])
    told: bool = False             # the final conv_status was stored and published

    @classmethod
    def failed(cls, error: str, title: str = "Turn failed", *, unreachable: bool = False,
               label: str = "error") -> "Outcome":
        return cls(completion="error", state="error", error=error, title=title, unreachable=unreachable,
                   label=label)


def communicator_for(turn: Turn, publish: Publish, *, event_filter: EventFilter | None = None,
                     filter_fail_open: bool = False) -> ChatCommunicator:
    s = turn.session
    svc = env.ServiceCtx(request_id=turn.request_id, tenant=s.tenant, project=s.project, user=s.user_id,
                         user_type=s.user_type.value)
    conv = env.ConvCtx(session_id=s.session_id, conversation_id=turn.conversation_id, turn_id=turn.turn_id)
    return ChatCommunicator(publish=publish, key=turn.key, svc=svc, conv=conv, origin_sid=turn.stream_id,
                            event_filter=event_filter, filter_fail_open=filter_fail_open, attempt=turn.attempt)


async def _flush_after_run(comm: ChatCommunicator, *, quiet: bool = False) -> None:
    """Wait for a bundle run's pipelined events and end the pipelining (what the runner then
    publishes is waited for event by event). `quiet`: the run raised, and its exception is the
    outcome; a publish error is then only logged."""
    poster = comm.poster
    if poster is None:
        return
    try:
        with trio.CancelScope(shield=True):
            with trio.move_on_after(FLUSH_TIMEOUT_S) as scope:
                await poster.flush()
            if scope.cancelled_caught:
                raise RedisTimeoutError(f"the run's events were not confirmed within {FLUSH_TIMEOUT_S}s")
    except Exception as exc:
        if not quiet:
            raise
        log.warning("events of a failed run were not all published: %s", exc)
    finally:
        comm.end_pipelining()  # what Redis confirmed counts as emitted (a rerun is then a retry)


class Processor:
    def __init__(self, *, queue: TurnQueue, bundle: Bundle, publish: Publish, conv_store: ConvStatusStore,
                 concurrency: int, turn_timeout_s: float, event_filter: EventFilter | None = None,
                 filter_fail_open: bool = False, max_attempts: int = 3, retry_s: float = 60.0,
                 backoff_max_s: float = 5.0, on_turn_end: Callable[[str, float], None] | None = None,
                 poster: Callable[[], Poster] | None = None) -> None:
        self.on_turn_end = on_turn_end  # (outcome, seconds): metrics
        # A bundle's events while it runs go through one of these (relay/bus.py Poster: through
        # Redis, pipelined); None: each event is published and waited for.
        self.poster = poster
        self.queue = queue
        self.bundle = bundle
        self.publish = publish
        self.conv_store = conv_store
        self.concurrency = concurrency
        self.turn_timeout_s = turn_timeout_s
        self.event_filter = event_filter
        self.filter_fail_open = filter_fail_open
        self.max_attempts = max_attempts
        self.retry_s = retry_s
        self.backoff_max_s = backoff_max_s
        self.running = 0
        self.completed = 0
        self.failed = 0
        self.rerun = 0      # runs started again because Redis was unreachable
        self.released = 0   # turns handed back to the queue: their end could not be told

    @classmethod
    def from_settings(cls, s: "Settings", *, queue: TurnQueue, bundle: Bundle, publish: Publish,
                      conv_store: ConvStatusStore,
                      on_turn_end: Callable[[str, float], None] | None = None,
                      bus: Bus | None = None) -> "Processor":
        window = s.publish_window
        return cls(queue=queue, bundle=bundle, publish=publish, conv_store=conv_store,
                   poster=(lambda: bus.poster(window)) if bus is not None and window > 1 else None,
                   concurrency=s.worker_concurrency, turn_timeout_s=s.turn_timeout_s,
                   event_filter=load_event_filter(s.event_filter), filter_fail_open=s.filter_fail_open,
                   max_attempts=s.turn_max_attempts, retry_s=s.turn_retry_s,
                   backoff_max_s=s.redis_retry_max_ms / 1000, on_turn_end=on_turn_end)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(self.concurrency):
                nursery.start_soon(self._worker)
            task_status.started()

    async def _worker(self) -> None:
        while True:
            # No local holds the turn across the next wait: a finished turn's attachments (up to
            # MESSAGE_MAX_BYTES) are freed when it ends, not when this worker takes another.
            await self.run_turn(await self.queue.get())

    def _communicator(self, turn: Turn) -> ChatCommunicator:
        return communicator_for(turn, self.publish, event_filter=self.event_filter,
                                filter_fail_open=self.filter_fail_open)

    async def run_turn(self, turn: Turn) -> None:
        """Run the turn, tell its end, ack it; or hand it back to the queue. Raises only on a bug
        in our code or on cancellation (the turn then stays in the queue for another worker)."""
        comm = self._communicator(turn)
        turn.inbox = ContinuationInbox(self.conv_store, turn.conversation_id, turn.turn_id)
        give_up_at = trio.current_time() + self.retry_s
        backoff = Backoff(self.backoff_max_s)
        self.running += 1
        started = trio.current_time()
        label = "cancelled"
        try:
            outcome = await self._run_until_told(turn, comm, give_up_at, backoff)
            label = outcome.label
        except BaseException:  # cancelled (shutdown): tell what we can, shielded and bounded
            with trio.CancelScope(shield=True), trio.move_on_after(FINALIZE_TIMEOUT_S):
                try:
                    await self._tell_end(turn, comm, Outcome(completion="error", state="error"))
                except REDIS_FAILURES as exc:
                    log.warning("turn %s: final conv_status not told while stopping: %s", turn.turn_id, exc)
            raise
        finally:
            self.running -= 1
            if self.on_turn_end is not None:
                self.on_turn_end(label, trio.current_time() - started)
        if outcome.error is None:
            self.completed += 1
        else:
            self.failed += 1
        told = outcome.told
        if not told or not await self._retrying("ack", turn, lambda: self.queue.ack(turn), give_up_at, backoff):
            self.released += 1
            log.error("turn %s: %s for %.0fs (KDC_TURN_RETRY_S); handed back to the queue", turn.turn_id,
                      "its end could not be told" if not told else "it could not be acked", self.retry_s)
            self.queue.release(turn)

    async def _run_until_told(self, turn: Turn, comm: ChatCommunicator, give_up_at: float,
                              backoff: Backoff) -> Outcome:
        """Run the bundle (again while Redis is unreachable), then tell the end. The outcome's
        `told` is False when Redis stayed unreachable until `give_up_at`."""
        while True:
            emitted = comm.emitted
            outcome = await self._attempt(turn, comm)
            if not outcome.unreachable:
                break
            saw_part = comm.emitted > emitted  # the client saw part of this run: the next one is a retry
            if trio.current_time() >= give_up_at or (saw_part and turn.attempt >= self.max_attempts):
                outcome.error = f"the turn's events could not be published (Redis unreachable): {outcome.error}"
                outcome.unreachable = False
                break
            if saw_part:
                turn.attempt += 1
                comm.attempt = turn.attempt
            self.rerun += 1
            delay = min(backoff.next_delay(), max(0.0, give_up_at - trio.current_time()))
            log.warning("turn %s: Redis unreachable while it ran; running it again (attempt %d) in %.2fs",
                        turn.turn_id, turn.attempt, delay)
            await trio.sleep(delay)
        backoff.reset()
        await self._retrying("telling its end", turn, lambda: self._tell_end(turn, comm, outcome), give_up_at,
                             backoff)
        return outcome

    async def _attempt(self, turn: Turn, comm: ChatCommunicator) -> Outcome:
        """One run of the bundle; whatever the bundle raises becomes the outcome."""
        refusal = turn.error
        if refusal is None and turn.attempt > self.max_attempts:
            refusal = (f"the turn was started {turn.attempt - 1} times and its worker stopped each time "
                       f"(KDC_TURN_MAX_ATTEMPTS={self.max_attempts})")
        if refusal is not None:
            log.error("turn %s cannot run: %s", turn.turn_id, refusal)
            return Outcome.failed(refusal)
        comm.poster = self.poster() if self.poster is not None else None
        try:
            try:
                with trio.move_on_after(self.turn_timeout_s) as deadline:
                    await self.bundle.run(turn, comm)
            except BaseException:
                await _flush_after_run(comm, quiet=True)
                raise
            await _flush_after_run(comm)  # every event of the run is out, or its error is the outcome
        except Exception as exc:
            if unavailable(exc):
                log.warning("turn %s: Redis unreachable while the bundle ran: %s", turn.turn_id, exc)
                return Outcome.failed(f"{type(exc).__name__}: {exc}", unreachable=True)
            log.exception("bundle failed on turn %s", turn.turn_id)
            return Outcome.failed(f"the bundle failed: {type(exc).__name__}")
        if deadline.cancelled_caught:
            log.error("turn %s timed out after %ss", turn.turn_id, self.turn_timeout_s)
            return Outcome.failed(f"the turn took longer than {self.turn_timeout_s}s and was stopped",
                                  "Turn timed out", label="timeout")
        return Outcome()

    async def _tell_end(self, turn: Turn, comm: ChatCommunicator, outcome: Outcome) -> None:
        """chat_error (when the turn failed), then the stored and the published final conv_status;
        a step that succeeded is not repeated when a later one fails and the whole is retried."""
        if outcome.error is not None and not outcome.error_told:
            await comm.error(outcome.error, step="turn", title=outcome.title)
            outcome.error_told = True
        if outcome.status is None:
            status = ConvStatus(conversation_id=turn.conversation_id, session_id=turn.session.session_id,
                                state=outcome.state, current_turn_id=turn.turn_id,
                                completion=outcome.completion, origin_stream_id=turn.stream_id)
            # the end is recorded once: it may promote a waiting follow-up to be the next turn
            outcome.following = await self.conv_store.finish(status)
            outcome.status = status
        await tell_turn_end(self.conv_store, self.queue, turn, comm, outcome.status, *outcome.following,
                            comm_for=self._communicator)
        outcome.told = True

    async def _retrying(self, what: str, turn: Turn, op, give_up_at: float, backoff: Backoff) -> bool:
        """`op()` until it succeeds (True) or Redis failed until `give_up_at` (False)."""
        while True:
            try:
                await op()
                backoff.reset()
                return True
            except REDIS_FAILURES as exc:
                left = give_up_at - trio.current_time()
                if left <= 0:
                    log.error("turn %s: %s failed for good: %s: %s", turn.turn_id, what, type(exc).__name__, exc)
                    return False
                delay = min(backoff.next_delay(), left)
                log.warning("turn %s: %s failed (%s: %s); retry #%d in %.2fs", turn.turn_id, what,
                            type(exc).__name__, exc, backoff.failures, delay)
                await trio.sleep(delay)

    def statistics(self) -> dict:
        return {"running": self.running, "completed": self.completed, "failed": self.failed, "rerun": self.rerun,
                "released": self.released}
