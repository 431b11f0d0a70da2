"""A chat message as ingress hands it on: one normalized shape whatever form the client sent.

The bundle sees `text`, `attachments` (filename, mime, size, sha256 from the bytes),
`external_events` exactly as the client sent them (KDCube's `event.user.*` and any custom type),
`chat_history` as the client sent it, and the ids the client chose.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

# KDCube's reactive event types: a prompt starts a turn; a follow-up joins the running turn (or
# starts the next one); a steer controls the running turn and never starts one.
PROMPT = "event.user.prompt"
FOLLOWUP = "event.user.followup"
STEER = "event.user.steer"


@dataclass(kw_only=True)
class Attachment:
    filename: str
    mime: str
    # The bytes, held once: a bytearray the parser filled, or bytes (never both).
    data: bytes | bytearray
    meta: dict[str, Any] = field(default_factory=dict)  # the matching attachment_meta entry

    @property
    def size(self) -> int:
        return len(self.data)

    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def describe(self) -> dict[str, Any]:
        return {"filename": self.filename, "mime": self.mime, "size": self.size, "sha256": self.sha256()}


@dataclass(kw_only=True)
class ChatMessage:
    text: str
    # The client's message object, normalised to a dict (every accepted form ends here).
    payload: dict[str, Any]
    conversation_id: str | None = None
    turn_id: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    # KDCube's external events as the client sent them (empty for the older forms).
    external_events: list[dict[str, Any]] = field(default_factory=list)
    chat_history: list[Any] = field(default_factory=list)
    # The turn the client believes is running (`active_turn_id` / `target_turn_id`), if it named one.
    active_turn_id: str | None = None
    # The reactive type of the message: PROMPT, FOLLOWUP or STEER (or a custom `event.*`).
    event_type: str = PROMPT
    # The tenant/project the body named (KDCube clients put their configured ones there).
    tenant: str | None = None
    project: str | None = None

    @property
    def total_bytes(self) -> int:
        return len(self.text.encode()) + sum(a.size for a in self.attachments)

    @property
    def is_steer(self) -> bool:
        return self.event_type == STEER

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary (no bytes): what a continuation carries to the running bundle."""
        return {"text": self.text, "event_type": self.event_type, "turn_id": self.turn_id,
                "attachments": [a.describe() for a in self.attachments],
                "external_events": self.external_events}
