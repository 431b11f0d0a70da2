"""End to end, in memory and through a real Redis: a flood of big events stays within the log
budget, spares a smaller session's log (its Last-Event-ID replay keeps its 16 events), and a
client whose resume point was evicted gets `chat_service` `stream.gap` with the first sequence
still held — over SSE `Last-Event-ID` and over Socket.IO `last_event_id` alike."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import httpx
import pytest
import trio

from kdc_trio.gateway import Gateway
from kdc_trio.redis.client import RedisClient
from kdc_trio.relay.keys import SessionKey
from tests.support.gateway import running_gateway, test_settings
from tests.support.redis_server import redis_server
from tests.support.sio_client import SioResult, run_sio
from tests.support.sse_client import open_stream

SHARE = 256 * 1024
BUDGET = 2 << 20
BIG = "x" * 32_000


@asynccontextmanager
async def gateway(backend: str) -> AsyncIterator[tuple[Gateway, RedisClient | None]]:
    kw = dict(session_log_bytes=SHARE, session_log_budget_bytes=BUDGET)
    if backend == "memory":
        async with running_gateway(test_settings(**kw)) as gw:
            yield gw, None
        return
    with redis_server() as srv:
        redis = RedisClient(srv.url)
        try:
            async with running_gateway(test_settings(redis_url=srv.url, **kw)) as gw:
                yield gw, redis
        finally:
            await redis.aclose()


async def new_session(client: httpx.AsyncClient) -> dict:
    async with trio.open_nursery() as nursery:
        st = await open_stream(nursery, client, "/sse/stream?stream_id=new")
        nursery.cancel_scope.cancel()
    return st.ready


async def resume_sse(client: httpx.AsyncClient, sid: str, last_id: int, count: int) -> list:
    """The events a stream resumed after `last_id` gets, until `count` chat_delta arrived."""
    async with trio.open_nursery() as nursery:
        st = await open_stream(nursery, client, f"/sse/stream?stream_id=back&user_session_id={sid}",
                               headers={"last-event-id": str(last_id)})
        await st.wait_event("chat_delta", count)
        nursery.cancel_scope.cancel()
    return [e for e in st.events if e.event != "ready"]


async def redis_log_bytes(gw: Gateway, redis: RedisClient) -> tuple[int, int]:
    """(the script's account of all logs' bytes, what the log lists really hold)."""
    real = 0
    for k in await redis.execute("KEYS", f"{gw.settings.redis_prefix}:log:*"):
        real += sum(len(m) for m in await redis.execute("LRANGE", k, 0, -1))
    return await gw.bus.log_bytes(), real


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_flood_spares_smaller_logs_and_an_evicted_resume_point_is_told(backend):
    async with gateway(backend) as (gw, redis), httpx.AsyncClient(base_url=gw.base_url, timeout=20) as client:
        victim, flooder = await new_session(client), await new_session(client)
        vkey = SessionKey(victim["tenant"], victim["project"], victim["session_id"])
        fkey = SessionKey(flooder["tenant"], flooder["project"], flooder["session_id"])
        for i in range(16):
            await gw.relay.publish(vkey, event="chat_delta", data={"text": f"victim {i}"})
        # one session floods (30 x 32 kB, past its share), then 40 more (past the budget)
        for i in range(30):
            await gw.relay.publish(fkey, event="chat_delta", data={"text": BIG, "i": i})
        for s in range(40):
            key = SessionKey(fkey.tenant, fkey.project, f"flood-{s}")
            for i in range(10):
                await gw.relay.publish(key, event="chat_delta", data={"text": BIG, "i": i})

        if redis is None:
            assert gw.bus.statistics()["log_bytes"] <= BUDGET
        else:
            accounted, real = await redis_log_bytes(gw, redis)
            assert accounted == real and real <= BUDGET, (accounted, real)

        got = await resume_sse(client, victim["session_id"], 0, 16)
        assert [e.event for e in got] == ["chat_delta"] * 16, "the victim's log is whole: no gap"
        assert [int(e.id) for e in got] == list(range(1, 17))

        # the flooder resumes from 0: told first, then what is held, from its first seq
        got = await resume_sse(client, flooder["session_id"], 0, 1)
        gap, first = got[0], got[1]
        assert gap.event == "chat_service" and gap.id == "", "the notice is not a logged event"
        assert gap.data["type"] == "stream.gap"
        assert gap.data["data"]["after_seq"] == 0 and gap.data["data"]["last_seq"] == 30
        assert gap.data["data"]["first_seq"] == int(first.id) > 1

        # a contiguous resume point: no notice
        got = await resume_sse(client, flooder["session_id"], 29, 1)
        assert [e.event for e in got] == ["chat_delta"] and got[0].id == "30"

        async def told(sio, res: SioResult) -> None:
            await res.wait_for(lambda r: r.of("chat_delta"))

        res = await run_sio(gw.base_url, told, transports=["websocket"],
                            auth={"user_session_id": flooder["session_id"], "last_event_id": "0"})
        names = [n for n in res.names() if n != "session_info"]
        assert names[:2] == ["chat_service", "chat_delta"], names
        notice = res.of("chat_service")[0]
        assert notice["type"] == "stream.gap" and notice["data"]["first_seq"] == res.of("chat_delta")[0]["seq"]
        assert gw.relay.statistics()["gaps_told"] == 2


async def test_live_messages_held_during_a_stuck_log_read_are_bounded(monkeypatch):
    """After a pub/sub gap the bus holds live messages while it reads the log back; if that read
    is stuck, the hold is capped: the session's connections are closed (they resume from the log)
    and nothing of the session stays subscribed."""
    monkeypatch.setattr("kdc_trio.relay.redis_bus.SUBSCRIPTION_BUFFER", 20)
    async with gateway("redis") as (gw, redis), httpx.AsyncClient(base_url=gw.base_url, timeout=20) as client:
        async with trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, "/sse/stream?stream_id=held")
            key = SessionKey(st.ready["tenant"], st.ready["project"], st.ready["session_id"])
            channel = key.channel(gw.settings.relay_prefix)
            gw.bus._resyncing[channel] = []  # as on_reconnect leaves it while _resync reads the log
            for i in range(25):
                await gw.relay.publish(key, event="chat_delta", data={"i": i})
            with trio.fail_after(10):
                while gw.relay.statistics()["sessions"]:
                    await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
        assert not gw.bus._resyncing.get(channel), "the held messages were dropped, not kept"
        assert not st.of("chat_delta"), "nothing was delivered out of order"
        with trio.fail_after(10):
            while await redis.execute("PUBSUB", "CHANNELS"):
                await trio.sleep(0.02)


def resp(*parts: object) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        b = p if isinstance(p, bytes) else str(p).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


async def test_a_redis_outage_longer_than_the_log_is_told_to_live_connections():
    """After a pub/sub reconnect the bus reads each channel's log past the last seq it delivered;
    when the log no longer reaches back that far, the session's live connections get stream.gap."""
    from kdc_trio.relay.redis_bus import PUBLISH

    async with gateway("redis") as (gw, redis), httpx.AsyncClient(base_url=gw.base_url, timeout=20) as client:
        async with trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, "/sse/stream?stream_id=live")
            key = SessionKey(st.ready["tenant"], st.ready["project"], st.ready["session_id"])
            await gw.relay.publish(key, event="chat_delta", data={"text": "seen"})
            await st.wait_event("chat_delta")
            # the outage, in one transaction: the pub/sub connection is killed and, before it
            # can be back, the session gets more than its log keeps (as another process would)
            tx = [resp("MULTI"), resp("CLIENT", "KILL", "TYPE", "pubsub")]
            for i in range(12):
                keys, args = gw.bus.publish_script_args(key, event="chat_delta", data={"text": BIG, "i": i})
                tx.append(resp("EVAL", PUBLISH.source, len(keys), *keys, *args))
            tx.append(resp("EXEC"))
            host, port = gw.settings.redis_url.split("//")[1].split("/")[0].split(":")
            sock = trio.socket.socket()
            await sock.connect((host, int(port)))
            await sock.send(b"".join(tx))
            reply = b""
            while b"*13\r\n" not in reply:  # EXEC's array of 13 replies
                reply += await sock.recv(65536)
            sock.close()
            gap = (await st.wait_event("chat_service", timeout=15))[0]
            nursery.cancel_scope.cancel()
        assert gap.data["type"] == "stream.gap" and gap.data["data"]["reason"] == "relay_gap"
        assert gap.data["data"]["after_seq"] == 1 and gap.data["data"]["first_seq"] > 2
        assert gw.bus.statistics()["log_gaps"] == 1


async def test_expired_redis_logs_leave_the_byte_account():
    """A log whose TTL passed is gone from Redis; the publish script forgets its bytes too."""
    with redis_server() as srv:
        redis = RedisClient(srv.url)
        settings = test_settings(redis_url=srv.url, session_log_ttl_s=1)
        try:
            async with running_gateway(settings) as gw:
                for s in range(5):
                    await gw.relay.publish(SessionKey("t", "p", f"old-{s}"), event="chat_delta", data={"text": BIG})
                assert (await gw.bus.log_bytes()) > 5 * 32_000
                await trio.sleep(2.5)  # every old log expires
                for i in range(16):  # the 16th publish of a session sweeps expired logs
                    await gw.relay.publish(SessionKey("t", "p", "new"), event="chat_delta", data={"i": i})
                accounted, real = await redis_log_bytes(gw, redis)
                assert accounted == real < 32_000, (accounted, real)
                assert await redis.execute("ZCARD", f"{settings.redis_prefix}:logbytes") == 1
        finally:
            await redis.aclose()


async def test_linger_0_rejoin_through_redis_gets_a_live_subscription():
    """With linger 0 the last leave tears the session's subscription down; a connection joining
    in the same instant gets a fresh one (Redis SUBSCRIBE included), never the dying entry."""
    from kdc_trio.relay.outbox import Outbox

    with redis_server() as srv:
        redis = RedisClient(srv.url)
        settings = test_settings(redis_url=srv.url, relay_linger_ms=0)
        try:
            async with running_gateway(settings) as gw:
                key = SessionKey("t", "p", "rejoin")
                channel = key.channel(settings.relay_prefix)
                a, b = Outbox("a", 10), Outbox("b", 10)
                async with gw.relay.session_channel(key, a):
                    pass
                async with gw.relay.session_channel(key, b):
                    await gw.relay.publish(key, event="chat_delta", data={"n": 1})
                    with trio.fail_after(5):
                        got = await b.take()
                    assert [m.data["n"] for m in got] == [1]
                    assert {c.decode() for c in await redis.execute("PUBSUB", "CHANNELS")} == {channel}
                with trio.fail_after(10):
                    while await redis.execute("PUBSUB", "CHANNELS") or gw.relay.statistics()["sessions"]:
                        await trio.sleep(0.02)
        finally:
            await redis.aclose()


async def test_a_publish_past_the_redis_log_budget_frees_about_what_it_adds():
    """The script call that finds all logs past the budget frees at most twice its own bytes +
    64 KiB (the largest logs' oldest events first), never a tenth of the budget in one call: a
    long Lua script stops Redis for every client, and every gateway's relay stalled with it (p99
    ~350 ms in `bench/run.py many --redis` once the budget filled). The account stays exact and
    within the budget."""
    async with gateway("redis") as (gw, redis):
        text = "z" * 2000
        most = 4096  # one event's published bytes, with room (2,000 chars + head and envelope)
        over = 0
        for i in range(1600):  # ~3.5 MB offered to a 2 MiB budget, 40 sessions
            key = SessionKey("t", "p", f"fill-{i % 40}")
            before = await gw.bus.log_bytes()
            await gw.relay.publish(key, event="chat_delta", data={"text": text, "i": i})
            after = await gw.bus.log_bytes()
            assert after <= BUDGET, (i, after)
            freed = before + most - after
            assert freed <= 2 * most + 65536 + most, (i, before, after)
            over += before + most > BUDGET
        assert over > 100, "the budget was reached and publishes went on past it"
        accounted, real = await redis_log_bytes(gw, redis)
        assert accounted == real <= BUDGET, (accounted, real)
