"""The relay: a subscription per session while it has connections (no task while live); fan-out; outbox policy."""

from __future__ import annotations

from contextlib import AsyncExitStack

import httpx
import trio

from kdc_trio.relay.bus import MemoryBus
from kdc_trio.relay.chat_relay import ChatRelayCommunicator
from kdc_trio.relay.keys import SessionKey
from kdc_trio.relay.outbox import CloseReason, Outbox
from tests.support.gateway import running_gateway
from tests.support.sse_client import open_stream

KEY = SessionKey("t", "p", "s1")


async def join(relay: ChatRelayCommunicator, key: SessionKey, outbox: Outbox) -> AsyncExitStack:
    """Enter `relay.session_channel` and hand back the stack that leaves it (`await stack.aclose()`)."""
    stack = AsyncExitStack()
    await stack.enter_async_context(relay.session_channel(key, outbox))
    return stack


async def test_refcount_0_2_0_starts_and_ends_one_subscription():
    bus = MemoryBus()
    relay = ChatRelayCommunicator(bus)
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.run)
        a, b = Outbox("a", 10), Outbox("b", 10)
        assert relay.refcount(KEY) == 0 and KEY not in bus.subscribed_keys()
        ja = await join(relay, KEY, a)
        jb = await join(relay, KEY, b)
        assert relay.refcount(KEY) == 2 and relay.subscriptions_started == 1
        assert bus.subscribed_keys() == {KEY}
        await relay.publish(KEY, event="chat_delta", data={"n": 1})
        await relay.publish(KEY, event="chat_delta", data={"n": 2}, target_sid="b")
        with trio.fail_after(2):
            got_a, got_b = await a.take(), await b.take()
        assert [m.data["n"] for m in got_a] == [1] and [m.data["n"] for m in got_b] == [1, 2]
        await ja.aclose()
        assert relay.subscriptions_ended == 0
        await jb.aclose()
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
        async with relay.session_channel(KEY, a):
            pass
        await trio.sleep(1.0)
        async with relay.session_channel(KEY, a):  # back within the linger: same subscription
            assert relay.subscriptions_started == 1 and relay.subscriptions_ended == 0
        await trio.sleep(2.5)
        assert relay.subscriptions_ended == 1 and KEY not in bus.subscribed_keys()
        nursery.cancel_scope.cancel()


async def test_full_outbox_closes_only_that_connection():
    bus = MemoryBus()
    relay = ChatRelayCommunicator(bus)
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.run)
        slow, fast = Outbox("slow", 3), Outbox("fast", 100)
        held = [await join(relay, KEY, slow), await join(relay, KEY, fast)]
        for i in range(10):
            await relay.publish(KEY, event="chat_delta", data={"n": i})
        await trio.testing.wait_all_tasks_blocked()
        assert slow.closed_reason is not None and slow.closed_reason.reason is CloseReason.OUTBOX_FULL
        assert fast.closed_reason is None and len(await fast.take()) == 10
        for stack in held:
            await stack.aclose()
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


async def test_linger_0_never_hands_a_new_connection_an_entry_being_torn_down():
    """The last leave cancels the session task's scope; a connection joining before that task
    has ended gets a fresh subscription, not the dying one (which would never deliver)."""
    bus = MemoryBus()
    relay = ChatRelayCommunicator(bus, linger_s=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.run)
        a, b = Outbox("a", 10), Outbox("b", 10)
        async with relay.session_channel(KEY, a):
            pass
        async with relay.session_channel(KEY, b):  # at once: the old session task has not run yet
            await trio.testing.wait_all_tasks_blocked()
            assert relay.refcount(KEY) == 1 and bus.subscribed_keys() == {KEY}
            await relay.publish(KEY, event="chat_delta", data={"n": 1})
            with trio.fail_after(2):
                got = await b.take()
            assert [m.data["n"] for m in got] == [1]
        await trio.testing.wait_all_tasks_blocked()
        assert relay.refcount(KEY) == 0 and bus.subscribed_keys() == set()
        assert relay.subscriptions_started == relay.subscriptions_ended == 2
        nursery.cancel_scope.cancel()
