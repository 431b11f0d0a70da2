"""Conversation status in Redis, so the busy check holds across gateways: one JSON string per
conversation (`<prefix>:conv:<id>`), begin_turn decided atomically by a script."""

from __future__ import annotations

import json
import time
from dataclasses import asdict

from kdc_trio.processor.conv_status import ConvStatus, ConvStatusStore
from kdc_trio.redis.commands import Commands, Script, text

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


def _load(raw) -> ConvStatus | None:
    return ConvStatus(**json.loads(text(raw))) if raw else None


class RedisConvStatusStore(ConvStatusStore):
    def __init__(self, redis: Commands, *, prefix: str = "kdc", ttl_s: int = 86400) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = int(ttl_s)

    def _key(self, conversation_id: str) -> str:
        return f"{self.prefix}:conv:{conversation_id}"

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
