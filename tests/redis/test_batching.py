"""ScriptBatcher on a real Redis: concurrent calls share pipelines, each gets its own reply in
call order, a flushed script cache is survived, an error reaches only its own caller."""

from __future__ import annotations

import pytest
import trio

from kdc_trio.redis.batching import ScriptBatcher
from kdc_trio.redis.client import RedisClient
from kdc_trio.redis.commands import Script
from kdc_trio.redis.connection import RedisError
from tests.support.redis_server import redis_server

INCR_AND_LOG = Script("""
if ARGV[1] == 'fail' then return redis.error_reply('ERR asked to fail') end
local n = redis.call('INCR', KEYS[1])
redis.call('RPUSH', KEYS[2], ARGV[1])
return n
""")


async def test_concurrent_calls_share_round_trips_and_keep_their_order():
    with redis_server() as srv:
        redis = RedisClient(srv.url)
        batcher = ScriptBatcher(redis, INCR_AND_LOG)
        got: dict[str, int] = {}
        async with trio.open_nursery() as nursery:
            await nursery.start(batcher.run)

            async def producer(name: str, count: int):
                last = 0
                for i in range(count):
                    n = await batcher.call(["n", "log"], [f"{name}{i}"])
                    assert n > last, "a producer's calls complete in its own order"
                    last = n
                got[name] = last

            async with trio.open_nursery() as producers:
                for p in "abcdefgh":
                    producers.start_soon(producer, p, 50)
            await redis.execute("SCRIPT", "FLUSH")  # the cache is gone: the next batch reloads it
            assert await batcher.call(["n", "log"], ["after-flush"]) == 401
            with pytest.raises(RedisError, match="asked to fail"):
                await batcher.call(["n", "log"], ["fail"])
            assert await batcher.call(["n", "log"], ["still-fine"]) == 402
            nursery.cancel_scope.cancel()
        log = [x.decode() for x in await redis.execute("LRANGE", "log", 0, -1)]
        assert len(log) == 402 and log[-2:] == ["after-flush", "still-fine"]
        for p in "abcdefgh":
            mine = [x for x in log if x.startswith(p) and x[1:].isdigit()]
            assert mine == [f"{p}{i}" for i in range(50)]
        assert batcher.calls == 403 and batcher.batches < 403 / 2, "concurrent calls were batched"
        await redis.aclose()


async def test_without_its_task_a_call_is_a_plain_script_run():
    with redis_server() as srv:
        redis = RedisClient(srv.url)
        assert await ScriptBatcher(redis, INCR_AND_LOG).call(["n", "log"], ["x"]) == 1
        await redis.aclose()
