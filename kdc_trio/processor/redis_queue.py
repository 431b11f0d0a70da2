"""The turn queue in a Redis Stream, shared by every gateway and worker.

Gateways `XADD` turns (refused with QueueFull past `KDC_TURN_QUEUE_SIZE` waiting entries);
workers read them through one consumer group, each worker process with one reader task that
asks for as many turns as it has idle workers (`XREADGROUP … BLOCK`), and `XACK` + `XDEL` a turn
when its bundle finished. A turn stays pending in the group while it runs; its worker renews
the lease (`XCLAIM … JUSTID` resets the idle time) every third of `KDC_TURN_LEASE_MS`. When a
worker dies its turns stop being renewed, and any other worker takes them over with
`XAUTOCLAIM` once idle for a lease: the turn runs again with `attempt` = its delivery count,
so it is processed at least once and its `chat_start` says it was retried.

Attachments up to `KDC_REDIS_INLINE_ATTACHMENT_BYTES` travel inside the entry (base64); larger
ones are `SET` under `<prefix>:att:{<turn_id>}:<n>` with `KDC_REDIS_ATTACHMENT_TTL_S`, in the
same transaction as the `XADD`. One that expired before a worker read it makes the turn fail
with a `chat_error` naming it, never silently.

Failures: the read loop and the lease keeper are failure boundaries. A Redis error (connection
lost or refused, a command past its deadline, an error reply) is logged and the round retried
after a capped, jittered backoff (`KDC_REDIS_RETRY_MAX_MS`); a consumer group lost with a Redis
restart is re-created. An entry that cannot be decoded into a turn is moved, with its reason, to
the dead-letter stream `<prefix>:turns:dead` (capped at `KDC_TURN_DEAD_LETTER_SIZE`) by a script
that acks it first, so it is moved once however many workers held it, and never runs.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import socket

import trio

from kdc_trio.processor.queue import QueueFull, TurnQueue
from kdc_trio.processor.turn import Turn
from kdc_trio.redis.commands import Commands, Script, text, transaction
from kdc_trio.redis.connection import RedisError
from kdc_trio.redis.retry import REDIS_FAILURES, Backoff
from kdc_trio.redis.slots import tagged
from kdc_trio.util.batch_queue import BatchQueue

log = logging.getLogger("kdc_trio.turn_queue")

# Turns read ahead for this process's idle workers never outnumber them (the reader asks for as
# many as wait); this bound only guards a bug, whose overflow leaves the entry pending for a reclaim.
READY_LIMIT = 65_536
GROUP = "workers"
BLOCK_MS = 2000
# KEYS[1] stream; ARGV: max waiting, turn JSON. Returns the entry id, or false when full.
ADD = Script("""
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
return redis.call('XADD', KEYS[1], '*', 'turn', ARGV[2])
""")
# KEYS: the stream, the dead-letter stream. ARGV: group, entry id, reason, dead-letter maxlen,
# consumer, then the entry's own fields (name, value, …; kept byte for byte as `f:<name>`).
# Returns 1 when this call moved the entry, 0 when it was no longer pending (moved already).
DEAD_LETTER = Script("""
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
local add = {'XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'entry', ARGV[2], 'reason', ARGV[3], 'consumer', ARGV[5]}
for i = 6, #ARGV - 1, 2 do
  add[#add + 1] = 'f:' .. ARGV[i]
  add[#add + 1] = ARGV[i + 1]
end
redis.call(unpack(add))
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
""")


class RedisTurnQueue(TurnQueue):
    def __init__(self, redis: Commands, *, prefix: str = "kdc", maxlen: int = 1000, lease_ms: int = 15000,
                 inline_bytes: int = 256 * 1024, attachment_ttl_s: int = 3600, consumer: str | None = None,
                 read_redis: Commands | None = None, dead_letter_size: int = 1000,
                 backoff_max_s: float = 5.0) -> None:
        self.redis = redis
        self.read_redis = read_redis or redis  # the blocking reads may want their own connection
        # `{turns}`: the stream and its dead letters share a cluster slot (the dead-letter script)
        self.stream = f"{prefix}:{{turns}}"
        self.dead_stream = f"{prefix}:{{turns}}:dead"
        self.dead_letter_size = dead_letter_size
        self.backoff_max_s = backoff_max_s
        self.prefix = prefix
        self.maxlen = maxlen
        self.lease_ms = lease_ms
        self.inline_bytes = inline_bytes
        self.attachment_ttl_s = attachment_ttl_s
        self.consumer = consumer or f"{socket.gethostname()}-{secrets.token_hex(4)}"
        # Turns read for this process's idle workers; never more than the getters that asked.
        self._ready: BatchQueue[Turn] = BatchQueue(READY_LIMIT)
        self._getters = 0
        self._want = trio.lowlevel.ParkingLot()      # the reader waiting for a getter
        self._inflight: dict[str, Turn] = {}
        self._side_keys: dict[str, list[str]] = {}  # entry id → its attachments' keys
        self.enqueued = 0
        self.reclaimed = 0
        self.dead_lettered = 0
        self.failures = 0  # failed reads/renewals (Redis unreachable), each retried

    # ---- producing (gateways) ------------------------------------------------------------
    async def put(self, turn: Turn) -> None:
        d = turn.to_dict(inline_attachments=False)
        side: list[tuple] = []
        for n, (att, raw) in enumerate(zip(turn.message.attachments, d["message"]["attachments"])):
            if att.size <= self.inline_bytes:
                raw["data_b64"] = base64.b64encode(att.data).decode("ascii")
            else:
                key = f"{self.prefix}:att:{tagged(turn.turn_id)}:{n}"  # one slot: one MULTI, one DEL
                raw["data_key"] = key
                side.append(("SET", key, bytes(att.data), "EX", self.attachment_ttl_s))
        if side:
            await transaction(self.redis, side)
        entry = await ADD.run(self.redis, keys=[self.stream], args=[self.maxlen, json.dumps(d)])
        if not entry:
            if side:
                await self.redis.execute("DEL", *[c[1] for c in side])
            raise QueueFull(f"{self.maxlen} turns waiting (KDC_TURN_QUEUE_SIZE)")
        self.enqueued += 1

    async def depth(self) -> int:
        """Entries in the shared stream: waiting, and delivered but not yet acknowledged."""
        return int(await self.redis.execute("XLEN", self.stream))

    # ---- consuming (workers) -------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._ensure_group()  # at start an unreachable Redis is an error, with its reason
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reader)
            nursery.start_soon(self._lease_keeper)
            task_status.started()

    async def _ensure_group(self) -> None:
        try:
            await self.redis.execute("XGROUP", "CREATE", self.stream, GROUP, "0", "MKSTREAM")
        except RedisError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def get(self) -> Turn:
        self._getters += 1
        self._want.unpark_all()
        try:
            return await self._ready.get()
        finally:
            self._getters -= 1

    async def ack(self, turn: Turn) -> None:
        if turn.receipt is None:
            return
        keys = self._side_keys.get(turn.receipt, [])
        cmds: list[tuple] = [("XACK", self.stream, GROUP, turn.receipt), ("XDEL", self.stream, turn.receipt)]
        if keys:
            cmds.append(("DEL", *keys))
        await self.redis.pipeline(cmds)  # an error reply (NOGROUP: Redis lost the entry) is final too
        self._inflight.pop(turn.receipt, None)  # renewed until acked: a failed ack can be retried
        self._side_keys.pop(turn.receipt, None)

    def release(self, turn: Turn) -> None:
        """Stop renewing the turn's lease: once it lapses any worker takes the turn over."""
        if turn.receipt is not None:
            self._inflight.pop(turn.receipt, None)
            self._side_keys.pop(turn.receipt, None)
            log.warning("turn %s (entry %s) handed back: another worker takes it over after %d ms",
                        turn.turn_id, turn.receipt, self.lease_ms)

    async def _reader(self) -> None:
        """XREADGROUP as many turns as there are idle workers; a failure boundary."""
        backoff = Backoff(self.backoff_max_s)
        while True:
            while self._getters <= len(self._ready):
                await self._want.park()
            try:
                reply = await self.read_redis.execute(
                    "XREADGROUP", "GROUP", GROUP, self.consumer, "COUNT", self._getters - len(self._ready),
                    "BLOCK", BLOCK_MS, "STREAMS", self.stream, ">")
                for _stream, entries in reply or ():
                    for entry_id, fields in entries:
                        await self._accept(text(entry_id), fields, attempt=1)
            except REDIS_FAILURES as exc:
                await self._failed("read", exc, backoff)
                continue
            backoff.reset()

    async def _lease_keeper(self) -> None:
        """Renew this worker's running turns, and take over turns whose worker stopped renewing.
        A failure boundary: a failed round is retried after a backoff (never later than a period)."""
        period = self.lease_ms / 3000
        backoff = Backoff(min(self.backoff_max_s, period))
        delay = period
        while True:
            await trio.sleep(delay)
            try:
                if self._inflight:
                    await self.redis.execute("XCLAIM", self.stream, GROUP, self.consumer, 0, *self._inflight,
                                             "JUSTID")
                if self._getters > len(self._ready):
                    await self._reclaim(self._getters - len(self._ready))
            except REDIS_FAILURES as exc:
                await self._failed("lease renewal/claim", exc, None)
                delay = backoff.next_delay()
                continue
            backoff.reset()
            delay = period

    async def _failed(self, what: str, exc: BaseException, backoff: Backoff | None) -> None:
        self.failures += 1
        if "NOGROUP" in str(exc):  # Redis restarted without its data: the group is gone
            with trio.move_on_after(self.backoff_max_s):
                try:
                    await self._ensure_group()
                    log.warning("turn queue: consumer group %s re-created on %s", GROUP, self.stream)
                except REDIS_FAILURES:
                    pass
        if backoff is None:
            log.warning("turn queue %s failed (%s: %s); retrying", what, type(exc).__name__, exc)
            return
        delay = backoff.next_delay()
        log.warning("turn queue %s failed (%s: %s); retry #%d in %.2fs", what, type(exc).__name__, exc,
                    backoff.failures, delay)
        await trio.sleep(delay)

    async def _reclaim(self, count: int) -> None:
        reply = await self.redis.execute("XAUTOCLAIM", self.stream, GROUP, self.consumer, self.lease_ms, "0-0",
                                         "COUNT", count)
        for entry_id, fields in reply[1] or ():
            if fields is None:
                continue  # deleted while pending
            entry_id = text(entry_id)
            pending = await self.redis.execute("XPENDING", self.stream, GROUP, entry_id, entry_id, 1)
            attempt = int(pending[0][3]) if pending else 2
            self.reclaimed += 1
            log.warning("turn entry %s reclaimed from a stopped worker (attempt %d)", entry_id, attempt)
            await self._accept(entry_id, fields, attempt=attempt)

    async def _accept(self, entry_id: str, fields: list, *, attempt: int) -> None:
        try:
            values = {text(fields[i]): fields[i + 1] for i in range(0, len(fields), 2)}
            d = json.loads(text(values["turn"]))
            stored = [raw for raw in d["message"]["attachments"] if "data_key" in raw]
        except Exception as exc:  # whatever is wrong with the entry: it can never run
            await self._dead_letter(entry_id, fields, exc)
            return
        side: list[str] = []
        missing = []
        for raw in stored:
            side.append(raw["data_key"])
            blob = await self.redis.execute("GET", raw["data_key"])
            if blob is None:
                missing.append(raw.get("filename", raw["data_key"]))
            raw["data"] = blob or b""
        try:
            turn = Turn.from_dict(d)
        except Exception as exc:
            await self._dead_letter(entry_id, fields, exc)
            return
        turn.attempt = max(attempt, turn.attempt)
        turn.receipt = entry_id
        if side:
            self._side_keys[entry_id] = side  # deleted with the entry at ack
        if missing:
            turn.error = (f"attachment(s) {', '.join(missing)} expired in Redis before a worker took the turn "
                          f"(KDC_REDIS_ATTACHMENT_TTL_S={self.attachment_ttl_s})")
        if not self._ready.put_nowait(turn):  # a bug: the reader asks only for what getters wait for
            log.error("turn entry %s left pending: %d turns already ready", entry_id, len(self._ready))
            return  # not in flight, so not renewed: reclaimed once its lease lapses
        self._inflight[entry_id] = turn

    async def _dead_letter(self, entry_id: str, fields: list, exc: Exception) -> None:
        """Move an entry that cannot be decoded to the dead-letter stream, with its reason. The script
        acks it first: of all workers that may hold it, only the first moves it (once)."""
        reason = f"{type(exc).__name__}: {exc}"[:500]
        moved = await DEAD_LETTER.run(self.redis, keys=[self.stream, self.dead_stream],
                                      args=[GROUP, entry_id, reason, self.dead_letter_size, self.consumer,
                                            *fields])
        if moved:
            self.dead_lettered += 1
            log.error("turn entry %s cannot be decoded (%s): moved to %s", entry_id, reason, self.dead_stream)

    def statistics(self) -> dict:
        return {"enqueued": self.enqueued, "reclaimed": self.reclaimed, "dead_lettered": self.dead_lettered,
                "failures": self.failures, "inflight": len(self._inflight),
                "ready": len(self._ready), "consumer": self.consumer}
