"""Every error status of the HTTP server, from raw sockets, each a JSON {"error", "detail"}:
400, 404, 405 (+ Allow), 413 (Content-Length and chunked), 431 (one read and many), 500."""

from __future__ import annotations


import pytest
import trio

from kdc_trio.server import HTTPError, Router
from tests.server.raw import Response, closed_by_server, connect, exchange, get, read_response, send, serving


def error_router() -> Router:
    router = Router()

    async def echo(req, ex):
        await ex.respond(200, await ex.read_body(), content_type="application/octet-stream")

    async def hello(req, ex):
        await ex.json(200, {"hello": req.query.get("name", "world")})

    async def crash(req, ex):
        raise ZeroDivisionError("a bug")

    async def conflict_in_a_task(req, ex):
        async def refuse():
            raise HTTPError(409, "conflict", "refused by a task of the handler")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(refuse)

    async def echo_in_a_task(req, ex):
        body = []

        async def read():
            body.append(await ex.read_body())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
        await ex.respond(200, body[0])

    router.add("POST", "/echo", echo)
    router.add("POST", "/echo-in-a-task", echo_in_a_task)
    router.add("GET", "/hello", hello)
    router.add("GET", "/crash", crash)
    router.add("GET", "/conflict", conflict_in_a_task)
    return router


def assert_error(r: Response, status: int, error: str) -> None:
    assert r.status == status, r
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error", "detail"} and body["error"] == error and body["detail"], body


async def test_ok_404_405_and_400():
    async with serving(error_router()) as (_, port):
        ok = await exchange(port, get("/hello?name=trio"))
        missing = await exchange(port, get("/nope"))
        wrong = await exchange(port, b"DELETE /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        garbage = await exchange(port, b"this is not http\r\n\r\n")
        no_host = await exchange(port, b"GET /hello HTTP/1.1\r\n\r\n")
        bad_chunk = await exchange(port, b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                                         b"zz\r\nhello\r\n0\r\n\r\n")
    assert ok.status == 200 and ok.json() == {"hello": "trio"}
    assert_error(missing, 404, "not_found")
    assert_error(wrong, 405, "method_not_allowed")
    assert wrong.headers["allow"] == "GET, HEAD"
    assert_error(garbage, 400, "bad_request")
    assert_error(no_host, 400, "bad_request")
    assert_error(bad_chunk, 400, "bad_request")


async def test_a_refusal_never_echoes_a_long_request_line():
    """h11 quotes an illegal request line in its message: the 400 cuts it (no amplification)."""
    line = b"GET /" + b"\x01" * 8000 + b" HTTP/1.1\r\nHost: t\r\n\r\n"
    async with serving(error_router()) as (_, port):
        r = await exchange(port, line)
    assert_error(r, 400, "bad_request")
    assert len(r.body) < 400, len(r.body)


async def test_body_limits_for_content_length_and_chunked():
    async with serving(error_router(), max_body_bytes=100) as (_, port):
        fits = await exchange(port, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + b"f" * 100)
        big = await exchange(port, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 500\r\n\r\n" + b"x" * 500)
        chunked_big = await exchange(port, b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                                     + b"".join(b"32\r\n" + b"y" * 50 + b"\r\n" for _ in range(4)) + b"0\r\n\r\n")
    assert fits.status == 200 and fits.body == b"f" * 100
    assert_error(big, 413, "payload_too_large")
    assert big.headers["connection"] == "close"
    assert_error(chunked_big, 413, "payload_too_large")


@pytest.mark.parametrize("pieces", [1, 40], ids=["one-read", "many-reads"])
async def test_headers_over_the_limit_get_431(pieces):
    request = get("/hello", "X-Big: " + "a" * 4000 + "\r\n")
    size = -(-len(request) // pieces)
    async with serving(error_router(), max_header_bytes=1024) as (_, port):
        stream = await connect(port)
        try:  # the server may answer and close while the rest is still on its way
            await send(stream, [request[i:i + size] for i in range(0, len(request), size)], pause_s=0.002)
        except trio.BrokenResourceError:
            pass
        r = await read_response(stream)
        await stream.aclose()
        at_the_limit = await exchange(port, get("/hello", "X-Fits: " + "a" * 900 + "\r\n"))
    assert_error(r, 431, "headers_too_large")
    assert at_the_limit.status == 200


async def test_a_crashing_handler_answers_500_closes_and_the_server_lives_on():
    async with serving(error_router()) as (_, port):
        stream = await connect(port)
        await send(stream, get("/crash"))
        crashed = await read_response(stream)
        closed = await closed_by_server(stream)
        await stream.aclose()
        after = await exchange(port, get("/hello"))
    assert_error(crashed, 500, "internal_error")
    assert "ZeroDivision" not in crashed.body.decode(), "no internals in the answer"
    assert crashed.headers["connection"] == "close" and closed
    assert after.status == 200


async def test_errors_raised_in_a_handlers_own_tasks_keep_their_status():
    async with serving(error_router(), max_body_bytes=10) as (_, port):
        conflict = await exchange(port, get("/conflict"))
        too_big = await exchange(port, b"POST /echo-in-a-task HTTP/1.1\r\nHost: t\r\nContent-Length: 50\r\n\r\n"
                                 + b"x" * 50)
        fits = await exchange(port, b"POST /echo-in-a-task HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nfits")
    assert_error(conflict, 409, "conflict")
    assert_error(too_big, 413, "payload_too_large")
    assert fits.status == 200 and fits.body == b"fits"
