"""Accepting a turn: the conversation busy check, the queue, conv_status, and refusals told on the stream."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from kdc_trio.errors import ClientError
from kdc_trio.ingress.models import ChatMessage
from kdc_trio.processor.conv_status import ConvStatus
from kdc_trio.processor.queue import QueueFull
from kdc_trio.processor.runner import communicator_for
from kdc_trio.processor.turn import Turn, new_id
from kdc_trio.sessions.model import Session

if TYPE_CHECKING:
    from kdc_trio.ports import TurnPorts

log = logging.getLogger("kdc_trio.turns")

# Retry-After for a message refused because too many continuations wait: about a turn's pace.
CONTINUATIONS_RETRY_AFTER_S = 5
# How long a submit that failed may spend giving its conversation back (one store write).
GIVE_BACK_TIMEOUT_S = 2.0


def _turn(session: Session, stream_id: str, message: ChatMessage) -> Turn:
    conversation_id = message.conversation_id or new_id("conv")
    turn_id = message.turn_id or new_id("turn")
    message.conversation_id, message.turn_id = conversation_id, turn_id
    return Turn(session=session, stream_id=stream_id, message=message, conversation_id=conversation_id,
                turn_id=turn_id)


async def tell_refusal(gw: "TurnPorts", session: Session, stream_id: str, *, error: str, detail: str,
                       conversation_id: str | None = None, turn_id: str | None = None,
                       service_type: str | None = None) -> None:
    """A refused turn is also told on the sender's stream (`chat_error`, or a `chat_service` notice),
    with the request's own conversation/turn ids, or new ones when it named none (KDCube's reducers
    look the turn up by id: a placeholder would throw there)."""
    msg = ChatMessage(text="", payload={}, conversation_id=conversation_id, turn_id=turn_id)
    comm = communicator_for(_turn(session, stream_id, msg), gw.relay.publish)
    if service_type:
        await comm.service_event(service_type, data={"error": error, "detail": detail})
    await comm.error(detail, step="ingress", title=error, data={"code": error})


async def admit_turn(gw: "TurnPorts", session: Session, stream_id: str, address: str, *, endpoint: str,
                     conversation_id: str | None = None) -> None:
    """The protections' check for a new turn (`protect/guard.py`), before its body is read. A
    refusal (429 `rate_limited`, 503 `overloaded`) is also told on the sender's stream as KDCube
    tells it: a `chat_service` event `gateway.rate_limit` / `gateway.backpressure` with its
    `retry_after`; then it propagates for the transport to render."""
    try:
        await gw.guard.admit("turn", session.user_type.value, session.session_id, address)
    except ClientError as exc:
        gw.counters.turns_refused += 1
        kind = getattr(exc, "error_type", exc.error)  # rate_limit | backpressure (KDCube's names)
        msg = ChatMessage(text="", payload={}, conversation_id=conversation_id)
        comm = communicator_for(_turn(session, stream_id, msg), gw.relay.publish)
        await comm.service_event(f"gateway.{kind}", data={
            "message": exc.detail, "error_type": kind, "http_status": exc.status, "retry_after": exc.retry_after,
            "endpoint": endpoint, "limit": exc.limit})
        raise


async def submit_turn(gw: "TurnPorts", *, session: Session, stream_id: str, message: ChatMessage) -> dict:
    """Queue a validated message as a turn, or keep it as a continuation of the conversation's
    running turn (`KDC_CONV_BUSY_POLICY=continue`); returns the 202 body or raises a ClientError
    (404 not this session's conversation, 409 busy with `reject`, 429 too many continuations, 503 queue full)."""
    turn = _turn(session, stream_id, message)
    policy = gw.settings.conv_busy_policy
    status = ConvStatus(conversation_id=turn.conversation_id, session_id=session.session_id, state="in_progress",
                        current_turn_id=turn.turn_id, origin_stream_id=stream_id)
    comm = communicator_for(turn, gw.relay.publish)
    if policy == "continue":
        offer = await gw.conv_store.offer(status, turn, max_pending=gw.settings.max_continuations)
        ok, previous = offer.outcome == "started", offer.previous
        if not ok:
            return await _not_started(gw, turn, comm, offer.outcome, previous)
    else:
        ok, previous = await gw.conv_store.begin_turn(status, allow_busy=policy == "queue")
    if not ok:
        assert previous is not None
        gw.counters.turns_refused += 1
        if previous.session_id != session.session_id:
            raise ClientError(404, "conversation_not_found", "no such conversation in this session")
        detail = f"conversation {turn.conversation_id} already has turn {previous.current_turn_id} in progress"
        await comm.error(detail, step="ingress", title="conversation_busy", data={"code": "conversation_busy"})
        raise ClientError(409, "conversation_busy", detail)
    try:
        await gw.queue.put(turn)
    except QueueFull as exc:
        gw.counters.turns_refused += 1
        rolled = ConvStatus(conversation_id=turn.conversation_id, session_id=session.session_id, state="idle",
                            current_turn_id=turn.turn_id, completion="rollback", origin_stream_id=stream_id)
        await gw.conv_store.set(rolled)
        await comm.conv_status(state=rolled.state, updated_at=rolled.updated_at, current_turn_id=turn.turn_id,
                               completion="rollback", origin_stream_id=stream_id)
        await comm.service_event("queue.enqueue_rejected", data={"error": exc.error, "detail": exc.detail})
        await comm.error(exc.detail, step="ingress", title=exc.error, data={"code": exc.error})
        raise
    except BaseException as exc:  # Redis failed (503) or we were cancelled: the turn was not queued
        await _give_back(gw, turn, exc)
        raise
    gw.counters.turns_accepted += 1
    queued_behind = previous is not None and previous.state == "in_progress"
    await comm.conv_status(state="in_progress", updated_at=status.updated_at, current_turn_id=turn.turn_id,
                           completion="queued_next" if queued_behind else None, origin_stream_id=stream_id)
    return accepted_reply(turn, session, created=previous is None)


async def _give_back(gw: "TurnPorts", turn: Turn, exc: BaseException) -> None:
    """The conversation a turn could not be queued for goes back to idle (`rollback`), bounded and
    shielded: left `in_progress` for a turn that never runs, every later message to it would wait
    as a continuation until the status expired (KDC_SESSION_TTL_S in Redis). Best effort: when the put
    failed after Redis took the turn, the turn still runs and ends the conversation's status."""
    rolled = ConvStatus(conversation_id=turn.conversation_id, session_id=turn.session.session_id, state="idle",
                        current_turn_id=turn.turn_id, completion="rollback", origin_stream_id=turn.stream_id)
    with trio.CancelScope(shield=True), trio.move_on_after(GIVE_BACK_TIMEOUT_S):
        try:
            await gw.conv_store.set(rolled)
        except Exception as err:
            log.warning("turn %s not queued (%s); conversation %s left in progress: %s", turn.turn_id,
                        type(exc).__name__, turn.conversation_id, err)


async def _not_started(gw: "TurnPorts", turn: Turn, comm, outcome: str, previous: ConvStatus | None) -> dict:
    """A message that did not start a turn: a continuation (KDCube's answers), or refused."""
    session = turn.session
    active = previous.current_turn_id if previous is not None else None
    if outcome == "foreign":
        gw.counters.turns_refused += 1
        raise ClientError(404, "conversation_not_found", "no such conversation in this session")
    if outcome == "full":
        gw.counters.turns_refused += 1
        detail = (f"conversation {turn.conversation_id} already has {gw.settings.max_continuations} "
                  f"continuations waiting for turn {active} (KDC_MAX_CONTINUATIONS)")
        await comm.error(detail, step="ingress", title="continuations_full", data={"code": "continuations_full"})
        raise ClientError(429, "continuations_full", detail, retry_after=CONTINUATIONS_RETRY_AFTER_S)
    if outcome == "continued":
        gw.counters.turns_accepted += 1
        await comm.service_event("event.continuation.accepted", data={
            "event_type": turn.message.event_type, "is_continuation": True, "active_turn_id": active,
            "queued_turn_id": turn.turn_id, "target_turn_id": turn.message.active_turn_id,
            "event_id": turn.task_id, "message_len": len(turn.message.text),
            "attachment_count": len(turn.message.attachments)})
        return accepted_reply(turn, session, created=False, status="external_event_accepted",
                              continuation_of=active)
    # A steer with no running turn, or for another turn than the running one: answered as KDCube
    # does (ok, nothing runs), with the turn that does run, if any.
    reason = "active_turn_control_no_active_turn" if outcome == "no_active_turn" else \
        "active_turn_control_target_mismatch"
    reply = accepted_reply(turn, session, created=False, status=reason)
    reply.update(is_continuation=True, active_turn_id=active if outcome == "mismatch" else None,
                 message="Steer ignored: no such turn is running")
    return reply


def accepted_reply(turn: Turn, session: Session, *, created: bool, continuation_of: str | None = None,
                   status: str = "processing_started") -> dict:
    """The 202 body / Socket.IO ack of an accepted message: ours and KDCube's fields."""
    continued = status == "external_event_accepted"
    return {
        "ok": True, "status": status, "task_id": turn.task_id, "session_id": session.session_id,
        "user_type": session.user_type.value, "conversation_id": turn.conversation_id, "turn_id": turn.turn_id,
        "conversation_created": created, "is_continuation": continued,
        "active_turn_id": continuation_of, "target_turn_id": turn.message.active_turn_id,
        "queued_turn_id": turn.turn_id if continued else None,
        "event_id": turn.task_id if continued else None,
        "live_owner_detected": True if continued else None,
        "message": ("Continuation accepted; available to the active conversation owner"
                    if continued else "Queued; streaming via the session's streams"),
    }
