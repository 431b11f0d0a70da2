"""Socket.IO v5 packets (the Socket.IO v4 libraries' protocol), sans-IO.

A packet travels as one Engine.IO message:

    <type>[<attachments>-][<namespace>,][<ack id>][<JSON payload>]

followed, for BINARY_EVENT and BINARY_ACK, by exactly `<attachments>` binary Engine.IO
messages. In the JSON each binary value is a placeholder `{"_placeholder": true, "num": i}`.
`encode` turns a packet into that list of messages (without Engine.IO's `4`); `Decoder` takes
messages one at a time and returns a packet once the header and all its attachments are in.

Decoding untrusted input raises only `RemoteProtocolError`, whose message says what was wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from protocol.errors import RemoteProtocolError
from protocol.jsonbound import MAX_NESTING, JSONNestingError
from protocol.jsonbound import loads as bounded_loads

MAX_ACK_ID_DIGITS = 15  # ids stay below 2**53: what a JavaScript peer can count to
MAX_NAMESPACE_CHARS = 256
MAX_ATTACHMENT_DIGITS = 6
# Arrays/objects nested deeper than MAX_NESTING are refused (protocol/jsonbound.py, the limit
# every client JSON shares): every walker of decoded data (placeholder reassembly here, the
# app's own) recurses; a peer's `[[[[…]]]]` must not reach Python's recursion limit there.
# Event names the Socket.IO libraries keep for themselves; a client may not emit them.
RESERVED_EVENTS = frozenset({"connect", "connect_error", "disconnect", "disconnecting",
                             "newListener", "removeListener"})


class PacketType(IntEnum):
    CONNECT = 0
    DISCONNECT = 1
    EVENT = 2
    ACK = 3
    CONNECT_ERROR = 4
    BINARY_EVENT = 5
    BINARY_ACK = 6


_TYPES = {str(int(t)): t for t in PacketType}
_BINARY = {PacketType.EVENT: PacketType.BINARY_EVENT, PacketType.ACK: PacketType.BINARY_ACK}


@dataclass(slots=True)
class Packet:
    type: PacketType
    namespace: str = "/"
    data: Any = None
    id: int | None = None


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _error(msg: str, reason: str = "bad_packet", **hints: int) -> RemoteProtocolError:
    return RemoteProtocolError(msg, reason=reason, **hints)


# ---- encoding --------------------------------------------------------------------------------

def encode(packet: Packet) -> list[str | bytes]:
    """The Engine.IO messages of one packet: the text header, then one bytes per attachment.
    EVENT/ACK data holding binary values become BINARY_EVENT/BINARY_ACK with placeholders."""
    t, data = packet.type, packet.data
    attachments: list[bytes] = []
    if t in _BINARY and _has_binary(data):
        data = _deconstruct(data, attachments)
        t = _BINARY[t]
    elif t in (PacketType.BINARY_EVENT, PacketType.BINARY_ACK):
        data = _deconstruct(data, attachments)
    parts = [str(int(t))]
    if t in (PacketType.BINARY_EVENT, PacketType.BINARY_ACK):
        parts.append(f"{len(attachments)}-")
    if packet.namespace != "/":
        parts.append(packet.namespace + ",")
    if packet.id is not None:
        parts.append(str(packet.id))
    if data is not None:
        parts.append(dumps(data))
    return ["".join(parts), *attachments]


# Event names as JSON strings: the relay's events use a handful of names, and json.dumps of a
# short string (~5 us on the bench box: a JSONEncoder per call) was a tenth of a Socket.IO
# event's cost. Bounded: past _NAMES_MAX names, new ones are encoded each time.
_NAMES: dict[str, str] = {}
_NAMES_MAX = 256


def _name_json(event: str) -> str:
    text = _NAMES.get(event)
    if text is None:
        text = dumps(event)
        if len(_NAMES) < _NAMES_MAX:
            _NAMES[event] = text
    return text


def encode_event_text(event: str, data_json: str, offset: str | None = None) -> str:
    """Fast path for the relay: an EVENT on `/` with one JSON argument already serialised, and
    the connection-state-recovery offset as a last string argument when given."""
    if offset is None:
        return f"2[{_name_json(event)},{data_json}]"
    quoted = '"' + offset + '"' if offset.isdigit() else dumps(offset)  # a session seq: digits need no escaping
    return f"2[{_name_json(event)},{data_json},{quoted}]"


def _has_binary(data: Any) -> bool:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return True
    if isinstance(data, list):
        return any(_has_binary(v) for v in data)
    if isinstance(data, dict):
        return any(_has_binary(v) for v in data.values())
    return False


def _deconstruct(data: Any, attachments: list[bytes]) -> Any:
    if isinstance(data, (bytes, bytearray, memoryview)):
        attachments.append(bytes(data))
        return {"_placeholder": True, "num": len(attachments) - 1}
    if isinstance(data, list):
        return [_deconstruct(v, attachments) for v in data]
    if isinstance(data, dict):
        return {k: _deconstruct(v, attachments) for k, v in data.items()}
    return data


# ---- decoding --------------------------------------------------------------------------------

def decode_header(text: str, *, max_attachments: int) -> tuple[Packet, int]:
    """The text part of a packet: the packet (placeholders not yet replaced) and how many
    binary attachments follow it."""
    if not text:
        raise _error("empty Socket.IO packet")
    t = _TYPES.get(text[0])
    if t is None:
        raise _error(f"unknown Socket.IO packet type {text[0]!r}")
    i, n = 1, len(text)
    count = 0
    if t in (PacketType.BINARY_EVENT, PacketType.BINARY_ACK):
        dash = text.find("-", 1, 2 + MAX_ATTACHMENT_DIGITS)
        digits = text[1:dash] if dash > 0 else ""
        if not (digits.isascii() and digits.isdigit()):
            raise _error(f"{t.name} without a valid '<attachments>-' count")
        count = int(digits)
        if count > max_attachments:
            raise _error(f"{count} binary attachments, more than the {max_attachments} allowed",
                         reason="too_many_attachments")
        i = dash + 1
    namespace = "/"
    if i < n and text[i] == "/":
        comma = text.find(",", i)
        end = n if comma == -1 else comma
        namespace = text[i:end]
        if len(namespace) > MAX_NAMESPACE_CHARS:
            raise _error(f"namespace longer than {MAX_NAMESPACE_CHARS} characters")
        i = n if comma == -1 else comma + 1
    ack_id = None
    j = i
    while j < n and "0" <= text[j] <= "9":
        j += 1
    if j > i:
        if j - i > MAX_ACK_ID_DIGITS:
            raise _error(f"ack id of {j - i} digits, more than {MAX_ACK_ID_DIGITS}")
        ack_id = int(text[i:j])
        i = j
    data = None
    if i < n:
        try:
            data = bounded_loads(text[i:])
        except JSONNestingError:
            raise _error(f"{t.name} payload nested deeper than {MAX_NESTING} levels") from None
        except ValueError:
            raise _error(f"{t.name} payload is not JSON") from None
    _validate(t, data, ack_id)
    return Packet(t, namespace, data, ack_id), count


def _validate(t: PacketType, data: Any, ack_id: int | None) -> None:
    if t is PacketType.CONNECT:
        ok = data is None or isinstance(data, dict)
        what = "an object or nothing"
    elif t is PacketType.DISCONNECT:
        ok, what = data is None, "nothing"
    elif t is PacketType.CONNECT_ERROR:
        ok, what = isinstance(data, (str, dict)), "a string or an object"
    elif t in (PacketType.EVENT, PacketType.BINARY_EVENT):
        ok = (isinstance(data, list) and len(data) > 0 and isinstance(data[0], str)
              and data[0] not in RESERVED_EVENTS)
        what = "a list starting with a non-reserved event name"
    else:
        ok, what = isinstance(data, list), "a list"
        if ok and ack_id is None:
            raise _error(f"{t.name} without an ack id")
    if not ok:
        raise _error(f"{t.name} payload must be {what}")
    if ack_id is not None and t not in (PacketType.EVENT, PacketType.BINARY_EVENT,
                                        PacketType.ACK, PacketType.BINARY_ACK):
        raise _error(f"{t.name} may not carry an ack id")


def reconstruct(data: Any, attachments: list[bytes]) -> Any:
    """Replace each placeholder by its attachment. Every attachment must be used exactly once;
    a placeholder with a missing, non-integer, negative, out-of-range or repeated `num` is an
    error."""
    used: set[int] = set()
    out = _replace(data, attachments, used)
    if len(used) != len(attachments):
        missing = sorted(set(range(len(attachments))) - used)
        raise _error(f"attachments {missing} have no placeholder")
    return out


def _replace(data: Any, attachments: list[bytes], used: set[int]) -> Any:
    if isinstance(data, list):
        return [_replace(v, attachments, used) for v in data]
    if isinstance(data, dict):
        if data.get("_placeholder") is True:
            if "num" not in data:
                raise _error("placeholder without num")
            num = data["num"]
            if not isinstance(num, int) or isinstance(num, bool):
                raise _error(f"placeholder num {num!r} is not an integer")
            if num < 0 or num >= len(attachments):
                raise _error(f"placeholder num {num} out of range 0..{len(attachments) - 1}")
            if num in used:
                raise _error(f"placeholder num {num} repeated")
            used.add(num)
            return attachments[num]
        return {k: _replace(v, attachments, used) for k, v in data.items()}
    return data


class Decoder:
    """Engine.IO messages in, Socket.IO packets out: a header, then exactly N binary frames.

    `max_payload` bounds one text header and the sum of one packet's attachments (bytes).
    """

    def __init__(self, *, max_attachments: int, max_payload: int) -> None:
        self.max_attachments = max_attachments
        self.max_payload = max_payload
        self._pending: Packet | None = None
        self._expected = 0
        self._attachments: list[bytes] = []
        self._size = 0

    @property
    def awaiting_attachments(self) -> int:
        return self._expected - len(self._attachments)

    def feed(self, message: str | bytes) -> Packet | None:
        if self._pending is None:
            if not isinstance(message, str):
                raise _error("binary message without a BINARY_EVENT/BINARY_ACK header before it")
            if len(message) > self.max_payload:
                raise _error(f"packet of {len(message)} characters exceeds maxPayload {self.max_payload}",
                             reason="payload_too_large", close_code_hint=1009)
            packet, count = decode_header(message, max_attachments=self.max_attachments)
            if count == 0:
                if packet.type in (PacketType.BINARY_EVENT, PacketType.BINARY_ACK):
                    packet.data = reconstruct(packet.data, [])
                return packet
            self._pending, self._expected = packet, count
            self._attachments, self._size = [], 0
            return None
        if isinstance(message, str):
            raise _error(f"text message while binary attachment {len(self._attachments) + 1} "
                         f"of {self._expected} was expected")
        self._size += len(message)
        if self._size > self.max_payload:
            raise _error(f"attachments of {self._size}+ bytes exceed maxPayload {self.max_payload}",
                         reason="payload_too_large", close_code_hint=1009)
        self._attachments.append(bytes(message) if not isinstance(message, bytes) else message)
        if len(self._attachments) < self._expected:
            return None
        packet, attachments = self._pending, self._attachments
        self._pending, self._expected, self._attachments, self._size = None, 0, [], 0
        packet.data = reconstruct(packet.data, attachments)
        return packet
