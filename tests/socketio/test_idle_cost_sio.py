"""What an idle Socket.IO WebSocket holds, over real TCP: one task (its connection's), parked bare
on the socket's frame queue; no reader, session or namespace task. Its client is still heard: a
ping, a pong, an event with an ack and the client going away wake that one task through the
process's hang-up watch (server/hangup.py `notify`), and a client that stops answering pings is
closed by the heartbeat alarm."""

from __future__ import annotations

import json

import trio
import trio.testing

from tests.support.gateway import running_gateway, test_settings
from kdc_trio.metrics import trio_tasks
from tests.support.raw_ws import Closed, RawWS

SIO = "/socket.io/?EIO=4&transport=websocket"


def _connection_tasks() -> dict[str, int]:
    """Tasks a connection may hold, by name (what the previous design had per socket included)."""
    names = ("_run_connection", "_ws_reader", "_session_task", "_namespace_task", "_watch_client", "watch")
    counts: dict[str, int] = {}
    for t in trio_tasks():
        short = t.name.rsplit(".", 1)[-1]
        if short in names:
            counts[short] = counts.get(short, 0) + 1
    return counts


async def _connected(gw) -> tuple[RawWS, str]:
    ws = await RawWS.connect(gw.base_url, SIO)
    assert (await ws.recv()).startswith("0{")  # the open packet
    await ws.send("40")
    got = await ws.recv_until(lambda m: isinstance(m, str) and m.startswith('42["session_info"'))
    info = json.loads(got[-1][2:])[1]
    return ws, info["session_id"]


async def test_an_idle_socketio_websocket_is_one_task_and_its_client_is_still_heard():
    settings = test_settings(sio_ping_interval_ms=300, sio_ping_timeout_ms=2000)
    async with running_gateway(settings, with_worker=False) as gw:
        clients = [await _connected(gw) for _ in range(3)]
        with trio.fail_after(5):
            while len(gw.server.hangups) < 3:
                await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()
        assert gw.counters.sio_sockets == 3
        assert _connection_tasks() == {"_run_connection": 3}  # one task per idle socket
        for sock in gw.engineio.sockets.values():
            assert sock._out._waiter is not None, "parked bare on its frames, not in a lot under a scope"

        ws, session_id = clients[0]
        # The server pings (an alarm), the client's pong is read by the connection's task: after
        # several ping intervals the socket is still open.
        for _ in range(3):
            await ws.recv_until(lambda m: m == "2")
            await ws.send("3")
        # An event with an ack, read on readability and answered.
        await ws.send('421["ping"]')
        got = await ws.recv_until(lambda m: isinstance(m, str) and m.startswith("431["))
        assert json.loads(got[-1][3:])[0]["ok"] is True
        # Relay events reach the idle socket.
        from kdc_trio.relay.keys import SessionKey

        s = gw.settings
        await gw.relay.publish(SessionKey(s.default_tenant, s.default_project, session_id),
                               event="chat_delta", data={"text": "hi"})
        got = await ws.recv_until(lambda m: isinstance(m, str) and m.startswith('42["chat_delta"'))
        assert json.loads(got[-1][2:])[1]["text"] == "hi"
        await trio.testing.wait_all_tasks_blocked()
        assert _connection_tasks() == {"_run_connection": 3}

        # A client that goes away is noticed: its socket, its namespace and its watch are gone.
        await clients[1][0].aclose()
        with trio.fail_after(5):
            while gw.counters.sio_sockets > 2 or len(gw.server.hangups) > 2:
                await trio.sleep(0.01)
        for c, _ in (clients[0], clients[2]):
            await c.aclose()
        with trio.fail_after(5):
            while gw.counters.sio_sockets or gw.engineio.sockets or len(gw.server.hangups):
                await trio.sleep(0.01)


async def test_an_idle_socketio_websocket_that_stops_answering_pings_is_closed():
    settings = test_settings(sio_ping_interval_ms=200, sio_ping_timeout_ms=200)
    async with running_gateway(settings, with_worker=False) as gw:
        ws, _ = await _connected(gw)
        t0 = trio.current_time()
        with trio.fail_after(5):
            while not isinstance(m := await ws.recv(), Closed):
                assert m == "2"  # pings, never answered
        assert 0.3 <= trio.current_time() - t0 < 2.0
        with trio.fail_after(5):
            while gw.counters.sio_sockets or gw.engineio.sockets:
                await trio.sleep(0.01)
        await ws.aclose()


async def test_events_that_arrive_while_the_one_task_writes_a_write_through_rest_are_not_left_waiting():
    """A write-through that did not fit leaves bytes for the socket's task; an event offered
    while that task writes them (its wake-up finds the task busy) goes out when the write ends,
    not at the next heartbeat ping (pingInterval 25 s here)."""
    from kdc_trio.relay.keys import SessionKey

    async with running_gateway(test_settings(), with_worker=False) as gw:
        ws = await RawWS.connect(gw.base_url, SIO, rcvbuf=4096)
        assert (await ws.recv()).startswith("0{")
        await ws.send("40")
        got = await ws.recv_until(lambda m: isinstance(m, str) and m.startswith('42["session_info"'))
        session_id = json.loads(got[-1][2:])[1]["session_id"]
        s = gw.settings
        key = SessionKey(s.default_tenant, s.default_project, session_id)
        await gw.relay.publish(key, event="chat_delta", data={"text": "x" * 4_000_000})  # does not fit
        await trio.sleep(0.2)  # the socket's task is now writing the rest, blocked on the client
        await gw.relay.publish(key, event="chat_delta", data={"text": "after"})
        texts = []
        with trio.fail_after(5):
            while "after" not in texts:
                m = await ws.recv(timeout=5, max_bytes=1 << 20)
                if isinstance(m, str) and m.startswith('42["chat_delta"'):
                    texts.append(json.loads(m[2:])[1]["text"][:5])
        assert texts == ["xxxxx", "after"]
        await ws.aclose()
