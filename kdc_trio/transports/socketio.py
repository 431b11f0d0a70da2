"""Socket.IO v4 transport of the chat gateway, at `/socket.io/`.

Same auth, sessions, turns, events and relay as SSE. A socket authenticates with its
CONNECT auth payload `{user_session_id, bearer_token, id_token, tenant, project}` (plus the
handshake request's headers and cookies), joins its session's relay channel with its own
outbox (its Socket.IO sid is its `stream_id`, the `target_sid` of its turns' events; `stream_id`
in the auth names it instead), and gets `session_info`. Connection-state recovery (pid,
offsets, `socket.recovered`): transports/sio_recovery.py. Client events: `chat_message` (JSON,
then one binary per attachment), `conv_status.get`, `ping`. Server events: the SSE families, same envelopes, same names.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kdc_trio.auth.sources import extract_tokens
from kdc_trio.errors import ClientError
from kdc_trio.auth.identity import Identity
from kdc_trio.ingress.errors import IngressError
from kdc_trio.ingress.limits import Limits
from kdc_trio.ingress.message import RawFile, build_message
from kdc_trio.processor.submit import admit_turn, submit_turn
from kdc_trio.relay.chat_relay import RelayUnavailable
from kdc_trio.relay.keys import SessionKey
from kdc_trio.relay.outbox import CloseReason, Outbox
from kdc_trio.server import Router
from kdc_trio.server.websocket import Framed
from kdc_trio.sessions.model import Session
from kdc_trio.sessions.store import RecoveryRecord
from kdc_trio.transports.eio_server import EIOLimits, EIOServer
from kdc_trio.transports.expiry import TokenDeadline
from kdc_trio.transports.identify import session_and_identity, stream_id_from
from kdc_trio.transports.sio_recovery import keep_pid, new_pid, recovered, recovery_request, resume_after
from kdc_trio.transports.sio_app import NamespaceConn, SocketIOApp
from protocol.envelope import iso_timestamp

if TYPE_CHECKING:
    from kdc_trio.ports import ChatPorts

log = logging.getLogger("kdc_trio.socketio")

PATH = "/socket.io/"
# Largest JSON arguments of conv_status.get / ping: they hold an id or nothing.
SMALL_EVENT = 4096


@dataclass(eq=False, slots=True)
class ChatConn:
    session: Session
    key: SessionKey
    outbox: Outbox
    deadline: TokenDeadline
    membership: object  # the relay's (ChatRelayCommunicator.join): left in disconnect
    offsets: bool = False  # session events carry their seq as a last string argument (recovery)
    recovered: bool = False  # this CONNECT resumed a pid (sio_recovery.py)


def _binaries(value: Any, out: list[bytes]) -> Any:
    """Take the binary values out of a decoded argument (lists and dicts walked in order)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        out.append(value if isinstance(value, bytes) else bytes(value))
        return None
    if isinstance(value, list):
        kept = [v for v in (_binaries(v, out) for v in value) if v is not None]
        return kept
    if isinstance(value, dict):
        return {k: _binaries(v, out) for k, v in value.items()}
    return value


def split_attachments(args: list) -> tuple[Any, list[bytes]]:
    """`chat_message` arguments → (the JSON object, its attachments in order)."""
    if not args:
        raise IngressError(422, "invalid_message", "chat_message needs a JSON object argument")
    files: list[bytes] = []
    obj = _binaries(args[0], files)
    for extra in args[1:]:
        if not isinstance(extra, (bytes, bytearray, memoryview)):
            raise IngressError(422, "invalid_message",
                               "arguments after the message object must be binary attachments")
        _binaries(extra, files)
    return obj, files


class ChatSocketIO(SocketIOApp):
    namespaces = ("/",)

    def __init__(self, gw: "ChatPorts") -> None:
        s = gw.settings
        super().__init__(connect_timeout_s=s.sio_connect_timeout_ms / 1000, max_attachments=s.max_files,
                         max_payload=s.effective_sio_max_payload)
        self.gw = gw
        self.limits = Limits.from_settings(s)

    # ---- connect / disconnect ----------------------------------------------------------------
    async def connect(self, conn: NamespaceConn, auth: Any) -> None:
        """The socket's session, its relay channel and its replay: held until `disconnect`."""
        gw = self.gw
        if auth is not None and not isinstance(auth, dict):
            raise ClientError(400, "bad_request", "the auth payload must be an object")
        auth = auth or {}
        req = conn.sock.request
        headers = req.headers.as_dict()
        asked = await recovery_request(gw, auth, headers)
        session, identity = await self._session(conn, auth, headers, asked.record)
        headers = None
        await gw.guard.admit("connect", session.user_type.value, session.session_id, conn.sock.address)
        is_recovered = recovered(asked.record, session.session_id, session.user_id)
        record = asked.record if is_recovered else None
        if record is not None:
            conn.sid = record.stream_id  # the turn in flight targets the old stream: it keeps it
        elif auth.get("stream_id") is not None:
            conn.sid = stream_id_from(auth["stream_id"])
        key = SessionKey(session.tenant, session.project, session.session_id)
        outbox = Outbox(conn.sid, gw.settings.client_queue, merge_at=gw.settings.outbox_merge_at)
        replay_after = resume_after(auth, record)
        if replay_after is not None or asked.offsets:
            outbox.hold()
        try:
            membership = await gw.relay.join(key, outbox)  # left in disconnect (or below, on failure)
        except RelayUnavailable as exc:
            log.warning("Socket.IO CONNECT of %s refused: %s", conn.sid, exc)
            raise ClientError(503, "relay_unavailable", str(exc)) from None
        try:
            try:
                if replay_after is not None:
                    await gw.relay.replay(key, outbox, replay_after)
                    position = max(replay_after, outbox.last_seq)
                elif asked.offsets:
                    position = await gw.relay.start_at_latest(key, outbox)
            except RelayUnavailable as exc:
                log.warning("Socket.IO CONNECT of %s refused: %s", conn.sid, exc)
                raise ClientError(503, "relay_unavailable", str(exc)) from None
            if asked.offsets:
                pid = asked.pid if record is not None and asked.pid else new_pid()
                if await keep_pid(gw, pid, RecoveryRecord(session.session_id, session.user_id, conn.sid, position)):
                    conn.pid = pid
        except BaseException:
            outbox.close(CloseReason.DISCONNECTED, "connect failed")
            gw.relay.leave(membership, outbox)
            raise
        conn.state = ChatConn(session, key, outbox, TokenDeadline(identity, gw.settings), membership,
                              offsets=conn.pid is not None, recovered=is_recovered)
        gw.counters.sio_sockets += 1

    def disconnect(self, conn: NamespaceConn) -> None:
        state = conn.state
        if not isinstance(state, ChatConn):
            return
        conn.state = None
        self.gw.counters.sio_sockets -= 1
        state.deadline.disarm()
        outbox = state.outbox
        outbox.write_through = None
        outbox.notify(None)
        outbox.close(CloseReason.DISCONNECTED, conn.left_reason or "namespace ended")
        self.gw.relay.leave(state.membership, outbox)

    async def _session(self, conn: NamespaceConn, auth: dict, headers: dict,
                       record: RecoveryRecord | None) -> tuple[Session, Identity | None]:
        """The caller's session; a recovering caller that names none is offered its pid's session
        (the resolver's ownership rules still apply, and a refusal there is just no recovery)."""
        gw, req = self.gw, conn.sock.request
        kw = dict(headers=headers, cookies=req.cookies, sio_auth=auth,
                  reject_anonymous=gw.settings.ws_reject_anonymous, client=req.client)
        if record is not None and not auth.get("user_session_id"):
            try:
                return await session_and_identity(gw, params={**auth, "user_session_id": record.session_id}, **kw)
            except ClientError:
                pass
        return await session_and_identity(gw, params=auth, **kw)

    async def after_connect(self, conn: NamespaceConn) -> None:
        """Greet, then have the outbox's events written: the socket's writer is woken when they
        are ready (no pump task), the relay writes to an idle WebSocket itself (write-through),
        and the token's deadline is an alarm (transports/expiry.py) that closes the outbox."""
        state: ChatConn = conn.state
        s = state.session
        conn.emit("session_info", {"session_id": s.session_id, "user_type": s.user_type.value, "user_id": s.user_id,
                                   "username": s.username, "roles": list(s.roles), "tenant": s.tenant,
                                   "project": s.project, "stream_id": conn.sid,
                                   "recovered": state.recovered, "connected_at": iso_timestamp()})
        sock, outbox = conn.sock, state.outbox
        outbox.notify(sock.wake)
        outbox.write_through = self._write_through(sock, state.offsets)
        state.deadline.arm(outbox, s)

    def take_output(self, conn: NamespaceConn) -> bool:
        """Everything ready in the relay outbox, as one batch, when the transport is about to
        write (events wait in the outbox, where a slow client's deltas merge, not in the
        Engine.IO queue, where nothing merges). A closed outbox ends the namespace connection
        (its DISCONNECT follows the last batch, which for an expired token holds `auth.expired`);
        a slow one closes the socket."""
        state = conn.state
        if not isinstance(state, ChatConn):
            return False
        outbox = state.outbox
        batch = outbox.take_nowait()
        if batch:
            offsets = state.offsets
            sock = conn.sock
            if sock.ws is not None and sock.transport == "websocket":
                # upgraded: the frames made once per event for all the session's sockets
                sock.send(Framed(b"".join([m.sio_frame(offsets) for m in batch])))
            else:
                sock.send_many([m.sio_text(offsets) for m in batch])
        closed = outbox.closed_reason
        if closed is None:
            return False
        if closed.reason.slow:
            self.gw.counters.closed_slow += 1
            log.warning("closing Socket.IO socket %s: %s", conn.sid, closed)
            conn.sock.close(str(closed))
        elif closed.reason is CloseReason.TOKEN_EXPIRED:
            log.info("disconnecting Socket.IO socket %s: %s", conn.sid, closed)
        return True

    @staticmethod
    def _write_through(sock, offsets: bool):
        """The relay writes a batch to an idle upgraded socket itself (server/wire.py): the
        message's frames, made once per event for all the session's sockets
        (`RelayMessage.sio_frame`), in one non-blocking send; what does not fit wakes the writer."""
        writable_now = sock.writable_now

        def write(batch: list) -> bool:
            ws = writable_now()
            if ws is None:
                return False
            try:
                data = batch[0].sio_frame(offsets) if len(batch) == 1 else \
                    b"".join([m.sio_frame(offsets) for m in batch])
            except Exception:  # an event that cannot be encoded: the writer meets it as before
                return False
            ws.write_nowait(data)
            return True

        return write

    # ---- client events -----------------------------------------------------------------------
    async def on_event(self, conn: NamespaceConn, event: str, args: list, ack_id: int | None) -> None:
        state = conn.state
        if not isinstance(state, ChatConn):
            return
        try:
            if event == "auth.refresh":
                reply = self._auth_refresh(state, args)
            elif event == "chat_message":
                state.deadline.check()
                reply = await self._chat_message(conn, state, args)
            elif event == "conv_status.get":
                state.deadline.check()
                reply = await self._conv_status(conn, state, args)
            elif event == "ping":
                conn.emit("pong", {"timestamp": time.time()})
                reply = {"timestamp": time.time()}
            else:
                reply = {"error": "unknown_event", "detail": f"no handler for client event {event!r}"}
        except ClientError as exc:
            reply = refusal_reply(exc)
        if ack_id is not None:
            # KDCube's clients read `ok` first: a refusal must never look accepted.
            conn.ack(ack_id, [{"ok": "error" not in reply, **reply}])

    async def _chat_message(self, conn: NamespaceConn, state: ChatConn, args: list) -> dict:
        gw = self.gw
        try:
            await admit_turn(gw, state.session, conn.sid, conn.sock.address, endpoint="socket:chat_message")
        except ClientError as exc:
            return refusal_reply(exc)
        try:
            obj, blobs = split_attachments(args)
            metas = obj.get("attachment_meta") if isinstance(obj, dict) else None
            names = [m.get("filename") if isinstance(m, dict) else None for m in metas] \
                if isinstance(metas, list) else []
            files = [RawFile(filename=names[i] if i < len(names) else None, mime=None, data=b)
                     for i, b in enumerate(blobs)]
            message = build_message(obj, files, self.limits, match="position")
        except IngressError as exc:
            from kdc_trio.processor.submit import tell_refusal

            await tell_refusal(gw, state.session, conn.sid, error=exc.error, detail=exc.detail,
                               conversation_id=exc.conversation_id, turn_id=exc.turn_id)
            return refusal_reply(exc, conversation_id=exc.conversation_id, turn_id=exc.turn_id)
        try:
            return await submit_turn(gw, session=state.session, stream_id=conn.sid, message=message)
        except ClientError as exc:
            return refusal_reply(exc, conversation_id=message.conversation_id, turn_id=message.turn_id)

    def _auth_refresh(self, state: ChatConn, args: list) -> dict:
        """`auth.refresh` `{bearer_token, id_token?}`: the same user's fresh token moves the deadline."""
        obj = args[0] if args else None
        if not isinstance(obj, dict):
            raise ClientError(400, "bad_request", 'expected {"bearer_token": str, "id_token": str}')
        identity = self.gw.authenticator.authenticate(extract_tokens(self.gw.settings, sio_auth=obj))
        exp = state.deadline.refresh(identity)
        return {"exp": exp, "deadline": state.deadline.deadline}

    async def _conv_status(self, conn: NamespaceConn, state: ChatConn, args: list) -> dict:
        from kdc_trio.transports.rest import publish_conv_status

        obj = args[0] if args else None
        conversation_id = obj.get("conversation_id") if isinstance(obj, dict) else None
        if not isinstance(conversation_id, str) or len(conversation_id) > SMALL_EVENT:
            return {"error": "bad_request", "detail": 'expected {"conversation_id": str}'}
        return await publish_conv_status(self.gw, state.session, conversation_id, conn.sid)


def refusal_reply(exc: ClientError, **ids: str | None) -> dict:
    """How a refused client event is acked (the one place a ClientError becomes an ack): ours
    (`error` code, `detail`, `status`) and KDCube's (`ok: false`, `error_type`) side by side,
    with the request's ids when it had them."""
    reply = {"ok": False, "error": exc.error, "error_type": getattr(exc, "error_type", exc.error), "detail": exc.detail,
             "status": exc.status}
    if exc.limit:
        reply["limit"] = exc.limit
    if exc.retry_after:
        reply["retry_after"] = exc.retry_after
    reply.update({k: v for k, v in ids.items() if v})
    return reply


def install(router: Router, gw: "ChatPorts") -> EIOServer:
    s = gw.settings
    server = EIOServer(ChatSocketIO(gw), ping_interval_ms=s.sio_ping_interval_ms,
                       ping_timeout_ms=s.sio_ping_timeout_ms, max_payload=s.effective_sio_max_payload,
                       max_queue=s.client_queue * 2, upgrade_timeout_s=s.sio_upgrade_timeout_ms / 1000,
                       limits=EIOLimits.from_settings(s))
    # Every method reaches the Engine.IO server: a wrong one is its 400, as the protocol says.
    router.add("GET POST PUT DELETE PATCH", PATH, server.handle, prefix=True)
    return server
