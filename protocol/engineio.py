"""Engine.IO v4 packets and polling payloads, sans-IO.

A packet is a type digit and its data: `0` open, `1` close, `2` ping, `3` pong, `4` message,
`5` upgrade, `6` noop. On a WebSocket every packet is one frame: text frames carry the digit
and the data (`4hello`), a binary frame is a binary message with no digit. On HTTP
long-polling many packets travel in one body joined by the record separator `\\x1e`, and a
binary message is written `b` + base64.

Decoding untrusted input raises only `RemoteProtocolError`.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from enum import IntEnum

from protocol.errors import RemoteProtocolError

PROBE = "probe"
SEPARATOR = "\x1e"
PROTOCOL_VERSION = "4"


class PacketType(IntEnum):
    OPEN = 0
    CLOSE = 1
    PING = 2
    PONG = 3
    MESSAGE = 4
    UPGRADE = 5
    NOOP = 6


_TYPES = {str(int(t)): t for t in PacketType}


class EIOError(IntEnum):
    """The error codes of the Engine.IO server's 400 answers."""

    UNKNOWN_TRANSPORT = 0
    UNKNOWN_SID = 1
    BAD_HANDSHAKE_METHOD = 2
    BAD_REQUEST = 3
    FORBIDDEN = 4
    UNSUPPORTED_PROTOCOL_VERSION = 5


_ERROR_MESSAGES = {
    EIOError.UNKNOWN_TRANSPORT: "Transport unknown",
    EIOError.UNKNOWN_SID: "Session ID unknown",
    EIOError.BAD_HANDSHAKE_METHOD: "Bad handshake method",
    EIOError.BAD_REQUEST: "Bad request",
    EIOError.FORBIDDEN: "Forbidden",
    EIOError.UNSUPPORTED_PROTOCOL_VERSION: "Unsupported protocol version",
}


def error_json(code: EIOError) -> dict:
    """The body of an Engine.IO error answer: `{"code": 3, "message": "Bad request"}`."""
    return {"code": int(code), "message": _ERROR_MESSAGES[code]}


@dataclass(frozen=True, slots=True)
class Packet:
    type: PacketType
    data: str | bytes | None = None

    def __post_init__(self) -> None:
        if isinstance(self.data, (bytes, bytearray)) and self.type is not PacketType.MESSAGE:
            raise ValueError("only MESSAGE packets carry binary data")


def open_packet(sid: str, *, upgrades: list[str], ping_interval_ms: int, ping_timeout_ms: int,
                max_payload: int) -> Packet:
    """The handshake: `0{"sid":…,"upgrades":[…],"pingInterval":…,"pingTimeout":…,"maxPayload":…}`."""
    body = {"sid": sid, "upgrades": upgrades, "pingInterval": ping_interval_ms,
            "pingTimeout": ping_timeout_ms, "maxPayload": max_payload}
    return Packet(PacketType.OPEN, json.dumps(body, separators=(",", ":")))


# ---- WebSocket: one packet per frame ---------------------------------------------------------

def encode_ws(packet: Packet) -> str | bytes:
    if isinstance(packet.data, (bytes, bytearray)):
        return bytes(packet.data)
    return str(int(packet.type)) + (packet.data or "")


def decode_ws(frame: str | bytes | bytearray) -> Packet:
    """One WebSocket frame: a text frame is digit + data, a binary frame is a binary message."""
    if isinstance(frame, (bytes, bytearray)):
        return Packet(PacketType.MESSAGE, bytes(frame))
    return _decode_text(frame)


def _decode_text(text: str) -> Packet:
    if not text:
        raise RemoteProtocolError("empty Engine.IO packet", reason="bad_packet")
    t = _TYPES.get(text[0])
    if t is None:
        raise RemoteProtocolError(f"unknown Engine.IO packet type {text[0]!r}", reason="bad_packet")
    data = text[1:]
    if t is PacketType.MESSAGE:
        return Packet(t, data)
    return Packet(t, data or None)


# ---- HTTP long-polling: packets joined by \x1e ------------------------------------------------

def encode_payload(packets: list[Packet]) -> bytes:
    parts = []
    for p in packets:
        if isinstance(p.data, (bytes, bytearray)):
            parts.append("b" + base64.b64encode(p.data).decode("ascii"))
        else:
            parts.append(str(int(p.type)) + (p.data or ""))
    return SEPARATOR.join(parts).encode("utf-8")


# Packets one polling body may carry when the caller names no limit: a client batches what it
# queued while its previous POST was in flight (a few messages, one binary packet per attachment,
# a pong), not millions of 2-byte records (17.8 M noops in 34 MiB held the loop for 34 s).
MAX_PAYLOAD_PACKETS = 1000


def decode_payload(body: bytes | str, *, max_payload: int, max_packets: int = MAX_PAYLOAD_PACKETS) -> list[Packet]:
    """A polling request body. Empty records, bad base64, bad UTF-8, unknown types, a body
    over `max_payload` bytes and more than `max_packets` records are `RemoteProtocolError`s
    (the record count is taken before anything is split or decoded)."""
    return [decode_record(r) for r in payload_records(body, max_payload=max_payload, max_packets=max_packets)]


def payload_records(body: bytes | str, *, max_payload: int, max_packets: int = MAX_PAYLOAD_PACKETS) -> list[str]:
    """The first half of `decode_payload`: the size, count and UTF-8 checks and the split into
    records, each then decoded by `decode_record` (a caller may yield between records)."""
    if len(body) > max_payload:
        raise RemoteProtocolError(f"payload of {len(body)} bytes exceeds maxPayload {max_payload}",
                                  error_status_hint=413, close_code_hint=1009, reason="payload_too_large")
    records = body.count(SEPARATOR if isinstance(body, str) else SEPARATOR.encode()) + 1
    if records > max_packets:
        raise RemoteProtocolError(f"payload of {records} packets exceeds the limit of {max_packets}",
                                  close_code_hint=1009, reason="too_many_packets")
    if isinstance(body, (bytes, bytearray)):
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RemoteProtocolError(f"payload is not UTF-8 (byte {exc.start})", reason="bad_payload") from None
    else:
        text = body
    if not text:
        raise RemoteProtocolError("empty payload", reason="bad_payload")
    return text.split(SEPARATOR)


def decode_record(record: str) -> Packet:
    """One record of a polling payload: `b` + base64 is a binary message, else a text packet."""
    if record[:1] == "b":
        try:
            data = base64.b64decode(record[1:], validate=True)
        except (binascii.Error, ValueError):
            raise RemoteProtocolError("bad base64 in a binary packet", reason="bad_packet") from None
        return Packet(PacketType.MESSAGE, data)
    return _decode_text(record)
