"""After a Redis pub/sub reconnect the bus reads each channel's log back to fill the outage; a
channel that had delivered nothing yet is read from where its subscription began, not from the
start of the session's log.

Before: the read started at seq 0 for such a channel, so a stream opened fresh (no Last-Event-ID)
on a session with history got the whole log again as live events after any pub/sub blip, events
published before it existed included.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

import httpx
import trio

from kdc_trio.redis.client import RedisClient
from kdc_trio.relay.keys import SessionKey
from tests.support.gateway import running_gateway, test_settings
from tests.support.redis_server import redis_server
from tests.support.sse_client import open_stream


@asynccontextmanager
async def redis_gateway():
    """A gateway on its own redis-server, an HTTP client for it, and a Redis client of the test's."""
    with redis_server() as srv:
        redis = RedisClient(srv.url)
        try:
            async with running_gateway(test_settings(redis_url=srv.url)) as gw, \
                    httpx.AsyncClient(base_url=gw.base_url, timeout=20) as client:
                yield gw, client, redis
        finally:
            await redis.aclose()


async def test_a_fresh_stream_gets_no_old_events_after_a_pubsub_reconnect():
    async with redis_gateway() as (gw, client, redis):
        async with trio.open_nursery() as nursery:
            first = await open_stream(nursery, client, "/sse/stream?stream_id=old")
            sid = first.ready["session_id"]
            key = SessionKey(first.ready["tenant"], first.ready["project"], sid)
            for i in range(3):  # the session's history, before the fresh stream exists
                await gw.relay.publish(key, event="chat_delta", data={"text": f"old {i}"})
            await first.wait_event("chat_delta", 3)
            nursery.cancel_scope.cancel()
        with trio.fail_after(10):  # the old stream's subscription is gone (linger 0)
            while gw.relay.statistics()["sessions"]:
                await trio.sleep(0.02)
        async with trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, f"/sse/stream?stream_id=fresh&user_session_id={sid}")
            reconnects = gw.bus.statistics()["recovered_after_gap"]
            assert await redis.execute("CLIENT", "KILL", "TYPE", "pubsub")
            with trio.fail_after(10):  # back and re-subscribed
                while sum(1 for _ in (await redis.execute("PUBSUB", "CHANNELS")) or ()) == 0:
                    await trio.sleep(0.02)
            await trio.sleep(0.5)  # the log read after the reconnect has run
            await gw.relay.publish(key, event="chat_delta", data={"text": "new"})
            await st.wait_event("chat_delta")
            await trio.sleep(0.2)
            nursery.cancel_scope.cancel()
        texts = [e.data["delta"]["text"] if "delta" in e.data else e.data.get("text")
                 for e in st.of("chat_delta")]
        assert texts == ["new"], texts
        assert gw.bus.statistics()["recovered_after_gap"] == reconnects


async def test_a_log_that_cannot_be_read_after_a_pubsub_reconnect_ends_the_sessions_connections(monkeypatch):
    """What a pub/sub outage hid is unknown when the log read after it fails: the session's
    connections end (relay_failed) so they resume from the log, instead of going on as if nothing
    had been missed (before: logged, and the gap silently skipped)."""
    async with redis_gateway() as (gw, client, redis):
        async with trio.open_nursery() as nursery:
            await open_stream(nursery, client, "/sse/stream?stream_id=s")
            assert gw.relay.statistics()["sessions"] == 1

            async def unreadable(key, after_seq):
                raise ConnectionError("log unreadable")

            monkeypatch.setattr(gw.bus, "history", unreadable)
            assert await redis.execute("CLIENT", "KILL", "TYPE", "pubsub")
            with trio.fail_after(10):
                while gw.relay.statistics()["sessions"]:
                    await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
        assert gw.counters.closed_slow == 1
