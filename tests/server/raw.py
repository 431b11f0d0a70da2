"""Raw-socket HTTP for server tests: a test server on 127.0.0.1:0, requests sent as raw bytes,
and an h11 client that reads exactly what the server wrote."""

from __future__ import annotations

import json
import socket
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator

import h11
import trio

from kdc_trio.server import Router, Server
from kdc_trio.server.cors import CORS
from tests.support.gateway import test_settings

# Every wait on the server in these tests ends by then (the settings under test are far smaller).
TIMEOUT_S = 5.0


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@asynccontextmanager
async def serving(router: Router, **overrides: Any) -> AsyncIterator[tuple[Server, int]]:
    """A Server (with the gateway's CORS wrapping) on 127.0.0.1:0; yields it and its port."""
    settings = test_settings(**overrides)
    cors = CORS.from_settings(settings)
    server = Server(settings, cors.wrap(router), cors.headers)
    async with trio.open_nursery() as nursery:
        ports = await nursery.start(server.serve)
        try:
            yield server, ports[0]
        finally:
            nursery.cancel_scope.cancel()


def get(path: str, extra: str = "") -> bytes:
    """A raw GET request; `extra` is more header lines, each ending in CRLF."""
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


async def connect(port: int, *, rcvbuf: int | None = None) -> trio.SocketStream:
    """A TCP connection to the server; `rcvbuf` shrinks the client's receive buffer."""
    sock = trio.socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    with trio.fail_after(TIMEOUT_S):
        await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


async def send(stream: trio.SocketStream, raw: bytes | list[bytes], *, pause_s: float = 0) -> None:
    """Send raw bytes (a list: piece by piece, `pause_s` apart, so each is its own segment)."""
    with trio.fail_after(TIMEOUT_S + pause_s * (len(raw) if isinstance(raw, list) else 1)):
        for piece in raw if isinstance(raw, list) else [raw]:
            await stream.send_all(piece)
            if pause_s:
                await trio.sleep(pause_s)


async def read_response(stream: trio.SocketStream, client: h11.Connection | None = None, *,
                        method: str = "GET", timeout: float = TIMEOUT_S) -> Response:
    """One whole response to a request sent raw. Pass the same `client` to read the responses
    of one connection in turn (pipelined bytes carry over); `method` tells h11 whether a body
    follows (HEAD: none)."""
    client = client or h11.Connection(h11.CLIENT)
    if client.our_state is h11.DONE and client.their_state is h11.DONE:
        client.start_next_cycle()
    # The bytes went out raw; h11 only needs to know a request was sent, and its method.
    client.send(h11.Request(method=method, target="/", headers=[("host", "t")]))
    client.send(h11.EndOfMessage())
    status, headers, body = 0, {}, b""
    with trio.fail_after(timeout):
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(await stream.receive_some(65536))
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode().lower(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return Response(status, headers, body)


async def exchange(port: int, raw: bytes | list[bytes], *, timeout: float = TIMEOUT_S) -> Response:
    """Send raw request bytes on a new connection (a list: piece by piece) and read one response."""
    stream = await connect(port)
    try:
        await send(stream, raw)
        return await read_response(stream, timeout=timeout)
    finally:
        await stream.aclose()


async def closed_by_server(stream: trio.SocketStream, timeout: float = TIMEOUT_S) -> bool:
    """True once the server closed the connection (EOF or reset) within `timeout`; bytes that
    arrive before are read and dropped."""
    with trio.move_on_after(timeout):
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
        return True
    return False
