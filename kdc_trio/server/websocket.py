"""WebSocket on wsproto, after an h11 upgrade (trio-websocket's glue, in one small class).

Writes are serialized with a StrictFIFOLock and each has the write deadline. Messages are
reassembled up to `max_message_bytes`; a larger one closes with 1009. A malformed frame
closes with wsproto's close code. No compression extension is offered: frames stay cheap.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from typing import TYPE_CHECKING

import h11
import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (BytesMessage, CloseConnection, Message, Ping, TextMessage)
from wsproto.frame_protocol import CloseReason

from kdc_trio.server.io import RECV_SIZE, ClientGone
from kdc_trio.server.request import HTTPError, Request
from protocol.wsframe import data_frame

if TYPE_CHECKING:
    from kdc_trio.server.connection import HTTPConnection

log = logging.getLogger("kdc_trio.ws")

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WebSocketClosed(Exception):
    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"websocket closed: {code} {reason}")
        self.code = code
        self.reason = reason


def accept_token(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + WS_GUID).digest()).decode("ascii")


async def accept(conn: "HTTPConnection", request: Request, *, max_message_bytes: int,
                 extra: list[tuple[str, str]]) -> "WebSocket":
    h = request.headers
    key = h.get("sec-websocket-key")
    if (h.get("upgrade") or "").lower() != "websocket" or "upgrade" not in (h.get("connection") or "").lower():
        raise HTTPError(400, "bad_request", "expected a WebSocket upgrade request")
    if h.get("sec-websocket-version") != "13":
        raise HTTPError(400, "bad_request", "unsupported WebSocket version (13 only)",
                        headers=[("sec-websocket-version", "13")])
    if not key:
        raise HTTPError(400, "bad_request", "missing Sec-WebSocket-Key")
    try:
        token = accept_token(key)
    except UnicodeEncodeError:
        raise HTTPError(400, "bad_request", "bad Sec-WebSocket-Key") from None
    await conn.send_event(h11.InformationalResponse(status_code=101, headers=[
        ("upgrade", "websocket"), ("connection", "Upgrade"), ("sec-websocket-accept", token), *extra]))
    trailing, _closed = conn.h11.trailing_data
    ws = WebSocket(conn, max_message_bytes=max_message_bytes)
    if trailing:
        ws._ws.receive_data(bytes(trailing))
    return ws


class Framed:
    """Messages already framed as this server's data frames (protocol/wsframe.py: the same bytes
    for every connection without an extension), queued and written as they are."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def _frame(message: "str | bytes | Framed") -> bytes:
    return message.data if type(message) is Framed else data_frame(message)  # type: ignore[union-attr, arg-type]


class WebSocket:
    def __init__(self, conn: "HTTPConnection", *, max_message_bytes: int) -> None:
        self._conn = conn
        self._ws = Connection(ConnectionType.SERVER)
        self._lock = trio.StrictFIFOLock()
        self._max = max_message_bytes
        self._parts: list[bytes | str] = []
        self._size = 0
        self._events = self._ws.events()
        self.closed: WebSocketClosed | None = None

    async def _write(self, data: bytes) -> None:
        if not data and self._conn.wire.pending is None:  # empty: still sends a write-through's rest
            return
        async with self._lock:
            await self._conn.send_raw(data)

    async def _write_close(self, data: bytes) -> None:
        """Write a close frame even while the connection's tasks are being cancelled (a writer
        that found the socket closed ends them all): shielded, and bounded as a whole — the wait
        for the write lock included — by one write deadline."""
        with trio.CancelScope(shield=True, deadline=trio.current_time() + self._conn.settings.write_timeout_s):
            try:
                await self._write(data)
            except ClientGone:
                pass

    async def send(self, message: str | bytes) -> None:
        await self.send_many((message,))

    async def send_many(self, messages) -> None:
        """Several messages in one write: the coalesced path of a busy connection."""
        if self.closed:
            raise ClientGone(str(self.closed))
        if self._ws.state is ConnectionState.OPEN:  # data frames need no wsproto state: framed here
            out = b"".join([_frame(m) for m in messages])
        else:  # wsproto raises its LocalProtocolError
            send = self._ws.send
            out = b"".join(send(Message(data=m.data if type(m) is Framed else m)) for m in messages)
        try:
            await self._write(out)
        except ClientGone:
            self.closed = WebSocketClosed(1006, "write failed")
            raise

    # ---- write-through (server/wire.py): the relay's own call, never blocks -------------------
    def set_on_pending(self, wake) -> None:
        """What wakes the task that writes this WebSocket when a write-through leaves bytes."""
        self._conn.wire.on_pending = wake

    def can_write_now(self) -> bool:
        return (self.closed is None and not self._lock.locked() and self._ws.state is ConnectionState.OPEN
                and self._conn.wire.can_write_now())

    def write_nowait(self, frames: bytes) -> None:
        """Only when `can_write_now()`: data frames already made (protocol/wsframe.py) in one
        non-blocking send; the rest is pending for the next write (`send_many`, even of
        nothing), under the write deadline."""
        self._conn.wire.write_nowait(frames)

    @property
    def pending(self) -> bool:
        return self._conn.wire.pending is not None

    async def receive(self) -> str | bytes:
        """The next whole message; raises WebSocketClosed when the peer closes or breaks protocol."""
        while True:
            if self.closed:
                raise self.closed
            for event in self._events:
                msg = await self._on_event(event)
                if msg is not None:
                    return msg
                if self.closed:
                    raise self.closed
            try:
                data = await self._conn.stream.receive_some(RECV_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self.closed = WebSocketClosed(1006, "connection lost")
                raise self.closed
            self._ws.receive_data(data)
            self._events = self._ws.events()

    async def _on_event(self, event) -> str | bytes | None:
        if isinstance(event, (TextMessage, BytesMessage)):
            self._size += len(event.data)
            if self._size > self._max:
                await self.close(1009, f"message over {self._max} bytes")
                return None
            self._parts.append(event.data)
            if not event.message_finished:
                return None
            parts, self._parts, self._size = self._parts, [], 0
            if len(parts) == 1:
                return parts[0]
            return "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)
        if isinstance(event, Ping):
            await self._write(self._ws.send(event.response()))
            return None
        if isinstance(event, CloseConnection):
            state = self._ws.state
            # Closed before the reply's write awaits: a writer sending meanwhile gets ClientGone,
            # not wsproto's LocalProtocolError for a message in a closing connection.
            self.closed = WebSocketClosed(event.code, event.reason or "")
            if state is ConnectionState.REMOTE_CLOSING:
                await self._write_close(self._ws.send(event.response()))
            elif state is ConnectionState.OPEN:  # a frame wsproto could not parse: close with its code
                await self._write_close(self._ws.send(CloseConnection(code=event.code, reason=event.reason or "")))
            return None
        return None  # Pong and anything else

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = WebSocketClosed(code, reason)
        if self._ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            await self._write_close(self._ws.send(CloseConnection(code=code, reason=reason[:120])))


__all__ = ["Framed", "WebSocket", "WebSocketClosed", "accept", "accept_token", "data_frame", "CloseReason"]
