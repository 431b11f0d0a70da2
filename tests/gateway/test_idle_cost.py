"""What an idle connection holds: no task per session subscription, no task per stream for the drain."""

from __future__ import annotations

from contextlib import AsyncExitStack

import trio

from kdc_trio.metrics import trio_tasks
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


async def _stream_tasks(gw) -> int:
    """Tasks under the server's handler nursery: one per connection and what each opened."""
    return sum(t.name.endswith(("_run_connection", "_watch_client", "watch")) for t in trio_tasks())


async def test_an_idle_sse_stream_is_one_task_and_a_client_that_goes_or_talks_is_noticed():
    """The process's hang-up watch (server/hangup.py) reads every idle stream's socket: the stream
    holds no reader task of its own, and a client that closes, or sends more than it may, is
    noticed and its stream unregistered."""
    from kdc_trio.server.connection import MAX_STRAY_BYTES
    from tests.server.raw import connect, send
    from tests.support.gateway import running_gateway, test_settings

    async with running_gateway(test_settings(), with_worker=False) as gw:
        port = int(gw.base_url.rsplit(":", 1)[1])
        clients = [await connect(port) for _ in range(3)]
        for i, c in enumerate(clients):
            await send(c, f"GET /sse/stream?stream_id=idle{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        with trio.fail_after(5):
            for c in clients:
                data = b""
                while b"event: ready" not in data:
                    data += await c.receive_some(4096)
            while len(gw.server.hangups) < 3:
                await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()
        assert gw.counters.sse_streams == 3
        assert await _stream_tasks(gw) == 3  # one task per idle stream, its writer
        await clients[0].aclose()  # goes away
        await send(clients[1], b"x" * (MAX_STRAY_BYTES + 1))  # talks more than a stream client may
        with trio.fail_after(5):
            while gw.counters.sse_streams > 1 or gw.ports.streams.get("idle0") or gw.ports.streams.get("idle1"):
                await trio.sleep(0.01)
        assert len(gw.server.hangups) == 1 and gw.ports.streams.get("idle2") is not None
        await clients[2].aclose()
        with trio.fail_after(5):
            while gw.counters.sse_streams:
                await trio.sleep(0.01)
        assert len(gw.server.hangups) == 0


async def test_an_idle_stream_gets_heartbeats_from_the_process_timer_while_its_writer_parks_alone():
    """No cancel scope per idle writer: the process's timer (util/timers.py) wakes it when its
    stream has been silent for KDC_SSE_HEARTBEAT_S; the idle writer parks on its outbox alone."""
    from tests.server.raw import connect, send
    from tests.support.gateway import running_gateway, test_settings

    async with running_gateway(test_settings(sse_heartbeat_s=0.05), with_worker=False) as gw:
        port = int(gw.base_url.rsplit(":", 1)[1])
        c = await connect(port)
        await send(c, b"GET /sse/stream?stream_id=hb HTTP/1.1\r\nHost: t\r\n\r\n")
        data = b""
        with trio.fail_after(5):
            while data.count(b": heartbeat") < 3:
                data += await c.receive_some(4096)
        assert data.index(b"event: ready") < data.index(b": heartbeat")
        await trio.testing.wait_all_tasks_blocked()
        (outbox,) = gw.ports.streams._outboxes
        assert outbox._q._waiter is not None, "parked bare on its outbox, not in a lot under a cancel scope"
        await c.aclose()
        with trio.fail_after(5):
            while gw.counters.sse_streams:
                await trio.sleep(0.01)
