"""Raw-socket HTTP for server tests: a test server on 127.0.0.1:0 and an h11 client that reads
exactly what the server wrote."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator

import h11
import trio

from kdc_trio.server import Router, Server
from kdc_trio.server.cors import CORS
from tests.support.gateway import test_settings


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@asynccontextmanager
async def serving(router: Router, **overrides: Any) -> AsyncIterator[tuple[Server, int]]:
    settings = test_settings(**overrides)
    cors = CORS(settings.cors_origins)
    server = Server(settings, cors.wrap(router), cors.headers)
    async with trio.open_nursery() as nursery:
        ports = await nursery.start(server.serve)
        try:
            yield server, ports[0]
        finally:
            nursery.cancel_scope.cancel()


async def read_response(stream: trio.SocketStream, client: h11.Connection, *, timeout: float = 5.0) -> Response:
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


async def exchange(port: int, raw: bytes | list[bytes], *, timeout: float = 5.0) -> Response:
    """Send raw request bytes (a list: sent piece by piece) and read one response."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        client = h11.Connection(h11.CLIENT)
        for piece in raw if isinstance(raw, list) else [raw]:
            await stream.send_all(piece)
        return await read_response(stream, client, timeout=timeout)
    finally:
        await stream.aclose()


async def closed_by_server(stream: trio.SocketStream, timeout: float) -> bool:
    """True once the server closed the connection (EOF or reset) within `timeout`."""
    with trio.move_on_after(timeout):
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
        return True
    return False
