"""What an idle connection holds: no task per session subscription, no task per stream for the drain."""

from __future__ import annotations

from contextlib import AsyncExitStack

import trio

from kdc_trio.relay.bus import MemoryBus
from kdc_trio.relay.chat_relay import ChatRelayCommunicator
from kdc_trio.relay.keys import SessionKey
from kdc_trio.relay.outbox import CloseReason, Outbox
from kdc_trio.transports.expiry import LiveStreams, TokenDeadline
from kdc_trio.config import Settings


async def test_a_live_subscription_holds_no_task_and_its_failure_still_closes_its_connections():
    bus = MemoryBus()
    relay = ChatRelayCommunicator(bus)
    keys = [SessionKey("t", "p", f"s{i}") for i in range(20)]
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.run)
        async with AsyncExitStack() as stack:
            outboxes = [Outbox(k.session_id, 10) for k in keys]
            for k, ob in zip(keys, outboxes):
                await stack.enter_async_context(relay.session_channel(k, ob))
            await trio.testing.wait_all_tasks_blocked()
            assert relay._nursery is not None and len(relay._nursery.child_tasks) == 0
            assert bus.subscribed_keys() == set(keys)
            await relay.publish(keys[3], event="chat_delta", data={"n": 1})
            assert [m.data["n"] for m in await outboxes[3].take()] == [1]
            (sub,) = bus._subs[keys[5]]
            sub.fail(RuntimeError("bus gave up"))
            assert outboxes[5].closed_reason.reason is CloseReason.RELAY_FAILED
            assert relay.refcount(keys[5]) == 0 and keys[5] not in relay.local_sessions()
        await trio.testing.wait_all_tasks_blocked()
        assert bus.subscribed_keys() == set()
        assert relay.subscriptions_started == relay.subscriptions_ended == 20
        nursery.cancel_scope.cancel()


def test_close_all_closes_live_streams_and_any_added_after_the_drain_began():
    streams = LiveStreams()
    deadline = TokenDeadline(None, Settings())
    a, b = Outbox("a", 10), Outbox("b", 10)
    streams.add("a", "s", deadline, a)
    streams.close_all()
    assert a.closed_reason.reason is CloseReason.SERVER_SHUTDOWN
    streams.add("b", "s", deadline, b)
    assert b.closed_reason.reason is CloseReason.SERVER_SHUTDOWN
    streams.remove("a", deadline, a)
    streams.remove("b", deadline, b)
    assert streams.get("a") is None and not streams._outboxes
