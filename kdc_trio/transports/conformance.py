"""`kdc-trio conformance`: the app the official Engine.IO and Socket.IO test suites expect.

On one port (3000 by default): `/engine.io/` echoes every message; `/socket.io/` accepts the
namespaces `/` and `/custom`, emits `auth` with the handshake auth on connect, answers
`message` with `message-back` and acks `message-with-ack` with its arguments. pingInterval
300 ms, pingTimeout 200 ms, maxPayload 1,000,000, connect timeout 1000 ms — the suites'
constants. It runs on the same Engine.IO/Socket.IO code as the gateway.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import trio

from kdc_trio.config import Settings
from kdc_trio.server import Router, Server
from kdc_trio.transports.eio_server import EIOServer, EIOSocket
from kdc_trio.transports.sio_app import NamespaceConn, SocketIOApp

log = logging.getLogger("kdc_trio.conformance")

PING_INTERVAL_MS = 300
PING_TIMEOUT_MS = 200
MAX_PAYLOAD = 1_000_000
CONNECT_TIMEOUT_S = 1.0
MAX_QUEUE = 10_000
# The suites read one frame per 'message' event: the CONNECT reply must not share a TCP read
# with the `auth` event that follows it (see SocketIOApp.connect_reply_gap_s).
CONNECT_REPLY_GAP_S = 0.02


class EchoEngineIO:
    """`/engine.io/`: every message straight back."""

    def on_open(self, sock: EIOSocket) -> None:
        pass

    def pull(self, sock: EIOSocket) -> None:
        pass

    async def on_message(self, sock: EIOSocket, data: str | bytes) -> None:
        sock.send("4" + data if isinstance(data, str) else data)

    def on_close(self, sock: EIOSocket, reason: str) -> None:
        pass


class ConformanceSocketIO(SocketIOApp):
    namespaces = ("/", "/custom")

    def __init__(self) -> None:
        super().__init__(connect_timeout_s=CONNECT_TIMEOUT_S, max_attachments=16, max_payload=MAX_PAYLOAD,
                         connect_reply_gap_s=CONNECT_REPLY_GAP_S)

    async def connect(self, conn: NamespaceConn, auth: Any) -> None:
        conn.state = auth if isinstance(auth, dict) else {}

    async def after_connect(self, conn: NamespaceConn) -> None:
        conn.emit("auth", conn.state)

    async def on_event(self, conn: NamespaceConn, event: str, args: list, ack_id: int | None) -> None:
        if event == "message":
            conn.emit("message-back", *args)
        elif event == "message-with-ack" and ack_id is not None:
            conn.ack(ack_id, args)


def conformance_router() -> tuple[Router, list[EIOServer]]:
    router = Router()
    servers = []
    for path, app in (("/engine.io/", EchoEngineIO()), ("/socket.io/", ConformanceSocketIO())):
        server = EIOServer(app, ping_interval_ms=PING_INTERVAL_MS, ping_timeout_ms=PING_TIMEOUT_MS,
                           max_payload=MAX_PAYLOAD, max_queue=MAX_QUEUE)
        router.add("GET POST PUT DELETE PATCH", path, server.handle, prefix=True)
        servers.append(server)
    return router, servers


async def serve_conformance(settings: Settings, port: int, *,
                            task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    router, servers = conformance_router()
    http = Server(dataclasses.replace(settings, port=port), router)
    async with trio.open_nursery() as nursery:
        for s in servers:
            s.draining = http.draining
            await nursery.start(s.run)
        ports = await nursery.start(http.serve)
        task_status.started(ports[0])


async def run_conformance(settings: Settings, port: int) -> None:
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(serve_conformance, settings, port)
        print(f"kdc-trio conformance app on http://{settings.host}:{bound} (/engine.io/, /socket.io/)", flush=True)
