"""The quotas one chat message must fit, taken from Settings once per server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Environment names of the settings behind each limit: an IngressError names the one violated.
LIMIT_FILE_BYTES = "CHAT_MAX_UPLOAD_MB"
LIMIT_FILES = "KDC_MAX_FILES_PER_MESSAGE"
LIMIT_TOTAL_BYTES = "MESSAGE_MAX_BYTES"
LIMIT_TEXT_CHARS = "CHAT_MAX_MESSAGE_CHARS"


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int  # one attachment (CHAT_MAX_UPLOAD_MB, in bytes)
    max_files: int  # attachments per message (KDC_MAX_FILES_PER_MESSAGE)
    max_total_bytes: int  # text, metadata and attachments together (MESSAGE_MAX_BYTES)
    max_text_chars: int  # characters of message text (CHAT_MAX_MESSAGE_CHARS)
    max_external_events: int = 64  # events in one KDCube submission (KDC_MAX_EXTERNAL_EVENTS)

    def __post_init__(self) -> None:
        for name in ("max_file_bytes", "max_files", "max_total_bytes", "max_text_chars",
                     "max_external_events"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"Limits.{name} must be a non-negative int, not {value!r}")

    @classmethod
    def from_settings(cls, settings: Any) -> "Limits":
        return cls(
            max_file_bytes=settings.max_upload_bytes,
            max_files=settings.max_files,
            max_total_bytes=settings.message_max_bytes,
            max_text_chars=settings.max_message_chars,
            max_external_events=settings.max_external_events,
        )
