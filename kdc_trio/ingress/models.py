"""A chat message as ingress hands it on: text, the raw message object, attachments."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


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
    # The client's message object, normalised to a dict (KDCube's three forms all end here).
    payload: dict[str, Any]
    conversation_id: str | None = None
    turn_id: str | None = None
    attachments: list[Attachment] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return len(self.text.encode()) + sum(a.size for a in self.attachments)
