"""The Engine.IO v4 server on our HTTP server: polling, WebSocket, the upgrade, heartbeats.

One `EIOSocket` per Engine.IO session. Its lifetime is a task (`_session_task`) in the
server's nursery, owning the heartbeat and the application's per-socket task; HTTP requests
(polls, posts) and the WebSocket connection are I/O endpoints that feed it and drain it.
The outgoing queue holds Engine.IO frames already encoded for the WebSocket (`str` text
frames such as `42["chat_delta",{...}]`, `bytes` binary frames, and on an upgraded socket
`Framed` WebSocket bytes made once for all of a session's sockets); a writer takes everything
queued in one go, so a busy socket gets one write per batch.

Overflow policy: the queue is bounded (`max_queue`); a socket whose queue is full is closed
with a logged reason, never blocks its producers.
"""

from __future__ import annotations

import logging
import secrets

import trio

from kdc_trio.server import ClientGone, Exchange, Request
from kdc_trio.server.websocket import WebSocket, WebSocketClosed
from kdc_trio.transports.eio_types import EIOApp, EIOLimits, client_host
from kdc_trio.util.batch_queue import BatchQueue
from protocol.eio_state import EIOEvent, EIOState, initial_state, transition
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


class EIOSocket:
    def __init__(self, server: "EIOServer", request: Request, transport: str) -> None:
        self.server = server
        self.sid = secrets.token_urlsafe(15)
        self.request = request  # the handshake request: headers and cookies for auth
        self.transport = transport
        self.state = initial_state(transport)
        self.app_state: object = None
        self.close_reason: str | None = None
        self.closed = trio.Event()
        self._out: BatchQueue[str | bytes] = BatchQueue(server.max_queue)
        self._pong = trio.Event()
        self.opened_at = trio.current_time()
        self.upgrade_settled = trio.Event()  # set when a probe ends, upgraded or not
        self.used = trio.Event()  # set by the first poll, post or upgrade after the handshake
        self.address = client_host(request.client)
        self._poll_pending = False
        self._noop_pending_poll = False
        self._send_close_packet = False
        self.poll_after_close: trio.Event | None = None  # see close(await_poll=True)
        self.ws: WebSocket | None = None
        self.nursery: trio.Nursery | None = None  # the session task's: per-socket tasks live here
        self.ws_close_code = 1000

    # ---- sending -------------------------------------------------------------------------
    def send(self, frame: str | bytes) -> None:
        """Queue one Engine.IO frame (WebSocket encoding: `4…` text, raw bytes binary)."""
        self.send_many((frame,))

    def send_many(self, frames) -> None:
        if self.close_reason is not None:
            return
        if not self._out.extend_nowait(frames):
            self.close(f"outbox_full: more than {self.server.max_queue} frames waiting (SSE_CLIENT_QUEUE)")

    def take(self) -> list[str | bytes]:
        return self._out.take_nowait()

    async def flush(self) -> None:
        """Write what is queued now, on a WebSocket (a reply that must not share a TCP read
        with what follows it); polling sockets wait for their next poll."""
        ws = self.ws
        if ws is not None and self.transport == "websocket":
            frames = self.take()
            if frames:
                try:
                    await ws.send_many(frames)
                except (ClientGone, WebSocketClosed) as exc:
                    self.close(f"write failed: {exc}")

    async def wait_output(self) -> None:
        """Until frames are queued, the socket closes, or its transport state changes (`wake`)."""
        await self._out.wait_nonempty()

    async def wait_taken(self) -> None:
        """Until the queued frames are taken by a transport (a WebSocket send, a poll), the
        socket closes, or `wake` is called."""
        await self._out.wait_empty()

    def wake(self) -> None:
        self._out.wake()

    def writable_now(self) -> WebSocket | None:
        """The WebSocket a write-through may write to now (server/wire.py): upgraded, nothing
        queued here, its writer idle; else None (queue as usual)."""
        ws = self.ws
        if ws is None or self.transport != "websocket" or self._out or self.close_reason is not None \
                or not ws.can_write_now():
            return None
        return ws

    def close(self, reason: str, *, send_close_packet: bool = True, await_poll: bool = False) -> None:
        """End the socket (idempotent): its session task ends, its transports are told.
        `await_poll`: the sid stays known until one more poll is answered (or CLOSE_POLL_GRACE_S)."""
        if self.close_reason is None:
            self.close_reason = reason
            self._send_close_packet = send_close_packet
            self.state = transition(self.state, EIOEvent.CLOSE)
            self.closed.set()
            self._pong.set()  # the heartbeat waiting for a pong ends (EIOServer._heartbeat)
            self._out.close()
            # Gone for every later request at once (a poll already waiting still gets its
            # answer), not when the session task gets to its teardown.
            if not await_poll:
                self.server._forget(self)
            else:
                self.poll_after_close = trio.Event()

    def pong(self) -> None:
        self._pong.set()


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
    async def handle(self, req: Request, ex: Exchange) -> None:
        q = req.query
        if q.get("EIO") != "4":
            return await self._refuse(ex, EIOError.UNSUPPORTED_PROTOCOL_VERSION)
        transport = q.get("transport")
        if transport not in ("polling", "websocket"):
            return await self._refuse(ex, EIOError.UNKNOWN_TRANSPORT)
        if self._nursery is None or (self.draining is not None and self.draining.is_set()):
            return await ex.json(503, {"code": EIOError.FORBIDDEN, "message": "server is shutting down"})
        sid = q.get("sid")
        is_ws = (req.headers.get("upgrade") or "").lower() == "websocket"
        if transport == "websocket":
            if not is_ws or req.method != "GET":
                return await self._refuse(ex, EIOError.BAD_REQUEST)
            if sid is None:
                if await self._over_capacity(req, ex):
                    return
                return await self._open_websocket(req, ex)
            sock = self.sockets.get(sid)
            if sock is None:
                return await self._refuse(ex, EIOError.UNKNOWN_SID)
            return await self._upgrade(sock, ex)
        if sid is None:
            if req.method != "GET":
                return await self._refuse(ex, EIOError.BAD_HANDSHAKE_METHOD)
            if await self._over_capacity(req, ex):
                return
            return await self._open_polling(req, ex)
        sock = self.sockets.get(sid)
        if sock is None or sock.transport != "polling":
            return await self._refuse(ex, EIOError.UNKNOWN_SID if sock is None else EIOError.BAD_REQUEST)
        if req.method == "GET":
            return await self._poll(sock, ex)
        if req.method == "POST":
            return await self._post(sock, ex)
        return await self._refuse(ex, EIOError.BAD_HANDSHAKE_METHOD)

    async def _refuse(self, ex: Exchange, code: EIOError) -> None:
        await ex.json(400, error_json(code))

    async def _over_capacity(self, req: Request, ex: Exchange) -> bool:
        """Answer a handshake past a session cap (503 for the process, 429 for the address,
        with Retry-After and the Engine.IO error body); False when it may open."""
        lim = self.limits
        if lim.max_sessions and len(self.sockets) >= lim.max_sessions:
            status, message = 503, f"Too many sessions: {lim.max_sessions} open (KDC_EIO_MAX_SESSIONS)"
        elif lim.max_sessions_per_address and self.per_address.get(
                client_host(req.client), 0) >= lim.max_sessions_per_address:
            status, message = 429, (f"Too many sessions from this address: {lim.max_sessions_per_address} open "
                                    "(KDC_EIO_MAX_SESSIONS_PER_ADDRESS)")
        else:
            return False
        self.refused += 1
        await ex.json(status, {"code": int(EIOError.FORBIDDEN), "message": message},
                      headers=[("retry-after", str(max(1, round(lim.handshake_timeout_s))))])
        return True

    def _new_socket(self, req: Request, transport: str) -> EIOSocket:
        assert self._nursery is not None
        sock = EIOSocket(self, req, transport)
        self.sockets[sock.sid] = sock
        self.per_address[sock.address] = self.per_address.get(sock.address, 0) + 1
        self.opened += 1
        if transport == "websocket":
            sock.used.set()
        self._nursery.start_soon(self._session_task, sock)
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

    # ---- the session task ----------------------------------------------------------------
    async def _session_task(self, sock: EIOSocket) -> None:
        try:
            await self._run_session(sock)
            if sock.poll_after_close is not None:  # the sid lingers for the poll on its way
                with trio.move_on_after(CLOSE_POLL_GRACE_S):
                    await sock.poll_after_close.wait()
        finally:
            self._forget(sock)

    async def _run_session(self, sock: EIOSocket) -> None:
        try:
            async with trio.open_nursery() as nursery:
                sock.nursery = nursery
                nursery.start_soon(self.app.run_socket, sock)
                if not sock.used.is_set():
                    nursery.start_soon(self._handshake_deadline, sock)
                await self._heartbeat(sock)  # this task's own wait, until the socket closes
                nursery.cancel_scope.cancel()
        except Exception:
            log.exception("Engine.IO socket %s failed", sock.sid)
            sock.close("internal error")
        finally:
            try:
                self.app.on_close(sock, sock.close_reason or "closed")
            except Exception:
                log.exception("on_close failed for %s", sock.sid)

    async def _handshake_deadline(self, sock: EIOSocket) -> None:
        # Its own task: the session's teardown must not wait for it (a ping timeout before
        # the first poll left the closed session answering polls until this deadline).
        with trio.move_on_after(self.limits.handshake_timeout_s):
            await sock.used.wait()
            return
        sock.close("handshake not followed by a poll or an upgrade", send_close_packet=False)

    async def _heartbeat(self, sock: EIOSocket) -> None:
        """Ping, wait for the pong, until the socket closes (returns then): the session task's
        own loop, not a task of its own (an idle socket's bytes count)."""
        # Deadlines count from the handshake, not from when this task got scheduled, so the
        # close lands at pingInterval + pingTimeout after the open packet, as clients expect.
        interval, timeout = self.ping_interval_ms / 1000, self.ping_timeout_ms / 1000
        ping_at = sock.opened_at
        while sock.close_reason is None:
            ping_at += interval
            with trio.move_on_at(ping_at):
                await sock.closed.wait()
            if sock.close_reason is not None:
                return
            sock._pong = trio.Event()
            sock.send("2")
            with trio.move_on_at(ping_at + timeout):
                await sock._pong.wait()  # close() sets it too
            if sock.close_reason is not None:
                return
            if sock._pong.is_set():
                ping_at = trio.current_time()
                continue
            sock.close("ping timeout", send_close_packet=False)

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
        sock.used.set()
        if sock._poll_pending:
            sock.close("duplicate poll")
            return await self._refuse(ex, EIOError.BAD_REQUEST)
        if sock.state is EIOState.UPGRADING:
            # The client may have sent `5` just before this request: give the WebSocket reader
            # a moment so the answer reflects the finished upgrade (400) rather than a noop.
            with trio.move_on_after(UPGRADE_SETTLE_S):
                await sock.upgrade_settled.wait()
            if sock.state is EIOState.UPGRADING:
                return await ex.respond(200, NOOP.encode(), headers=POLL_HEADERS)
            if sock.transport != "polling" or sock.close_reason is not None:
                return await self._refuse(ex, EIOError.BAD_REQUEST)
        sock._poll_pending = True
        try:
            while not sock._out and sock.close_reason is None and not sock._noop_pending_poll:
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
        sock.used.set()
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
        await ws.send(self._open_frame(sock, []))
        await self._run_websocket(sock, ws)

    async def _upgrade(self, sock: EIOSocket, ex: Exchange) -> None:
        sock.used.set()
        ws = await ex.accept_websocket(max_message_bytes=self.max_payload)
        try:
            sock.state = transition(sock.state, EIOEvent.PROBE_CONNECT)
        except ProtocolError as exc:
            # Already upgraded or being upgraded: as the reference server does, the WebSocket
            # handshake completes and the connection is closed at once; the session is untouched.
            return await ws.close(1008, exc.msg)
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
            sock.upgrade_settled.set()
        if upgraded:
            return await self._run_websocket(sock, ws)
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

    async def _run_websocket(self, sock: EIOSocket, ws: WebSocket) -> None:
        ws.set_on_pending(sock.wake)  # a write-through's rest: the writer below sends it
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._ws_reader, sock, ws, nursery.cancel_scope)
            await self._ws_writer(sock, ws)
            nursery.cancel_scope.cancel()

    async def _ws_reader(self, sock: EIOSocket, ws: WebSocket, scope: trio.CancelScope) -> None:
        try:
            while sock.close_reason is None:
                frame = await ws.receive()
                await self._on_packet(sock, decode_ws(frame))
        except WebSocketClosed as exc:
            sock.close(f"websocket closed ({exc.code})", send_close_packet=False)
        except ProtocolError as exc:
            log.info("closing Engine.IO socket %s: %s", sock.sid, exc.msg)
            sock.close(f"bad packet: {exc.msg}", send_close_packet=False)
            sock.ws_close_code = exc.close_code_hint

    async def _ws_writer(self, sock: EIOSocket, ws: WebSocket) -> None:
        try:
            while True:
                await sock.wait_output()
                frames = sock.take()
                if frames or ws.pending:  # pending: what a write-through left (server/wire.py)
                    await ws.send_many(frames)
                if sock.close_reason is not None:
                    break
            await ws.close(sock.ws_close_code, (sock.close_reason or "")[:100])
        except (ClientGone, WebSocketClosed) as exc:
            sock.close(f"write failed: {exc}", send_close_packet=False)
