"""SSE transport: `GET /sse/stream`, `POST /sse/chat`, `POST /sse/conv_status.get`.

A stream is one connection task tree: the writer loop here, a watcher for the client going
away, and one for server shutdown. Everything ready for the connection goes out in one
write; idle streams get heartbeat comments; a full outbox ends the stream with a logged
reason and the client resumes with `Last-Event-ID`.
"""

from __future__ import annotations

import json
import logging
import time
from functools import partial
from typing import TYPE_CHECKING

import trio

from kdc_trio.auth.sources import extract_tokens
from kdc_trio.ingress.errors import IngressError
from kdc_trio.ingress.limits import Limits
from kdc_trio.ingress.multipart import parse_chat_body
from kdc_trio.processor.submit import admit_turn, submit_turn, tell_refusal
from kdc_trio.processor.turn import new_id
from kdc_trio.relay.chat_relay import RelayUnavailable
from kdc_trio.relay.keys import SessionKey
from kdc_trio.relay.outbox import CloseReason, Outbox
from kdc_trio.server import ClientGone, Exchange, HTTPError, Request, Router, WriteDeadline
from kdc_trio.sessions.model import Session
from kdc_trio.sessions.store import StreamBinding, new_stream_token
from kdc_trio.transports.eio_server import client_host
from kdc_trio.transports.expiry import TokenDeadline
from kdc_trio.transports.identify import (
    request_session, request_session_and_identity, session_cookie, stream_id_from,
)
from kdc_trio.util.timers import Alarm, Timers
from protocol.errors import RemoteProtocolError
from protocol.jsonbound import JSONNestingError
from protocol.jsonbound import loads as bounded_loads
from protocol.envelope import iso_timestamp
from protocol.sse import encode_comment, encode_event, parse_last_event_id

if TYPE_CHECKING:
    from kdc_trio.config import Settings
    from kdc_trio.ports import ChatPorts

log = logging.getLogger("kdc_trio.sse")

# Retry-After for a refused stream (429): long enough to shed a reconnect storm.
STREAM_RETRY_AFTER_S = 5
# Time a closing stream may take to drop its binding (stream → session) from the store.
STREAM_RELEASE_TIMEOUT_S = 2.0
# Largest JSON body of a conv_status request: it holds two ids.
CONV_STATUS_BODY_LIMIT = 4096
# Largest body of an auth.refresh: two tokens (IdP tokens with many groups run to a few KiB each).
AUTH_REFRESH_BODY_LIMIT = 64 * 1024
TRUTHY = ("1", "true", "yes", "on")

SSE_HEADERS = [
    ("content-type", "text/event-stream; charset=utf-8"),
    ("cache-control", "no-cache, no-transform"),
    ("x-accel-buffering", "no"),
]


def install(router: Router, gw: "ChatPorts") -> None:
    router.add("GET", "/sse/stream", lambda req, ex: stream(gw, req, ex))
    router.add("POST", "/sse/chat", lambda req, ex: chat(gw, req, ex))
    router.add("POST", "/sse/conv_status.get", lambda req, ex: conv_status_get(gw, req, ex))
    router.add("POST", "/sse/auth.refresh", lambda req, ex: auth_refresh(gw, req, ex))


# ---- GET /sse/stream ----------------------------------------------------------------------
async def stream(gw: "ChatPorts", req: Request, ex: Exchange) -> None:
    # One frame for the stream's whole life (its writer `_write_loop` below it): explicit
    # try/finally, no exit stack or context manager objects, no helper frame in between: an idle
    # stream holds this frame (and what its locals reference) for hours, 10,000 of them per process.
    s = gw.settings
    if gw.counters.sse_streams >= s.max_sse_connections:
        raise HTTPError(429, "too_many_streams", f"this process serves at most {s.max_sse_connections} streams",
                        retry_after=STREAM_RETRY_AFTER_S)
    # Counted with the check, before any await: a burst of opens cannot all pass the cap while
    # each waits for its session (400 opens against a cap of 300 gave 400 streams).
    gw.counters.sse_streams += 1
    joined: list[object] = []
    outbox = deadline = stream_id = token = None
    registered = False
    try:
        stream_id = stream_id_from(req.query.get("stream_id") or new_id("stream"))
        last_id, ignored_last_id = resume_point(req)
        session, identity = await request_session_and_identity(gw, req, use_cookie=False)
        await gw.guard.admit("connect", session.user_type.value, session.session_id, client_host(req.client))
        deadline = TokenDeadline(identity, s)
        identity = None
        key = SessionKey(session.tenant, session.project, session.session_id)
        keys = [key]
        if req.query.get("project_events", "").lower() in TRUTHY:
            keys.append(SessionKey.project_wide(session.tenant, session.project))
        outbox = Outbox(stream_id, s.client_queue, merge_at=s.outbox_merge_at)
        if last_id is not None:
            outbox.hold()
        try:
            for k in keys:
                joined.append(await gw.relay.join(k, outbox))
        except RelayUnavailable as exc:
            raise HTTPError(503, "relay_unavailable", str(exc), retry_after=STREAM_RETRY_AFTER_S) from None
        keys = None
        token = new_stream_token()
        await gw.store.bind_stream(stream_id, StreamBinding(session.session_id, session.tenant, session.project), token)
        gw.streams.add(stream_id, session.session_id, deadline, outbox)  # closed when the server drains
        registered = True
        await ex.start_stream(200, [*SSE_HEADERS, *session_cookie(s, session, req)])
        await ex.send(ready_event(s, session, stream_id, deadline, ignored_last_id))
        if last_id is not None:
            try:
                await gw.relay.replay(key, outbox, last_id)
            except RelayUnavailable as exc:
                log.warning("SSE stream %s: %s", stream_id, exc)
                outbox.close(CloseReason.RELAY_FAILED, str(exc))
        key = None
        # Write until the client goes, the outbox closes, the server drains (the drain closes
        # every live stream's outbox: `LiveStreams.close_all`, no task per stream), or the token
        # runs out (`deadline.arm`, transports/expiry.py: an alarm that tells, then closes the
        # outbox). The client going away closes the outbox too: the process's hang-up watch sees
        # it (server/hangup.py, no task per stream), else a reader task.
        watched = ex.watch_hangup(partial(outbox.close, CloseReason.CLIENT_GONE))
        deadline.arm(outbox, session)
        try:
            if watched:  # the idle stream's one task: this one
                await _write_loop(ex, outbox, s.sse_heartbeat_s)
            else:
                await _write_with_reader(ex, outbox, s.sse_heartbeat_s)
        finally:
            deadline.disarm()
            if watched:
                ex.unwatch_hangup()
        closed = outbox.closed_reason
        if closed is not None and closed.reason.slow:
            gw.counters.closed_slow += 1
            log.warning("closed SSE stream %s: %s", outbox.sid, closed)
    except ClientGone:
        pass
    finally:
        try:
            if registered:
                gw.streams.remove(stream_id, deadline, outbox)
            for membership in reversed(joined):
                gw.relay.leave(membership, outbox)
            if token is not None:
                await release_stream(gw, stream_id, token)
        finally:
            gw.counters.sse_streams -= 1


async def _write_with_reader(ex: Exchange, outbox: Outbox, heartbeat: float) -> None:
    """The writer beside a reader for the client going away, when the hang-up watch cannot see
    its socket (TLS, a memory stream)."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_client, ex, outbox)
        await _write_loop(ex, outbox, heartbeat)
        nursery.cancel_scope.cancel()


def ready_event(s: "Settings", session: Session, stream_id: str, deadline: TokenDeadline,
                ignored_last_id: bool) -> bytes:
    """The stream's first event: the session it is bound to."""
    now = time.time()
    ready = {"timestamp": iso_timestamp(now), "ts": int(now * 1000), "session_id": session.session_id,
             "user_type": session.user_type.value, "user_id": session.user_id, "roles": list(session.roles),
             "stream_id": stream_id, "tenant": session.tenant, "project": session.project}
    if ignored_last_id:
        ready["last_event_id_ignored"] = True
    if deadline.deadline is not None:
        ready["token_deadline"] = deadline.deadline
    return encode_event(event="ready", retry=s.sse_retry_ms, data=json.dumps(ready, separators=(",", ":")))


async def release_stream(gw: "ChatPorts", stream_id: str, token: str) -> None:
    """Drop the live stream's record (stream → session, for posts that name the stream and nothing
    else), shielded and bounded, as the stream may be ending by cancellation."""
    with trio.CancelScope(shield=True), trio.move_on_after(STREAM_RELEASE_TIMEOUT_S):
        try:
            await gw.store.release_stream(stream_id, token)
        except Exception as exc:  # the binding then expires with the session TTL
            log.warning("stream %s: releasing its binding failed: %s", stream_id, exc)


def resume_point(req: Request) -> tuple[int | None, bool]:
    """The session sequence to replay after, and whether a Last-Event-ID was ignored. A value that
    is not one of ours (KDCube gateways send uuids) starts a fresh stream instead of a 400."""
    value = req.headers.get("last-event-id") or req.query.get("last_event_id")
    try:
        return parse_last_event_id(value), False
    except RemoteProtocolError:
        log.info("Last-Event-ID %.40r is not a kdc-trio sequence: starting a fresh stream", value)
        return None, True


async def _watch_client(ex: Exchange, outbox: Outbox) -> None:
    await ex.wait_client_gone()
    outbox.close(CloseReason.CLIENT_GONE)


def write_through(ex: Exchange, outbox: Outbox) -> None:
    """While the writer loop runs, the relay writes an event to an idle stream itself
    (server/wire.py): one chunk, one non-blocking send; what does not fit wakes the writer."""
    wire = ex.wire
    if not ex.chunked or not wire.enabled:
        return
    frame = ex.frame
    can_write_now = wire.can_write_now
    write_nowait = wire.write_nowait

    def write(batch: list) -> bool:
        if not can_write_now():
            return False
        try:
            data = frame(batch[0].sse_bytes() if len(batch) == 1 else b"".join([m.sse_bytes() for m in batch]))
        except Exception:  # an event that cannot be encoded: the writer meets it and ends the stream
            return False
        write_nowait(data)
        return True

    wire.on_pending = outbox.wake
    outbox.write_through = write


async def _write_loop(ex: Exchange, outbox: Outbox, heartbeat: float) -> None:
    """The writer (one frame while idle: it waits on the outbox's queue directly). The heartbeat
    is the process's timer (util/timers.py, an `Alarm` that wakes the outbox when the stream has
    been silent for `heartbeat`): an idle writer parks with no cancel scope of its own."""
    write_through(ex, outbox)
    wire = ex.wire
    timers = Timers.shared()
    alarm = Alarm(outbox.wake)
    due = trio.current_time() + heartbeat
    try:
        while True:
            seen = wire.written_through
            if timers.set_alarm(alarm, due):
                await outbox.wait()
            else:  # no process timer (it stopped): a timeout of its own
                await outbox.wait(max(0.0, due - trio.current_time()))
            batch = outbox.take_nowait()
            closed = outbox.closed_reason
            if closed is not None and not closed.reason.writable:
                return
            if batch:
                await ex.send(b"".join([m.sse_bytes() for m in batch]))
            elif wire.pending is not None:  # a write-through left bytes: sent under the write deadline
                await ex.send(b"")
            elif closed is None:
                now = trio.current_time()
                if wire.written_through != seen:  # the relay wrote meanwhile: silent since about now
                    due = now + heartbeat
                    continue
                if now < due:  # woken early (wake() with nothing to do)
                    continue
                await ex.send(b": heartbeat\n\n")
            if closed is not None:
                if closed.reason is CloseReason.SERVER_SHUTDOWN:
                    data = json.dumps({"reason": "draining", "timestamp": time.time()})
                    await ex.send(encode_event(event=closed.reason.value, data=data))
                else:
                    await ex.send(encode_comment(f"closing: {closed}"))
                await ex.end_stream()
                return
            due = trio.current_time() + heartbeat
    except ClientGone as exc:
        outbox.close(CloseReason.WRITE_DEADLINE if isinstance(exc, WriteDeadline) else CloseReason.CLIENT_GONE,
                     str(exc))
    finally:
        Timers.cancel_alarm(alarm)
        outbox.write_through = None  # (the connection clears `wire.on_pending` when the exchange ends)


# ---- POST /sse/chat -----------------------------------------------------------------------
async def chat(gw: "ChatPorts", req: Request, ex: Exchange) -> None:
    if not req.query.get("stream_id"):
        raise HTTPError(400, "bad_request", "stream_id is required: it names the stream that gets the replies")
    stream_id = stream_id_from(req.query["stream_id"])
    session = await request_session(gw, req, stream_id=stream_id)
    await admit_turn(gw, session, stream_id, client_host(req.client), endpoint="/sse/chat")
    try:
        message = await parse_chat_body(req.content_type, ex.body_chunks(), Limits.from_settings(gw.settings))
    except IngressError as exc:
        await tell_refusal(gw, session, stream_id, error=exc.error, detail=exc.detail,
                           conversation_id=exc.conversation_id, turn_id=exc.turn_id)
        raise
    result = await submit_turn(gw, session=session, stream_id=stream_id, message=message)
    await ex.json(202, result, headers=session_cookie(gw.settings, session, req))


# ---- POST /sse/conv_status.get ------------------------------------------------------------
async def conv_status_get(gw: "ChatPorts", req: Request, ex: Exchange) -> None:
    body = await ex.read_body(CONV_STATUS_BODY_LIMIT)
    try:
        obj = bounded_loads(body or b"{}")
        conversation_id = obj["conversation_id"]
        stream_id = obj.get("stream_id") or req.query.get("stream_id")
        if not isinstance(conversation_id, str) or (stream_id is not None and not isinstance(stream_id, str)):
            raise TypeError
    except JSONNestingError as exc:
        raise HTTPError(400, "bad_request", f"JSON body {exc}") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise HTTPError(400, "bad_request", 'expected JSON {"conversation_id": str, "stream_id": str}') from None
    from kdc_trio.transports.rest import publish_conv_status

    stream_id = stream_id_from(stream_id) if stream_id is not None else None
    session = await request_session(gw, req, stream_id=stream_id)
    status = await publish_conv_status(gw, session, conversation_id, stream_id)
    await ex.json(200, status)


# ---- POST /sse/auth.refresh ---------------------------------------------------------------
async def auth_refresh(gw: "ChatPorts", req: Request, ex: Exchange) -> None:
    """A fresh token for a live stream of this process (`?stream_id=`): the same user only (403
    `subject_mismatch`), the same session when one is named; the stream's deadline moves to the new
    token's `exp` (transports/expiry.py). The token comes from any source: `Authorization`, the
    JSON body `{bearer_token, id_token}`, or the cookies."""
    body = await ex.read_body(AUTH_REFRESH_BODY_LIMIT)
    try:
        obj = bounded_loads(body) if body else {}
        if not isinstance(obj, dict):
            raise TypeError
    except (ValueError, TypeError, JSONNestingError):
        raise HTTPError(400, "bad_request", 'expected a JSON object {"bearer_token": str, "id_token": str}') from None
    stream_id = stream_id_from(req.query.get("stream_id") or obj.get("stream_id") or "")
    tokens = extract_tokens(gw.settings, headers=req.headers.as_dict(), cookies=req.cookies, sio_auth=obj)
    identity = gw.authenticator.authenticate(tokens)
    live = gw.streams.get(stream_id)
    if live is None:
        raise HTTPError(404, "unknown_stream", "no live stream of that id on this gateway process")
    session_id, deadline = live
    named = req.query.get("user_session_id") or obj.get("user_session_id")
    if named is not None and named != session_id:
        raise HTTPError(403, "session_mismatch", "the stream belongs to another session")
    exp = deadline.refresh(identity)
    await ex.json(200, {"ok": True, "exp": exp, "deadline": deadline.deadline, "stream_id": stream_id})
