"""A Socket.IO WebSocket connection that its client ends (a close frame, or the TCP connection
dropped) is freed by reference counting when it ends: nothing of it waits in a reference cycle
for the garbage collector, whose full collections grow with every object a busy process holds
(~0.4 s at 10,000 connections on this machine)."""

from __future__ import annotations

import gc
import json

import httpx
import trio
from wsproto.events import CloseConnection

from kdc_trio.server.websocket import WebSocket
from kdc_trio.transports.eio_socket import EIOSocket
from tests.socketio.test_connect_release import wait_released
from tests.support.gateway import running_gateway, test_settings
from tests.support.raw_ws import RawWS


def alive(kind: type) -> int:
    return sum(1 for o in gc.get_objects() if type(o) is kind)


async def _connect(base_url: str) -> RawWS:
    ws = await RawWS.connect(base_url, "/socket.io/?EIO=4&transport=websocket")
    await ws.recv_until(lambda m: isinstance(m, str) and m.startswith("0"))
    await ws.send("40")
    await ws.recv_until(lambda m: isinstance(m, str) and m.startswith('42["session_info"'))
    return ws


async def _upgraded(base_url: str) -> RawWS:
    """Polling first, then the WebSocket upgrade (the probe), as browsers' clients connect."""
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:
        r = await http.get("/socket.io/?EIO=4&transport=polling")
        sid = json.loads(r.text[1:])["sid"]
        ws = await RawWS.connect(base_url, f"/socket.io/?EIO=4&transport=websocket&sid={sid}")
        await ws.send("2probe")
        assert await ws.recv() == "3probe"
        await ws.send("5")
        await ws.send("40")
        await ws.recv_until(lambda m: isinstance(m, str) and m.startswith('42["session_info"'))
        return ws


async def test_sockets_ended_by_their_clients_leave_nothing_for_the_collector():
    gc.collect()
    gc.disable()  # only reference counting frees anything from here on
    try:
        async with running_gateway(test_settings()) as gw:
            before = alive(WebSocket), alive(EIOSocket)
            for how in ("close frame", "dropped", "upgraded, close frame", "upgraded, dropped"):
                ws = await (_upgraded if how.startswith("upgraded") else _connect)(gw.base_url)
                assert alive(WebSocket) == before[0] + 1
                if how.endswith("close frame"):
                    await ws.stream.send_all(ws.ws.send(CloseConnection(code=1000)))
                    await ws.recv_until(lambda m: False)  # until the server's close frame
                await ws.aclose()
                await wait_released(gw)
                with trio.fail_after(5):  # the connection's task ends just after the release
                    while alive(WebSocket) > before[0]:
                        await trio.sleep(0.01)
                assert (alive(WebSocket), alive(EIOSocket)) == before, how
    finally:
        gc.enable()
