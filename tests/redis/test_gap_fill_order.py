"""After a pub/sub gap, the bus fills it from the session log *before* any live message of the new
connection is handed on, and reads the log from the last seq delivered before the gap.

Before: the bus began holding live messages only when it was told of the reconnect, and that is
told by a task (`PubSub._after_reconnect`) woken by the re-SUBSCRIBE's confirmation. The reader
hands on the messages of the read that carries the confirmation (and of any read before that task
runs) at once: a message published on the new connection right after the re-SUBSCRIBE was
delivered live, moving the bus's last delivered seq past the gap, and the log read that followed
started after it — the events published during the gap were skipped without a word. Seen in
tests/redis/test_sentinel.py's SSE failover test under load: `relay_gap=1, filled_from_log=0`,
one seq missing, the new master holding every seq.

Staged here on one real Redis, deterministically: the pub/sub connection is killed together with
a publish (one transaction: the event lands in the log while no connection listens); the tell of
the reconnect is delayed until an event published after the re-SUBSCRIBE has been read off the
new connection — the order a busy process's scheduler may produce.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest
import trio

from kdc_trio.gateway_redis import open_redis_parts
from kdc_trio.redis.client import RedisClient
from kdc_trio.redis.commands import transaction
from kdc_trio.relay.keys import SessionKey
from kdc_trio.relay.redis_bus import PUBLISH
from tests.support.gateway import test_settings
from tests.support.redis_server import redis_server

KEY = SessionKey("t", "p", "gap-order")


async def collect(sub, seqs: list[int]) -> None:
    async for batch in sub:
        seqs.extend(m.seq for m in batch)


async def wait_until(predicate, what: str, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)
    assert predicate(), what


@pytest.mark.parametrize("backend", ["native", "compat"])
async def test_an_event_read_live_before_the_reconnect_is_told_does_not_skip_the_gap(backend):
    with redis_server() as srv:
        redis = RedisClient(srv.url)
        async with AsyncExitStack() as stack:
            parts = await open_redis_parts(test_settings(redis_url=srv.url, redis_backend=backend), stack,
                                           listen=True)
            bus = parts.bus
            pubsub = bus.service.pubsub
            told = pubsub.on_reconnect  # the bus's gap filling, as wired
            tells: list[object] = []
            seqs: list[int] = []
            async with trio.open_nursery() as nursery:

                async def publish_then_tell(*channels) -> None:
                    # an event published once the new connection is subscribed is read off it ...
                    before = pubsub.received
                    assert await bus.publish(KEY, event="chat_delta", data={"text": "after"}) == 3
                    await wait_until(lambda: pubsub.received > before, "the live event was read")
                    await trio.sleep(0.05)
                    told(*channels)  # ... before the bus hears of the reconnect
                    tells.append(channels)

                pubsub.on_reconnect = lambda *channels: nursery.start_soon(publish_then_tell, *channels)
                await nursery.start(bus.run)
                async with bus.subscribe(KEY) as sub:
                    nursery.start_soon(collect, sub, seqs)
                    assert await bus.publish(KEY, event="chat_delta", data={"text": "before"}) == 1
                    await wait_until(lambda: seqs == [1], f"seq 1 delivered, got {seqs}")
                    # the connection dies; seq 2 is published while nobody listens (log only)
                    keys, args = bus.publish_script_args(KEY, event="chat_delta", data={"text": "during"})
                    await transaction(redis, [("CLIENT", "KILL", "TYPE", "pubsub"),
                                              ("EVAL", PUBLISH.source, len(keys), *keys, *args)])
                    await wait_until(lambda: bool(tells) and 3 in seqs, "the reconnect told, seq 3 delivered",
                                     timeout=20)
                    await trio.sleep(0.2)  # nothing else arrives
                    nursery.cancel_scope.cancel()
        await redis.aclose()
    assert seqs == [1, 2, 3], "every event once, in order: the gap's seq 2 from the log, before seq 3"
    # the log read (after seq 3 was published) returned seqs 2 and 3; the live copy of 3 was held
    # behind it and dropped as a duplicate
    assert bus.statistics()["recovered_after_gap"] == 2
