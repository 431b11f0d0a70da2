"""REST: health, readiness, metrics, the caller's session, a conversation's status."""

from __future__ import annotations

import hmac
import os
from typing import TYPE_CHECKING

import trio

from kdc_trio.errors import ClientError
from kdc_trio.processor.runner import communicator_for
from kdc_trio.processor.turn import Turn
from kdc_trio.ingress.message import MAX_ID_CHARS, is_valid_id
from kdc_trio.ingress.models import ChatMessage
from kdc_trio.server import Exchange, HTTPError, Request, Router
from kdc_trio.sessions.model import Session, UserType
from kdc_trio.transports.identify import request_session, session_cookie

if TYPE_CHECKING:
    from kdc_trio.ports import ChatPorts, RestPorts

# Readiness probes answer within this, whatever the bus or store does.
READY_TIMEOUT_S = 2.0


def install(router: Router, gw: "RestPorts") -> None:
    router.add("GET", "/health", lambda req, ex: health(gw, req, ex))
    router.add("GET", "/ready", lambda req, ex: ready(gw, req, ex))
    router.add("GET", "/metrics", lambda req, ex: metrics(gw, req, ex))
    router.add("GET", "/api/session", lambda req, ex: api_session(gw, req, ex))
    router.add("GET", "/profile", lambda req, ex: profile(gw, req, ex))
    router.add("GET", "/api/conv_status", lambda req, ex: api_conv_status(gw, req, ex))


async def health(gw: "RestPorts", req: Request, ex: Exchange) -> None:
    await ex.json(200, {"status": "ok", "draining": gw.server.draining.is_set(), "pid": os.getpid(),
                        "worker": gw.settings.worker_index if gw.settings.worker_index >= 0 else None})


async def ready(gw: "RestPorts", req: Request, ex: Exchange) -> None:
    checks = {}
    with trio.move_on_after(READY_TIMEOUT_S):
        checks["bus"] = await gw.bus.ping()
        checks["sessions"] = await gw.store.ping()
    ok = checks.get("bus") is True and checks.get("sessions") is True and not gw.server.draining.is_set()
    await ex.json(200 if ok else 503, {"ready": ok, "checks": checks, "bus": gw.bus.name,
                                       "draining": gw.server.draining.is_set()})


async def metrics(gw: "RestPorts", req: Request, ex: Exchange) -> None:
    from kdc_trio.metrics import CONTENT_TYPE

    want = gw.settings.metrics_token
    if want is not None:
        got = (req.headers.get("authorization") or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(got.encode(), want.encode()):
            raise ClientError(401, "metrics_token_required", "GET /metrics needs Authorization: Bearer "
                              "<KDC_METRICS_TOKEN>", limit="KDC_METRICS_TOKEN")
    await ex.respond(200, gw.metrics.render(), content_type=CONTENT_TYPE)


async def api_session(gw: "RestPorts", req: Request, ex: Exchange) -> None:
    session = await request_session(gw, req)
    d = session.to_dict()
    await ex.json(200, d)


def kdcube_profile(session: Session) -> dict:
    """KDCube's `GET /profile` shape: `user_type` upper-case; anonymous sessions show no user."""
    if session.user_type is UserType.ANONYMOUS:
        return {"user_type": "ANONYMOUS", "session_id": session.session_id, "created_at": session.created_at}
    return {"user_type": session.user_type.value.upper(), "username": session.username, "user_id": session.user_id,
            "roles": list(session.roles), "permissions": [], "session_id": session.session_id,
            "created_at": session.created_at}


async def profile(gw: "RestPorts", req: Request, ex: Exchange) -> None:
    session = await request_session(gw, req)
    await ex.json(200, kdcube_profile(session), headers=session_cookie(gw.settings, session, req))


def check_conversation_id(conversation_id: str) -> None:
    """A conversation id asked about is one a message could have named, or 400: it names a Redis
    key (`conv-1:pending`, the key of conv-1's waiting continuations, was a WRONGTYPE 500)."""
    if not is_valid_id(conversation_id):
        raise HTTPError(400, "bad_request", f"conversation_id must be 1-{MAX_ID_CHARS} characters of letters, "
                        "digits, `_`, `-` or `.`")


async def publish_conv_status(gw: "ChatPorts", session: Session, conversation_id: str,
                              stream_id: str | None) -> dict:
    """The conversation's status for its owner; also published as `conv_status` (to `stream_id`
    when given, else to the whole session)."""
    check_conversation_id(conversation_id)
    status = await gw.conv_store.get(conversation_id)
    if status is None or status.session_id != session.session_id:
        raise HTTPError(404, "conversation_not_found", "no such conversation in this session")
    msg = ChatMessage(text="", payload={}, conversation_id=conversation_id, turn_id=status.current_turn_id or "-")
    turn = Turn(session=session, stream_id=stream_id or "-", message=msg, conversation_id=conversation_id,
                turn_id=status.current_turn_id or "-")
    comm = communicator_for(turn, gw.relay.publish)
    await comm.conv_status(state=status.state, updated_at=status.updated_at, current_turn_id=status.current_turn_id,
                           completion=status.completion, origin_stream_id=status.origin_stream_id,
                           broadcast=stream_id is None)
    return {"conversation_id": conversation_id, **status.public()}


async def api_conv_status(gw: "RestPorts", req: Request, ex: Exchange) -> None:
    conversation_id = req.query.get("conversation_id")
    if not conversation_id:
        raise HTTPError(400, "bad_request", "conversation_id is required")
    check_conversation_id(conversation_id)
    session = await request_session(gw, req)
    status = await gw.conv_store.get(conversation_id)
    if status is None or status.session_id != session.session_id:
        raise HTTPError(404, "conversation_not_found", "no such conversation in this session")
    await ex.json(200, {"conversation_id": conversation_id, **status.public()})
