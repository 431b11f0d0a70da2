"""The ordinary path from raw sockets: kept-alive and pipelined requests on one connection,
chunked bodies, a request arriving one byte at a time, HEAD, and the connection cap."""

from __future__ import annotations

import h11
import trio

from kdc_trio.server import Router
from tests.server.raw import closed_by_server, connect, exchange, get, read_response, send, serving


def echo_router() -> Router:
    router = Router()

    async def echo(req, ex):
        await ex.respond(200, await ex.read_body(), content_type="application/octet-stream")

    async def hello(req, ex):
        await ex.json(200, {"hello": req.query.get("name", "world")})

    router.add("POST", "/echo", echo)
    router.add("GET", "/hello", hello)
    return router


async def test_two_requests_on_one_kept_alive_connection():
    async with serving(echo_router()) as (_, port):
        stream = await connect(port)
        client = h11.Connection(h11.CLIENT)
        await send(stream, get("/hello?name=one"))
        first = await read_response(stream, client)
        await send(stream, b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        second = await read_response(stream, client)
        await stream.aclose()
    assert first.status == 200 and first.json() == {"hello": "one"} and "connection" not in first.headers
    assert second.status == 200 and second.body == b"hello world"


async def test_pipelined_requests_are_answered_in_order():
    async with serving(echo_router()) as (_, port):
        stream = await connect(port)
        client = h11.Connection(h11.CLIENT)
        await send(stream, get("/hello?name=a") + b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nbcd"
                   + get("/hello?name=e", "Connection: close\r\n"))
        answers = [await read_response(stream, client) for _ in range(3)]
        closed = await closed_by_server(stream)
        await stream.aclose()
    assert [a.body for a in answers] == [b'{"hello":"a"}', b"bcd", b'{"hello":"e"}']
    assert closed, "Connection: close is honoured"


async def test_a_large_chunked_body_is_echoed_whole():
    body = bytes(range(256)) * 1000  # 256 kB in chunks of uneven sizes
    sizes = [1, 7, 4096, 65536, 100_000]
    chunks, offset = [], 0
    while offset < len(body):
        size = sizes[len(chunks) % len(sizes)]
        chunks.append(b"%x\r\n" % len(body[offset:offset + size]) + body[offset:offset + size] + b"\r\n")
        offset += size
    async with serving(echo_router()) as (_, port):
        r = await exchange(port, [b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
                                  *chunks, b"0\r\n\r\n"])
    assert r.status == 200 and r.body == body


async def test_a_request_sent_one_byte_at_a_time():
    request = b"POST /echo?x=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nbyte a byte"
    async with serving(echo_router()) as (_, port):
        stream = await connect(port)
        await send(stream, [request[i:i + 1] for i in range(len(request))], pause_s=0.001)
        r = await read_response(stream)
        await stream.aclose()
    assert r.status == 200 and r.body == b"byte a byte"


async def test_head_answers_headers_only_on_a_kept_alive_connection():
    async with serving(echo_router()) as (_, port):
        stream = await connect(port)
        client = h11.Connection(h11.CLIENT)
        await send(stream, b"HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        head = await read_response(stream, client, method="HEAD")
        await send(stream, get("/hello"))
        after = await read_response(stream, client)
        await stream.aclose()
    assert head.status == 200 and head.body == b"" and int(head.headers["content-length"]) == len(after.body)


async def test_connections_past_the_cap_are_closed_at_once():
    async with serving(echo_router(), max_connections=2, max_connections_per_address=2) as (server, port):
        held = [await connect(port) for _ in range(2)]
        with trio.fail_after(5):
            while server.connections < 2:
                await trio.sleep(0.01)
        extra = await connect(port)
        refused = await closed_by_server(extra, timeout=2)
        await extra.aclose()
        await send(held[0], get("/hello"))
        still = await read_response(held[0])
        for s in held:
            await s.aclose()
    assert refused and still.status == 200
