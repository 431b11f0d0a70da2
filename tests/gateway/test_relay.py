"""The relay: one subscription task per session while it has connections; fan-out; outbox policy."""

from __future__ import annotations

import httpx
import trio

from kdc_trio.relay.bus import MemoryBus
from kdc_trio.relay.chat_relay import ChatRelayCommunicator
from kdc_trio.relay.keys import SessionKey
from kdc_trio.relay.outbox import CloseReason, Outbox
from tests.support.gateway import running_gateway
from tests.support.sse_client import open_stream

KEY = SessionKey("t", "p", "s1")


async def test_refcount_0_2_0_starts_and_ends_one_subscription():
    bus = MemoryBus()
    relay = ChatRelayCommunicator(bus)
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.run)
        a, b = Outbox("a", 10), Outbox("b", 10)
        assert relay.refcount(KEY) == 0 and KEY not in bus.subscribed_keys()
        await relay.acquire_session_channel(KEY, a)
        await relay.acquire_session_channel(KEY, b)
        assert relay.refcount(KEY) == 2 and relay.subscriptions_started == 1
        assert bus.subscribed_keys() == {KEY}
        await relay.publish(KEY, event="chat_delta", data={"n": 1})
        await relay.publish(KEY, event="chat_delta", data={"n": 2}, target_sid="b")
        with trio.fail_after(2):
            got_a, got_b = await a.take(), await b.take()
        assert [m.data["n"] for m in got_a] == [1] and [m.data["n"] for m in got_b] == [1, 2]
        relay.release_session_channel(KEY, a)
        assert relay.subscriptions_ended == 0
        relay.release_session_channel(KEY, b)
        await trio.testing.wait_all_tasks_blocked()
        assert relay.subscriptions_started == 1 and relay.subscriptions_ended == 1
        assert KEY not in bus.subscribed_keys() and relay.refcount(KEY) == 0
        nursery.cancel_scope.cancel()


async def test_linger_reuses_the_subscription(autojump_clock):
    bus = MemoryBus()
    relay = ChatRelayCommunicator(bus, linger_s=2.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.run)
        a = Outbox("a", 10)
        await relay.acquire_session_channel(KEY, a)
        relay.release_session_channel(KEY, a)
        await trio.sleep(1.0)
        await relay.acquire_session_channel(KEY, a)  # back within the linger: same subscription
        assert relay.subscriptions_started == 1 and relay.subscriptions_ended == 0
        relay.release_session_channel(KEY, a)
        await trio.sleep(2.5)
        assert relay.subscriptions_ended == 1 and KEY not in bus.subscribed_keys()
        nursery.cancel_scope.cancel()


async def test_full_outbox_closes_only_that_connection():
    bus = MemoryBus()
    relay = ChatRelayCommunicator(bus)
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.run)
        slow, fast = Outbox("slow", 3), Outbox("fast", 100)
        await relay.acquire_session_channel(KEY, slow)
        await relay.acquire_session_channel(KEY, fast)
        for i in range(10):
            await relay.publish(KEY, event="chat_delta", data={"n": i})
        await trio.testing.wait_all_tasks_blocked()
        assert slow.closed_reason is not None and slow.closed_reason.reason is CloseReason.OUTBOX_FULL
        assert fast.closed_reason is None and len(await fast.take()) == 10
        nursery.cancel_scope.cancel()


async def test_gateway_subscribes_a_session_only_while_it_has_streams():
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        async with trio.open_nursery() as nursery:
            a = await open_stream(nursery, client, "/sse/stream?stream_id=a")
            sid = a.ready["session_id"]
            key = SessionKey("home", "demo", sid)
            assert gw.relay.refcount(key) == 1
            async with trio.open_nursery() as inner:
                await open_stream(inner, client, f"/sse/stream?stream_id=b&user_session_id={sid}")
                assert gw.relay.refcount(key) == 2 and gw.relay.subscriptions_started == 1
                inner.cancel_scope.cancel()
            with trio.fail_after(5):
                while gw.relay.refcount(key) != 1:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        with trio.fail_after(5):
            while gw.relay.refcount(key) != 0 or gw.bus.subscribed_keys():
                await trio.sleep(0.01)
        assert gw.relay.subscriptions_started == gw.relay.subscriptions_ended == 1
