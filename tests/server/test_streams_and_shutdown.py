"""Streaming responses: the write deadline drops a client that stopped reading while another
keeps flowing; drain() stops accepting, lets streams end, cancels what is left after the grace."""

from __future__ import annotations

import socket

import h11
import trio

from kdc_trio.server import ClientGone, Router
from tests.server.raw import exchange, read_response, serving

CHUNK = b"x" * 65536


def streaming_router(ended: list[str]) -> tuple[Router, dict]:
    state = {"sent": {}}
    router = Router()

    async def flood(req, ex):
        name = req.query["name"]
        state["sent"][name] = 0
        await ex.start_stream(200, [("content-type", "application/octet-stream")])
        try:
            while True:
                await ex.send(CHUNK)
                state["sent"][name] += len(CHUNK)
                await trio.sleep(0)
        except ClientGone as exc:
            ended.append(f"{name}: {exc}")
            raise

    async def ticks(req, ex):
        await ex.start_stream(200, [("content-type", "text/plain")])
        try:
            while True:
                await ex.send(b"tick\n")
                await trio.sleep(0.02)
        finally:
            ended.append("ticks")

    router.add("GET", "/flood", flood)
    router.add("GET", "/ticks", ticks)
    return router, state


async def open_raw(port: int, path: str, *, rcvbuf: int | None = None) -> trio.SocketStream:
    sock = trio.socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    return stream


async def test_a_client_that_stops_reading_is_dropped_while_another_keeps_flowing():
    ended: list[str] = []
    router, state = streaming_router(ended)
    async with serving(router, write_timeout_s=0.5) as (_, port):
        stalled = await open_raw(port, "/flood?name=stalled", rcvbuf=4096)  # never reads
        reader = await open_raw(port, "/flood?name=reader")
        received_after_drop = 0
        with trio.fail_after(10):
            while not ended:
                received_after_drop += len(await reader.receive_some(1 << 20))
            received_after_drop = 0
            while received_after_drop < 10 * len(CHUNK):  # the other stream goes on
                received_after_drop += len(await reader.receive_some(1 << 20))
        await stalled.aclose()
        await reader.aclose()
    assert ended[0].startswith("stalled:"), ended
    assert state["sent"]["reader"] > state["sent"]["stalled"]


async def test_drain_stops_accepting_and_cancels_streams_after_the_grace():
    ended: list[str] = []
    router, _ = streaming_router(ended)
    async with serving(router, shutdown_grace_s=0.3) as (server, port):
        stream = await open_raw(port, "/ticks")
        client = h11.Connection(h11.CLIENT)
        with trio.fail_after(5):
            while True:
                client.receive_data(await stream.receive_some(4096))
                if isinstance(client.next_event(), h11.Response):
                    break
        idle = await trio.open_tcp_stream("127.0.0.1", port)  # a kept-alive connection with no request
        started = trio.current_time()
        server.drain()
        with trio.fail_after(5):
            assert await idle.receive_some(10) == b"", "idle connections close at once"
            while ended != ["ticks"]:
                await trio.sleep(0.01)
        waited = trio.current_time() - started
        refused = False
        try:
            await exchange(port, b"GET /ticks HTTP/1.1\r\nHost: t\r\n\r\n", timeout=2)
        except (OSError, trio.BrokenResourceError, trio.TooSlowError):
            refused = True
        await stream.aclose()
        await idle.aclose()
    assert 0.25 < waited < 2, "the stream had its grace period, then was cancelled"
    assert refused, "no new connections once draining"
