"""Conversation status in Redis, so the busy check holds across gateways: one JSON string per
conversation (`<prefix>:conv:{<id>}`), begin_turn decided atomically by a script.

Continuations wait in a list beside it, `<prefix>:conv:{<id>}:pending`, where every gateway and
worker sees them: each entry is `<steer 0|1>\t<turn_id>\t<stream_id>\t<turn JSON>` (attachments
inline, base64), so the scripts decide on the header without decoding the turn. `offer`,
`take_pending` and `finish` are one script each (see conv_status.py for what they decide); a
worker waiting for a continuation polls every `KDC_CONTINUATION_POLL_MS`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import trio

from kdc_trio.processor.conv_status import ConvStatus, ConvStatusStore, Offer
from kdc_trio.processor.turn import Turn
from kdc_trio.redis.commands import Commands, Script, text
from kdc_trio.redis.slots import tagged

# KEYS[1] the status key; ARGV: new status JSON, session id, allow_busy (0/1), ttl seconds.
# Returns {accepted, previous JSON or false}.
BEGIN_TURN = Script("""
local cur = redis.call('GET', KEYS[1])
if cur then
  local c = cjson.decode(cur)
  if type(c.session_id) == 'string' and c.session_id ~= ARGV[2] then return {0, cur} end
  if c.state == 'in_progress' and ARGV[3] == '0' then return {0, cur} end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[4]))
return {1, cur or false}
""")


# KEYS: status, pending. ARGV: new status JSON, session id, steer 0/1, target turn id or "",
# max pending, entry, ttl. Returns {outcome, previous JSON or false}.
OFFER = Script("""
local cur = redis.call('GET', KEYS[1])
local c = cur and cjson.decode(cur) or nil
if c and type(c.session_id) == 'string' and c.session_id ~= ARGV[2] then return {'foreign', cur} end
if not c or c.state ~= 'in_progress' then
  if ARGV[3] == '1' then return {'no_active_turn', cur or false} end
  redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[7]))
  return {'started', cur or false}
end
if ARGV[3] == '1' and ARGV[4] ~= '' and ARGV[4] ~= c.current_turn_id then return {'mismatch', cur} end
if redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[5]) then return {'full', cur} end
redis.call('RPUSH', KEYS[2], ARGV[6])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[7]))
return {'continued', cur}
""")
# KEYS: status, pending. ARGV: the running turn id. Returns the oldest entry or false.
TAKE = Script("""
local cur = redis.call('GET', KEYS[1])
if not cur then return false end
local c = cjson.decode(cur)
if c.state ~= 'in_progress' or c.current_turn_id ~= ARGV[1] then return false end
return redis.call('LPOP', KEYS[2])
""")
# KEYS: status, pending. ARGV: the ended turn's status JSON, ttl, the promoted status JSON (its
# turn and stream are the entry's). Returns {next entry or false, the dropped steers...}.
FINISH = Script("""
local dropped = {}
while true do
  local e = redis.call('LPOP', KEYS[2])
  if not e then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
    return {false, unpack(dropped)}
  end
  if string.sub(e, 1, 1) == '1' then
    table.insert(dropped, e)
  else
    local _, _, turn_id, stream_id = string.find(e, '^0\t([^\t]*)\t([^\t]*)\t')
    local c = cjson.decode(ARGV[3])
    c.current_turn_id = turn_id
    c.origin_stream_id = stream_id
    redis.call('SET', KEYS[1], cjson.encode(c), 'EX', tonumber(ARGV[2]))
    return {e, unpack(dropped)}
  end
end
""")


def _entry(turn: Turn) -> str:
    head = "1" if turn.message.is_steer else "0"
    return f"{head}\t{turn.turn_id}\t{turn.stream_id}\t{json.dumps(turn.to_dict())}"


def _turn(entry) -> Turn:
    return Turn.from_dict(json.loads(text(entry).split("\t", 3)[3]))


def _load(raw) -> ConvStatus | None:
    return ConvStatus(**json.loads(text(raw))) if raw else None


class RedisConvStatusStore(ConvStatusStore):
    def __init__(self, redis: Commands, *, prefix: str = "kdc", ttl_s: int = 86400, poll_s: float = 0.1) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = int(ttl_s)
        self.poll_s = poll_s

    def _key(self, conversation_id: str) -> str:
        # `{id}`: the status and its pending list (`…:pending`) share a cluster slot (one script)
        return f"{self.prefix}:conv:{tagged(conversation_id)}"

    async def get(self, conversation_id: str) -> ConvStatus | None:
        return _load(await self.redis.execute("GET", self._key(conversation_id)))

    async def begin_turn(self, status: ConvStatus, *, allow_busy: bool) -> tuple[bool, ConvStatus | None]:
        status.updated_at = time.time()
        accepted, previous = await BEGIN_TURN.run(
            self.redis, keys=[self._key(status.conversation_id)],
            args=[json.dumps(asdict(status)), status.session_id or "", "1" if allow_busy else "0", self.ttl_s])
        return bool(accepted), _load(previous)

    async def set(self, status: ConvStatus) -> None:
        status.updated_at = time.time()
        await self.redis.execute("SET", self._key(status.conversation_id), json.dumps(asdict(status)),
                                 "EX", self.ttl_s)

    def _keys(self, conversation_id: str) -> list[str]:
        key = self._key(conversation_id)
        return [key, f"{key}:pending"]

    async def offer(self, status: ConvStatus, turn: Turn, *, max_pending: int) -> Offer:
        status.updated_at = time.time()
        m = turn.message
        outcome, previous = await OFFER.run(
            self.redis, keys=self._keys(status.conversation_id),
            args=[json.dumps(asdict(status)), status.session_id or "", "1" if m.is_steer else "0",
                  m.active_turn_id or "", max_pending, _entry(turn), self.ttl_s])
        return Offer(text(outcome), _load(previous))  # type: ignore[arg-type]

    async def take_pending(self, conversation_id: str, turn_id: str) -> Turn | None:
        entry = await TAKE.run(self.redis, keys=self._keys(conversation_id), args=[turn_id])
        return _turn(entry) if entry else None

    async def finish(self, status: ConvStatus) -> tuple[Turn | None, list[Turn]]:
        status.updated_at = time.time()
        promoted = ConvStatus(conversation_id=status.conversation_id, session_id=status.session_id,
                              state="in_progress", updated_at=status.updated_at, completion="queued_next")
        reply = await FINISH.run(self.redis, keys=self._keys(status.conversation_id),
                                 args=[json.dumps(asdict(status)), self.ttl_s, json.dumps(asdict(promoted))])
        nxt, *dropped = reply
        return (_turn(nxt) if nxt else None), [_turn(d) for d in dropped]

    async def wait_pending(self, conversation_id: str) -> None:
        await trio.sleep(self.poll_s)
