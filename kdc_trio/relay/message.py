"""One event on its way to a session's connections, encoded at most once per wire format."""

from __future__ import annotations

import json
from typing import Any

import orjson

from kdc_trio.relay.keys import PROJECT_SESSION
from protocol.socketio import encode_event_text
from protocol.sse import encode_event


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
# take the data's JSON text as it is instead of decoding and re-encoding it.
DATA_LAST = "kdc1"
_DATA_KEY = ',"data":'


class RelayMessage:
    """`{target_sid, session_id, event, data, timestamp, seq}`; `data` is the envelope (with `seq`).

    Either `data` or its JSON text is known; the other is made on first use, at most once.
    """

    __slots__ = ("session_id", "target_sid", "event", "_data", "timestamp", "seq", "_json", "_sse", "_sio", "_sio_off")

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

    def to_wire(self) -> dict:
        return {"target_sid": self.target_sid, "session_id": self.session_id, "event": self.event,
                "data": self.data, "timestamp": self.timestamp, "seq": self.seq}

    @classmethod
    def from_raw(cls, raw: bytes | str) -> "RelayMessage":
        """A message as published. Ours (`fmt` DATA_LAST) keep their data's JSON text as is;
        anything else is decoded whole. Raises ValueError/KeyError/TypeError on garbage."""
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
        i = text.find(_DATA_KEY)
        if i > 0 and text.endswith("}"):
            try:
                head = loads(text[:i] + "}")  # only scalars precede "data" in our layout
            except ValueError:
                head = None
            if isinstance(head, dict) and head.get("fmt") == DATA_LAST:
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
