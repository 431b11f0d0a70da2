"""Socket.IO v5 on top of the Engine.IO server: namespaces, connect timeout, events, acks.

`SocketIOApp` decodes each Engine.IO message with the sans-IO `protocol.socketio.Decoder`
(binary attachments reassembled there), handles CONNECT/DISCONNECT per namespace, and hands
events to `on_event`. Subclasses decide what a namespace is and what its events do: the chat
gateway (`transports/socketio.py`) and the conformance app (`transports/conformance.py`).

A namespace connection is one task in the socket's nursery, from CONNECT to its end, holding
what the namespace acquired in one `async with self.open_namespace(...)`: a refused or failed
connect, a socket closed mid-connect, a client DISCONNECT and the socket's close all leave
through that block, so nothing acquired outlives the connection. While a CONNECT is being
decided the socket's later packets wait (the client's events follow its CONNECT in order).
"""

from __future__ import annotations

import logging
import secrets
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import trio

from kdc_trio.errors import ClientError, unavailable
from kdc_trio.transports.eio_server import EIOSocket
from protocol.errors import ProtocolError
from protocol.socketio import Decoder, Packet, PacketType, encode

log = logging.getLogger("kdc_trio.socketio")


@dataclass(eq=False)
class NamespaceConn:
    """One client's membership of one namespace."""

    sock: EIOSocket
    namespace: str
    sid: str = field(default_factory=lambda: secrets.token_urlsafe(15))
    pid: str | None = None  # the private session id of connection-state recovery (CONNECT reply)
    state: Any = None
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    left_reason: str | None = None  # why the namespace connection ended (set when it leaves)

    def emit(self, event: str, *args: Any) -> None:
        self.sock.send_many(["4" + f if isinstance(f, str) else f
                             for f in encode(Packet(PacketType.EVENT, self.namespace, [event, *args]))])

    def ack(self, ack_id: int, args: list) -> None:
        self.sock.send_many(["4" + f if isinstance(f, str) else f
                             for f in encode(Packet(PacketType.ACK, self.namespace, args, id=ack_id))])


@dataclass(eq=False)
class SioSocketState:
    decoder: Decoder
    connected: trio.Event = field(default_factory=trio.Event)
    namespaces: dict[str, NamespaceConn] = field(default_factory=dict)


class SocketIOApp:
    """Engine.IO app speaking Socket.IO; subclasses implement the on_* hooks."""

    namespaces: tuple[str, ...] = ("/",)

    def __init__(self, *, connect_timeout_s: float, max_attachments: int, max_payload: int,
                 connect_reply_gap_s: float = 0.0) -> None:
        self.connect_timeout_s = connect_timeout_s
        # A pause between the flushed CONNECT reply and the first event, so that a client which
        # handles one WebSocket frame per read (as the official test suites do) never finds
        # both in one TCP read. Real Socket.IO clients parse every frame and need none.
        self.connect_reply_gap_s = connect_reply_gap_s
        self.max_attachments = max_attachments
        self.max_payload = max_payload

    # ---- hooks -------------------------------------------------------------------------------
    @asynccontextmanager
    async def open_namespace(self, conn: NamespaceConn, auth: Any) -> AsyncIterator[None]:
        """Accept a CONNECT to a known namespace by entering (raise a ClientError to refuse).

        The block runs for the namespace connection's life; what it acquires, it releases on
        the way out (`conn.left_reason` says why it ended).
        """
        yield

    async def after_connect(self, conn: NamespaceConn) -> None:
        """Runs once the CONNECT reply has been flushed: emit greetings, join rooms."""

    async def on_event(self, conn: NamespaceConn, event: str, args: list, ack_id: int | None) -> None:
        """A client event."""

    async def run_namespace(self, conn: NamespaceConn) -> None:
        """The namespace connection's own work (e.g. an outbox pump); returning ends it."""
        await trio.sleep_forever()

    # ---- Engine.IO app interface -------------------------------------------------------------
    def _state(self, sock: EIOSocket) -> SioSocketState:
        if sock.app_state is None:
            sock.app_state = SioSocketState(Decoder(max_attachments=self.max_attachments,
                                                    max_payload=self.max_payload))
        assert isinstance(sock.app_state, SioSocketState)
        return sock.app_state

    async def run_socket(self, sock: EIOSocket) -> None:
        state = self._state(sock)
        with trio.move_on_after(self.connect_timeout_s):
            await state.connected.wait()
            return  # connected: this task's work is done (the socket's nursery lives on without it)
        if not state.namespaces:
            sock.close("no Socket.IO CONNECT within the connect timeout")

    async def on_message(self, sock: EIOSocket, data: str | bytes) -> None:
        state = self._state(sock)
        try:
            packet = state.decoder.feed(data)
        except ProtocolError as exc:
            log.info("Socket.IO socket %s: %s", sock.sid, exc.msg)
            sock.close(f"bad packet: {exc.msg}", send_close_packet=False)
            return
        if packet is None:
            return  # waiting for binary attachments
        await self._dispatch(sock, state, packet)

    def on_close(self, sock: EIOSocket, reason: str) -> None:
        state = sock.app_state
        if isinstance(state, SioSocketState):
            for conn in list(state.namespaces.values()):
                self._leave(state, conn, reason)

    # ---- dispatch ----------------------------------------------------------------------------
    async def _dispatch(self, sock: EIOSocket, state: SioSocketState, packet: Packet) -> None:
        t, ns = packet.type, packet.namespace
        if t is PacketType.CONNECT:
            await self._connect(sock, state, packet)
            return
        conn = state.namespaces.get(ns)
        if conn is None:
            if t is PacketType.DISCONNECT:
                return
            sock.close(f"{t.name} on namespace {ns} that is not connected", send_close_packet=False)
            return
        if t is PacketType.DISCONNECT:
            self._leave(state, conn, "client namespace disconnect")
        elif t in (PacketType.EVENT, PacketType.BINARY_EVENT):
            data = packet.data
            await self.on_event(conn, data[0], list(data[1:]), packet.id)
        elif t in (PacketType.ACK, PacketType.BINARY_ACK):
            pass  # the server sends no ack requests
        else:
            sock.close(f"unexpected {t.name} from a client", send_close_packet=False)

    async def _connect(self, sock: EIOSocket, state: SioSocketState, packet: Packet) -> None:
        ns = packet.namespace
        if ns not in self.namespaces:
            sock.send("4" + encode(Packet(PacketType.CONNECT_ERROR, ns, {"message": "Invalid namespace"}))[0])
            return
        if ns in state.namespaces:
            sock.close(f"second CONNECT to {ns}", send_close_packet=False)
            return
        conn = NamespaceConn(sock, ns)
        reply = _ConnectReply(sock)
        try:
            if sock.nursery is None:
                raise RuntimeError("the socket's task has not started")
            sock.nursery.start_soon(self._namespace_task, state, conn, packet.data, reply)
        except RuntimeError:  # the socket is closed (its nursery takes no more tasks)
            return
        try:
            await reply.decided.wait()  # accepted, refused, or the socket closed meanwhile
        finally:
            reply.reader_done()

    async def _namespace_task(self, state: SioSocketState, conn: NamespaceConn, auth: Any,
                              reply: "_ConnectReply") -> None:
        sock, ns = conn.sock, conn.namespace
        try:
            with conn.scope:
                async with self.open_namespace(conn, auth):
                    if sock.close_reason is not None:
                        return  # closed while the namespace was being opened
                    state.namespaces[ns] = conn
                    state.connected.set()
                    reply.decide(Packet(PacketType.CONNECT, ns, {"sid": conn.sid, "pid": conn.pid} if conn.pid
                                      else {"sid": conn.sid}))
                    try:
                        await reply.sent.wait()
                        await sock.flush()  # the CONNECT reply travels alone: clients may read one frame per event
                        if self.connect_reply_gap_s:
                            await trio.sleep(self.connect_reply_gap_s)
                        await self.after_connect(conn)
                        await self.run_namespace(conn)
                    finally:
                        if self._forget(state, conn, "server namespace disconnect") and sock.close_reason is None:
                            sock.send("4" + encode(Packet(PacketType.DISCONNECT, ns))[0])
        except ClientError as exc:  # the one place a refused CONNECT is rendered
            if reply.decided.is_set():
                raise
            data = {"status": exc.status, "detail": exc.detail}
            if exc.retry_after:
                data["retry_after"] = exc.retry_after
            reply.decide(_connect_error(ns, exc.error, data))
        except Exception as exc:
            if reply.decided.is_set():
                raise
            if unavailable(exc):  # a service we depend on (Redis) is down: not a bug, not the client's
                log.warning("Socket.IO CONNECT to %s on %s: %s", ns, sock.sid, exc)
                reply.decide(_connect_error(ns, "service_unavailable", {"status": 503, "detail": str(exc)}))
                return
            log.exception("Socket.IO CONNECT to %s on %s failed", ns, sock.sid)
            reply.decide(_connect_error(ns, "server_error", {"detail": f"{type(exc).__name__}: {exc}"}))
        finally:
            reply.decide(None)

    def _forget(self, state: SioSocketState, conn: NamespaceConn, reason: str) -> bool:
        """Unregister the namespace connection; False if it already was."""
        if state.namespaces.get(conn.namespace) is not conn:
            return False
        del state.namespaces[conn.namespace]
        conn.left_reason = reason
        return True

    def _leave(self, state: SioSocketState, conn: NamespaceConn, reason: str) -> None:
        """End a namespace connection from outside its task (client DISCONNECT, socket closed)."""
        if self._forget(state, conn, reason):
            conn.scope.cancel()


def _connect_error(ns: str, message: str, data: dict | None) -> Packet:
    body: dict = {"message": message}
    if data is not None:
        body["data"] = data
    return Packet(PacketType.CONNECT_ERROR, ns, body)


class _ConnectReply:
    """The answer to one CONNECT, sent by the request that carried the CONNECT when it is still
    there (so a polling POST's `ok` goes out before its answer, as for every other packet), else
    by the namespace task that decided it. `decide(None)`: nothing to send (the socket closed)."""

    __slots__ = ("sock", "packet", "decided", "sent", "_reader_waiting")

    def __init__(self, sock: EIOSocket) -> None:
        self.sock = sock
        self.packet: Packet | None = None
        self.decided = trio.Event()
        self.sent = trio.Event()
        self._reader_waiting = True

    def decide(self, packet: Packet | None) -> None:
        if self.decided.is_set():
            return
        self.packet = packet
        self.decided.set()
        if not self._reader_waiting:
            self._send()

    def reader_done(self) -> None:
        self._reader_waiting = False
        if self.decided.is_set():
            self._send()

    def _send(self) -> None:
        if not self.sent.is_set():
            if self.packet is not None and self.sock.close_reason is None:
                self.sock.send("4" + encode(self.packet)[0])
            self.sent.set()
