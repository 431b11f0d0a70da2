"""One event on its way to a session's connections, encoded at most once per wire format."""

from __future__ import annotations

import json
from typing import Any

from kdc_trio.relay.keys import PROJECT_SESSION
from protocol.socketio import encode_event_text
from protocol.sse import encode_event


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class RelayMessage:
    """`{target_sid, session_id, event, data, timestamp, seq}`; `data` is the envelope (with `seq`)."""

    __slots__ = ("session_id", "target_sid", "event", "data", "timestamp", "seq", "_json", "_sse", "_sio")

    def __init__(self, *, session_id: str, event: str, data: dict, seq: int, timestamp: float,
                 target_sid: str | None = None) -> None:
        self.session_id = session_id
        self.target_sid = target_sid
        self.event = event
        self.data = data
        self.timestamp = timestamp
        self.seq = seq
        self._json: str | None = None
        self._sse: bytes | None = None
        self._sio: str | None = None

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

    def sio_text(self) -> str:
        """Engine.IO message + Socket.IO EVENT on the default namespace: `42["event",{...}]`."""
        if self._sio is None:
            self._sio = "4" + encode_event_text(self.event, self.data_json())
        return self._sio

    def to_wire(self) -> dict:
        return {"target_sid": self.target_sid, "session_id": self.session_id, "event": self.event,
                "data": self.data, "timestamp": self.timestamp, "seq": self.seq}

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
