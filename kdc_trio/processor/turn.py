"""A queued turn: who sent what, where the replies go, and which attempt this is."""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import trio

from kdc_trio.ingress.models import PROMPT, Attachment, ChatMessage
from kdc_trio.relay.keys import SessionKey
from kdc_trio.sessions.model import Session


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def message_extras(m: ChatMessage) -> dict:
    """The normalized message's fields beyond text/payload/attachments, JSON-ready."""
    return {"external_events": m.external_events, "chat_history": m.chat_history,
            "active_turn_id": m.active_turn_id, "event_type": m.event_type, "tenant": m.tenant,
            "project": m.project}


@dataclass(kw_only=True)
class Turn:
    session: Session
    stream_id: str  # the connection that sent the turn: default target of its events
    message: ChatMessage
    conversation_id: str
    turn_id: str = field(default_factory=lambda: new_id("turn"))
    task_id: str = field(default_factory=lambda: new_id("task"))
    request_id: str = field(default_factory=lambda: new_id("req"))
    attempt: int = 1
    enqueued_at: float = field(default_factory=time.time)
    # Not serialised: where the queue keeps the turn (a stream entry id), and why it cannot run
    # (an attachment that expired in Redis) — the processor then reports a chat_error.
    receipt: str | None = field(default=None, compare=False)
    error: str | None = field(default=None, compare=False)
    # Set by the processor while the turn runs: where its continuations come from.
    inbox: Any = field(default=None, compare=False, repr=False)

    async def next_continuation(self, timeout: float | None = 0.0) -> ChatMessage | None:
        """A message the client sent to this conversation while this turn runs (a follow-up or a
        steer: `message.event_type`), taken by this turn, so it will not run as a turn of its own.
        Waits up to `timeout` seconds for one (0: only what already came; None: no limit).
        None when none came; a follow-up not taken runs as the next turn."""
        if self.inbox is None:
            await trio.lowlevel.checkpoint()
            return None
        return await self.inbox.next(timeout)

    async def take_continuations(self) -> list[ChatMessage]:
        """Every continuation waiting now, oldest first, taken by this turn."""
        taken: list[ChatMessage] = []
        while (m := await self.next_continuation(0)) is not None:
            taken.append(m)
        return taken

    @property
    def key(self) -> SessionKey:
        return SessionKey(self.session.tenant, self.session.project, self.session.session_id)

    def to_dict(self, *, inline_attachments: bool = True) -> dict:
        """JSON-ready form; attachment bytes inline (base64) unless the caller stores them."""
        atts = []
        for a in self.message.attachments:
            d = {"filename": a.filename, "mime": a.mime, "meta": a.meta, "size": a.size}
            if inline_attachments:
                d["data_b64"] = base64.b64encode(a.data).decode("ascii")
            atts.append(d)
        return {
            "session": self.session.to_dict(), "stream_id": self.stream_id, "conversation_id": self.conversation_id,
            "turn_id": self.turn_id, "task_id": self.task_id, "request_id": self.request_id,
            "attempt": self.attempt, "enqueued_at": self.enqueued_at,
            "message": {"text": self.message.text, "payload": self.message.payload, "attachments": atts,
                        **message_extras(self.message)},
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Turn":
        m = d["message"]
        atts = [Attachment(filename=a["filename"], mime=a["mime"], meta=a.get("meta") or {},
                           data=base64.b64decode(a["data_b64"]) if "data_b64" in a else a.get("data", b""))
                for a in m.get("attachments", [])]
        msg = ChatMessage(text=m["text"], payload=m.get("payload") or {}, conversation_id=d["conversation_id"],
                          turn_id=d["turn_id"], attachments=atts, external_events=m.get("external_events") or [],
                          chat_history=m.get("chat_history") or [], active_turn_id=m.get("active_turn_id"),
                          event_type=m.get("event_type") or PROMPT, tenant=m.get("tenant"),
                          project=m.get("project"))
        return cls(session=Session.from_dict(d["session"]), stream_id=d["stream_id"], message=msg,
                   conversation_id=d["conversation_id"], turn_id=d["turn_id"], task_id=d["task_id"],
                   request_id=d["request_id"], attempt=int(d.get("attempt", 1)),
                   enqueued_at=float(d.get("enqueued_at") or time.time()))
