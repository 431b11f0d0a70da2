"""The three deadlines of a connection: reading a request (408), idling between kept-alive
requests (closed), and writing to a client that stopped reading (dropped while others flow)."""

from __future__ import annotations

import trio

from kdc_trio.server import ClientGone, Router
from tests.server.raw import closed_by_server, connect, exchange, get, read_response, send, serving

CHUNK = b"x" * 65536


def timed_router(ended: list[str], sent: dict[str, int]) -> Router:
    router = Router()

    async def echo(req, ex):
        await ex.respond(200, await ex.read_body())

    async def hello(req, ex):
        await ex.json(200, {"ok": True})

    async def flood(req, ex):
        name = req.query["name"]
        sent[name] = 0
        await ex.start_stream(200, [("content-type", "application/octet-stream")])
        try:
            while True:
                await ex.send(CHUNK)
                sent[name] += len(CHUNK)
                await trio.sleep(0)
        except ClientGone as exc:
            ended.append(f"{name}: {exc}")
            raise

    router.add("POST", "/echo", echo)
    router.add("GET", "/hello", hello)
    router.add("GET", "/flood", flood)
    return router


async def test_a_half_sent_request_gets_408_after_the_read_timeout():
    async with serving(timed_router([], {}), read_timeout_s=0.3) as (_, port):
        started = trio.current_time()
        headers_only = await exchange(port, b"GET /hello HTTP/1.1\r\nHost: t\r\n")  # no blank line
        headers_waited = trio.current_time() - started
        body_short = await exchange(port, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
    for r in (headers_only, body_short):
        assert r.status == 408 and r.headers["connection"] == "close"
        assert r.json()["error"] == "request_timeout" and r.json()["detail"]
    assert 0.25 < headers_waited < 2


async def test_a_connection_that_never_sends_is_closed_after_the_read_timeout():
    async with serving(timed_router([], {}), read_timeout_s=0.3) as (_, port):
        stream = await connect(port)
        started = trio.current_time()
        with trio.fail_after(3):
            assert await stream.receive_some(1024) == b"", "closed without an answer: no request had begun"
        waited = trio.current_time() - started
        await stream.aclose()
    assert 0.25 < waited < 2


async def test_an_idle_kept_alive_connection_is_closed_after_its_timeout():
    async with serving(timed_router([], {}), keepalive_timeout_s=0.3, read_timeout_s=5) as (_, port):
        stream = await connect(port)
        await send(stream, get("/hello"))
        assert (await read_response(stream)).status == 200
        started = trio.current_time()
        assert await closed_by_server(stream, timeout=3)
        waited = trio.current_time() - started
        await stream.aclose()
    assert 0.25 < waited < 2, "the keep-alive timeout, not the 5 s read timeout"


async def test_a_client_that_stops_reading_is_dropped_while_another_keeps_flowing():
    ended: list[str] = []
    sent: dict[str, int] = {}
    async with serving(timed_router(ended, sent), write_timeout_s=0.5) as (_, port):
        stalled = await connect(port, rcvbuf=4096)  # never reads
        await send(stalled, get("/flood?name=stalled"))
        reader = await connect(port)
        await send(reader, get("/flood?name=reader"))
        started = trio.current_time()
        with trio.fail_after(10):
            while not ended:
                assert await reader.receive_some(1 << 20), "the reader's stream ended"
            dropped_after = trio.current_time() - started
            sent_when_dropped = sent["reader"]
            received_after_drop = 0
            while received_after_drop < 20 * len(CHUNK):  # the other stream goes on
                received_after_drop += len(await reader.receive_some(1 << 20))
        stalled_closed = await closed_by_server(stalled)
        ended_while_reading = list(ended)
        await stalled.aclose()
        await reader.aclose()
    assert ended_while_reading == ["stalled: write deadline (0.5s) passed: client not reading"], ended
    assert 0.4 < dropped_after < 5
    assert sent["reader"] > sent_when_dropped + 10 * len(CHUNK), "the reader was still being written to"
    assert stalled_closed, "the dropped client's connection is closed"


async def test_a_body_trickled_a_byte_at_a_time_is_cut_off_at_the_body_deadline():
    """Each byte arrives well within the read timeout, but the whole body is due by
    KDC_BODY_TIMEOUT_S: the trickle gets 408 and is closed (it was read forever before)."""
    async with serving(timed_router([], {}), read_timeout_s=0.5, body_timeout_s=1.0) as (_, port):
        stream = await connect(port)
        await send(stream, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n")
        started = trio.current_time()

        async def trickle():
            try:
                while True:
                    await stream.send_all(b"x")
                    await trio.sleep(0.1)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle)
            r = await read_response(stream, method="POST", timeout=5)
            waited = trio.current_time() - started
            nursery.cancel_scope.cancel()
        await stream.aclose()
        fast = await exchange(port, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
    assert r.status == 408 and r.headers["connection"] == "close", r
    assert r.json()["error"] == "request_timeout" and "KDC_BODY_TIMEOUT_S" in r.json()["detail"]
    assert 0.9 < waited < 4
    assert fast.status == 200 and fast.body == b"abc"
