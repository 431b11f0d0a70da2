"""Server-Sent Events, sans-IO, in h11's shape.

Writing: `encode_event` and `encode_comment` turn one event (or heartbeat) into the exact
bytes to send; they are pure functions on the per-event hot path.

Reading: `SSEDecoder` follows the WHATWG "interpreting an event stream" rules. Feed it bytes
with `receive_data` (b"" means end of stream) and pull `SSEEvent`, `Comment`, `NEED_DATA` or
`ENDED` from `next_event()`. It is used by tests and the bench load generator; a server never
decodes SSE.

`parse_last_event_id` reads a reconnecting client's `Last-Event-ID` header (our ids are the
session sequence: non-negative decimal integers).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from protocol.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "MAX_LINE_BYTES",
    "MAX_EVENT_DATA_CHARS",
    "MAX_LAST_EVENT_ID_DIGITS",
    "NEED_DATA",
    "ENDED",
    "SSEEvent",
    "Comment",
    "SSEDecoder",
    "encode_event",
    "encode_event_line",
    "encode_json_event",
    "encode_comment",
    "parse_last_event_id",
]

# Longest line the decoder buffers before giving up. Our largest event is one JSON envelope
# on one `data:` line: a step listing attachments, or a delta carrying at most
# CHAT_MAX_MESSAGE_CHARS (32000) characters, which JSON-escape to well under 1 MiB. 16 MiB
# is far above anything a well-behaved server sends, and still bounds the memory a peer
# that never sends a newline can make us hold.
MAX_LINE_BYTES = 16 * 1024 * 1024

# Longest `data` one event may accumulate over many `data:` lines (characters). Without it a
# peer could send unbounded short `data:` lines and never a blank line. Same reasoning and
# bound as MAX_LINE_BYTES.
MAX_EVENT_DATA_CHARS = 16 * 1024 * 1024

# Our event ids are the session sequence, an unsigned 64-bit counter: at most 20 decimal
# digits. Anything longer in Last-Event-ID was not written by us.
MAX_LAST_EVENT_ID_DIGITS = 20

# A `retry:` value longer than this is ignored: 18 digits is already ~30 million years of
# milliseconds, and int() of a multi-megabyte digit string would be slow (and, past
# sys.int_info.str_digits_check_threshold, raise ValueError).
_MAX_RETRY_DIGITS = 18

_UTF8_BOM = b"\xef\xbb\xbf"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_LINE_END = re.compile(rb"[\r\n]")
_LINE_BREAK_B = re.compile(rb"\r\n|\r|\n")
_ASCII_DIGITS = frozenset("0123456789")


class _Sentinel:
    """A named singleton, like h11's NEED_DATA."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: next_event() needs more bytes before it can return another event.
NEED_DATA = _Sentinel("NEED_DATA")
#: The stream ended (receive_data(b"")) and every complete event was returned.
ENDED = _Sentinel("ENDED")


@dataclass(frozen=True, kw_only=True, slots=True)
class SSEEvent:
    """One dispatched event.

    `event` is the event type ("message" when the stream named none); `data` is the data
    lines joined by "\\n"; `id` is the stream's last event ID at dispatch ("" if never set);
    `retry` is the reconnection time given inside this event's block, if any.
    """

    event: str = "message"
    data: str = ""
    id: str = ""
    retry: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Comment:
    """One comment line (`:` prefix), e.g. a heartbeat; one leading space is stripped."""

    text: str = ""


# --------------------------------------------------------------------------- writing


def encode_event(
    *,
    data: str | None = None,
    event: str | None = None,
    id: str | int | None = None,  # noqa: A002 - the SSE field is called id
    retry: int | None = None,
) -> bytes:
    """The bytes of one SSE event, ending with the blank line that dispatches it.

    Multi-line `data` (split on \\r\\n, \\r, \\n) becomes one `data:` line per line. A
    `data` of None writes no data line (the block then only sets id/retry). CR, LF or NUL
    in `event` or `id` raise LocalProtocolError: they would split or void the field.
    """
    if (type(id) is int and retry is None and event is not None and data is not None and "\n" not in data
            and "\r" not in data and "\n" not in event and "\r" not in event and "\0" not in event):
        try:  # the relay's case (an event, its seq, one line of JSON): one format, no parts list
            return f"event: {event}\nid: {id}\ndata: {data}\n\n".encode("utf-8")
        except UnicodeEncodeError as exc:
            raise LocalProtocolError(f"SSE event is not encodable as UTF-8: {exc}") from None
    parts: list[str] = []
    if event is not None:
        if "\n" in event or "\r" in event or "\0" in event:
            raise LocalProtocolError(f"SSE event name contains CR, LF or NUL: {event!r}")
        parts.append("event: ")
        parts.append(event)
        parts.append("\n")
    if id is not None:
        if type(id) is int:
            id = str(id)
        elif not isinstance(id, str):
            raise LocalProtocolError(f"SSE id must be str or int, not {type(id).__name__}")
        elif "\n" in id or "\r" in id or "\0" in id:
            raise LocalProtocolError(f"SSE id contains CR, LF or NUL: {id!r}")
        parts.append("id: ")
        parts.append(id)
        parts.append("\n")
    if retry is not None:
        if type(retry) is not int or retry < 0:
            raise LocalProtocolError(f"SSE retry must be a non-negative int, not {retry!r}")
        parts.append(f"retry: {retry}\n")
    if data is not None:
        parts.append("data: ")
        if "\n" in data or "\r" in data:
            parts.append("\ndata: ".join(_LINE_BREAK.split(data)))
        else:
            parts.append(data)
        parts.append("\n")
    parts.append("\n")
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates: not text we can send
        raise LocalProtocolError(f"SSE event is not encodable as UTF-8: {exc}") from None


def encode_event_line(event: str) -> bytes:
    """The `event:` line of an event named `event`, for `encode_json_event` (made once per name,
    not per event). CR, LF or NUL in `event` raise LocalProtocolError: they would split the field."""
    if "\n" in event or "\r" in event or "\0" in event:
        raise LocalProtocolError(f"SSE event name contains CR, LF or NUL: {event!r}")
    try:
        return b"event: %b\n" % event.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"SSE event name is not encodable as UTF-8: {exc}") from None


def encode_json_event(event_line: bytes, id: int | None, data: bytes, *, plain: bool = False) -> bytes:  # noqa: A002
    """`encode_event` for data that is already UTF-8 bytes (a relayed event's JSON as it came off
    the wire): one format, no decode and no re-encode. `event_line` is `encode_event_line(name)`.
    As `encode_event`, a `data` with line breaks gets a `data:` line per line. The caller vouches
    that `data` is valid UTF-8, and with `plain` that it holds no line break (it is not looked for)."""
    # `find`, not `in`: `b"\n" in x` first tries the needle as an integer, and that failed
    # attempt (an exception made and dropped) costs more than the whole format.
    if not plain and (data.find(b"\n") >= 0 or data.find(b"\r") >= 0):
        data = b"\ndata: ".join(_LINE_BREAK_B.split(data))
    if id is None:
        return b"%bdata: %b\n\n" % (event_line, data)
    return b"%bid: %d\ndata: %b\n\n" % (event_line, id, data)


def encode_comment(text: str = "") -> bytes:
    """A comment block (`: text`), e.g. a heartbeat; each line of `text` gets its own `:`."""
    if "\n" in text or "\r" in text:
        body = "".join(f": {line}\n" for line in _LINE_BREAK.split(text))
    else:
        body = f": {text}\n"
    try:
        return (body + "\n").encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"SSE comment is not encodable as UTF-8: {exc}") from None


# --------------------------------------------------------------------------- Last-Event-ID


def parse_last_event_id(value: str | None) -> int | None:
    """The session sequence a reconnecting client last saw, or None if it sent none.

    Malformed values (non-digits, signs, spaces, more than 20 digits) raise
    RemoteProtocolError(error_status_hint=400, reason="bad_last_event_id").
    """
    if value is None or value == "":
        return None
    if not (
        len(value) <= MAX_LAST_EVENT_ID_DIGITS and value.isascii() and value.isdigit()
    ):
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise RemoteProtocolError(
            f"Last-Event-ID must be a non-negative decimal integer of at most "
            f"{MAX_LAST_EVENT_ID_DIGITS} digits, got {shown!r}",
            error_status_hint=400,
            reason="bad_last_event_id",
        )
    return int(value)


# --------------------------------------------------------------------------- reading


class SSEDecoder:
    """Incremental WHATWG event-stream parser: bytes in, SSEEvent / Comment out.

    Line endings \\r\\n, \\r and \\n are all accepted, including a \\r\\n split across two
    receive_data calls; a UTF-8 BOM at the very start is skipped; invalid UTF-8 is replaced
    with U+FFFD, as browsers do. A line longer than `max_line_bytes`, or an event whose data
    grows past `max_event_data_chars`, raises RemoteProtocolError; after that the decoder
    keeps raising it.
    """

    def __init__(
        self,
        *,
        max_line_bytes: int = MAX_LINE_BYTES,
        max_event_data_chars: int = MAX_EVENT_DATA_CHARS,
    ) -> None:
        self._max_line = max_line_bytes
        self._max_data = max_event_data_chars
        self._buf = bytearray()
        self._pos = 0  # start of the next unconsumed line in _buf
        self._scan = 0  # bytes before this offset (from _pos) hold no line ending
        self._bom_checked = False
        self._skip_lf = False  # the previous line ended with \r; a leading \n belongs to it
        self._eof = False
        self._error: RemoteProtocolError | None = None
        # Per-event buffers, as named by the WHATWG spec.
        self._event_type = ""
        self._data: list[str] = []
        self._data_chars = 0
        self._retry_in_block: int | None = None
        #: The last event ID buffer: persists across events until an `id:` changes it.
        self.last_event_id = ""
        #: The reconnection time (ms) most recently set by a `retry:` field.
        self.retry: int | None = None

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the stream; b"" means the stream ended."""
        if self._eof:
            raise RuntimeError("receive_data() after end of stream")
        if data:
            self._buf += data
        else:
            self._eof = True

    def next_event(self) -> SSEEvent | Comment | _Sentinel:
        """The next event or comment, or NEED_DATA, or ENDED once the stream is drained."""
        if self._error is not None:
            raise self._error
        try:
            while True:
                line = self._next_line()
                if line is None:
                    if self._eof:
                        # WHATWG: an event not terminated by a blank line is discarded.
                        return ENDED
                    return NEED_DATA
                result = self._process_line(line)
                if result is not None:
                    return result
        except RemoteProtocolError as exc:
            self._error = exc
            raise

    # -- lines

    def _next_line(self) -> str | None:
        buf = self._buf
        if not self._bom_checked:
            avail = len(buf) - self._pos
            if avail < len(_UTF8_BOM) and _UTF8_BOM.startswith(bytes(buf[self._pos :])):
                if not self._eof:
                    return None  # could still be a BOM
            elif buf.startswith(_UTF8_BOM, self._pos):
                self._pos += len(_UTF8_BOM)
            self._bom_checked = True
        if self._skip_lf and self._pos < len(buf):
            if buf[self._pos] == 0x0A:
                self._pos += 1
            self._skip_lf = False
        start = self._pos
        match = _LINE_END.search(buf, start + self._scan)
        if match is None:
            pending = len(buf) - start
            if pending > self._max_line:
                self._too_long(pending)
            self._scan = pending
            self._compact()
            return None
        end = match.start()
        if end - start > self._max_line:
            self._too_long(end - start)
        raw = bytes(buf[start:end])
        if buf[end] == 0x0D:
            if end + 1 < len(buf):
                self._pos = end + 2 if buf[end + 1] == 0x0A else end + 1
            else:
                self._pos = end + 1
                self._skip_lf = True  # a \n may arrive in the next receive_data
        else:
            self._pos = end + 1
        self._scan = 0
        return raw.decode("utf-8", "replace")

    def _compact(self) -> None:
        # Drop consumed bytes so the buffer holds only the pending partial line.
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0

    def _too_long(self, length: int) -> None:
        raise RemoteProtocolError(
            f"SSE line of {length} bytes exceeds the limit of {self._max_line}",
            error_status_hint=413,
            reason="sse_line_too_long",
        )

    # -- fields

    def _process_line(self, line: str) -> SSEEvent | Comment | None:
        if not line:
            return self._dispatch()
        colon = line.find(":")
        if colon == 0:
            text = line[1:]
            return Comment(text=text[1:] if text.startswith(" ") else text)
        if colon > 0:
            name = line[:colon]
            value = line[colon + 1 :]
            if value.startswith(" "):
                value = value[1:]
        else:
            name, value = line, ""
        if name == "data":
            self._data_chars += len(value) + 1
            if self._data_chars > self._max_data:
                raise RemoteProtocolError(
                    f"SSE event data exceeds the limit of {self._max_data} characters",
                    error_status_hint=413,
                    reason="sse_event_too_large",
                )
            self._data.append(value)
        elif name == "event":
            self._event_type = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry":
            if value and len(value) <= _MAX_RETRY_DIGITS and _ASCII_DIGITS.issuperset(value):
                self.retry = self._retry_in_block = int(value)
        # Any other field name is ignored, as the spec says.
        return None

    def _dispatch(self) -> SSEEvent | None:
        data, event_type, retry = self._data, self._event_type, self._retry_in_block
        self._data, self._data_chars, self._event_type = [], 0, ""
        self._retry_in_block = None
        if not data:
            return None  # a block without data lines dispatches nothing
        return SSEEvent(
            event=event_type or "message",
            data="\n".join(data),
            id=self.last_event_id,
            retry=retry,
        )
