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
ones are `SET` under `<prefix>:att:<turn_id>:<n>` with `KDC_REDIS_ATTACHMENT_TTL_S`, in the
same transaction as the `XADD`. One that expired before a worker read it makes the turn fail
with a `chat_error` naming it, never silently.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import socket
from collections import deque

import trio

from kdc_trio.processor.queue import QueueFull, TurnQueue
from kdc_trio.processor.turn import Turn
from kdc_trio.redis.commands import Commands, Script, text, transaction

log = logging.getLogger("kdc_trio.turn_queue")

GROUP = "workers"
BLOCK_MS = 2000
# KEYS[1] stream; ARGV: max waiting, turn JSON. Returns the entry id, or false when full.
ADD = Script("""
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
return redis.call('XADD', KEYS[1], '*', 'turn', ARGV[2])
""")


class RedisTurnQueue(TurnQueue):
    def __init__(self, redis: Commands, *, prefix: str = "kdc", maxlen: int = 1000, lease_ms: int = 15000,
                 inline_bytes: int = 256 * 1024, attachment_ttl_s: int = 3600, consumer: str | None = None,
                 read_redis: Commands | None = None) -> None:
        self.redis = redis
        self.read_redis = read_redis or redis  # the blocking reads may want their own connection
        self.stream = f"{prefix}:turns"
        self.prefix = prefix
        self.maxlen = maxlen
        self.lease_ms = lease_ms
        self.inline_bytes = inline_bytes
        self.attachment_ttl_s = attachment_ttl_s
        self.consumer = consumer or f"{socket.gethostname()}-{secrets.token_hex(4)}"
        self._ready: deque[Turn] = deque()
        self._getters = 0
        self._lot = trio.lowlevel.ParkingLot()       # getters waiting for a turn
        self._want = trio.lowlevel.ParkingLot()      # the reader waiting for a getter
        self._inflight: dict[str, Turn] = {}
        self._side_keys: dict[str, list[str]] = {}  # entry id → its attachments' keys
        self.enqueued = 0
        self.reclaimed = 0

    # ---- producing (gateways) ------------------------------------------------------------
    async def put(self, turn: Turn) -> None:
        d = turn.to_dict(inline_attachments=False)
        side: list[tuple] = []
        for n, (att, raw) in enumerate(zip(turn.message.attachments, d["message"]["attachments"])):
            if att.size <= self.inline_bytes:
                raw["data_b64"] = base64.b64encode(att.data).decode("ascii")
            else:
                key = f"{self.prefix}:att:{turn.turn_id}:{n}"
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

    # ---- consuming (workers) -------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self.redis.execute("XGROUP", "CREATE", self.stream, GROUP, "0", "MKSTREAM")
        except Exception as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reader)
            nursery.start_soon(self._lease_keeper)
            task_status.started()

    async def get(self) -> Turn:
        self._getters += 1
        self._want.unpark_all()
        try:
            while not self._ready:
                await self._lot.park()
        finally:
            self._getters -= 1
        turn = self._ready.popleft()
        await trio.lowlevel.checkpoint_if_cancelled()
        return turn

    async def ack(self, turn: Turn) -> None:
        if turn.receipt is None:
            return
        self._inflight.pop(turn.receipt, None)
        keys = self._side_keys.pop(turn.receipt, [])
        cmds: list[tuple] = [("XACK", self.stream, GROUP, turn.receipt), ("XDEL", self.stream, turn.receipt)]
        if keys:
            cmds.append(("DEL", *keys))
        await self.redis.pipeline(cmds)

    async def _reader(self) -> None:
        while True:
            while self._getters <= len(self._ready):
                await self._want.park()
            reply = await self.read_redis.execute(
                "XREADGROUP", "GROUP", GROUP, self.consumer, "COUNT", self._getters - len(self._ready),
                "BLOCK", BLOCK_MS, "STREAMS", self.stream, ">")
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    await self._accept(text(entry_id), fields, attempt=1)

    async def _lease_keeper(self) -> None:
        """Renew this worker's running turns, and take over turns whose worker stopped renewing."""
        while True:
            await trio.sleep(self.lease_ms / 3000)
            if self._inflight:
                await self.redis.execute("XCLAIM", self.stream, GROUP, self.consumer, 0, *self._inflight, "JUSTID")
            if self._getters > len(self._ready):
                await self._reclaim(self._getters - len(self._ready))

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
        values = {text(fields[i]): fields[i + 1] for i in range(0, len(fields), 2)}
        d = json.loads(text(values["turn"]))
        side: list[str] = []
        missing = []
        for raw in d["message"]["attachments"]:
            if "data_key" in raw:
                side.append(raw["data_key"])
                blob = await self.redis.execute("GET", raw["data_key"])
                if blob is None:
                    missing.append(raw["filename"])
                raw["data"] = blob or b""
        turn = Turn.from_dict(d)
        turn.attempt = max(attempt, turn.attempt)
        turn.receipt = entry_id
        if side:
            self._side_keys[entry_id] = side  # deleted with the entry at ack
        if missing:
            turn.error = (f"attachment(s) {', '.join(missing)} expired in Redis before a worker took the turn "
                          f"(KDC_REDIS_ATTACHMENT_TTL_S={self.attachment_ttl_s})")
        self._inflight[entry_id] = turn
        self._ready.append(turn)
        self._lot.unpark()

    def statistics(self) -> dict:
        return {"enqueued": self.enqueued, "reclaimed": self.reclaimed, "inflight": len(self._inflight),
                "ready": len(self._ready), "consumer": self.consumer}
