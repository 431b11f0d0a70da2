"""Every error status of the HTTP server, from raw sockets, as JSON {"error", "detail"}; and the
ordinary path: keep-alive, chunked bodies, a request arriving one byte at a time."""

from __future__ import annotations

import trio

from kdc_trio.server import Router
from tests.server.raw import closed_by_server, exchange, read_response, serving

import h11


def echo_router() -> Router:
    router = Router()

    async def echo(req, ex):
        body = await ex.read_body(ex._conn.settings.effective_max_body_bytes)
        await ex.respond(200, body, content_type="application/octet-stream")

    async def hello(req, ex):
        await ex.json(200, {"hello": req.query.get("name", "world")})

    async def crash(req, ex):
        raise ZeroDivisionError("a bug")

    router.add("POST", "/echo", echo)
    router.add("GET", "/hello", hello)
    router.add("GET", "/crash", crash)
    return router


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


async def test_ok_404_405_and_400():
    async with serving(echo_router()) as (_, port):
        ok = await exchange(port, get("/hello?name=trio"))
        missing = await exchange(port, get("/nope"))
        wrong = await exchange(port, b"DELETE /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        garbage = await exchange(port, b"this is not http\r\n\r\n")
        no_host = await exchange(port, b"GET /hello HTTP/1.1\r\n\r\n")
    assert ok.status == 200 and ok.json() == {"hello": "trio"}
    assert missing.status == 404 and missing.json()["error"]
    assert wrong.status == 405 and "GET" in wrong.headers["allow"] and wrong.json()["detail"]
    assert garbage.status == 400 and set(garbage.json()) >= {"error", "detail"}
    assert no_host.status == 400


async def test_body_limits_for_content_length_and_chunked():
    async with serving(echo_router(), max_body_bytes=100) as (_, port):
        fits = await exchange(port, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        big = await exchange(port, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 500\r\n\r\n" + b"x" * 500)
        chunked_big = await exchange(port, b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                                     + b"".join(b"32\r\n" + b"y" * 50 + b"\r\n" for _ in range(4)) + b"0\r\n\r\n")
    assert fits.status == 200 and fits.body == b"hello"
    assert big.status == 413 and big.json()["error"] == "payload_too_large"
    assert chunked_big.status == 413


async def test_headers_over_the_limit_get_431():
    async with serving(echo_router(), max_header_bytes=1024) as (_, port):
        r = await exchange(port, get("/hello", "X-Big: " + "a" * 4000 + "\r\n"))
    assert r.status == 431 and r.json()["error"] == "headers_too_large"


async def test_keep_alive_chunked_bodies_and_one_byte_at_a_time():
    async with serving(echo_router()) as (_, port):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        client = h11.Connection(h11.CLIENT)
        await stream.send_all(get("/hello?name=one"))
        first = await read_response(stream, client)
        client = h11.Connection(h11.CLIENT)  # requests go out raw: read each answer afresh
        await stream.send_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        second = await read_response(stream, client)
        await stream.aclose()
        request = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nbyte a byte"
        dribbled = await exchange(port, [request[i:i + 1] for i in range(len(request))])
    assert first.json() == {"hello": "one"}
    assert second.status == 200 and second.body == b"hello world"
    assert dribbled.status == 200 and dribbled.body == b"byte a byte"


async def test_a_crashing_handler_answers_500_and_the_server_lives_on():
    async with serving(echo_router()) as (_, port):
        crashed = await exchange(port, get("/crash"))
        after = await exchange(port, get("/hello"))
    assert crashed.status == 500 and crashed.json()["error"] == "internal_error"
    assert "ZeroDivision" not in crashed.body.decode(), "no internals in the answer"
    assert after.status == 200


async def test_a_half_request_gets_408_after_the_read_timeout():
    async with serving(echo_router(), read_timeout_s=0.3) as (_, port):
        started = trio.current_time()
        headers_only = await exchange(port, b"GET /hello HTTP/1.1\r\nHost: t\r\n")  # no blank line
        body_short = await exchange(port, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        waited = trio.current_time() - started
    assert headers_only.status == 408 and headers_only.json()["error"] == "request_timeout"
    assert body_short.status == 408
    assert 0.5 < waited < 3


async def test_an_idle_kept_alive_connection_is_closed_after_its_timeout():
    async with serving(echo_router(), keepalive_timeout_s=0.3, read_timeout_s=5) as (_, port):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        client = h11.Connection(h11.CLIENT)
        await stream.send_all(get("/hello"))
        assert (await read_response(stream, client)).status == 200
        started = trio.current_time()
        assert await closed_by_server(stream, timeout=3)
        assert 0.2 < trio.current_time() - started < 2
        await stream.aclose()
