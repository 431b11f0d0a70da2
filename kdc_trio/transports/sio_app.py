"""Socket.IO v5 on top of the Engine.IO server: namespaces, connect timeout, events, acks.

`SocketIOApp` decodes each Engine.IO message with the sans-IO `protocol.socketio.Decoder`
(binary attachments reassembled there), handles CONNECT/DISCONNECT per namespace, and hands
events to `on_event`. Subclasses decide what a namespace is and what its events do: the chat
gateway (`transports/socketio.py`) and the conformance app (`transports/conformance.py`).

A namespace connection holds no task: `connect` acquires what it needs (a refusal is a
ClientError, and a failed `connect` has released what it took), `disconnect` releases it,
synchronously, however the connection ends (a client DISCONNECT, the server's, the socket's
close). Its output waits in the app until the transport about to write pulls it
(`take_output`, through `pull`). A CONNECT is decided in the task that read it, so the
socket's later packets wait for it (the client's events follow its CONNECT in order). The
connect timeout is an alarm on the process timer (util/timers.py).
"""

from __future__ import annotations

import logging
import secrets
from functools import partial
from typing import Any

import trio

from kdc_trio.errors import ClientError, unavailable
from kdc_trio.transports.eio_server import EIOSocket
from kdc_trio.util.timers import Alarm, Timers
from protocol.errors import ProtocolError
from protocol.socketio import Decoder, Packet, PacketType, encode

log = logging.getLogger("kdc_trio.socketio")


class NamespaceConn:
    """One client's membership of one namespace."""

    __slots__ = ("sock", "namespace", "sid", "pid", "state", "left_reason", "live")

    def __init__(self, sock: EIOSocket, namespace: str) -> None:
        self.sock = sock
        self.namespace = namespace
        self.sid = secrets.token_urlsafe(15)
        self.pid: str | None = None  # the private session id of connection-state recovery (CONNECT reply)
        self.state: Any = None
        self.left_reason: str | None = None  # why the namespace connection ended (set when it leaves)
        self.live = False  # greeted (after_connect): its output is pulled from now on

    def emit(self, event: str, *args: Any) -> None:
        self.sock.send_many(["4" + f if isinstance(f, str) else f
                             for f in encode(Packet(PacketType.EVENT, self.namespace, [event, *args]))])

    def ack(self, ack_id: int, args: list) -> None:
        self.sock.send_many(["4" + f if isinstance(f, str) else f
                             for f in encode(Packet(PacketType.ACK, self.namespace, args, id=ack_id))])


class SioSocketState:
    __slots__ = ("decoder", "namespaces", "connect_alarm")

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder
        self.namespaces: dict[str, NamespaceConn] = {}
        self.connect_alarm: Alarm | None = None


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
    async def connect(self, conn: NamespaceConn, auth: Any) -> None:
        """Accept a CONNECT to a known namespace by returning (raise a ClientError to refuse).

        What it acquires, `disconnect` releases; when it raises, it has released it itself.
        """

    def disconnect(self, conn: NamespaceConn) -> None:
        """The namespace connection ended (`conn.left_reason` says why): release what
        `connect` acquired. Synchronous, called once."""

    async def after_connect(self, conn: NamespaceConn) -> None:
        """Runs once the CONNECT reply has been flushed: emit greetings, join rooms."""

    async def on_event(self, conn: NamespaceConn, event: str, args: list, ack_id: int | None) -> None:
        """A client event."""

    def take_output(self, conn: NamespaceConn) -> bool:
        """Queue on `conn.sock` what the namespace connection has ready (the transport is about
        to write); True when the connection has ended on the server's side (its DISCONNECT is
        sent and `disconnect` called)."""
        return False

    # ---- Engine.IO app interface -------------------------------------------------------------
    def _state(self, sock: EIOSocket) -> SioSocketState:
        if sock.app_state is None:
            sock.app_state = SioSocketState(Decoder(max_attachments=self.max_attachments,
                                                    max_payload=self.max_payload))
        assert isinstance(sock.app_state, SioSocketState)
        return sock.app_state

    def on_open(self, sock: EIOSocket) -> None:
        state = self._state(sock)
        state.connect_alarm = Alarm(partial(self._connect_timeout, sock))
        Timers.shared().set_alarm(state.connect_alarm, trio.current_time() + self.connect_timeout_s)

    @staticmethod
    def _connect_timeout(sock: EIOSocket) -> None:
        state = sock.app_state
        if isinstance(state, SioSocketState) and not state.namespaces:
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

    def pull(self, sock: EIOSocket) -> None:
        state = sock.app_state
        if not isinstance(state, SioSocketState):
            return
        ended = None
        for conn in state.namespaces.values():
            if conn.live and self.take_output(conn):
                ended = [conn] if ended is None else [*ended, conn]
        if ended:
            for conn in ended:
                self._leave(state, conn, "server namespace disconnect", tell=True)

    def on_close(self, sock: EIOSocket, reason: str) -> None:
        state = sock.app_state
        if isinstance(state, SioSocketState):
            if state.connect_alarm is not None:
                Timers.cancel_alarm(state.connect_alarm)
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
        try:
            await self.connect(conn, packet.data)
        except ClientError as exc:  # the one place a refused CONNECT is rendered
            data = {"status": exc.status, "detail": exc.detail}
            if exc.retry_after:
                data["retry_after"] = exc.retry_after
            sock.send("4" + encode(_connect_error(ns, exc.error, data))[0])
            return
        except Exception as exc:
            if unavailable(exc):  # a service we depend on (Redis) is down: not a bug, not the client's
                log.warning("Socket.IO CONNECT to %s on %s: %s", ns, sock.sid, exc)
                error = _connect_error(ns, "service_unavailable", {"status": 503, "detail": str(exc)})
            else:
                log.exception("Socket.IO CONNECT to %s on %s failed", ns, sock.sid)
                error = _connect_error(ns, "server_error", {"detail": f"{type(exc).__name__}: {exc}"})
            sock.send("4" + encode(error)[0])
            return
        if sock.close_reason is not None or ns in state.namespaces:  # closed (or connected) meanwhile
            conn.left_reason = sock.close_reason or f"second CONNECT to {ns}"
            self.disconnect(conn)
            return
        state.namespaces[ns] = conn
        if state.connect_alarm is not None:
            Timers.cancel_alarm(state.connect_alarm)
            state.connect_alarm = None
        sock.send("4" + encode(Packet(PacketType.CONNECT, ns, {"sid": conn.sid, "pid": conn.pid} if conn.pid
                                      else {"sid": conn.sid}))[0])
        try:
            await sock.flush()  # the CONNECT reply travels alone: clients may read one frame per event
            if self.connect_reply_gap_s:
                await trio.sleep(self.connect_reply_gap_s)
            if state.namespaces.get(ns) is conn:
                await self.after_connect(conn)
                conn.live = True
                sock.wake()  # what waited for the greeting goes out now
        except BaseException:
            self._leave(state, conn, "interrupted while connecting", tell=True)
            raise

    def _leave(self, state: SioSocketState, conn: NamespaceConn, reason: str, *, tell: bool = False) -> None:
        """End a namespace connection (`tell`: send the client its DISCONNECT); once."""
        if state.namespaces.get(conn.namespace) is not conn:
            return
        del state.namespaces[conn.namespace]
        conn.left_reason = reason
        conn.live = False
        if tell and conn.sock.close_reason is None:
            conn.sock.send("4" + encode(Packet(PacketType.DISCONNECT, conn.namespace))[0])
        self.disconnect(conn)


def _connect_error(ns: str, message: str, data: dict | None) -> Packet:
    body: dict = {"message": message}
    if data is not None:
        body["data"] = data
    return Packet(PacketType.CONNECT_ERROR, ns, body)
