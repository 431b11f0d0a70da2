"""The Python peers' per-event envelope: chat_delta.json (see bench/peers/template.py) filled with
what kdc-trio fills per turn and per event, as a fresh dict each time (the peer's server then
serialises it, as kdc-trio serialises its own)."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

TEMPLATE = json.loads((Path(__file__).resolve().parent / "chat_delta.json").read_text())["envelope"]
_seqs: dict[str, int] = {}  # session → last sequence number (kdc-trio's relay numbers a session's events)
_second: tuple[int, str] = (-1, "")


# The longest wait before a turn's first event (the trigger's `phase`), as kdc-trio's bench bundle.
MAX_PHASE_S = 60.0


def phase_of(spec: dict) -> float:
    """Seconds to wait before the turn's first event: `many` spreads its sessions' first events
    over one period (bench/workloads.py), as independent sessions' are."""
    try:
        return min(MAX_PHASE_S, max(0.0, float(spec.get("phase", 0))))
    except (TypeError, ValueError):
        return 0.0


def new_session_id() -> str:
    return secrets.token_urlsafe(18)  # 24 characters, as kdc-trio's


class Turn:
    __slots__ = ("session", "request_id", "conversation_id", "turn_id")

    def __init__(self, session: str) -> None:
        self.session = session
        self.request_id, self.conversation_id, self.turn_id = (f"{p}-{secrets.token_hex(8)}"
                                                               for p in ("req", "conv", "turn"))


def _stamp() -> tuple[str, int]:
    global _second
    ms = time.time_ns() // 1_000_000
    secs, millis = divmod(ms, 1000)
    if secs != _second[0]:
        _second = (secs, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)))
    return f"{_second[1]}.{millis:03d}Z", ms


def chat_delta(turn: Turn, text: str, index: int) -> dict:
    timestamp, ts = _stamp()
    seq = _seqs[turn.session] = _seqs.get(turn.session, 0) + 1
    t = TEMPLATE
    return {**t, "timestamp": timestamp, "ts": ts, "service": {**t["service"], "request_id": turn.request_id},
            "conversation": {**t["conversation"], "session_id": turn.session,
                             "conversation_id": turn.conversation_id, "turn_id": turn.turn_id},
            "event": {**t["event"]}, "extra": {}, "delta": {**t["delta"], "text": text, "index": index},
            "text": text, "idx": index, "seq": seq}


def filler(size: int) -> str:
    head = f"{time.time_ns()}|"
    return head + "x" * max(0, size - len(head))
