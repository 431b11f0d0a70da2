"""RedisBus: the Bus through Redis, for many gateway and worker processes.

Publishing runs one script: `INCR` the session's sequence, append the message (with its seq)
to the session log (a list with a TTL, capped in events and bytes, within a budget for all
logs) and `PUBLISH` it on the session's channel — one
round trip, so the sequence is strictly increasing whichever process produced. Receiving goes
through the ServiceCommunicator's one pub/sub connection per process: a channel is listened
to while at least one local Subscription wants it (the relay keeps that equal to "the session
has a live connection here"), each message is decoded once per process and pushed to every
local subscriber, in batches (one list per network read).

After a Redis reconnect the pub/sub layer re-subscribes what is wanted now; the bus then
fetches each channel's log past the last seq it delivered and pushes what the outage
swallowed, before the live messages that arrived meanwhile, so order and completeness hold.
Live messages are held from the moment the gap begins (`on_gap`: the connection was lost, or the
channel moves to another shard), not from when the reconnect is told (`on_reconnect`): the new
connection's reader hands on what it reads at once, and it may read messages before the task
that tells of the reconnect runs. Delivered live, such a message would move the last delivered
seq past the gap and the log read would start after it: the gap's events lost without a word.
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator, Awaitable, Callable, Collection

import trio

from kdc_trio.redis.batching import ScriptBatcher
from kdc_trio.redis.commands import Commands, Script, text
from kdc_trio.redis.slots import SLOTS, key_slot, slot_tag, tagged
from kdc_trio.relay.bus import SUBSCRIPTION_BUFFER, Bus, Poster, Subscription, SubscriptionOverflow
from kdc_trio.relay.keys import SessionKey
from kdc_trio.relay.message import RelayMessage, dumpb, head_prefix
from kdc_trio.relay.pipelined_poster import PipelinedPoster
from kdc_trio.relay.service import ServiceCommunicator
from kdc_trio.relay.session_log import LogSlice, gap_notice

log = logging.getLogger("kdc_trio.redis_bus")

# KEYS: seq key, log key, log sizes (zset: log key -> bytes), log write times (zset: log key ->
# Redis TIME s), total bytes of all logs. ARGV: channel, log size (events), log TTL s, seq TTL s,
# the session's share (bytes), the budget of all logs (bytes), the publish command (PUBLISH, or
# SPUBLISH for the sharded relay), the head that every event of the call shares (its text
# between the seq and the data's seq: event, target, session, timestamp, host; `RedisBus.event_head`),
# then one or more events of that session, each one argument: its data's text after the data's
# seq (`RedisBus.encode_body`). Returns the last event's seq; the K events of one call took the
# K seqs up to it, in argument order. Each event's published/logged text is
# `{"seq":N,<head>,"data":{"seq":N,<data>}}` (head: scalars only; data: the envelope), made in one
# concatenation `'{"seq":' N head N body`: no JSON is decoded in Redis, and receivers take the
# data's text as it is (RelayMessage.from_raws). The head is passed once per call, not once per
# event (the worker encodes, and Redis reads and keeps, ~150 bytes less per event): the events of
# one call share their event name, target and timestamp (the time the call's first event was
# posted; a poster starts a new call when the name or target changes). The published text is
# the "kdc2" layout gateways of every version read.
# Each event is PUBLISHed on its own (a subscriber, ours or KDCube's, reads one event per message).
#
# Bounds, as in memory (relay/session_log.py): the session's log keeps at most `size` events and
# `share` bytes (oldest out first, the newest always kept); all logs together keep at most
# `budget` bytes, and past it the largest logs lose their oldest events first, down to the
# budget, at most twice the call's bytes + 64 KiB per call: the call that crosses the budget
# frees about what it added, never a tenth of the budget at once (that took one script call
# hundreds of ms, during which Redis served nobody: every relay stalled). Logs whose TTL passed
# are forgotten from the accounting (up to 16, on every call that crosses a multiple of 16 in
# seq and whenever over the budget). Cost: ~23 us of Redis CPU for a
# call with one event; a call with many events shares the seq, accounting and trimming steps
# (see `MAX_EVENTS_PER_CALL`). The largest log's key is found in the sizes zset, not passed in
# KEYS, so every key the script touches must be in one slot under Redis Cluster: the session's seq
# and log keys carry the channel's hash tag (`tagged(channel)`: the channel's own slot, so
# SPUBLISH in the script is local), and the accounting keys are per slot (`slot_tag(slot)`) with
# the per-slot budget (see `RedisBus.__init__`). On a single Redis the accounting keys are global.
PUBLISH = Script("""
local k = #ARGV - 8
local last = redis.call('INCRBY', KEYS[1], k)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
local first = last - k + 1
local head = ARGV[8]
local msgs = {}
local n = 0
for i = 1, k do
  local seq = tostring(first + i - 1)
  local msg = '{"seq":' .. seq .. head .. seq .. ARGV[8 + i]
  msgs[i] = msg
  n = n + #msg
end
local added = n
local log, sizes, touched, total = KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local ttl, cap, share, budget = tonumber(ARGV[3]), tonumber(ARGV[2]), tonumber(ARGV[5]), tonumber(ARGV[6])
local len = redis.call('RPUSH', log, unpack(msgs))
local mine
if len == k then  -- a new list (or one that expired): its old account goes
  local stale = tonumber(redis.call('ZSCORE', sizes, log)) or 0
  redis.call('ZADD', sizes, n, log)
  mine = n
  n = n - stale
else
  mine = tonumber(redis.call('ZINCRBY', sizes, n, log))
end
local trimmed = 0
if len > cap then  -- the count cap: the oldest go in one step
  for _, old in ipairs(redis.call('LPOP', log, len - cap)) do trimmed = trimmed + #old end
  len = cap
end
while len > 1 and mine - trimmed > share do
  trimmed = trimmed + #redis.call('LPOP', log)
  len = len - 1
end
if trimmed > 0 then redis.call('ZINCRBY', sizes, -trimmed, log) end
local t = redis.call('INCRBY', total, n - trimmed)
local now = tonumber(redis.call('TIME')[1])
redis.call('ZADD', touched, now, log)
redis.call('EXPIRE', log, ttl)
if math.floor(last / 16) ~= math.floor((first - 1) / 16) or t > budget then  -- forget logs whose TTL passed
  for _, key in ipairs(redis.call('ZRANGEBYSCORE', touched, '-inf', now - ttl - 1, 'LIMIT', 0, 16)) do
    t = t - (tonumber(redis.call('ZSCORE', sizes, key)) or 0)
    redis.call('ZREM', sizes, key)
    redis.call('ZREM', touched, key)
    redis.call('DEL', key)
  end
  if t > budget then  -- the largest logs lose their oldest events first, down to the budget,
    -- freeing at most twice this call's bytes + 64 KiB (whole events) in this call
    local quota = 2 * added + 65536
    local freed = 0
    while t > budget and freed < quota do
      local top = redis.call('ZREVRANGE', sizes, 0, 1, 'WITHSCORES')
      if #top == 0 then t = 0 break end
      local key, b = top[1], tonumber(top[2])
      local below = tonumber(top[4]) or 0
      repeat
        local old = redis.call('LPOP', key)
        if not old then t = t - b freed = freed + b b = 0 break end
        b = b - #old
        t = t - #old
        freed = freed + #old
      until b < below or t <= budget or freed >= quota
      if b > 0 then
        redis.call('ZADD', sizes, b, key)
      else
        redis.call('ZREM', sizes, key)
        redis.call('ZREM', touched, key)
      end
    end
  end
  redis.call('SET', total, t)
end
for i = 1, k do redis.call(ARGV[7], ARGV[1], msgs[i]) end
return last
""")
# Events of one session one script call carries at most: bounds the call's arguments (Lua's
# `unpack` of the log push) and how long Redis runs it (~ a few us per event).
MAX_EVENTS_PER_CALL = 256
# (session, event, target) heads whose text a publishing process keeps (RedisBus.event_head),
# and sessions whose script KEYS it keeps (RedisBus.script_keys): a few per running turn; past
# this many a cache starts over (an encode each, not a leak).
HEAD_CACHE = 4096

# KEYS: seq key, log key. ARGV (optional): a floor for the seq and the seq key's TTL s. Returns
# {the session's seq, the log's entries}: one consistent read. With a floor, a seq below it is
# raised to it in the same step (the seq returned is the one found), so nothing published after
# the read can take a seq at or below the floor.
READ_LOG = Script("""
local seq = redis.call('GET', KEYS[1]) or '0'
if ARGV[1] and tonumber(seq) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
end
return {seq, redis.call('LRANGE', KEYS[2], 0, -1)}
""")


class SubscriptionFailed(Exception):
    """A channel's events during a pub/sub gap are unknown: its subscriptions end (relay_failed)."""


class RedisBus(Bus):
    name = "redis"

    def __init__(self, redis: Commands, service: ServiceCommunicator, *, channel_prefix: str,
                 key_prefix: str = "kdc", log_size: int = 1000, log_ttl_s: int = 3600,
                 seq_ttl_s: int = 86400, log_session_bytes: int = 4 << 20,
                 log_budget_bytes: int = 256 << 20, cluster: bool = False,
                 publish_command: str = "PUBLISH", watch: Callable[..., Awaitable[None]] | None = None) -> None:
        self.redis = redis
        # Run beside the pub/sub plumbing: behind Sentinel, the task that moves the process's
        # connections to a new master as soon as the Sentinels announce it (redis/sentinel_watch.py).
        self.watch = watch
        self.service = service  # the pub/sub plumbing (and the host_id every message carries)
        service.on_reconnect_call(self.on_reconnect)
        service.on_gap_call(self.on_gap)
        self.channel_prefix = channel_prefix
        self.key_prefix = key_prefix
        self.log_size = log_size
        self.log_ttl_s = int(log_ttl_s)
        self.seq_ttl_s = int(seq_ttl_s)
        self.log_session_bytes = int(log_session_bytes)
        self.log_budget_bytes = int(log_budget_bytes)
        self.cluster = cluster
        self.publish_command = publish_command  # "SPUBLISH": the sharded relay (Redis ≥ 7)
        # The accounting of all logs' bytes, shared by every process on this Redis. Under Redis
        # Cluster a script reaches one slot only, so each slot keeps its own account and budget:
        # the budget split evenly over the 16384 slots, but never below one session's share (a
        # session alone in its slot keeps what it would keep on a single Redis). With many
        # sessions (spread evenly over the slots) the total stays near the budget; its hard bound
        # is 16384 × the per-slot budget.
        self.slot_budget_bytes = max(self.log_budget_bytes // SLOTS, self.log_session_bytes) if cluster \
            else self.log_budget_bytes
        self._log_sizes_key = f"{key_prefix}:logbytes"
        self._log_touched_key = f"{key_prefix}:logtouched"
        self._log_total_key = f"{key_prefix}:logbytes:total"
        if cluster:
            slot_tag(0)  # builds the slot → tag table once, at start (~0.2 s), not on a publish
        self._subs: dict[str, set[Subscription]] = {}
        self._keys: dict[str, SessionKey] = {}
        self._last_seq: dict[str, int] = {}
        self._last_stamp: dict[str, float] = {}  # the publish time of the event at _last_seq
        # The session's seq when the channel's subscription began: where a log read after a
        # pub/sub gap starts for a channel that has delivered nothing yet (not at 0: that would
        # hand its connections the session's whole history as live events).
        self._start_seq: dict[str, int] = {}
        # Channels whose live messages are held (a pub/sub gap began, its log not read back yet).
        self._resyncing: dict[str, list[RelayMessage]] = {}
        self._gapped: set[str] = set()     # a gap began since the channel's log read started
        self._reading: set[str] = set()    # a _resync task runs for the channel
        self._read_again: set[str] = set()  # reconnected while it read: it reads once more
        self._nursery: trio.Nursery | None = None
        self._heads: dict[tuple[str, str, str | None], tuple[str, str]] = {}  # see event_head
        self._script_keys: dict[SessionKey, tuple[str, ...]] = {}  # see script_keys
        self.publisher = ScriptBatcher(redis, PUBLISH)  # concurrent producers share round trips
        self.published = 0
        self.received = 0
        self.undecodable = 0  # JSON that is not a relay message
        self.recovered = 0
        self.gaps = 0  # pub/sub outages that outlasted a session's log (told as stream.gap)
        self.rewinds = 0  # resyncs that found Redis without events this process had delivered

    def _channel(self, key: SessionKey) -> str:
        return key.channel(self.channel_prefix)

    # A session's keys carry its channel's hash tag: under Redis Cluster they live in the slot of
    # the channel (whose name KDCube shares and we never change), with the accounting of that slot.
    def _log_key(self, key: SessionKey) -> str:
        return f"{self.key_prefix}:log:{tagged(self._channel(key))}"

    def _seq_key(self, key: SessionKey) -> str:
        return f"{self.key_prefix}:seq:{tagged(self._channel(key))}"

    def _accounting_keys(self, key: SessionKey) -> list[str]:
        if not self.cluster:
            return [self._log_sizes_key, self._log_touched_key, self._log_total_key]
        tag = "{" + slot_tag(key_slot(self._channel(key))) + "}"
        return [f"{self._log_sizes_key}:{tag}", f"{self._log_touched_key}:{tag}", f"{self._log_total_key}:{tag}"]

    # ---- Bus -----------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.watch is not None:
                await nursery.start(self.watch)
            await nursery.start(self.service.run)  # a gateway listens; a worker only publishes
            await nursery.start(self.publisher.run)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    async def publish(self, key: SessionKey, *, event: str, data: dict, target_sid: str | None = None) -> int:
        keys, args = self.publish_script_args(key, event=event, data=data, target_sid=target_sid)
        seq = await self.publisher.call(keys, args)
        self.published += 1
        data["seq"] = int(seq)
        return int(seq)

    def poster(self, window: int) -> Poster:
        """Pipelined: `post` returns before Redis answers (relay/pipelined_poster.py)."""
        return PipelinedPoster(self, window, MAX_EVENTS_PER_CALL)

    def publish_script_args(self, key: SessionKey, *, event: str, data: dict,
                            target_sid: str | None = None) -> tuple[tuple[str, ...], list]:
        """KEYS and ARGV of the PUBLISH script for one event."""
        return self.script_keys(key), [*self.script_fixed_args(key), self.event_head(key, event, target_sid),
                                       self.encode_body(data)]

    def event_head(self, key: SessionKey, event: str, target_sid: str | None) -> str:
        """The head argument of a script call (see PUBLISH): the message's text between its seq and
        its data's seq, in the fixed "kdc2" layout (relay/message.py), with the time now. Its text
        but the time is cached per (session, event, target)."""
        parts = self._heads.get((key.session_id, event, target_sid))
        if parts is None:
            if len(self._heads) >= HEAD_CACHE:
                self._heads.clear()
            parts = self._heads[(key.session_id, event, target_sid)] = head_prefix(
                event=event, target_sid=target_sid, session_id=key.session_id, host_id=self.service.host_id)
        # The publish time in seconds, to the microsecond, formatted from integers: a float's
        # repr (its shortest round-trip digits) cost more than the envelope's JSON encode.
        return parts[0] + "%d.%06d" % divmod(time.time_ns() // 1000, 1_000_000) + parts[1]

    @staticmethod
    def encode_body(data: dict) -> bytes:
        """An event's script argument (see PUBLISH): its data's JSON after the data's seq."""
        body = dumpb({k: v for k, v in data.items() if k != "seq"} if "seq" in data else data)
        return b"}}" if body == b"{}" else b"," + body[1:] + b"}"

    def script_keys(self, key: SessionKey) -> tuple[str, ...]:
        """The PUBLISH script's KEYS for a session, cached per session like the event heads
        (bounded by HEAD_CACHE): building them (two hash tags, five strings) was ~2.4 us of a worker's
        per-event work, once per event when each event is its own call (paced producers)."""
        keys = self._script_keys.get(key)
        if keys is None:
            if len(self._script_keys) >= HEAD_CACHE:
                self._script_keys.clear()
            keys = self._script_keys[key] = (self._seq_key(key), self._log_key(key), *self._accounting_keys(key))
        return keys

    def script_fixed_args(self, key: SessionKey) -> list:
        """The PUBLISH script's arguments before its events (see PUBLISH)."""
        return [self._channel(key), self.log_size, self.log_ttl_s, self.seq_ttl_s, self.log_session_bytes,
                self.slot_budget_bytes, self.publish_command]

    @asynccontextmanager
    async def subscribe(self, key: SessionKey) -> AsyncIterator[Subscription]:
        channel = self._channel(key)
        sub = Subscription(key)
        first = channel not in self._subs
        self._subs.setdefault(channel, set()).add(sub)
        self._keys[channel] = key
        try:
            if first:
                await self.service.listen(channel, lambda raws: self._on_messages(channel, raws), raw=True)
                await self._note_start(channel, key)
            yield sub
        finally:
            subs = self._subs.get(channel)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[channel]
                    self._keys.pop(channel, None)
                    self._last_seq.pop(channel, None)
                    self._last_stamp.pop(channel, None)
                    self._start_seq.pop(channel, None)
                    self._resyncing.pop(channel, None)
                    self._gapped.discard(channel)
                    self._read_again.discard(channel)
                    with trio.CancelScope(shield=True), trio.move_on_after(5):
                        await self.service.unlisten(channel)

    async def _note_start(self, channel: str, key: SessionKey) -> None:
        """Read the session's seq once the channel is subscribed (so nothing after it is missed:
        a later event is live or in the log). Best effort: unknown, a resync reads the whole log."""
        try:
            seq = int(text(await self.redis.execute("GET", self._seq_key(key)) or b"0"))
        except Exception as exc:
            log.warning("seq of %s not read at subscribe (%s): a resync would read its whole log", channel, exc)
            return
        if channel in self._subs:
            self._start_seq[channel] = seq

    async def history(self, key: SessionKey, after_seq: int, *, seq_floor: int = 0) -> LogSlice:
        """The log after `after_seq`; with `seq_floor`, a session seq below it is raised to it."""
        args = [seq_floor, self.seq_ttl_s] if seq_floor else []
        seq, raw = await READ_LOG.run(self.redis, keys=[self._seq_key(key), self._log_key(key)], args=args)
        last = int(seq or 0)
        held = [m for m in map(self._decode, raw or ()) if m is not None]
        first = held[0].seq if held else last + 1
        return LogSlice([m for m in held if m.seq > after_seq], first, last)

    async def last_seq(self, key: SessionKey) -> int:
        return int(text(await self.redis.execute("GET", self._seq_key(key)) or b"0"))

    async def log_bytes(self) -> int:
        """Bytes all session logs hold, as the publish script accounts them (under Redis Cluster:
        the sum of every slot's account, found with KEYS on every master — a diagnostic)."""
        if not self.cluster:
            return int(await self.redis.execute("GET", self._log_total_key) or 0)
        keys = await self.redis.execute("KEYS", f"{self._log_total_key}:{{*}}")
        return sum(int(v or 0) for v in await self.redis.pipeline([("GET", k) for k in keys or ()]))

    async def ping(self) -> bool:
        try:
            return text(await self.redis.execute("PING")) == "PONG"
        except Exception:
            return False

    def subscribed_channels(self) -> set[str]:
        return set(self._subs)

    def statistics(self) -> dict:
        return {"published": self.published, "publish_batches": self.publisher.batches,
                "received": self.received, "undecodable": self.undecodable,
                "relay_gap": getattr(self.service.pubsub, "gaps", 0), "recovered_after_gap": self.recovered,
                "log_gaps": self.gaps, "seq_rewinds": self.rewinds,
                "subscribed_channels": len(self._subs)}

    # ---- from the pub/sub connection -------------------------------------------------------
    def _on_messages(self, channel: str, raws: list[bytes]) -> None:
        """A channel's messages of one network read, decoded once, for every local subscriber."""
        subs = self._subs.get(channel)
        if not subs:
            return
        msgs = RelayMessage.from_raws(raws, self._undecodable)
        self.received += len(msgs)
        held = self._resyncing.get(channel)
        if held is not None:  # live messages wait while the log is read back after a gap
            held.extend(msgs)
            if len(held) > SUBSCRIPTION_BUFFER:  # the read is stuck: give up, as an overflow does
                exc = SubscriptionOverflow(f"{len(held)} messages held while the log of {channel} was read")
                held.clear()
                for sub in list(subs):
                    sub.fail(exc)
        else:
            self._deliver(channel, subs, msgs)

    def on_gap(self, channels: Collection[str] | None = None) -> None:
        """Pub/sub stopped delivering `channels` (None: every channel, the one connection was
        lost): hold their live messages from now until the log is read back after the reconnect,
        so none is delivered before the events the gap hid and none moves the read's start."""
        for channel in list(self._subs) if channels is None else [c for c in channels if c in self._subs]:
            self._resyncing.setdefault(channel, [])
            self._gapped.add(channel)

    def on_reconnect(self, channels: Collection[str] | None = None) -> None:
        """Pub/sub came back (and re-subscribed) for `channels` (None: every channel, the one
        connection came back; a Redis Cluster shard names its own): fill each channel's gap."""
        if self._nursery is None:
            return
        for channel in list(self._subs) if channels is None else [c for c in channels if c in self._subs]:
            self._resyncing.setdefault(channel, [])
            if channel in self._reading:
                self._read_again.add(channel)  # its read may have started before this re-subscribe
            else:
                self._reading.add(channel)
                self._nursery.start_soon(self._resync, channel)

    async def _resync(self, channel: str) -> None:
        try:
            while True:
                self._read_again.discard(channel)
                self._gapped.discard(channel)
                self._resyncing.setdefault(channel, [])
                await self._resync_once(channel)
                if channel in self._gapped and channel in self._subs:
                    # another gap began while the log was read: keep holding until it is read again
                    self._resyncing.setdefault(channel, [])
                if channel not in self._read_again or channel not in self._subs:
                    return
        finally:
            self._reading.discard(channel)

    async def _resync_once(self, channel: str) -> None:
        key = self._keys.get(channel)
        delivered = self._last_seq.get(channel, 0)
        after = delivered or self._start_seq.get(channel, 0)
        missed: list[RelayMessage] = []
        failed: Exception | None = None
        try:
            if key is not None:
                # Read from the last delivered event on (to see that it is still the one we
                # delivered), raising the session's seq to it at once: a Redis that lost events
                # we delivered (a failover to a replica that had not got them, a restart without
                # them) must not give their seqs to new events, which connections would drop.
                logged = await self.history(key, max(after - 1, 0), seq_floor=delivered)
                missed = [m for m in logged.messages if m.seq > after]
                reason = None
                if after and logged.gap(after):  # the outage outlasted the log, or it lost our tail
                    reason = "relay_gap"
                elif delivered and self._diverged(channel, logged.messages, delivered):
                    reason = "diverged"  # events published meanwhile took seqs we had delivered
                if delivered and (logged.last_seq < delivered or reason == "diverged"):
                    self.rewinds += 1
                    log.warning("Redis lost events of %s this process had delivered (its seq %d, ours %d): "
                                "new events continue after ours", channel, logged.last_seq, delivered)
                if reason is not None:
                    self.gaps += 1
                    missed = [gap_notice(key, after, logged, reason=reason), *missed]
        except Exception as exc:
            log.warning("could not read the log of %s after a Redis gap: %s", channel, exc)
            failed = exc
        held = self._resyncing.pop(channel, [])
        subs = self._subs.get(channel)
        if subs and failed is not None:
            # What the outage hid cannot be told: end the session's connections (relay_failed);
            # they resume from the log with their last seq, which tells them or replays it.
            err = SubscriptionFailed(f"the log of {channel} could not be read after a Redis gap: {failed}")
            for sub in list(subs):
                sub.fail(err)
        elif subs:
            self.recovered += len(missed)
            if missed:
                log.warning("recovered %d events on %s from the session log after a Redis gap",
                            len(missed), channel)
            self._deliver(channel, subs, missed + held)

    def _diverged(self, channel: str, logged: list[RelayMessage], delivered: int) -> bool:
        """The log's event at our last delivered seq is another event than the one we delivered."""
        mine = next((m for m in logged if m.seq == delivered), None)
        return mine is not None and mine.timestamp != self._last_stamp.get(channel, mine.timestamp)

    def _deliver(self, channel: str, subs: set[Subscription], msgs: list[RelayMessage]) -> None:
        last = self._last_seq.get(channel, 0)
        fresh = []
        stamp = None
        for m in msgs:
            if m.seq and m.seq <= last:
                continue  # already delivered (a replayed log entry, or a duplicate)
            if m.seq:
                last, stamp = m.seq, m.timestamp
            fresh.append(m)
        self._last_seq[channel] = last
        if stamp is not None:
            self._last_stamp[channel] = stamp
        if fresh:
            for sub in subs:
                sub.push_many(fresh)

    def _decode(self, raw: bytes) -> RelayMessage | None:
        try:
            return RelayMessage.from_raw(raw)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self._undecodable(exc)
            return None

    def _undecodable(self, exc: Exception) -> None:
        self.undecodable += 1
        log.warning("undecodable relay message dropped: %s", exc)
