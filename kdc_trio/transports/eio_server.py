"""The Engine.IO v4 server on our HTTP server: polling, WebSocket, the upgrade, heartbeats.

One `EIOSocket` per Engine.IO session. A session opened on a WebSocket lives in that
connection's task, which is all it holds while idle: the task writes, and reads only when the
process's hang-up watch says the socket is readable (server/hangup.py `notify`; a reader task
where it cannot). A polling session lives in a task (`_session_task`) in the server's nursery;
HTTP requests (polls, posts) and, after an upgrade, the WebSocket connection feed it and drain
it. The heartbeat (ping every pingInterval, close without a pong within pingTimeout) and the
polling handshake deadline are alarms on the process timer (util/timers.py), not tasks.
The outgoing queue holds Engine.IO frames already encoded for the WebSocket (`str` text
frames such as `42["chat_delta",{...}]`, `bytes` binary frames, and on an upgraded socket
`Framed` WebSocket bytes made once for all of a session's sockets); a writer first has the app
`pull` what it has ready (a Socket.IO outbox), then takes everything queued in one go, so a
busy socket gets one write per batch.

The socket's own state (queue, close, heartbeat): transports/eio_socket.py.
"""

from __future__ import annotations

import logging
from typing import Awaitable

import trio

from kdc_trio.server import ClientGone, Exchange, Request
from kdc_trio.server.websocket import WebSocket, WebSocketClosed
from kdc_trio.transports.eio_socket import EIOSocket
from kdc_trio.transports.eio_types import EIOApp, EIOLimits, client_host
from kdc_trio.util.timers import Alarm, Timers
from protocol.eio_state import EIOEvent, EIOState, transition
from protocol.engineio import (
    PROBE,
    EIOError,
    Packet,
    PacketType,
    decode_record,
    decode_ws,
    encode_payload,
    error_json,
    open_packet,
    payload_records,
)
from protocol.errors import ProtocolError, RemoteProtocolError

__all__ = ["EIOApp", "EIOLimits", "EIOServer", "EIOSocket", "client_host"]

log = logging.getLogger("kdc_trio.engineio")

# Records of a polling payload decoded between two checkpoints: decoding a record costs ~1 µs.
DECODE_BATCH = 256
# WebSocket messages one read round handles before the writer's turn and a checkpoint.
READ_BATCH = 64
# How long a poll that arrives mid-upgrade waits for the upgrade to settle before its noop.
UPGRADE_SETTLE_S = 0.05
# How long the sid of a session the client closed over polling stays known for a poll that was
# sent before the `1` but is handled after it (see close(await_poll=True)).
CLOSE_POLL_GRACE_S = 1.0
# Time a polling client may go without polling before its pending data is considered stale is
# bounded by the heartbeat: a ping is queued every pingInterval and must be answered.
CLOSE = "1"
NOOP = "6"
POLL_HEADERS = [("content-type", "text/plain; charset=UTF-8"), ("cache-control", "no-store")]


def frames_to_payload(frames: list[str | bytes]) -> bytes:
    """Frames queued for the WebSocket, as one polling payload."""
    return encode_payload([decode_ws(f) for f in frames])


class EIOServer:
    def __init__(self, app: EIOApp, *, ping_interval_ms: int, ping_timeout_ms: int, max_payload: int,
                 max_queue: int, upgrade_timeout_s: float = 10.0, draining: trio.Event | None = None,
                 limits: EIOLimits = EIOLimits()) -> None:
        self.app = app
        self.ping_interval_ms = ping_interval_ms
        self.ping_timeout_ms = ping_timeout_ms
        self.max_payload = max_payload
        self.max_queue = max_queue
        self.upgrade_timeout_s = upgrade_timeout_s  # from the probe's WebSocket to `5`
        self.sockets: dict[str, EIOSocket] = {}
        self.limits = limits
        # Open sessions per client address; an entry leaves with its address's last session,
        # so the dict is bounded by the session cap.
        self.per_address: dict[str, int] = {}
        self.refused = 0  # handshakes refused by a session cap
        self.draining = draining
        self._nursery: trio.Nursery | None = None
        self.opened = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.draining is not None:
                nursery.start_soon(self._close_all_on_drain)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    async def _close_all_on_drain(self) -> None:
        assert self.draining is not None
        await self.draining.wait()
        for sock in list(self.sockets.values()):
            sock.close("server_shutdown")

    # ---- HTTP entry point ----------------------------------------------------------------
    def handle(self, req: Request, ex: Exchange) -> Awaitable[None]:
        """The request's handler call, returned rather than awaited (as the router's): a
        WebSocket session's stack holds no frame of this dispatch for its whole life."""
        q = req.query
        if q.get("EIO") != "4":
            return self._refuse(ex, EIOError.UNSUPPORTED_PROTOCOL_VERSION)
        transport = q.get("transport")
        if transport not in ("polling", "websocket"):
            return self._refuse(ex, EIOError.UNKNOWN_TRANSPORT)
        if self._nursery is None or (self.draining is not None and self.draining.is_set()):
            return ex.json(503, {"code": EIOError.FORBIDDEN, "message": "server is shutting down"})
        sid = q.get("sid")
        is_ws = (req.headers.get("upgrade") or "").lower() == "websocket"
        if transport == "websocket":
            if not is_ws or req.method != "GET":
                return self._refuse(ex, EIOError.BAD_REQUEST)
            if sid is None:
                refusal = self._over_capacity(req, ex)
                if refusal is not None:
                    return refusal
                return self._open_websocket(req, ex)
            sock = self.sockets.get(sid)
            if sock is None:
                return self._refuse(ex, EIOError.UNKNOWN_SID)
            return self._upgrade(sock, ex)
        if sid is None:
            if req.method != "GET":
                return self._refuse(ex, EIOError.BAD_HANDSHAKE_METHOD)
            refusal = self._over_capacity(req, ex)
            if refusal is not None:
                return refusal
            return self._open_polling(req, ex)
        sock = self.sockets.get(sid)
        if sock is None or sock.transport != "polling":
            return self._refuse(ex, EIOError.UNKNOWN_SID if sock is None else EIOError.BAD_REQUEST)
        if req.method == "GET":
            return self._poll(sock, ex)
        if req.method == "POST":
            return self._post(sock, ex)
        return self._refuse(ex, EIOError.BAD_HANDSHAKE_METHOD)

    async def _refuse(self, ex: Exchange, code: EIOError) -> None:
        await ex.json(400, error_json(code))

    def _over_capacity(self, req: Request, ex: Exchange) -> Awaitable[None] | None:
        """The answer to a handshake past a session cap (503 for the process, 429 for the
        address, with Retry-After and the Engine.IO error body); None when it may open."""
        lim = self.limits
        if lim.max_sessions and len(self.sockets) >= lim.max_sessions:
            status, message = 503, f"Too many sessions: {lim.max_sessions} open (KDC_EIO_MAX_SESSIONS)"
        elif lim.max_sessions_per_address and self.per_address.get(
                client_host(req.client), 0) >= lim.max_sessions_per_address:
            status, message = 429, (f"Too many sessions from this address: {lim.max_sessions_per_address} open "
                                    "(KDC_EIO_MAX_SESSIONS_PER_ADDRESS)")
        else:
            return None
        self.refused += 1
        return ex.json(status, {"code": int(EIOError.FORBIDDEN), "message": message},
                       headers=[("retry-after", str(max(1, round(lim.handshake_timeout_s))))])

    def _new_socket(self, req: Request, transport: str) -> EIOSocket:
        """A new session. A polling one gets its task in the server's nursery; a WebSocket one
        lives in the task of the connection that opened it (`_open_websocket`)."""
        assert self._nursery is not None
        sock = EIOSocket(self, req, transport)
        self.sockets[sock.sid] = sock
        self.per_address[sock.address] = self.per_address.get(sock.address, 0) + 1
        self.opened += 1
        sock.start_heartbeat()
        if transport == "polling":
            self._nursery.start_soon(self._session_task, sock)
        try:
            self.app.on_open(sock)
        except Exception:
            log.exception("Engine.IO socket %s: on_open failed", sock.sid)
            sock.close("internal error")
        return sock

    def _forget(self, sock: EIOSocket) -> None:
        if self.sockets.pop(sock.sid, None) is not None:
            left = self.per_address.get(sock.address, 1) - 1
            if left > 0:
                self.per_address[sock.address] = left
            else:
                self.per_address.pop(sock.address, None)

    def _open_frame(self, sock: EIOSocket, upgrades: list[str]) -> str:
        packet = open_packet(sock.sid, upgrades=upgrades, ping_interval_ms=self.ping_interval_ms,
                             ping_timeout_ms=self.ping_timeout_ms, max_payload=self.max_payload)
        assert isinstance(packet.data, str)
        return "0" + packet.data

    def _end(self, sock: EIOSocket) -> None:
        """Tell the app the socket is gone (once), when whoever owns its life lets it go."""
        if not sock._ended:
            sock._ended = True
            try:
                self.app.on_close(sock, sock.close_reason or "closed")
            except Exception:
                log.exception("on_close failed for %s", sock.sid)

    # ---- the polling session's task ---------------------------------------------------------
    async def _session_task(self, sock: EIOSocket) -> None:
        """A polling session's life (it may upgrade meanwhile): until it closes; the sid then
        lingers for a poll on its way (close(await_poll=True))."""
        deadline = Alarm(lambda: sock.used or sock.close("handshake not followed by a poll or an upgrade",
                                                          send_close_packet=False))
        Timers.shared().set_alarm(deadline, sock.opened_at + self.limits.handshake_timeout_s)
        try:
            try:
                await sock.wait_closed()
            finally:
                Timers.cancel_alarm(deadline)
                self._end(sock)
            if sock.poll_after_close is not None:  # the sid lingers for the poll on its way
                with trio.move_on_after(CLOSE_POLL_GRACE_S):
                    await sock.poll_after_close.wait()
        finally:
            self._forget(sock)

    # ---- messages from the client ---------------------------------------------------------
    async def _on_packet(self, sock: EIOSocket, packet: Packet) -> None:
        t = packet.type
        if t is PacketType.MESSAGE:
            assert packet.data is not None
            await self.app.on_message(sock, packet.data)
        elif t is PacketType.PONG:
            sock.pong()
        elif t is PacketType.CLOSE:
            # A client closing over polling may have a poll on its way that was sent before
            # the `1` but is handled after it (two connections): that poll gets its noop.
            sock.close("client close", send_close_packet=False,
                       await_poll=sock.transport == "polling" and not sock._poll_pending)
        elif t is PacketType.NOOP:
            pass
        else:
            raise RemoteProtocolError(f"unexpected Engine.IO packet {t.name} from the client")

    # ---- polling ---------------------------------------------------------------------------
    async def _open_polling(self, req: Request, ex: Exchange) -> None:
        sock = self._new_socket(req, "polling")
        await ex.respond(200, self._open_frame(sock, ["websocket"]).encode(), headers=POLL_HEADERS)

    async def _poll(self, sock: EIOSocket, ex: Exchange) -> None:
        sock.used = True
        if sock._poll_pending:
            sock.close("duplicate poll")
            return await self._refuse(ex, EIOError.BAD_REQUEST)
        if sock.state is EIOState.UPGRADING:
            # The client may have sent `5` just before this request: give the WebSocket reader
            # a moment so the answer reflects the finished upgrade (400) rather than a noop.
            settled = sock.upgrade_settled
            if settled is not None:
                with trio.move_on_after(UPGRADE_SETTLE_S):
                    await settled.wait()
            if sock.state is EIOState.UPGRADING:
                return await ex.respond(200, NOOP.encode(), headers=POLL_HEADERS)
            if sock.transport != "polling" or sock.close_reason is not None:
                return await self._refuse(ex, EIOError.BAD_REQUEST)
        sock._poll_pending = True
        try:
            while True:
                self.app.pull(sock)  # what the app has ready (a Socket.IO outbox) goes in this answer
                if sock._out or sock.close_reason is not None or sock._noop_pending_poll:
                    break
                await sock.wait_output()
            if sock._noop_pending_poll:
                sock._noop_pending_poll = False
                body = NOOP.encode()
            elif sock.close_reason is not None and not sock._out:
                body = (CLOSE if sock._send_close_packet else NOOP).encode()
            else:
                frames = sock.take()
                if sock.close_reason is not None and sock._send_close_packet:
                    frames.append(CLOSE)
                body = frames_to_payload(frames)
        finally:
            sock._poll_pending = False
            if sock.poll_after_close is not None:
                sock.poll_after_close.set()
        try:
            await ex.respond(200, body, headers=POLL_HEADERS)
        except ClientGone:
            sock.close("poll write failed", send_close_packet=False)
            raise

    async def _post(self, sock: EIOSocket, ex: Exchange) -> None:
        sock.used = True
        try:
            body = await ex.read_body(self.max_payload)
        except Exception:
            sock.close("payload too large", send_close_packet=False)
            raise
        try:
            records = payload_records(body, max_payload=self.max_payload, max_packets=self.limits.max_packets)
            del body
            packets = []  # all decoded before any is handled (a bad record refuses the whole POST)
            for i, record in enumerate(records):
                packets.append(decode_record(record))
                if i % DECODE_BATCH == DECODE_BATCH - 1:
                    await trio.lowlevel.checkpoint()
            del records
            for packet in packets:
                if sock.close_reason is not None:
                    break  # packets after a close (e.g. `1` then `40` in one payload) are ignored
                await self._on_packet(sock, packet)
                # Yield between packets: a payload of many cheap packets (noops) must not hold
                # the loop while other clients wait (a checkpoint costs ~1 µs).
                await trio.lowlevel.checkpoint()
                if sock.close_reason is not None:
                    break
        except ProtocolError as exc:
            log.info("closing Engine.IO socket %s: %s", sock.sid, exc.msg)
            sock.close(f"bad packet: {exc.msg}", send_close_packet=False)
            return await ex.json(400, {**error_json(EIOError.BAD_REQUEST), "detail": exc.msg})
        await ex.respond(200, b"ok", content_type="text/html")

    # ---- WebSocket -------------------------------------------------------------------------
    async def _open_websocket(self, req: Request, ex: Exchange) -> None:
        ws = await ex.accept_websocket(max_message_bytes=self.max_payload)
        sock = self._new_socket(req, "websocket")
        sock.ws = ws
        notified = False
        try:  # this task is the session's life: no session task, no exit stack, no helper frame
            await ws.send(self._open_frame(sock, []))
            ws.set_on_pending(sock.wake)  # a write-through's rest: the loop sends it
            notified = ws.notify(sock.wake)
            if notified:
                await self._ws_loop(sock, ws)
            else:
                await self._ws_loop_with_reader(sock, ws)
        finally:
            if notified:
                ws.unnotify()
            sock.close("connection ended", send_close_packet=False)
            self._end(sock)
            self._forget(sock)

    async def _upgrade(self, sock: EIOSocket, ex: Exchange) -> None:
        sock.used = True
        ws = await ex.accept_websocket(max_message_bytes=self.max_payload)
        try:
            sock.state = transition(sock.state, EIOEvent.PROBE_CONNECT)
        except ProtocolError as exc:
            # Already upgraded or being upgraded: as the reference server does, the WebSocket
            # handshake completes and the connection is closed at once; the session is untouched.
            return await ws.close(1008, exc.msg)
        settled = sock.upgrade_settled = trio.Event()
        upgraded = False
        try:
            with trio.move_on_after(self.upgrade_timeout_s):
                upgraded = await self._probe(sock, ws)
        except (ClientGone, WebSocketClosed):
            pass
        finally:
            if upgraded:
                sock.ws = ws
                sock.transport = "websocket"
                sock.state = transition(sock.state, EIOEvent.UPGRADE)
                sock.wake()
            elif sock.state in (EIOState.PROBING, EIOState.UPGRADING):
                # the upgrade failed: the socket stays on polling
                sock.state = transition(sock.state, EIOEvent.PROBE_FAILED)
            settled.set()
        if upgraded:
            return await self._serve_websocket(sock, ws)
        log.info("upgrade of %s did not complete", sock.sid)
        await ws.close(1002, "upgrade failed")

    async def _probe(self, sock: EIOSocket, ws: WebSocket) -> bool:
        """`2probe` → `3probe`, the pending poll gets a noop, then `5`. False if anything else."""
        if await ws.receive() != "2" + PROBE:
            return False
        sock.state = transition(sock.state, EIOEvent.PROBE)
        await ws.send("3" + PROBE)
        sock._noop_pending_poll = sock._poll_pending
        sock.wake()
        while True:
            frame = await ws.receive()
            if frame == "5":
                return sock.close_reason is None
            if frame == "2" + PROBE:
                await ws.send("3" + PROBE)
                continue
            return False

    async def _serve_websocket(self, sock: EIOSocket, ws: WebSocket) -> None:
        """Read and write the socket's WebSocket until the socket closes. Where the hang-up watch
        tells this task that the socket is readable (`ws.notify`), it is the only task: it
        parks on the socket's queue, and a read, a frame to send, the app's output, the
        heartbeat or the close wakes it. Elsewhere a reader task reads beside it."""
        ws.set_on_pending(sock.wake)  # a write-through's rest: the writer below sends it
        if ws.notify(sock.wake):
            try:
                await self._ws_loop(sock, ws)
            finally:
                ws.unnotify()
        else:
            await self._ws_loop_with_reader(sock, ws)

    async def _ws_loop_with_reader(self, sock: EIOSocket, ws: WebSocket) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._ws_reader, sock, ws)
            await self._ws_loop(sock, ws)
            nursery.cancel_scope.cancel()

    async def _ws_reader(self, sock: EIOSocket, ws: WebSocket) -> None:
        try:
            while sock.close_reason is None:
                frame = await ws.receive()
                await self._on_packet(sock, decode_ws(frame))
        except (WebSocketClosed, ProtocolError) as exc:
            self._read_failed(sock, exc)

    async def _read_round(self, sock: EIOSocket, ws: WebSocket) -> None:
        """Handle, in order, the messages that have arrived (at most READ_BATCH before the
        loop's other work and a checkpoint), reading the socket without blocking."""
        try:
            for _ in range(READ_BATCH):
                frame = ws.receive_nowait()
                if frame is None:
                    return
                await self._on_packet(sock, decode_ws(frame))
                if sock.close_reason is not None:
                    return
        except (WebSocketClosed, ProtocolError) as exc:
            self._read_failed(sock, exc)
            return
        await trio.lowlevel.checkpoint()  # a client that keeps sending shares the loop

    def _read_failed(self, sock: EIOSocket, exc: Exception) -> None:
        if isinstance(exc, WebSocketClosed):
            sock.close(f"websocket closed ({exc.code})", send_close_packet=False)
        else:
            assert isinstance(exc, ProtocolError)
            log.info("closing Engine.IO socket %s: %s", sock.sid, exc.msg)
            sock.close(f"bad packet: {exc.msg}", send_close_packet=False)
            sock.ws_close_code = exc.close_code_hint

    async def _ws_loop(self, sock: EIOSocket, ws: WebSocket) -> None:
        """Read what has arrived (when told so), have the app queue what it has ready, write
        everything queued in one send; park when there is nothing to do."""
        pull = self.app.pull
        try:
            while True:
                if ws.readable and sock.close_reason is None:
                    await self._read_round(sock, ws)
                    await ws.flush_replies()  # pongs, a close reply
                if sock.close_reason is None:
                    pull(sock)
                frames = sock.take()
                wrote = bool(frames) or ws.pending  # pending: what a write-through left (server/wire.py)
                if wrote:
                    await ws.send_many(frames)
                if sock.close_reason is not None:
                    if sock._out:
                        continue
                    break
                # Park only when this round found nothing to write: what became ready during a
                # write (its wake-up found this task busy) is pulled on the next round.
                if not wrote and not ws.readable:
                    await sock.wait_output()
            await ws.close(sock.ws_close_code, (sock.close_reason or "")[:100])
        except (ClientGone, WebSocketClosed) as exc:
            sock.close(f"write failed: {exc}", send_close_packet=False)
