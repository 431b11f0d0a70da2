"""One event on its way to a session's connections, encoded at most once per wire format."""

from __future__ import annotations

import json
import re
from typing import Any, Callable

import orjson

from kdc_trio.relay.keys import PROJECT_SESSION
from protocol.socketio import encode_event_text
from protocol.sse import encode_event
from protocol.wsframe import text_frame


def dumps(obj: Any) -> str:
    """Compact JSON text (orjson: a relayed event's encode is on every publish). What orjson
    refuses (integers past 64 bits, non-string keys) goes through the standard encoder."""
    try:
        return orjson.dumps(obj).decode()
    except TypeError:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


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

    __slots__ = ("session_id", "target_sid", "event", "_data", "timestamp", "seq", "_json", "_sse", "_sio", "_sio_off",
                 "_ws", "_ws_off")

    def __init__(self, *, session_id: str, event: str, data: dict | None, seq: int, timestamp: float,
                 target_sid: str | None = None, data_json: str | None = None) -> None:
        self.session_id = session_id
        self.target_sid = target_sid
        self.event = event
        self._data = data
        self.timestamp = timestamp
        self.seq = seq
        self._json = data_json
        self._sse: bytes | None = None
        self._sio: str | None = None
        self._sio_off: str | None = None
        self._ws: bytes | None = None
        self._ws_off: bytes | None = None

    @property
    def data(self) -> Any:
        if self._data is None and self._json is not None:
            self._data = json.loads(self._json)
        return self._data

    def data_json(self) -> str:
        if self._json is None:
            self._json = dumps(self.data)
        return self._json

    @property
    def resumable(self) -> bool:
        """A session event: its seq is the session's sequence (the SSE `id:`, the replay cursor).
        Project-wide events have a sequence of their own and are live-only."""
        return self.session_id != PROJECT_SESSION and self.seq > 0

    def sse_bytes(self) -> bytes:
        if self._sse is None:
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
        in the fixed layout cost one match and one object each); what cannot be read goes to
        `on_error` and is left out."""
        out = []
        append = out.append
        match = _fixed_match
        new = object.__new__
        for raw in raws:
            try:
                text = raw.decode("utf-8")
                m = match(text)
                if m is None or text[-1] != "}":
                    append(cls.from_raw(text))
                    continue
                seq, event, target, session, ts = m.groups()
                msg = new(cls)
                msg.session_id = session
                msg.target_sid = target or None
                msg.event = event
                msg._data = None
                msg.timestamp = float(ts)
                msg.seq = int(seq)
                msg._json = text[m.end():-1]
                msg._sse = msg._sio = msg._sio_off = msg._ws = msg._ws_off = None
                append(msg)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
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
