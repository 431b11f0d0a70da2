"""The WebSocket layer (kdc_trio/server/websocket.py) through a wsproto client on a raw trio
socket: echo of text and binary, fragmented messages, the size limit's 1009, bad handshakes."""

from __future__ import annotations

import pytest
import trio
from wsproto.events import BytesMessage, CloseConnection, TextMessage

from kdc_trio.server import Router
from kdc_trio.server.websocket import WebSocketClosed
from tests.server.raw import exchange, serving
from tests.support.gateway import test_settings
from tests.support.raw_ws import Closed, RawWS

LIMIT = 1000


def router(closes: list[int]) -> Router:
    r = Router()

    async def echo(req, ex):
        ws = await ex.accept_websocket(max_message_bytes=LIMIT)
        try:
            while True:
                await ws.send(await ws.receive())
        except WebSocketClosed as exc:
            closes.append(exc.code)

    r.add("GET", "/ws", echo)
    return r


async def wait_for(closes: list[int]) -> None:
    with trio.fail_after(5):
        while not closes:
            await trio.sleep(0.01)


async def test_echo_of_text_binary_and_fragmented_messages():
    closes: list[int] = []
    async with serving(router(closes)) as (_, port):
        ws = await RawWS.connect(f"http://127.0.0.1:{port}", "/ws")
        await ws.send("hello")
        await ws.send(b"\x00\x01\xff")
        await ws.send("é" * (LIMIT // 2))  # 1000 bytes of UTF-8: just at the limit
        await ws.stream.send_all(ws.ws.send(TextMessage(data="frag", message_finished=False))
                                 + ws.ws.send(TextMessage(data="mented", message_finished=True)))
        await ws.stream.send_all(ws.ws.send(BytesMessage(data=b"\x01" * 600, message_finished=False)))
        await ws.stream.send_all(ws.ws.send(BytesMessage(data=b"\x02" * 400, message_finished=True)))
        echoed = [await ws.recv() for _ in range(5)]
        await ws.stream.send_all(ws.ws.send(CloseConnection(code=1000)))
        closed = await ws.recv()
        await wait_for(closes)
        await ws.aclose()
    assert echoed == ["hello", b"\x00\x01\xff", "é" * (LIMIT // 2), "fragmented", b"\x01" * 600 + b"\x02" * 400]
    assert isinstance(closed, Closed) and closed.code == 1000 and closes == [1000]


@pytest.mark.parametrize("fragmented", [False, True])
async def test_a_message_over_the_limit_closes_with_1009(fragmented):
    closes: list[int] = []
    async with serving(router(closes)) as (_, port):
        ws = await RawWS.connect(f"http://127.0.0.1:{port}", "/ws")
        await ws.send("fits")
        assert await ws.recv() == "fits"
        if fragmented:  # no single frame is over the limit, the message is
            for _ in range(3):
                await ws.stream.send_all(ws.ws.send(BytesMessage(data=b"x" * 400, message_finished=False)))
        else:
            await ws.send("x" * (LIMIT + 1))
        closed = await ws.recv()
        await wait_for(closes)
        await ws.aclose()
    assert isinstance(closed, Closed) and closed.code == 1009
    assert closes == [1009]


@pytest.mark.parametrize("headers", [
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n",  # no key
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: x\r\nSec-WebSocket-Version: 8\r\n",
    b"Connection: keep-alive\r\n",  # not an upgrade
], ids=["no-key", "version-8", "no-upgrade"])
async def test_bad_websocket_handshakes_get_400(headers):
    async with serving(router([])) as (_, port):
        r = await exchange(port, b"GET /ws HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n")
    assert r.status == 400 and r.json()["error"] == "bad_request" and r.json()["detail"]


class _SlowWriteConn:
    """What a WebSocket needs of an HTTPConnection (its stream's reads, send_raw, the write
    deadline in its settings) with writes held until released: the reader is caught mid-way
    through answering the peer's close."""

    def __init__(self, incoming: bytes) -> None:
        self.settings = test_settings()
        self.stream = self
        self.release = trio.Event()
        self._incoming = incoming

    async def receive_some(self, n: int) -> bytes:
        data, self._incoming = self._incoming, b""
        if not data:
            await trio.sleep_forever()
        return data

    async def send_raw(self, data: bytes) -> None:
        await self.release.wait()


async def test_a_send_racing_the_peers_close_is_client_gone_not_a_protocol_error():
    """While the reader answers a client's Close (its write in flight), the writer sends: that is
    ClientGone, which the transports handle (was: wsproto's LocalProtocolError, a traceback)."""
    from wsproto import Connection, ConnectionType

    from kdc_trio.server.io import ClientGone
    from kdc_trio.server.websocket import WebSocket

    conn = _SlowWriteConn(Connection(ConnectionType.CLIENT).send(CloseConnection(code=1000)))
    ws = WebSocket(conn, max_message_bytes=LIMIT)  # type: ignore[arg-type]
    closes: list[int] = []

    async def reader() -> None:
        with pytest.raises(WebSocketClosed) as exc:
            await ws.receive()
        closes.append(exc.value.code)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(ClientGone):
            await ws.send_many(["late event"])
        conn.release.set()
    assert closes == [1000]


async def test_a_close_frame_waits_at_most_one_write_deadline_even_cancelled_and_behind_the_lock():
    """The close frame's write is shielded (a cancelled connection still says why it closes), and
    bounded as a whole by one write deadline: here the write lock is held by a send that never
    finishes and the task is cancelled, and the close still returns."""
    from kdc_trio.server.websocket import WebSocket

    conn = _SlowWriteConn(b"")
    conn.settings = test_settings(write_timeout_s=0.2)
    ws = WebSocket(conn, max_message_bytes=LIMIT)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws.send, "stuck")  # holds the write lock forever
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        with trio.CancelScope() as scope:
            scope.cancel()
            await ws.close(1001, "going away")
        assert 0.15 <= trio.current_time() - start < 1.0
        nursery.cancel_scope.cancel()


async def test_framed_messages_go_out_as_they_are_between_ours():
    """`Framed` bytes (made once per event for every connection, protocol/wsframe.py) are written
    as they are, in order with messages framed here; a wsproto client reads them all."""
    from kdc_trio.server.websocket import Framed
    from protocol.wsframe import text_frame

    r = Router()

    async def burst(req, ex):
        ws = await ex.accept_websocket(max_message_bytes=LIMIT)
        await ws.send_many(["one", Framed(text_frame("two") + text_frame("é" * 200)), b"\x03",
                            Framed(text_frame("four"))])
        await ws.close()

    r.add("GET", "/ws", burst)
    async with serving(r) as (_, port):
        ws = await RawWS.connect(f"http://127.0.0.1:{port}", "/ws")
        got = [await ws.recv() for _ in range(5)]
        closed = await ws.recv()
        await ws.aclose()
    assert got == ["one", "two", "é" * 200, b"\x03", "four"]
    assert isinstance(closed, Closed) and closed.code == 1000


def test_a_wsproto_connection_is_lent_only_between_whole_messages():
    """websocket.py lends an idle WebSocket's wsproto Connection to the next reader: only when it
    is as a fresh one (this pins the wsproto internals `_lendable` reads)."""
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import Ping
    from wsproto.frame_protocol import FrameProtocol, Opcode

    from kdc_trio.server.websocket import _lendable

    client = FrameProtocol(client=True, extensions=[])
    c = Connection(ConnectionType.SERVER)
    assert _lendable(c)
    frame = client.send_data("hello", fin=True)
    c.receive_data(frame[:3])
    assert list(c.events()) == [] and not _lendable(c)  # a partial frame
    c.receive_data(frame[3:])
    assert [e.data for e in c.events()] == ["hello"] and _lendable(c)
    c.receive_data(client.send_data("frag", fin=False))
    assert [e.data for e in c.events()] == ["frag"] and not _lendable(c)  # a partial message
    c.receive_data(client.send_data("mented", fin=True))
    assert [e.data for e in c.events()] == ["mented"] and _lendable(c)
    c.receive_data(client._serialize_frame(Opcode.PING, b"p"))
    assert [type(e) for e in c.events()] == [Ping] and _lendable(c)
    c.receive_data(client.close(1000))
    assert [type(e) for e in c.events()] == [CloseConnection] and not _lendable(c)


async def test_messages_split_across_reads_on_two_websockets_at_once_each_arrive_whole():
    """Two WebSockets each mid-frame and mid-message at the same time: neither's parser is lent."""
    closes: list[int] = []
    async with serving(router(closes)) as (_, port):
        a = await RawWS.connect(f"http://127.0.0.1:{port}", "/ws")
        b = await RawWS.connect(f"http://127.0.0.1:{port}", "/ws")
        fa = a.ws.send(TextMessage(data="alpha-first", message_finished=False))
        fb = b.ws.send(BytesMessage(data=b"beta" * 10, message_finished=True))
        await a.stream.send_all(fa[:4])
        await b.stream.send_all(fb[:5])
        await trio.sleep(0.05)
        await a.stream.send_all(fa[4:])
        await b.stream.send_all(fb[5:])
        await trio.sleep(0.05)
        await b.send("gamma")  # b's parser is lent between its messages meanwhile; a's is mid-message
        await a.stream.send_all(a.ws.send(TextMessage(data="-second", message_finished=True)))
        assert [await b.recv(), await b.recv()] == [b"beta" * 10, "gamma"]
        assert await a.recv() == "alpha-first-second"
        await a.aclose()
        await b.aclose()


def test_a_wsproto_with_other_internals_lends_nothing():
    """Should a wsproto release rename what `_lendable` reads, WebSockets keep their own parser."""
    from kdc_trio.server.websocket import _lendable

    class Other:
        _state = None

    assert _lendable(Other()) is False  # type: ignore[arg-type]
