"""What the Redis-backed stores need from a client, whichever backend provides it.

`Commands` is the small surface (`execute`, `pipeline`) both backends (the native trio RESP
client and the redis-py compat one) offer; `Script` runs a Lua script by SHA and falls back to
EVAL once when the server does not know it (NOSCRIPT); `text` decodes a bulk reply.
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol, Sequence


class Commands(Protocol):
    async def execute(self, *args: Any) -> Any: ...

    async def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]: ...


def text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8")
    return str(value)


async def transaction(redis: Commands, commands: Sequence[Sequence[Any]]) -> list[Any]:
    """MULTI … EXEC in one round trip; returns EXEC's replies."""
    replies = await redis.pipeline([("MULTI",), *commands, ("EXEC",)])
    result = replies[-1]
    if isinstance(result, Exception):
        raise result
    return list(result or [])


class Script:
    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def run(self, redis: Commands, *, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        try:
            return await redis.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except Exception as exc:
            if "NOSCRIPT" not in str(exc):
                raise
        return await redis.execute("EVAL", self.source, len(keys), *keys, *args)
