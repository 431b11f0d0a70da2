"""One event on its way to a session's connections, encoded at most once per wire format."""

from __future__ import annotations

import json
import re
from typing import Any, Callable

import orjson

from kdc_trio.relay.keys import PROJECT_SESSION
from protocol.errors import LocalProtocolError
from protocol.socketio import encode_event_text
from protocol.sse import encode_event, encode_event_line, encode_json_event
from protocol.wsframe import text_frame


def dumps(obj: Any) -> str:
    """Compact JSON text (orjson: a relayed event's encode is on every publish). What orjson
    refuses (integers past 64 bits, non-string keys) goes through the standard encoder."""
    try:
        return orjson.dumps(obj).decode()
    except TypeError:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def dumpb(obj: Any) -> bytes:
    """`dumps` as UTF-8 bytes (what goes to Redis: no decode here and no encode in the command
    packer). Text that is not UTF-8 (a lone surrogate) is escaped, as JSON allows."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(obj, separators=(",", ":")).encode("ascii")


def loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # e.g. an integer past 64 bits: the standard decoder takes it
        return json.loads(text)


# Marks a wire message whose "data" is its last key (our publisher's layout), so a receiver can
# take the data's JSON text as it is instead of decoding and re-encoding it. "kdc1": the head's
# scalars in any order (decoded as JSON); what gateways of the previous release publish, and still
# read (a rolling upgrade mixes both).
DATA_LAST = "kdc1"
# "kdc2": the same keys in one fixed order (`head_prefix`), so a receiver reads the head with one
# regular-expression match instead of a JSON decode and a dict (~1.3 us less per relayed event).
# Still plain JSON with the same keys: KDCube's subscribers read it as they read any message. A
# "kdc2" message the pattern does not match (a string with an escape in its head) is read as "kdc1".
FIXED_HEAD = "kdc2"
_DATA_KEY = ',"data":'
_STR = r'"([^"\\\x00-\x1f]*)"'  # a JSON string without escapes or control characters
_FIXED = re.compile(r'\{"seq":(\d{1,18}),"fmt":"kdc2","event":' + _STR + r',"target_sid":(?:null|' + _STR + r'),'
                    r'"session_id":' + _STR + r',"timestamp":(-?\d[\d.eE+-]*),"host_id":"[^"\\\x00-\x1f]*",'
                    r'"data":(?=\{)')
_fixed_match = _FIXED.match

# The same pattern on the published bytes (from_raws), its head (event, target, session: the
# text between the seq and the timestamp) taken whole: within one session's stream it repeats
# message after message, so its parts are read once (`_HEAD_PARTS`) and remembered, and a message
# costs one match and no decode (its data goes out as the bytes it came in).
_NOESC = rb'"[^"\\\x00-\x1f]*"'  # a JSON string without escapes or control characters
_FIXED_B = re.compile(rb'\{"seq":(\d{1,18})(,"fmt":"kdc2","event":' + _NOESC + rb',"target_sid":(?:null|' + _NOESC
                      + rb'),"session_id":' + _NOESC + rb',"timestamp":)(-?\d[\d.eE+-]*),"host_id":' + _NOESC
                      + rb',"data":(?=\{)')
_fixed_match_b = _FIXED_B.match
# A whole batch at once (from_raws): its messages joined, each after a NUL (a NUL is in no JSON
# text: a control character, escaped in strings and no whitespace), split by one C call on the
# pattern into [between, seq, head, timestamp, data] * n + [after]. Every `between` and `after`
# empty means the batch is n matches end to end, each from a NUL to the next (a match holds one
# NUL, its first byte): match i is message i, and every message is ours in the fixed layout.
# Its head's strings are taken as `"[^"]*"` (a cheaper loop than _NOESC's class): a head is
# checked against _FIXED_B once, when it is first seen (`_head`).
# A batch without a raw line break (what our publishers encode never has: JSON escapes them in
# strings, and orjson writes no whitespace) is found so by two scans of the whole read, and its
# messages' SSE `data:` lines then need no scan for one each (`_nl`).
_LOOSE = rb'"[^"]*"'
_FIXED_ALL = re.compile(rb'\x00\{"seq":(\d{1,18})(,"fmt":"kdc2","event":' + _LOOSE + rb',"target_sid":(?:null|' + _LOOSE
                        + rb'),"session_id":' + _LOOSE + rb',"timestamp":)(-?\d[\d.eE+-]*),"host_id":' + _NOESC
                        + rb',"data":(\{[^\x00]*)\}')
_fixed_split = _FIXED_ALL.split
_HEAD_PARTS = re.compile(rb',"fmt":"kdc2","event":"(.*)","target_sid":(?:null|"(.*)"),"session_id":"(.*)",')
# Heads remembered (one per live session, event and target); past this many the memory starts
# over (a read of the parts each, not a leak).
KNOWN_HEADS = 4096
_heads: dict[bytes, tuple[str, str | None, str, bytes]] = {}  # head -> event, target, session, SSE event line


def _utf8(data: bytes) -> bool:
    """Whether `data` is UTF-8 (relayed as the bytes that came, it must be)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _head(head: bytes) -> tuple[str, str | None, str, bytes]:
    """A head's parts, once it passed _FIXED_B (its strings hold no quote, no escape), remembered."""
    m = _HEAD_PARTS.match(head)
    if m is None or _fixed_match_b(b'{"seq":1' + head + b'0,"host_id":"","data":{') is None:
        raise ValueError(f"not a fixed head {head[:80]!r}")  # a string with an escape or a control character
    event_b, target, session = m.groups()
    event = event_b.decode()
    if len(_heads) >= KNOWN_HEADS:
        _heads.clear()
    parts = _heads[head] = (event, None if target is None else target.decode() or None, session.decode(),
                            encode_event_line(event))
    return parts


def head_prefix(*, event: str, target_sid: str | None, session_id: str, host_id: str) -> tuple[str, str]:
    """A "kdc2" message is `{"seq":N` + before + its timestamp + after + N + the rest of its data
    (the PUBLISH script puts the seqs in, RedisBus.encode_event the timestamp and the data). The
    publisher caches the pair per (session, event, target): no JSON encode of the head per event."""
    return (f',"fmt":"{FIXED_HEAD}","event":{dumps(event)},"target_sid":{dumps(target_sid)},'
            f'"session_id":{dumps(session_id)},"timestamp":'), f',"host_id":{dumps(host_id)},"data":{{"seq":'


class RelayMessage:
    """`{target_sid, session_id, event, data, timestamp, seq}`; `data` is the envelope (with `seq`).

    Either `data` or its JSON text is known; the other is made on first use, at most once.
    """

    __slots__ = ("session_id", "target_sid", "event", "_data", "timestamp", "seq", "_json", "_jb", "_eb", "_nl",
                 "_sse", "_sio", "_sio_off", "_ws", "_ws_off")

    def __init__(self, *, session_id: str, event: str, data: dict | None, seq: int, timestamp: float,
                 target_sid: str | None = None, data_json: str | None = None) -> None:
        self.session_id = session_id
        self.target_sid = target_sid
        self.event = event
        self._data = data
        self.timestamp = timestamp
        self.seq = seq
        self._json = data_json
        self._jb: bytes | None = None  # the data's JSON as it came off the wire (UTF-8), when read from it
        self._eb: bytes | None = None  # the event's SSE line (protocol.sse.encode_event_line), beside _jb
        self._nl = True  # _jb may hold a line break (False: from_raws found none in its whole read)
        self._sse: bytes | None = None
        self._sio: str | None = None
        self._sio_off: str | None = None
        self._ws: bytes | None = None
        self._ws_off: bytes | None = None

    @property
    def data(self) -> Any:
        if self._data is None:
            if self._json is not None:
                self._data = loads(self._json)
            elif self._jb is not None:
                self._data = loads(self._jb)
        return self._data

    def data_json(self) -> str:
        if self._json is None:
            self._json = self._jb.decode() if self._jb is not None else dumps(self.data)
        return self._json

    @property
    def resumable(self) -> bool:
        """A session event: its seq is the session's sequence (the SSE `id:`, the replay cursor).
        Project-wide events have a sequence of their own and are live-only."""
        return self.session_id != PROJECT_SESSION and self.seq > 0

    def sse_bytes(self) -> bytes:
        if self._sse is None:
            if self._jb is not None:  # the bytes as they came: no decode, no re-encode
                self._sse = encode_json_event(self._eb, self.seq if self.resumable else None,  # type: ignore[arg-type]
                                              self._jb, plain=not self._nl)
            else:
                self._sse = encode_event(event=self.event, id=self.seq if self.resumable else None,
                                         data=self.data_json())
        return self._sse

    def sio_text(self, offsets: bool = False) -> str:
        """Engine.IO message + Socket.IO EVENT on the default namespace: `42["event",{...}]`; with
        `offsets` a session event carries its seq as a last string argument (`42["event",{...},"7"]`,
        the connection-state-recovery offset); other events never carry a string last."""
        if offsets and self.resumable:
            if self._sio_off is None:
                self._sio_off = "4" + encode_event_text(self.event, self.data_json(), str(self.seq))
            return self._sio_off
        if self._sio is None:
            self._sio = "4" + encode_event_text(self.event, self.data_json())
        return self._sio

    def sio_frame(self, offsets: bool = False) -> bytes:
        """`sio_text` as one server WebSocket text frame (protocol/wsframe.py), made once per
        message: the same bytes for every WebSocket connection of the session (the text itself
        is not kept; polling connections use `sio_text`)."""
        if offsets and self.resumable:
            if self._ws_off is None:
                self._ws_off = text_frame("4" + encode_event_text(self.event, self.data_json(), str(self.seq)))
            return self._ws_off
        if self._ws is None:
            self._ws = text_frame("4" + encode_event_text(self.event, self.data_json()))
        return self._ws

    def to_wire(self) -> dict:
        return {"target_sid": self.target_sid, "session_id": self.session_id, "event": self.event,
                "data": self.data, "timestamp": self.timestamp, "seq": self.seq}

    @classmethod
    def from_raws(cls, raws: list[bytes], on_error: Callable[[Exception], None]) -> list["RelayMessage"]:
        """`from_raw` over one network read's messages of a channel (the relay's hot path: ours
        in the fixed layout are read by one `findall` for the batch, cost one object each and
        keep their data as the bytes that came); what cannot be read goes to `on_error` and is
        left out."""
        if raws and type(raws[0]) is not bytes:  # e.g. a pub/sub client that decodes: as published
            raws = [r.encode("utf-8", "surrogatepass") if isinstance(r, str) else bytes(r) for r in raws]
        if len(raws) > 1:
            blob = b"\x00" + b"\x00".join(raws)
            parts = _fixed_split(blob)
            if len(parts) == 5 * len(raws) + 1 and not any(parts[::5]) and (blob.isascii() or _utf8(blob)):
                heads = _heads
                new = object.__new__
                out = []
                append = out.append
                nl = blob.find(b"\n") >= 0 or blob.find(b"\r") >= 0  # `find`: see encode_json_event
                try:
                    for seq, head, stamp, data in zip(parts[1::5], parts[2::5], parts[3::5], parts[4::5]):
                        msg = new(cls)
                        msg.event, msg.target_sid, msg.session_id, msg._eb = heads.get(head) or _head(head)
                        msg._data = msg._json = msg._sse = msg._sio = msg._sio_off = msg._ws = msg._ws_off = None
                        msg.timestamp = float(stamp)
                        msg.seq = int(seq)
                        msg._jb = data
                        msg._nl = nl
                        append(msg)
                    return out
                except (ValueError, KeyError, TypeError, AttributeError, LocalProtocolError):
                    pass  # e.g. a timestamp only the pattern took for a number: one by one says which
        return cls._from_raws_one_by_one(raws, on_error)

    @classmethod
    def _from_raws_one_by_one(cls, raws: list[bytes], on_error: Callable[[Exception], None]) -> list["RelayMessage"]:
        out = []
        append = out.append
        match = _fixed_match_b
        heads = _heads
        new = object.__new__
        for raw in raws:
            try:
                m = match(raw)
                if m is None or raw[-1] != 125 or not (raw.isascii() or _utf8(raw)):  # 125: "}"
                    append(cls.from_raw(raw))
                    continue
                seq, head, stamp = m.groups()
                msg = new(cls)
                msg.event, msg.target_sid, msg.session_id, msg._eb = heads.get(head) or _head(head)
                msg._data = msg._json = msg._sse = msg._sio = msg._sio_off = msg._ws = msg._ws_off = None
                msg.timestamp = float(stamp)
                msg.seq = int(seq)
                msg._jb = raw[m.end():-1]
                msg._nl = True
                append(msg)
            except (ValueError, KeyError, TypeError, AttributeError, IndexError, LocalProtocolError) as exc:
                on_error(exc)
        return out

    @classmethod
    def from_raw(cls, raw: bytes | str) -> "RelayMessage":
        """A message as published. Ours (`fmt` FIXED_HEAD or DATA_LAST) keep their data's JSON
        text as is; anything else is decoded whole. Raises ValueError/KeyError/TypeError on garbage."""
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
        if text.endswith("}") and (m := _fixed_match(text)) is not None:
            seq, event, target, session, ts = m.groups()
            return cls(session_id=session, event=event, data=None, seq=int(seq), timestamp=float(ts),
                       target_sid=target or None, data_json=text[m.end():-1])
        i = text.find(_DATA_KEY)
        if i > 0 and text.endswith("}"):
            try:
                head = loads(text[:i] + "}")  # only scalars precede "data" in our layout
            except ValueError:
                head = None
            if isinstance(head, dict) and head.get("fmt") in (DATA_LAST, FIXED_HEAD):
                return cls(session_id=str(head["session_id"]), event=str(head["event"]), data=None,
                           seq=int(head.get("seq") or 0), timestamp=float(head.get("timestamp") or 0.0),
                           target_sid=head.get("target_sid") or None, data_json=text[i + len(_DATA_KEY):-1])
        return cls.from_wire(loads(text))

    @classmethod
    def from_wire(cls, obj: dict) -> "RelayMessage":
        data = obj["data"]
        seq = int(obj.get("seq") or 0)  # 0: a producer that assigns none (KDCube's own)
        if isinstance(data, dict) and seq:
            data["seq"] = seq
        return cls(session_id=str(obj["session_id"]), event=str(obj["event"]), data=data, seq=seq,
                   timestamp=float(obj.get("timestamp") or 0.0), target_sid=obj.get("target_sid") or None)

    def __repr__(self) -> str:
        return f"RelayMessage({self.event} seq={self.seq} session={self.session_id} target={self.target_sid})"
