"""What a loop that talks to Redis does when Redis fails: back off, log, go on.

(Whether a failure means "Redis is unreachable" — lost, refused, or silent past a command
deadline — is `kdc_trio.errors.unavailable`: `RedisConnectionError` is an `Unavailable`.)

`REDIS_FAILURES` are the errors Redis (or the road to it) can cause: a lost or refused
connection, an error reply (`LOADING`, `NOGROUP` after a restart without persistence, `OOM`),
a command past its deadline. A background loop catches exactly these; anything else is a bug
in our code and propagates. `Backoff` is capped exponential backoff with full jitter, so
processes that lost Redis together do not come back in lockstep.
"""

from __future__ import annotations

import random

import trio

from kdc_trio.redis.connection import RedisConnectionError, RedisError

# RedisConnectionError covers RedisTimeoutError (a command past its deadline).
REDIS_FAILURES: tuple[type[BaseException], ...] = (RedisConnectionError, RedisError, trio.TooSlowError)
# First pause after a failure; it doubles per consecutive failure up to the loop's maximum.
BACKOFF_INITIAL_S = 0.05


class Backoff:
    def __init__(self, maximum: float = 5.0, *, initial: float = BACKOFF_INITIAL_S) -> None:
        self.initial = min(initial, maximum)
        self.maximum = maximum
        self._ceiling = self.initial
        self.failures = 0  # consecutive

    def next_delay(self) -> float:
        delay = random.uniform(0, self._ceiling)
        self._ceiling = min(self._ceiling * 2, self.maximum)
        self.failures += 1
        return delay

    async def sleep(self) -> float:
        delay = self.next_delay()
        await trio.sleep(delay)
        return delay

    def reset(self) -> None:
        self._ceiling = self.initial
        self.failures = 0
