"""WebSocket on wsproto, after an h11 upgrade (trio-websocket's glue, in one small class).

Writes are serialized with a StrictFIFOLock and each has the write deadline. Messages are
reassembled up to `max_message_bytes`; a larger one closes with 1009. A malformed frame
closes with wsproto's close code. No compression extension is offered: frames stay cheap.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from typing import TYPE_CHECKING, Callable

import h11
import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (BytesMessage, CloseConnection, Message, Ping, TextMessage)
from wsproto.frame_protocol import CloseReason

from kdc_trio.server.io import RECV_SIZE, ClientGone
from kdc_trio.server.request import HTTPError, Request
from kdc_trio.util.raw_socket import raw_socket
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
    conn.h11 = None  # no more HTTP on this connection: an idle WebSocket holds no h11 state
    ws = WebSocket(conn, max_message_bytes=max_message_bytes)
    if trailing:
        ws._feed(bytes(trailing))
    return ws


class Framed:
    """Messages already framed as this server's data frames (protocol/wsframe.py: the same bytes
    for every connection without an extension), queued and written as they are."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def _frame(message: "str | bytes | Framed") -> bytes:
    return message.data if type(message) is Framed else data_frame(message)  # type: ignore[union-attr, arg-type]


_NO_EVENTS = iter(())  # what a WebSocket holds instead of wsproto's drained events generator

# wsproto Connections lent back by WebSockets between messages, for the next one to read with.
# Between two messages an open Connection holds nothing a fresh one would not (no partial frame
# or message, nothing queued), yet ~1.6 KiB (its event deque, decoders, parser generator): an
# idle WebSocket (10,000 of them) holds none, and takes one when bytes arrive. Bounded: how many
# WebSockets of a process read at the same moment, not how many are open.
SPARE_PARSERS = 64
_spare: list[Connection] = []


def _lendable(c: Connection) -> bool:
    """Whether `c` is as a fresh server Connection would be (wsproto 1.x internals, pinned by
    tests/server/test_websocket.py). A wsproto whose internals differ lends nothing: each
    WebSocket then keeps its own Connection, as before lending."""
    try:
        p = c._proto
        fd = p._frame_decoder
        return (c._state is ConnectionState.OPEN and not c._events and fd.header is None and not len(fd.buffer)
                and p._message_decoder.opcode is None and p._outbound_opcode is None and not p.extensions)
    except (AttributeError, TypeError):
        return False


def _parser() -> Connection:
    return _spare.pop() if _spare else Connection(ConnectionType.SERVER)


class WebSocket:
    """One WebSocket connection. Read either by a task parked in `receive` or, when the process's
    hang-up watch can tell its connection's one task that the socket is readable (`notify`), with
    `receive_nowait` from that task (no reader task per idle WebSocket). Control frames a read
    answers (pong, the close reply) wait in the object until `flush_replies` writes them."""

    __slots__ = ("_conn", "_ws", "_lock", "_max", "_parts", "_size", "_events", "closed", "readable",
                 "_on_readable", "_replies", "_close_reply")

    def __init__(self, conn: "HTTPConnection", *, max_message_bytes: int) -> None:
        self._conn = conn
        self._ws: Connection | None = None  # wsproto's, while a message is being read (see SPARE_PARSERS)
        self._lock = trio.StrictFIFOLock()
        self._max = max_message_bytes
        self._parts: list[bytes | str] | None = None  # a fragmented message's parts so far
        self._size = 0
        self._events = _NO_EVENTS
        self.closed: WebSocketClosed | None = None
        self.readable = False  # notify mode: the socket may have bytes (receive_nowait reads it)
        self._on_readable: Callable[[], None] | None = None
        self._replies: list[bytes] | None = None  # pongs to write
        self._close_reply: bytes | None = None  # the close frame to write

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
        if self.state is ConnectionState.OPEN:  # data frames need no wsproto state: framed here
            out = b"".join([_frame(m) for m in messages])
        else:  # wsproto raises its LocalProtocolError
            send = self._wsproto().send
            out = b"".join(send(Message(data=m.data if type(m) is Framed else m)) for m in messages)
        try:
            await self._write(out)
        except ClientGone:
            self.closed = WebSocketClosed(1006, "write failed")
            raise

    # ---- write-through (server/wire.py): the relay's own call, never blocks -------------------
    def set_on_pending(self, wake: Callable[[], None] | None) -> None:
        """What wakes the task that writes this WebSocket when a write-through leaves bytes."""
        self._conn.wire.on_pending = wake

    def can_write_now(self) -> bool:
        return (self.closed is None and not self._lock.locked() and self.state is ConnectionState.OPEN
                and self._conn.wire.can_write_now())

    def write_nowait(self, frames: bytes) -> None:
        """Only when `can_write_now()`: data frames already made (protocol/wsframe.py) in one
        non-blocking send; the rest is pending for the next write (`send_many`, even of
        nothing), under the write deadline."""
        self._conn.wire.write_nowait(frames)

    @property
    def pending(self) -> bool:
        return self._conn.wire.pending is not None

    # ---- reading --------------------------------------------------------------------------
    def notify(self, on_readable: Callable[[], None]) -> bool:
        """Have the process's hang-up watch (server/hangup.py) set `readable` and call
        `on_readable` when the socket has something to read; the caller then reads with
        `receive_nowait`. False when it cannot (TLS, a memory stream): read with `receive`.
        Undone by `unnotify`, before the socket is closed."""
        hangups = self._conn.hangups
        if hangups is None or not hangups.notify(raw_socket(self._conn.stream), self._readable):
            return False
        self._on_readable = on_readable
        self.readable = True  # what arrived with the handshake, or meanwhile: read it once
        return True

    def unnotify(self) -> None:
        if self._on_readable is not None:
            self._on_readable = None
            sock = raw_socket(self._conn.stream)
            if sock is not None:
                self._conn.hangups.unwatch(sock)  # type: ignore[union-attr]

    def _readable(self) -> None:
        self.readable = True
        if self._on_readable is not None:
            self._on_readable()

    def receive_nowait(self) -> str | bytes | None:
        """The next whole message of what has arrived, reading the socket without blocking while
        it is `readable`; None when there is none yet (the watch is re-armed once the socket is
        drained). Raises WebSocketClosed when the peer closes or breaks protocol. Replies it
        owes the peer are left for `flush_replies`."""
        while True:
            if self.closed:
                raise self._closed_error()
            msg = self._next_buffered()
            if msg is not None:
                return msg
            if self.closed:
                raise self._closed_error()
            if not self.readable:
                return None
            sock = raw_socket(self._conn.stream)
            try:
                data = sock.recv(RECV_SIZE)  # type: ignore[union-attr]
            except (BlockingIOError, InterruptedError):
                self.readable = False
                self._conn.hangups.rearm(sock)  # type: ignore[union-attr,arg-type]
                return None
            except (OSError, AttributeError):  # reset, or the socket is gone
                data = b""
            self._feed(data)

    async def receive(self) -> str | bytes:
        """The next whole message; raises WebSocketClosed when the peer closes or breaks protocol."""
        while True:
            if self.closed:
                await self.flush_replies()
                raise self._closed_error()
            msg = self._next_buffered()
            if self._replies or self._close_reply:
                await self.flush_replies()
            if msg is not None:
                return msg
            if self.closed:
                raise self._closed_error()
            try:
                data = await self._conn.stream.receive_some(RECV_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            self._feed(data)

    def _closed_error(self) -> WebSocketClosed:
        """A fresh exception for the close (`self.closed` is never raised itself: raised, it would
        hold a traceback whose frames hold this WebSocket, which holds it: a reference cycle
        that kept every Socket.IO connection closed by its peer, its socket and its state, until
        a full garbage collection)."""
        closed = self.closed
        assert closed is not None
        return WebSocketClosed(closed.code, closed.reason)

    def _feed(self, data: bytes) -> None:
        if not data:
            self.closed = WebSocketClosed(1006, "connection lost")
            raise self._closed_error()
        ws = self._wsproto()
        ws.receive_data(data)
        self._events = ws.events()

    def _next_buffered(self) -> str | bytes | None:
        for event in self._events:
            msg = self._on_event(event)
            if msg is not None:
                return msg
            if self.closed:
                return None
        self._events = _NO_EVENTS  # drained: no generator held while idle
        ws = self._ws
        if ws is not None and len(_spare) < SPARE_PARSERS and _lendable(ws):
            self._ws = None
            _spare.append(ws)
        return None

    def _wsproto(self) -> Connection:
        ws = self._ws
        if ws is None:
            ws = self._ws = _parser()
        return ws

    @property
    def state(self) -> ConnectionState:
        ws = self._ws
        return ConnectionState.OPEN if ws is None else ws.state

    def _on_event(self, event) -> str | bytes | None:
        if isinstance(event, (TextMessage, BytesMessage)):
            self._size += len(event.data)
            if self._size > self._max:
                self._closing(1009, f"message over {self._max} bytes")
                return None
            if event.message_finished and self._parts is None:
                self._size = 0
                return event.data
            if self._parts is None:
                self._parts = []
            self._parts.append(event.data)
            if not event.message_finished:
                return None
            parts, self._parts, self._size = self._parts, None, 0
            return "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)
        if isinstance(event, Ping):
            if self._replies is None:
                self._replies = []
            self._replies.append(self._wsproto().send(event.response()))
            return None
        if isinstance(event, CloseConnection):
            ws = self._wsproto()
            state = ws.state
            # Closed before the reply's write awaits: a writer sending meanwhile gets ClientGone,
            # not wsproto's LocalProtocolError for a message in a closing connection.
            self.closed = WebSocketClosed(event.code, event.reason or "")
            if state is ConnectionState.REMOTE_CLOSING:
                self._close_reply = ws.send(event.response())
            elif state is ConnectionState.OPEN:  # a frame wsproto could not parse: close with its code
                self._close_reply = ws.send(CloseConnection(code=event.code, reason=event.reason or ""))
            return None
        return None  # Pong and anything else

    async def flush_replies(self) -> None:
        """Write the pongs and the close frame that reading left owed (ClientGone if it cannot)."""
        replies, self._replies = self._replies, None
        if replies:
            await self._write(b"".join(replies))
        close, self._close_reply = self._close_reply, None
        if close is not None:
            await self._write_close(close)

    def _closing(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = WebSocketClosed(code, reason)
        if self.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            self._close_reply = self._wsproto().send(CloseConnection(code=code, reason=reason[:120]))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self._closing(code, reason)
        await self.flush_replies()


__all__ = ["Framed", "WebSocket", "WebSocketClosed", "accept", "accept_token", "data_frame", "CloseReason"]
