"""Session logs in memory, bounded in events, in bytes per session and in bytes per process.

Every published event gets the session's next sequence and a lean copy (its JSON text, no
dict, no encodings) is appended to the session's log, for replay after a reconnect. Bounds:

- per session: `size` events and `session_bytes` bytes; past either, the oldest go first (the
  newest event is always kept, whatever its size);
- per process: `budget_bytes` over all logs; past it, eviction takes from the *largest* logs
  first, so one session's flood never evicts another session's smaller log. An eviction round
  ranks the logs once (one scan per tenth of the budget) and frees down to 90 % of the budget,
  spread over the appends that follow: each frees at most `EVICT_STEP_BYTES` more than twice its
  own bytes, so the total stays within the budget and no append stalls the event loop (freeing
  a tenth of a 256 MiB budget at once took 69-88 ms with 10,000 sessions);
- `max_sessions` logs (least recently written go first) and `ttl_s` without a write.

A reader whose resume point is no longer held is told, never skipped silently: `LogSlice.gap`
says so, and `gap_notice` is the `chat_service` event (`type: "stream.gap"`) that carries the
first sequence still held. The Redis log (relay/redis_bus.py) keeps the same bounds in its
publish script and answers with the same LogSlice.
"""

from __future__ import annotations

import heapq
import sys
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

from kdc_trio.relay.keys import SessionKey
from kdc_trio.relay.message import RelayMessage
from protocol import envelope

# Bytes a logged event costs beyond its JSON text: its entry tuple, the seq, timestamp and size
# numbers and the deque slot (tracemalloc: ~180 on CPython 3.11; tests/gateway/test_session_log_bounds.py
# measures it).
ENTRY_OVERHEAD = 200
# Over the process budget, an eviction round frees down to budget - budget // EVICT_FRACTION, at
# most 2 × the append's bytes + EVICT_STEP_BYTES (whole entries) per append.
EVICT_FRACTION = 10
EVICT_STEP_BYTES = 64 * 1024
GAP_TYPE = "stream.gap"


@dataclass(frozen=True, slots=True)
class LogSlice:
    """What a log holds after a resume point."""

    messages: list[RelayMessage]  # logged, seq > after_seq, oldest first
    first_seq: int  # the first seq the log still holds (last_seq + 1 when it holds none)
    last_seq: int  # the session's latest seq

    def gap(self, after_seq: int) -> bool:
        """Events after `after_seq` are no longer held (evicted or expired), or the resume point
        is unknown to this log (ahead of it: the log was lost)."""
        if after_seq == self.last_seq:
            return False
        return not (self.first_seq - 1 <= after_seq <= self.last_seq)


def gap_notice(key: SessionKey, after_seq: int, held: LogSlice, *, reason: str = "evicted") -> RelayMessage:
    """The `chat_service` event `stream.gap`: what a resuming client missed cannot be replayed.

    Not a logged event (no seq, no SSE id): the replayed events that follow carry theirs.
    """
    svc = envelope.ServiceCtx(request_id=GAP_TYPE, tenant=key.tenant or "-", project=key.project or "-",
                              user=None, user_type="system")
    env = envelope.service(svc, None, type=GAP_TYPE, data={
        "session_id": key.session_id, "after_seq": after_seq, "first_seq": held.first_seq,
        "last_seq": held.last_seq, "reason": reason})
    env["conversation"]["session_id"] = key.session_id
    return RelayMessage(session_id=key.session_id, event="chat_service", data=env, seq=0, timestamp=time.time())


# A logged event: (seq, event, timestamp, target_sid, data JSON text, bytes). Only strings and
# numbers, so the garbage collector stops tracking the tuple at its first pass: a process holding
# many sessions' logs does not make every full collection walk them (one RelayMessage per logged
# event did: 80 ms pauses at 400 sessions in bench `many`).
Entry = tuple[int, str, float, "str | None", str, int]


class _Log:
    __slots__ = ("seq", "entries", "bytes", "touched")

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.entries: deque[Entry] = deque()
        self.bytes = 0
        self.touched = time.monotonic()

    def first_seq(self) -> int:
        return self.entries[0][0] if self.entries else self.seq + 1

    def pop_oldest(self) -> int:
        n = self.entries.popleft()[5]
        self.bytes -= n
        return n


class SessionLogs:
    def __init__(self, *, size: int = 1000, ttl_s: float = 3600, max_sessions: int = 10_000,
                 budget_bytes: int = 256 << 20, session_bytes: int = 4 << 20) -> None:
        self.size = size
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self.budget_bytes = budget_bytes
        self.session_bytes = session_bytes
        self._logs: OrderedDict[SessionKey, _Log] = OrderedDict()
        self.bytes = 0
        self.issued = 0  # sequences handed out, all sessions
        self.dropped_logs = 0
        self.evicted_entries = 0
        # An eviction round's logs by size (largest first), ranked once when the round began;
        # None between rounds. Entries go stale as logs change: re-ranked when met.
        self._evicting: list[tuple[int, int, _Log]] | None = None

    def _log(self, key: SessionKey) -> _Log:
        log = self._logs.get(key)
        now = time.monotonic()
        if log is None:
            # A session whose log was dropped must never see its sequence restart below what it
            # had: once any log was dropped, new logs start above every seq handed out so far.
            log = self._logs[key] = _Log(self.issued if self.dropped_logs else 0)
        elif now - log.touched > self.ttl_s:
            self._clear(log)  # expired: forget the events, keep the seq increasing
        self._logs.move_to_end(key)
        log.touched = now
        while len(self._logs) > self.max_sessions:
            _, old = self._logs.popitem(last=False)
            self._clear(old)
            self.dropped_logs += 1
        return log

    def _clear(self, log: _Log) -> None:
        self.bytes -= log.bytes
        self.evicted_entries += len(log.entries)
        log.entries.clear()
        log.bytes = 0

    def append(self, key: SessionKey, *, event: str, data: dict, target_sid: str | None) -> RelayMessage:
        """The session's next event: seq assigned (also into `data`), a lean copy logged."""
        log = self._log(key)
        log.seq += 1
        self.issued += 1
        data["seq"] = log.seq
        msg = RelayMessage(session_id=key.session_id, event=event, data=data, seq=log.seq,
                           timestamp=time.time(), target_sid=target_sid)
        text = msg.data_json()  # encoded once: delivery reuses it
        n = sys.getsizeof(text) + ENTRY_OVERHEAD
        log.entries.append((log.seq, event, msg.timestamp, target_sid, text, n))
        log.bytes += n
        self.bytes += n
        while len(log.entries) > 1 and (len(log.entries) > self.size or log.bytes > self.session_bytes):
            self.bytes -= log.pop_oldest()
            self.evicted_entries += 1
        if self._evicting is not None or self.bytes > self.budget_bytes:
            self._evict_largest_first(2 * n + EVICT_STEP_BYTES)
        return msg

    def _evict_largest_first(self, quota: int) -> None:
        """One step of an eviction round (see the module's doc): free at most `quota` bytes (whole
        entries: the last one may pass it), largest logs first, towards 90 % of the budget."""
        target = self.budget_bytes - self.budget_bytes // EVICT_FRACTION
        heap = self._evicting
        if heap is None:  # a round begins: rank the logs once
            heap = self._evicting = [(-log.bytes, i, log) for i, log in enumerate(self._logs.values()) if log.entries]
            heapq.heapify(heap)
        freed = 0
        while heap and self.bytes > target and freed < quota:
            ranked, i, log = heapq.heappop(heap)
            if -ranked != log.bytes:  # grew, shrank or was cleared since it was ranked
                if log.entries:
                    heapq.heappush(heap, (-log.bytes, i, log))
                continue
            below = -heap[0][0] if heap else 0
            while log.entries:  # at least one, then level it with the next largest
                n = log.pop_oldest()
                self.bytes -= n
                freed += n
                self.evicted_entries += 1
                if log.bytes < below or self.bytes <= target or freed >= quota:
                    break
            if log.entries:
                heapq.heappush(heap, (-log.bytes, i, log))
        if not heap or self.bytes <= target:
            self._evicting = None  # the round is over (its logs' references go with it)

    def last_seq(self, key: SessionKey) -> int:
        log = self._logs.get(key)
        return log.seq if log is not None else 0

    def read(self, key: SessionKey, after_seq: int) -> LogSlice:
        log = self._logs.get(key)
        if log is None:
            return LogSlice([], 1, 0)
        sid = key.session_id
        out = [RelayMessage(session_id=sid, event=event, data=None, seq=seq, timestamp=ts, target_sid=target,
                            data_json=text)
               for seq, event, ts, target, text, _ in log.entries if seq > after_seq]
        return LogSlice(out, log.first_seq(), log.seq)

    def statistics(self) -> dict:
        return {"logs": len(self._logs), "log_bytes": self.bytes, "log_evicted_entries": self.evicted_entries,
                "logs_dropped": self.dropped_logs}
