"""server/wire.py write-through: a non-blocking send from the relay's call; what the socket does not
take goes to the writer task, in order, under the write deadline. Real TCP sockets on loopback."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from kdc_trio.relay.message import RelayMessage
from kdc_trio.relay.outbox import CloseReason, Outbox
from kdc_trio.server.io import WriteDeadline
from kdc_trio.server.wire import Wire
from tests.support.gateway import running_gateway, test_settings


async def tcp_pair(sndbuf: int = 4096, rcvbuf: int = 4096) -> tuple[trio.SocketStream, trio.SocketStream]:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    client = trio.socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await client.connect(("127.0.0.1", port))
    server = await listener.accept()
    await listener.aclose()
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    return server, trio.SocketStream(client)


def pattern(n: int, start: int = 0) -> bytes:
    return bytes((start + i) % 251 for i in range(n))


async def test_a_partial_send_leaves_the_rest_to_the_writer_in_byte_order():
    server, client = await tcp_pair()
    woken = []
    wire = Wire(server, timeout=5)
    wire.on_pending = lambda: woken.append(True)
    assert wire.enabled and wire.can_write_now()
    big = pattern(1 << 20)  # far more than the socket buffers take in one send
    wire.write_nowait(big)
    assert woken == [True] and wire.pending is not None and 0 < len(wire.pending) < len(big)
    assert not wire.can_write_now(), "nothing may overtake the pending bytes"
    got = bytearray()
    tail = b"<after>"

    async def read() -> None:
        while len(got) < len(big) + len(tail):
            got.extend(await client.receive_some(1 << 16))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await wire.send(tail)  # the writer: the pending rest first, then its own bytes
    assert wire.pending is None and wire.can_write_now()
    assert bytes(got) == big + tail
    await server.aclose()
    await client.aclose()


async def test_a_stalled_client_behind_a_write_through_still_meets_the_write_deadline():
    server, client = await tcp_pair()
    wire = Wire(server, timeout=0.3)
    wire.on_pending = lambda: None
    wire.write_nowait(pattern(1 << 20))  # nobody reads: the socket fills, the rest is pending
    assert wire.pending is not None
    t0 = trio.current_time()
    with pytest.raises(WriteDeadline):
        await wire.send(b"")
    assert 0.25 < trio.current_time() - t0 < 3
    assert not wire.can_write_now(), "a connection past its deadline takes no more write-throughs"
    await server.aclose()
    await client.aclose()


async def test_a_slow_steady_reader_of_a_long_write_is_not_dropped_a_reader_that_stops_is():
    """The deadline covers each PROGRESS_BYTES of a write: 1 MiB read at ~320 KiB/s takes ~3 s,
    six write deadlines, and arrives whole; the same reader stopping halfway gets WriteDeadline."""
    from kdc_trio.server.wire import PROGRESS_BYTES

    for stops in (False, True):
        server, client = await tcp_pair()
        wire = Wire(server, timeout=0.5)
        big = pattern(1 << 20)
        got = bytearray()

        async def read() -> None:  # 32 KiB, then a pause of 0.1 s: a piece takes ~0.2 s
            ticks = 0
            while len(got) < len(big) and not (stops and len(got) > len(big) // 2):
                got.extend(await client.receive_some(1 << 16))
                if len(got) // (PROGRESS_BYTES // 2) > ticks:
                    ticks += 1
                    await trio.sleep(0.1)

        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            if stops:
                with pytest.raises(WriteDeadline):
                    await wire.send(big)
            else:
                await wire.send(big)
                assert trio.current_time() - t0 > 3 * wire.timeout, "longer than one deadline in all"
        if not stops:
            assert bytes(got) == big
        await server.aclose()
        await client.aclose()


async def test_no_write_through_while_a_send_is_under_way():
    server, client = await tcp_pair()
    wire = Wire(server, timeout=5)
    seen = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wire.send, pattern(1 << 20))  # blocks on the full socket
        await trio.testing.wait_all_tasks_blocked()
        seen.append(wire.can_write_now())
        got = 0
        while got < 1 << 20:
            got += len(await client.receive_some(1 << 16))
    assert seen == [False] and wire.can_write_now()
    await server.aclose()
    await client.aclose()


def test_a_memory_stream_has_no_write_through():
    send, _ = trio.testing.memory_stream_pair()
    wire = Wire(send, timeout=1)
    assert not wire.enabled and not wire.can_write_now()
    server_off = Wire(send, timeout=1, write_through=False)
    assert not server_off.enabled


def msg(seq: int, target: str | None = None) -> RelayMessage:
    return RelayMessage(session_id="s1", event="chat_delta", data={"seq": seq}, seq=seq, timestamp=0.0,
                        target_sid=target)


async def test_offer_batch_writes_through_an_idle_outbox_and_queues_behind_a_busy_one():
    ob = Outbox("c1", 10)
    written: list[list[int]] = []
    busy = [False]

    def write(batch):
        if busy[0]:
            return False
        written.append([m.seq for m in batch])
        return True

    ob.write_through = write
    ob.offer_batch([msg(1)])
    ob.offer_batch([msg(2)])  # before the producer yields: one write for both
    assert written == [] and ob.depth() == 2 and ob.last_seq == 2
    await trio.testing.wait_all_tasks_blocked()
    assert written == [[1, 2]] and ob.depth() == 0 and ob.last_seq == 2 and ob.delivered == 2
    ob.offer_batch([msg(2), msg(3)])  # seq 2 went already: skipped, as offer skips it
    await trio.testing.wait_all_tasks_blocked()
    assert written == [[1, 2], [3]]
    busy[0] = True  # the writer became busy before the write: they queue for it instead
    ob.offer_batch([msg(4)])
    await trio.testing.wait_all_tasks_blocked()
    busy[0] = False
    ob.offer_batch([msg(5)])  # something is queued: it goes behind it, never ahead
    await trio.testing.wait_all_tasks_blocked()
    assert written == [[1, 2], [3]] and [m.seq for m in await ob.take()] == [4, 5]
    ob.hold()  # a replay in progress: live messages are held, not written
    ob.offer_batch([msg(6)])
    await trio.testing.wait_all_tasks_blocked()
    assert written == [[1, 2], [3]]
    ob.release()
    assert [m.seq for m in await ob.take()] == [6]
    ob.close(CloseReason.CLIENT_GONE)
    ob.offer_batch([msg(7)])
    await trio.testing.wait_all_tasks_blocked()
    assert written == [[1, 2], [3]] and ob.delivered == 6  # 3 written through, 3 taken


async def test_what_waits_for_write_through_goes_ahead_of_anything_queued_after_it():
    ob = Outbox("c1", 10)
    written: list[list[int]] = []
    ob.write_through = lambda batch: written.append([m.seq for m in batch]) or True
    ob.offer_batch([msg(1), msg(2)])
    ob.hold()  # a replay starts before the write: the waiting live events are queued first
    ob.offer_replayed(msg(3))
    ob.release()
    await trio.testing.wait_all_tasks_blocked()
    assert written == [] and [m.seq for m in await ob.take()] == [1, 2, 3]
    ob.offer_batch([msg(4)])
    ob.write_through = None  # the writer ended: a plain offer queues behind what waits
    ob.offer(msg(5))
    await trio.testing.wait_all_tasks_blocked()
    assert written == [] and [m.seq for m in await ob.take()] == [4, 5]


async def test_waiting_for_write_through_is_bounded_by_the_outbox():
    ob = Outbox("c1", 3)
    written: list[list[int]] = []
    ob.write_through = lambda batch: written.append([m.seq for m in batch]) or True
    ob.offer_batch([msg(1), msg(2)])
    ob.offer_batch([msg(3)])
    assert written == [] and ob.depth() == 3
    ob.offer_batch([msg(4)])  # a whole outbox waits: it is written now, the new one waits
    assert written == [[1, 2, 3]] and ob.depth() == 1
    ob.offer_batch([msg(5), msg(6), msg(7), msg(8)])  # one relay batch is written whole, as before
    assert written == [[1, 2, 3], [4]]
    await trio.testing.wait_all_tasks_blocked()
    assert written == [[1, 2, 3], [4], [5, 6, 7, 8]] and ob.closed_reason is None and ob.written_through == 8


async def test_a_closed_outbox_drops_what_waits_for_write_through():
    ob = Outbox("c1", 10)
    written = []
    ob.write_through = lambda batch: written.append(batch) or True
    ob.offer_batch([msg(1)])
    ob.close(CloseReason.CLIENT_GONE)
    await trio.testing.wait_all_tasks_blocked()
    assert written == [] and ob.depth() == 0


def test_outside_a_trio_run_write_through_is_at_once():
    ob = Outbox("c1", 10)
    written = []
    ob.write_through = lambda batch: written.append([m.seq for m in batch]) or True
    ob.offer_batch([msg(1), msg(2)])
    assert written == [[1, 2]] and ob.depth() == 0


# ---- the SSE stream end to end ------------------------------------------------------------------
class Flood:
    async def run(self, turn, comm):
        for i in range(100_000):
            await comm.delta("x" * 200, index=i)
            if i % 50 == 49:
                await trio.sleep(0.001)


async def test_sse_events_are_written_through_and_a_stalled_reader_is_dropped_at_its_deadline():
    settings = test_settings(write_timeout_s=0.5, client_queue=100_000)
    async with running_gateway(settings, bundle=Flood()) as gw:
        port = int(gw.base_url.rsplit(":", 1)[1])
        s = trio.socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await s.connect(("127.0.0.1", port))
        stream = trio.SocketStream(s)
        await stream.send_all(b"GET /sse/stream?stream_id=stall HTTP/1.1\r\nHost: x\r\n\r\n")
        head = b""
        while b"event: ready" not in head:
            head += await stream.receive_some(4096)
        sid = head.split(b'"session_id":"', 1)[1].split(b'"', 1)[0].decode()
        outbox = next(ob for ob in gw.relay.outboxes() if ob.sid == "stall")
        import httpx

        async with httpx.AsyncClient(base_url=gw.base_url) as http:
            r = await http.post(f"/sse/chat?stream_id=stall&user_session_id={sid}", json={"message": {"text": "go"}})
            assert r.status_code == 202
        # the client reads nothing more: the socket fills, write-throughs leave bytes pending, the
        # writer sends them under the 0.5 s deadline and the stream is dropped
        with trio.fail_after(10):
            while outbox.closed_reason is None:
                await trio.sleep(0.05)
        assert outbox.written_through > 0, "events went out by write-through before the socket filled"
        assert outbox.closed_reason.reason is CloseReason.WRITE_DEADLINE, outbox.closed_reason
        await stream.aclose()


# ---- WebSocket data frames: ours, with wsproto as the oracle ------------------------------------
@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_our_data_frames_are_wsprotos(size):
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import Message

    from kdc_trio.server.websocket import data_frame

    ws = Connection(ConnectionType.SERVER)
    text = ("é" * size)[:size]
    assert data_frame(text) == ws.send(Message(data=text))
    assert data_frame(b"\x00" * size) == ws.send(Message(data=b"\x00" * size))


async def test_socketio_events_are_written_through_and_a_stalled_reader_is_dropped_at_its_deadline():
    from tests.support.raw_ws import RawWS

    settings = test_settings(write_timeout_s=0.5, client_queue=100_000)
    async with running_gateway(settings, bundle=Flood()) as gw:
        ws = await RawWS.connect(gw.base_url, "/socket.io/?EIO=4&transport=websocket", rcvbuf=4096)
        assert (await ws.recv()).startswith("0{")
        await ws.send("40")
        while not (m := await ws.recv()).startswith('42["session_info"'):
            pass
        outbox = gw.relay.outboxes()[0]
        (sock,) = gw.engineio.sockets.values()
        await ws.send('42["chat_message",{"message":{"text":"go"}}]')
        # no more reads: the socket fills, the writer sends the rest under the deadline and fails
        with trio.fail_after(10):
            while sock.close_reason is None:
                await trio.sleep(0.05)
        assert outbox.written_through > 0, "events went out by write-through before the socket filled"
        assert "write deadline" in sock.close_reason, sock.close_reason
        await ws.aclose()


def test_the_cached_event_names_encode_as_json_dumps_does():
    from protocol.socketio import dumps, encode_event_text

    for event, offset in [("chat_delta", None), ("chat_delta", "17"), ('é"\n', 'a"b'), ("x", "")]:
        tail = "" if offset is None else "," + dumps(offset)
        assert encode_event_text(event, '{"a":1}', offset) == f'2[{dumps(event)},{{"a":1}}{tail}]'
        assert encode_event_text(event, '{"a":1}', offset) == f'2[{dumps(event)},{{"a":1}}{tail}]'  # cached
