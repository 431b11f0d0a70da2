"""Server-to-client WebSocket data frames (RFC 6455 §5.2), sans-IO.

A server's frame is unmasked, so a message's frame is the same bytes for every connection that
has negotiated no extension: the relay frames an event once and hands the bytes to all of its
session's WebSocket connections (`RelayMessage.sio_frame`). Only unfragmented data frames with
no extension bits are made here; control frames, reading, and any connection with an extension
in use stay with wsproto (which is also these frames' test oracle).
"""

from __future__ import annotations

TEXT = 0x81  # FIN + opcode 1
BINARY = 0x82  # FIN + opcode 2
# Payload lengths up to 125 fit the 7-bit length; up to 65535 take a 16-bit extended length;
# longer ones a 64-bit one (§5.2).
_SHORT = 126
_MEDIUM = 65536


def frame_payload(head: int, payload: bytes) -> bytes:
    """One unfragmented, unmasked frame of `payload` with first byte `head` (TEXT or BINARY)."""
    n = len(payload)
    if n < _SHORT:
        return bytes((head, n)) + payload
    if n < _MEDIUM:
        return bytes((head, 126)) + n.to_bytes(2, "big") + payload
    return bytes((head, 127)) + n.to_bytes(8, "big") + payload


def text_frame(text: str) -> bytes:
    """`text` as one server text frame (UTF-8)."""
    return frame_payload(TEXT, text.encode("utf-8"))


def data_frame(message: str | bytes) -> bytes:
    """A text frame for `str`, a binary frame for bytes."""
    if isinstance(message, str):
        return frame_payload(TEXT, message.encode("utf-8"))
    return frame_payload(BINARY, bytes(message))
