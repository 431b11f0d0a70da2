"""The gateway on a real Redis: per-session subscriptions by refcount, the turn end to end,
and a pub/sub gap filled from the session log."""

from __future__ import annotations

import httpx
import pytest
import trio

from kdc_trio.redis.client import RedisClient
from kdc_trio.relay.keys import SessionKey
from kdc_trio.relay.redis_bus import PUBLISH
from tests.gateway.test_e2e_sse import MARKERS
from tests.support.gateway import running_gateway, test_settings
from tests.support.redis_server import redis_server
from tests.support.sse_client import open_stream


async def command_calls(redis: RedisClient, name: str) -> int:
    info = (await redis.execute("INFO", "commandstats")).decode()
    for line in info.splitlines():
        if line.startswith(f"cmdstat_{name}:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


async def channels(redis: RedisClient) -> set[str]:
    return {c.decode() for c in await redis.execute("PUBSUB", "CHANNELS")}


async def test_two_streams_of_a_session_make_one_subscribe_and_one_unsubscribe():
    with redis_server() as srv:
        redis = RedisClient(srv.url)
        settings = test_settings(redis_url=srv.url)
        async with running_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
            assert await channels(redis) == set(), "no connection, no subscription"
            async with trio.open_nursery() as nursery:
                a = await open_stream(nursery, client, "/sse/stream?stream_id=a")
                sid = a.ready["session_id"]
                b = await open_stream(nursery, client, f"/sse/stream?stream_id=b&user_session_id={sid}")
                assert b.ready["session_id"] == sid
                key = SessionKey(a.ready["tenant"], a.ready["project"], sid)
                channel = key.channel(settings.relay_prefix)
                assert await channels(redis) == {channel}
                assert await command_calls(redis, "subscribe") == 1
                # another session posting elsewhere does not make this process subscribe to it
                other = await client.post("/sse/chat?stream_id=nobody", json={"message": "hi"})
                assert other.status_code in (202, 401, 403, 404)
                nursery.cancel_scope.cancel()
            with trio.fail_after(10):
                while await channels(redis):
                    await trio.sleep(0.02)
            assert await command_calls(redis, "unsubscribe") == 1
            assert await command_calls(redis, "subscribe") == 1
        await redis.aclose()


@pytest.mark.parametrize("backend", ["native", "compat"])
async def test_a_turn_end_to_end_through_redis_and_a_gap_filled_from_the_log(backend):
    with redis_server() as srv:
        redis = RedisClient(srv.url)
        settings = test_settings(redis_url=srv.url, redis_backend=backend)
        async with running_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
            async with trio.open_nursery() as nursery:
                st = await open_stream(nursery, client, "/sse/stream?stream_id=s1")
                sid = st.ready["session_id"]
                r = await client.post(f"/sse/chat?stream_id=s1&user_session_id={sid}",
                                      json={"message": {"text": "over redis"}})
                assert r.status_code == 202, r.text
                await st.wait_event("chat_complete", timeout=20)
                await st.wait_for(lambda s: any(e.data["data"]["state"] == "idle" for e in s.of("conv_status")))
                # The pub/sub connection is killed and, in the same pipeline, two events are
                # published: pub/sub cannot deliver them; the session log must.
                key = SessionKey(st.ready["tenant"], st.ready["project"], sid)
                await gw.bus.publish(key, event="chat_service", data={"n": 0})
                await st.wait_for(lambda s: s.of("chat_service"))
                bus = gw.bus
                cmds = [("CLIENT", "KILL", "TYPE", "pubsub")]
                for n in (1, 2):
                    keys, args = bus.publish_script_args(key, event="chat_service", data={"n": n})
                    cmds.append(("EVALSHA", PUBLISH.sha, len(keys), *keys, *args))
                await redis.pipeline(cmds)
                await st.wait_for(lambda s: len(s.of("chat_service")) == 3, timeout=10)
                metrics = (await client.get("/metrics")).text
                assert "kdc_redis_reconnects_total 1.0" in metrics
                assert "kdc_redis_gap_events_recovered_total 2.0" in metrics
                nursery.cancel_scope.cancel()
            assert bus.service.pubsub.gaps == 1 and bus.recovered == 2
        await redis.aclose()
    names = [e.event for e in st.events]
    assert names[names.index("chat_start")] == "chat_start" and "chat_complete" in names
    assert {e.data["delta"]["marker"] for e in st.of("chat_delta")} == MARKERS
    ids = [int(e.id) for e in st.events if e.id]
    assert ids == sorted(ids) and len(ids) == len(set(ids)), "the session sequence only grows"
    assert [e.data["n"] for e in st.of("chat_service")] == [0, 1, 2]


async def test_a_client_back_within_the_linger_causes_no_unsubscribe_subscribe_pair():
    with redis_server() as srv:
        redis = RedisClient(srv.url)
        settings = test_settings(redis_url=srv.url, relay_linger_ms=400)
        async with running_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
            async with trio.open_nursery() as nursery:
                first = await open_stream(nursery, client, "/sse/stream?stream_id=a")
                nursery.cancel_scope.cancel()
            sid = first.ready["session_id"]
            async with trio.open_nursery() as nursery:  # back at once: the subscription was kept
                await open_stream(nursery, client, f"/sse/stream?stream_id=a&user_session_id={sid}")
                assert await command_calls(redis, "subscribe") == 1
                assert await command_calls(redis, "unsubscribe") == 0
                nursery.cancel_scope.cancel()
            with trio.fail_after(5):  # gone for longer than the linger: unsubscribed once
                while await channels(redis):
                    await trio.sleep(0.02)
            assert await command_calls(redis, "unsubscribe") == 1
            assert gw.relay.subscriptions_started == 1
        await redis.aclose()


async def test_a_chat_post_on_a_fresh_stream_does_not_rewrite_the_session():
    """The stream's open wrote the session moments ago: the turn's post reads it and moves on
    (kdc_trio/sessions/resolver.py, SEEN_REFRESH_S); its only session write was a full rewrite
    (MULTI, DEL, HSET, EXPIRE, EXEC) on every post."""
    with redis_server() as srv:
        redis = RedisClient(srv.url)
        settings = test_settings(redis_url=srv.url)
        async with running_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
            async with trio.open_nursery() as nursery:
                st = await open_stream(nursery, client, "/sse/stream?stream_id=s1")
                sid = st.ready["session_id"]
                key = f"{settings.redis_prefix}:session:{sid}"
                stored = await redis.execute("HGETALL", key)
                await redis.execute("CONFIG", "RESETSTAT")
                r = await client.post(f"/sse/chat?stream_id=s1&user_session_id={sid}",
                                      json={"message": {"text": "no rewrite"}})
                assert r.status_code == 202, r.text
                await st.wait_event("chat_complete", timeout=20)
                assert await command_calls(redis, "hgetall") >= 1, "the post did read the session"
                assert await command_calls(redis, "multi") == 0
                assert await redis.execute("HGETALL", key) == stored
                nursery.cancel_scope.cancel()
        await redis.aclose()
