"""Graceful shutdown (`Server.drain()`): the listeners close (a new connect is refused), idle
kept-alive connections close at once, requests and streams in flight get `shutdown_grace_s`
to finish (a stream learns of it from `server.draining`), and whatever is left is cancelled."""

from __future__ import annotations

import h11
import pytest
import trio
import trio.testing

from kdc_trio.server import Router, Server
from tests.server.raw import closed_by_server, connect, get, read_response, send
from tests.support.gateway import test_settings


class Draining:
    """A Server on 127.0.0.1:0 whose handlers record how they ended; `stopped` is set when
    `serve` returns."""

    def __init__(self, **overrides) -> None:
        self.router = Router()
        self.server = Server(test_settings(**overrides), self.router)
        self.ended: list[str] = []
        self.stopped = trio.Event()
        self.router.add("GET", "/ticks", self.ticks)
        self.router.add("GET", "/story", self.story)
        self.router.add("GET", "/slow", self.slow)

    async def ticks(self, req, ex):
        """A stream that ignores the drain: it is cancelled when the grace ends."""
        await ex.start_stream(200, [("content-type", "text/plain")])
        try:
            while True:
                await ex.send(b"tick\n")
                await trio.sleep(0.02)
        finally:
            self.ended.append("ticks")

    async def story(self, req, ex):
        """A stream that ends on the drain, taking a moment for its last words."""
        await ex.start_stream(200, [("content-type", "text/plain")])
        await ex.send(b"once upon a time\n")
        await self.server.draining.wait()
        await trio.sleep(0.1)
        await ex.send(b"the end\n")
        await ex.end_stream()
        self.ended.append("story")

    async def slow(self, req, ex):
        await trio.sleep(0.3)
        await ex.json(200, {"slow": "done"})
        self.ended.append("slow")

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self.server.serve(task_status=task_status)
        finally:
            self.stopped.set()


async def open_stream(port: int, path: str) -> tuple[trio.SocketStream, h11.Connection]:
    """A request whose response has begun (status line and headers read)."""
    stream = await connect(port)
    await send(stream, get(path))
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target=path, headers=[("host", "t")]))
    client.send(h11.EndOfMessage())
    with trio.fail_after(5):
        while not isinstance(client.next_event(), h11.Response):
            client.receive_data(await stream.receive_some(4096))
    return stream, client


async def rest_of_body(stream: trio.SocketStream, client: h11.Connection) -> tuple[bytes, bool]:
    """The body's remaining bytes, and whether it ended properly (the final chunk came)."""
    body = b""
    with trio.fail_after(5):
        while True:
            try:
                event = client.next_event()
            except h11.RemoteProtocolError:  # closed mid-body
                return body, False
            if event is h11.NEED_DATA:
                try:
                    client.receive_data(await stream.receive_some(65536))
                except trio.BrokenResourceError:
                    client.receive_data(b"")
            elif isinstance(event, h11.Data):
                body += event.data
            else:
                return body, isinstance(event, h11.EndOfMessage)


async def assert_refused(port: int) -> None:
    """Once `serve` has run after drain() (the listeners closed), a connect is refused."""
    await trio.testing.wait_all_tasks_blocked()
    with pytest.raises(ConnectionRefusedError):
        await connect(port)


async def test_drain_lets_requests_in_flight_finish_and_returns_before_the_grace():
    d = Draining(shutdown_grace_s=5)
    async with trio.open_nursery() as nursery:
        port = (await nursery.start(d.run))[0]
        story, story_client = await open_stream(port, "/story")
        slow = await connect(port)
        await send(slow, get("/slow"))
        idle = await connect(port)  # connected, no request yet
        await trio.sleep(0.05)  # /slow is in its handler
        started = trio.current_time()
        d.server.drain()
        assert await closed_by_server(idle, timeout=1), "idle connections close at once"
        await assert_refused(port)
        slow_answer = await read_response(slow)
        story_rest, story_whole = await rest_of_body(story, story_client)
        with trio.fail_after(3):
            await d.stopped.wait()
        stopped_after = trio.current_time() - started
        closed = [await closed_by_server(s, timeout=1) for s in (slow, story)]
        for s in (story, slow, idle):
            await s.aclose()
    assert slow_answer.status == 200 and slow_answer.json() == {"slow": "done"}
    assert story_whole and story_rest.endswith(b"the end\n")
    assert closed == [True, True], "no next request on a connection once draining"
    assert sorted(d.ended) == ["slow", "story"]
    assert stopped_after < 2, "serve returns when the last request ends, not at the end of the grace"


async def test_drain_cancels_streams_still_running_when_the_grace_ends():
    d = Draining(shutdown_grace_s=0.3)
    async with trio.open_nursery() as nursery:
        port = (await nursery.start(d.run))[0]
        ticks, ticks_client = await open_stream(port, "/ticks")
        started = trio.current_time()
        d.server.drain()
        await assert_refused(port)
        body, whole = await rest_of_body(ticks, ticks_client)
        with trio.fail_after(3):
            await d.stopped.wait()
        waited = trio.current_time() - started
        await ticks.aclose()
    assert d.ended == ["ticks"]
    assert b"tick" in body and not whole, "cut off mid-stream: no final chunk"
    assert 0.25 < waited < 2, "the stream had its grace period, then was cancelled"
