"""CORS with an origin allow-list, and the WebSocket layer (echo, the size limit's 1009)."""

from __future__ import annotations

import pytest

from kdc_trio.server import Router
from kdc_trio.server.websocket import WebSocketClosed
from tests.server.raw import exchange, serving
from tests.support.raw_ws import Closed, RawWS


def router() -> Router:
    r = Router()

    async def hello(req, ex):
        await ex.json(200, {"ok": True})

    async def echo(req, ex):
        ws = await ex.accept_websocket(max_message_bytes=1000)
        try:
            while True:
                await ws.send(await ws.receive())
        except WebSocketClosed:
            pass

    r.add("GET POST", "/hello", hello)
    r.add("GET", "/ws", echo)
    return r


async def test_allowed_origin_gets_credentials_and_preflight():
    async with serving(router(), cors_origins=("https://app.example",)) as (_, port):
        allowed = await exchange(port, b"GET /hello HTTP/1.1\r\nHost: t\r\nOrigin: https://app.example\r\n\r\n")
        other = await exchange(port, b"GET /hello HTTP/1.1\r\nHost: t\r\nOrigin: https://evil.example\r\n\r\n")
        preflight = await exchange(port, b"OPTIONS /hello HTTP/1.1\r\nHost: t\r\nOrigin: https://app.example\r\n"
                                         b"Access-Control-Request-Method: POST\r\n"
                                         b"Access-Control-Request-Headers: content-type, x-id-token\r\n\r\n")
        bad_preflight = await exchange(port, b"OPTIONS /hello HTTP/1.1\r\nHost: t\r\nOrigin: https://evil.example\r\n"
                                             b"Access-Control-Request-Method: POST\r\n\r\n")
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert "access-control-allow-origin" not in other.headers and other.status == 200
    assert preflight.status == 204 and "POST" in preflight.headers["access-control-allow-methods"]
    assert "x-id-token" in preflight.headers["access-control-allow-headers"]
    assert bad_preflight.status == 403 and "access-control-allow-origin" not in bad_preflight.headers


async def test_websocket_echo_and_a_message_over_the_limit_closes_1009():
    async with serving(router()) as (_, port):
        ws = await RawWS.connect(f"http://127.0.0.1:{port}", "/ws")
        await ws.send("hello")
        await ws.send(b"\x00\x01")
        echoed = [await ws.recv(), await ws.recv()]
        await ws.send("x" * 2000)
        closed = await ws.recv()
        await ws.aclose()
    assert echoed == ["hello", b"\x00\x01"]
    assert isinstance(closed, Closed) and closed.code == 1009


@pytest.mark.parametrize("headers", [
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n",  # no key
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: x\r\nSec-WebSocket-Version: 8\r\n",
    b"Connection: keep-alive\r\n",
])
async def test_bad_websocket_handshakes_get_400(headers):
    async with serving(router()) as (_, port):
        r = await exchange(port, b"GET /ws HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n")
    assert r.status == 400 and r.json()["error"] == "bad_request"
