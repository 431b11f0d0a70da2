"""The rate limits through Redis: every process charges one shared budget, in one Lua call per check.

Per subject two keys: a sorted set of the burst window's admissions (score = ms) and a counter
of the clock hour (`…:h:<hour index>`). The script first looks at every subject (trims the
window, counts), and only when all have room charges all of them; so a check is atomic across
processes and a refusal charges nothing. The clock is the caller's (`time.time()`): processes on
one host agree; across hosts NTP's milliseconds are far below any window.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Callable, Sequence

from kdc_trio.protect.ratelimit import HOUR_S, Subject
from kdc_trio.redis.commands import Commands, Script

# KEYS: per subject its burst zset and its hour counter. ARGV: now (ms), a member unique to this
# call, then per subject: burst, window (ms), hourly, ms left in the hour.
# Returns 0 (admitted, charged) or the ms until every subject has room (nothing charged).
CHECK = Script("""
local now = tonumber(ARGV[1])
local n = #KEYS / 2
local wait = 0
for i = 1, n do
  local burst = tonumber(ARGV[4 * i - 1])
  local window = tonumber(ARGV[4 * i])
  local hourly = tonumber(ARGV[4 * i + 1])
  local left = tonumber(ARGV[4 * i + 2])
  if burst > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[2 * i - 1], '-inf', now - window)
    local count = redis.call('ZCARD', KEYS[2 * i - 1])
    if count >= burst then
      local oldest = redis.call('ZRANGE', KEYS[2 * i - 1], count - burst, count - burst, 'WITHSCORES')
      local w = tonumber(oldest[2]) + window - now
      if w > wait then wait = w end
    end
  end
  if hourly > 0 and tonumber(redis.call('GET', KEYS[2 * i]) or '0') >= hourly then
    if left > wait then wait = left end
  end
end
if wait > 0 then return wait end
for i = 1, n do
  if tonumber(ARGV[4 * i - 1]) > 0 then
    redis.call('ZADD', KEYS[2 * i - 1], now, ARGV[2])
    redis.call('PEXPIRE', KEYS[2 * i - 1], ARGV[4 * i])
  end
  if tonumber(ARGV[4 * i + 1]) > 0 then
    redis.call('INCR', KEYS[2 * i])
    redis.call('PEXPIRE', KEYS[2 * i], tonumber(ARGV[4 * i + 2]) + 1000)
  end
end
return 0
""")


class RedisRateLimiter:
    def __init__(self, redis: Commands, *, prefix: str = "kdc", clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        # `{rl}`: every subject's keys in one cluster slot, so one check stays one atomic script
        # (under Redis Cluster the rate limits live on one shard)
        self.prefix = f"{prefix}:{{rl}}"
        self.clock = clock
        self._ids = itertools.count()
        self._me = f"{os.getpid()}.{id(self):x}"

    async def hit(self, subjects: Sequence[Subject]) -> float:
        if not subjects:
            return 0.0
        now = self.clock()
        now_ms = int(now * 1000)
        hour = int(now // HOUR_S)
        left_ms = max(1, int(((hour + 1) * HOUR_S - now) * 1000))
        keys: list[str] = []
        args: list[object] = [now_ms, f"{self._me}.{next(self._ids)}"]
        for sub in subjects:
            r = sub.rule
            keys += [f"{self.prefix}:{sub.key}:b", f"{self.prefix}:{sub.key}:h:{hour}"]
            args += [r.burst, max(1, int(r.window_s * 1000)), r.hourly, left_ms]
        wait_ms = await CHECK.run(self.redis, keys=keys, args=args)
        return int(wait_ms) / 1000
