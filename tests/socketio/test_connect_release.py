"""Every acquire has its release: a Socket.IO CONNECT that fails, is refused or loses its socket
half-way leaves no relay subscription, counter or task behind, and an error ends in CONNECT_ERROR.

Real components: the gateway on a real Redis, python-socketio's client, raw polling requests.
"""

from __future__ import annotations

import json

import httpx
import trio
import trio.testing

from kdc_trio.gateway import Gateway
from kdc_trio.redis.client import RedisClient
from kdc_trio.relay.keys import SessionKey
from tests.support.gateway import running_gateway, test_settings
from tests.support.redis_server import redis_server
from tests.support.sio_client import SioResult, run_sio


async def channels(redis: RedisClient) -> set[str]:
    return {c.decode() for c in await redis.execute("PUBSUB", "CHANNELS")}


async def wait_released(gw: Gateway, redis: RedisClient | None = None) -> None:
    """Until nothing of any socket is held: relay entries, bus subscriptions, counters, Redis."""
    with trio.move_on_after(10):
        while (gw.relay.statistics()["sessions"] or gw.counters.sio_sockets
               or gw.bus.statistics().get("subscribed_channels", gw.bus.statistics().get("subscribed_sessions"))
               or (redis is not None and await channels(redis))):
            await trio.sleep(0.02)
    assert gw.relay.statistics()["sessions"] == 0 and gw.relay.statistics()["connections"] == 0
    assert gw.counters.sio_sockets == 0
    stats = gw.bus.statistics()
    assert stats.get("subscribed_channels", stats.get("subscribed_sessions")) == 0
    if redis is not None:
        assert await channels(redis) == set()


async def idle(sio, res: SioResult) -> None:
    await res.wait_for(lambda r: r.of("session_info"))


async def test_a_failed_replay_is_a_connect_error_and_releases_everything():
    with redis_server() as srv:
        redis = RedisClient(srv.url)
        settings = test_settings(redis_url=srv.url)
        async with running_gateway(settings) as gw:
            first = await run_sio(gw.base_url, idle, transports=["websocket"])
            info = first.of("session_info")[0]
            await wait_released(gw, redis)
            # the session's log is now unreadable (a WRONGTYPE reply to LRANGE)
            key = SessionKey(info["tenant"], info["project"], info["session_id"])
            await redis.execute("SET", gw.bus._log_key(key), "not a list")
            for transports in (["websocket"], ["polling"]):
                res = await run_sio(gw.base_url, idle, transports=transports,
                                    auth={"user_session_id": info["session_id"], "last_event_id": "0"})
                assert not res.connected
                assert isinstance(res.connect_error, dict), res.connect_error
                assert res.connect_error["message"] == "relay_unavailable"
                assert res.connect_error["data"]["status"] == 503
                await wait_released(gw, redis)
            # the same session without a replay still connects, and leaves nothing behind either
            ok = await run_sio(gw.base_url, idle, transports=["websocket"],
                               auth={"user_session_id": info["session_id"]})
            assert ok.connected and ok.of("session_info")[0]["session_id"] == info["session_id"]
            await wait_released(gw, redis)
        await redis.aclose()


async def _poll_open(client: httpx.AsyncClient) -> str:
    r = await client.get("/socket.io/?EIO=4&transport=polling")
    assert r.status_code == 200, r.text
    return json.loads(r.text[1:])["sid"]


async def test_a_socket_closed_mid_connect_leaves_no_subscription():
    """The CONNECT waits on a paused Redis while the client closes the socket (a `1` packet)."""
    with redis_server() as srv:
        redis = RedisClient(srv.url)
        settings = test_settings(redis_url=srv.url)
        async with running_gateway(settings) as gw, \
                httpx.AsyncClient(base_url=gw.base_url, timeout=20) as client:
            sid = await _poll_open(client)
            url = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
            await redis.execute("CLIENT", "PAUSE", "1500", "ALL")
            replies: list[int] = []

            async def connect() -> None:
                replies.append((await client.post(url, content=b"40{}")).status_code)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(connect)
                # the client, the gateway and the test share one Trio run: once every task is
                # parked, the CONNECT is inside the gateway, waiting on the paused Redis
                await trio.testing.wait_all_tasks_blocked(cushion=0.1)
                assert not replies
                close = await client.post(url, content=b"1")
                assert close.status_code == 200
            await wait_released(gw, redis)
            assert replies == [200], "the CONNECT's request ends normally"
        await redis.aclose()


async def test_a_refused_connect_leaves_nothing():
    settings = test_settings(ws_reject_anonymous=True)
    async with running_gateway(settings) as gw:
        res = await run_sio(gw.base_url, idle, transports=["websocket"])
        assert res.connect_error["message"] == "authentication_required"
        await wait_released(gw)


async def test_a_refused_polling_connect_is_answered_after_its_post():
    """The CONNECT_ERROR travels after the `ok` of the POST that carried the CONNECT (as every
    packet's answer does): python-socketio's polling client then closes at once; answered
    before it, the client sometimes waited for the next ping (25 s) to let go."""
    settings = test_settings(ws_reject_anonymous=True, sio_ping_interval_ms=600_000)
    async with running_gateway(settings) as gw:
        for _ in range(8):
            res = await run_sio(gw.base_url, idle, transports=["polling"], timeout=20)
            assert res.connect_error["message"] == "authentication_required"
        await wait_released(gw)


async def test_a_connect_while_redis_is_down_is_a_connect_error_and_holds_nothing():
    with redis_server() as srv:
        settings = test_settings(redis_url=srv.url)
        async with running_gateway(settings) as gw:
            ok = await run_sio(gw.base_url, idle, transports=["websocket"])
            sid = ok.of("session_info")[0]["session_id"]
            srv.kill()
            for transports in (["websocket"], ["polling"]):
                res = await run_sio(gw.base_url, idle, transports=transports, auth={"user_session_id": sid})
                assert not res.connected
                assert res.connect_error["message"] == "service_unavailable", res.connect_error
                assert res.connect_error["data"]["status"] == 503
            await wait_released(gw)
