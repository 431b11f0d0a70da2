"""HTTP/1.1 message framing per RFC 9112, from raw sockets: Content-Length with
Transfer-Encoding is refused and the connection closed (no smuggling), a transfer coding other
than chunked is 501 saying so, and a version other than 1.0/1.1 is 505."""

from __future__ import annotations

import pytest

from tests.server.raw import closed_by_server, connect, exchange, read_response, send, serving
from tests.server.test_statuses import assert_error, error_router


async def test_content_length_with_chunked_is_refused_and_closed():
    smuggle = (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"0\r\n\r\nGET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
    async with serving(error_router()) as (_, port):
        stream = await connect(port)
        await send(stream, smuggle)
        r = await read_response(stream, method="POST")
        closed = await closed_by_server(stream)
        await stream.aclose()
    assert_error(r, 400, "bad_request")
    assert "Transfer-Encoding" in r.json()["detail"]
    assert r.headers["connection"] == "close" and closed, "the smuggled GET must never be read"


async def test_unsupported_transfer_coding_is_501_with_a_truthful_body():
    async with serving(error_router()) as (_, port):
        r = await exchange(port, b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\nxx")
    assert_error(r, 501, "unsupported_transfer_coding")
    assert "chunked" in r.json()["detail"]


@pytest.mark.parametrize("version", [b"2.0", b"9.9", b"0.9"])
async def test_unknown_http_version_is_505(version):
    async with serving(error_router()) as (_, port):
        r = await exchange(port, b"GET /hello HTTP/" + version + b"\r\nHost: t\r\n\r\n")
    assert_error(r, 505, "http_version_not_supported")


@pytest.mark.parametrize("version", [b"1.0", b"1.1"])
async def test_http_1_0_and_1_1_are_served(version):
    async with serving(error_router()) as (_, port):
        r = await exchange(port, b"GET /hello HTTP/" + version + b"\r\nHost: t\r\n\r\n")
    assert r.status == 200, r
