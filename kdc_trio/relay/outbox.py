"""A connection's bounded outbox: the relay offers, the connection's writer takes everything ready.

Slow-consumer policy: merge, then close. Once more than `merge_at` of the outbox is waiting
(KDC_OUTBOX_MERGE_AT, a fraction of SSE_CLIENT_QUEUE), a `chat_delta` offered behind a delta of
the same stream that the writer has not taken yet is joined to it (relay/merge.py: the joined
text, the last seq, `seq_from` the first seq covered); every other event is queued as it is, in
order, and stands between the deltas around it. A full outbox first merges every run of such
deltas it holds; only when that frees no room is the connection closed (`closed_reason` says
why, the writer logs it and ends the stream), and the client resumes from the session log when
it reconnects. Nothing is dropped silently and a slow client never slows another: `offer` never
blocks. Below the threshold nothing is decoded: the hot path is a length check per event.

A resume is the exception to the bound: what the session log replays (at most
KDC_SESSION_LOG_SIZE events and the session's log bytes, plus a `stream.gap` notice) and the live
messages held meanwhile (at most SSE_CLIENT_QUEUE) are all queued, growing the outbox past
SSE_CLIENT_QUEUE until the writer next takes; otherwise a log longer than the outbox would close
every resume before it wrote a byte, and the client would resume from the same point forever.
Why an outbox closed is a `CloseReason`, never a string to match.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

from kdc_trio.relay.keys import PROJECT_SESSION
from kdc_trio.relay.merge import DELTA, compact, merge_into
from kdc_trio.relay.message import RelayMessage
from kdc_trio.util.batch_queue import BatchQueue
from kdc_trio.util.soon import Soon


class CloseReason(Enum):
    """Why a connection's outbox ended (the value is how logs and closing notices name it)."""

    CLIENT_GONE = "client_gone"          # the client went away: nothing more can be written
    WRITE_DEADLINE = "write_deadline"    # the client stopped reading (KDC_WRITE_TIMEOUT_S)
    OUTBOX_FULL = "outbox_full"          # more than SSE_CLIENT_QUEUE events waiting
    RELAY_OVERFLOW = "relay_overflow"    # the session's subscription overflowed
    RELAY_FAILED = "relay_failed"        # the bus gave up on the session's subscription
    SERVER_SHUTDOWN = "server_shutdown"  # the server is draining
    DISCONNECTED = "disconnected"        # the transport ended the connection (Socket.IO disconnect)
    TOKEN_EXPIRED = "token_expired"      # the connection's token passed exp + KDC_JWT_LEEWAY_S, no refresh came

    @property
    def slow(self) -> bool:
        """Counted in kdc_connections_closed_slow_total and logged as a warning."""
        return self in _SLOW

    @property
    def writable(self) -> bool:
        """Whether the connection can still be told why it ends."""
        return self not in _UNWRITABLE


_SLOW = frozenset({CloseReason.WRITE_DEADLINE, CloseReason.OUTBOX_FULL, CloseReason.RELAY_OVERFLOW,
                   CloseReason.RELAY_FAILED})
_UNWRITABLE = frozenset({CloseReason.CLIENT_GONE, CloseReason.WRITE_DEADLINE, CloseReason.OUTBOX_FULL})


@dataclass(frozen=True, slots=True)
class Closed:
    reason: CloseReason
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}" if self.detail else self.reason.value


class Outbox:
    __slots__ = ("sid", "maxlen", "closed_reason", "last_seq", "merge_depth", "merged", "_q", "_put",
                 "_held", "_replaying", "on_close", "write_through", "written_through", "_through")

    def __init__(self, sid: str, maxlen: int, *, merge_at: float = 0.5) -> None:
        self.sid = sid
        self.maxlen = maxlen
        self.closed_reason: Closed | None = None
        self.last_seq = 0  # highest session seq queued: replay and live delivery never double up
        # Deltas merge once this many events wait (0: always, into any untaken mergeable tail).
        self.merge_depth = max(0, min(maxlen, int(maxlen * merge_at)))
        self.merged = 0  # deltas joined to one queued before them
        self._q: BatchQueue[RelayMessage] = BatchQueue(maxlen)
        self._put = self._q.put_nowait  # bound once: offer is the per-event path
        self._held: list[RelayMessage] | None = None
        self._replaying = False  # queuing a replay (and what was held meanwhile): may pass maxlen
        self.on_close: Callable[[], None] | None = None  # e.g. wake a pump that waits on its socket
        # Set by the connection's writer while it runs (transports): writes a batch to the client
        # at once, without blocking, or returns False (the writer is busy: queue it).
        self.write_through: Callable[[list[RelayMessage]], bool] | None = None
        self.written_through = 0
        # Offered for write-through, to be written once the producers running now have yielded
        # (util/soon.py): what they emit meanwhile goes out in one write. Never beside a queue:
        # whatever queues first puts these ahead of it (`_spill`).
        self._through: list[RelayMessage] | None = None

    def hold(self) -> None:
        """Keep live messages aside while a replay from the session log is queued first."""
        self._spill()
        self._held = []

    def offer_replayed(self, msg: RelayMessage) -> None:
        """Queue a message from the session log ahead of the held live ones (past maxlen if need be)."""
        held, self._held = self._held, None
        self._replaying = True
        try:
            self.offer(msg)
        finally:
            self._held, self._replaying = held, False

    def release(self) -> None:
        """End a replay: queue the held live messages (past maxlen if need be), skipping any the
        replay already had."""
        held, self._held = self._held or [], None
        self._replaying = True
        try:
            for msg in held:
                self.offer(msg)
        finally:
            self._replaying = False

    def offer_batch(self, msgs: list[RelayMessage]) -> None:
        """Offer each of `msgs` in order (the relay's call). When nothing is queued or held and
        the writer is idle, they skip the queue: `write_through` writes them, together with
        whatever else is offered before the producers running now yield (util/soon.py), and the
        writer task is not woken; otherwise as `offer`."""
        wt = self.write_through
        if wt is not None and not self._q and self._held is None and self.closed_reason is None:
            through = self._through
            if through is not None and len(through) + len(msgs) > self.maxlen:
                self._write_through()  # what waits makes a whole outbox: written (or queued) now
                if self._q or self.write_through is None:
                    for m in msgs:
                        self.offer(m)
                    return
                through = None
            last = self.last_seq
            fresh = [] if through is None else through
            for m in msgs:
                if m.seq > 0 and m.session_id != PROJECT_SESSION:  # m.resumable, inline: per event
                    if m.seq <= last:  # the replay had it: as `offer`, skipped
                        continue
                    last = m.seq
                fresh.append(m)
            self.last_seq = last
            if through is None and fresh:
                self._through = fresh
                soon = Soon.shared()
                if soon is None or not soon.call(self._write_through):
                    self._write_through()
            return
        for m in msgs:
            self.offer(m)

    def _write_through(self) -> None:
        """Write what waits for write-through, or queue it when the writer became busy meanwhile."""
        through, self._through = self._through, None
        if not through or self.closed_reason is not None:
            return
        wt = self.write_through
        if wt is not None and self._held is None and not self._q and wt(through):
            self.written_through += len(through)
            return
        self._enqueue(through)

    def _spill(self) -> None:
        """Queue what waits for write-through (something else is about to queue: it goes behind)."""
        through, self._through = self._through, None
        if through:
            self._enqueue(through)

    def _enqueue(self, msgs: list[RelayMessage]) -> None:
        """Queue messages already counted in `last_seq` (bounded as `offer`)."""
        for m in msgs:
            if self.closed_reason is not None:
                return
            if not self._put(m) and not (self._compact() and self._put(m)):
                self.close(CloseReason.OUTBOX_FULL, f"more than {self.maxlen} events waiting (SSE_CLIENT_QUEUE)")
                return

    def offer(self, msg: RelayMessage) -> None:
        if self._through is not None:
            self._spill()
        held = self._held
        if held is not None:
            if len(held) >= self.maxlen:  # the log read outlasted a whole outbox of live events
                self._held = None
                self.close(CloseReason.OUTBOX_FULL, f"more than {self.maxlen} live events arrived while the "
                           "session log was read (SSE_CLIENT_QUEUE)")
                return
            held.append(msg)
            return
        resumable = msg.resumable
        if self.closed_reason is not None or (resumable and msg.seq <= self.last_seq):
            return
        q = self._q
        if len(q) >= self.merge_depth and msg.event == DELTA and self._merge_tail(msg):
            self.last_seq = msg.seq
            return
        if not self._put(msg) and not (self._compact() and self._put(msg)):
            if self._replaying and not q.closed:  # a bounded replay: room until the writer next takes
                q.maxlen += 1
                self._put(msg)
                if resumable:
                    self.last_seq = msg.seq
                return
            self.close(CloseReason.OUTBOX_FULL, f"more than {self.maxlen} events waiting (SSE_CLIENT_QUEUE)")
            return
        if resumable:
            self.last_seq = msg.seq

    def _merge_tail(self, msg: RelayMessage) -> bool:
        q = self._q
        tail = q.last()
        merged = None if tail is None else merge_into(tail, msg)
        if merged is None:
            return False
        if merged is not tail:
            q.replace_last(merged)
        self.merged += 1
        return True

    def _compact(self) -> bool:
        """Merge every run of mergeable deltas queued; True when that made room."""
        q = self._q
        if q.closed:
            return False
        before = len(q)
        q.rewrite(compact)
        freed = before - len(q)
        self.merged += freed
        return freed > 0

    def close(self, reason: CloseReason, detail: str = "") -> None:
        if self.closed_reason is None:
            self.closed_reason = Closed(reason, detail)
            self._through = None
            self._q.close()
            if self.on_close is not None:
                self.on_close()

    async def take(self, timeout: float = math.inf) -> list[RelayMessage]:
        """Everything queued (maybe nothing, after `timeout` or on close); always checkpoints."""
        batch = await self._q.take_batch(timeout)
        self._q.maxlen = self.maxlen  # a replay's room ends once the writer has taken it
        return batch

    def wait(self, timeout: float = math.inf) -> Awaitable[None]:
        """Return once something is queued, the outbox closes, `wake()` is called or `timeout`
        passes (then `take_nowait`); the queue's own coroutine, one frame less per idle writer."""
        return self._q.wait_nonempty(timeout)

    def take_nowait(self) -> list[RelayMessage]:
        """Everything queued (maybe nothing)."""
        batch = self._q.take_nowait()
        self._q.maxlen = self.maxlen  # a replay's room ends once the writer has taken it
        return batch

    def notify(self, wake: Callable[[], None] | None) -> None:
        """Have `wake()` called, instead of waking a parked `take`, when events become ready
        (the first of a batch), the outbox closes or is woken: for a writer that parks on
        something else (an Engine.IO socket's frames) and takes with `take_nowait`."""
        self._q.notify = wake

    def wake(self) -> None:
        """Wake the writer parked in `take` without an item (it returns with what is queued,
        maybe nothing): e.g. a write-through left bytes for it to send."""
        self._q.wake()

    @property
    def delivered(self) -> int:
        return self._q.taken + self.written_through

    def depth(self) -> int:
        return len(self._q) + (len(self._through) if self._through else 0)

    def statistics(self) -> dict:
        return {"queued": self.depth(), "maxlen": self.maxlen, "delivered": self.delivered, "merged": self.merged,
                "closed_reason": None if self.closed_reason is None else str(self.closed_reason)}
