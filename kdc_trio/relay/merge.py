"""Merging a slow connection's queued deltas: consecutive `chat_delta`s of one stream become one.

Two deltas merge when they are resumable session events for the same target (one connection, or
the whole session), their envelopes are equal except for the text and what changes from one
piece of a stream to the next (`timestamp`, `ts`, `seq`, `delta.completed`, the index) -- the
same turn, conversation, service, agent, marker, format, extra and metadata -- and the second
one's index is the first one's or the next (`index` counts the pieces of a stream: KDCube's
bundles and ours number them 0, 1, 2 ...; a jump is never merged over). A delta already marked
`completed` absorbs nothing. The merged event is the last piece's envelope with the joined text
(`delta.text` and its mirror `text`): its `seq`, `index`/`idx` and time, plus `seq_from`, the
first seq it covers (an unmerged event covers only its own `seq`).

Nothing is decoded until a merge is tried: a `RelayMessage` keeps its data's JSON text, and
only deltas that meet a delta at the tail of a queue above its merge threshold are decoded.
The merged event is encoded once, when its connection's writer takes it.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from kdc_trio.relay.message import RelayMessage

DELTA = "chat_delta"
# What may differ between two deltas that merge (besides the text, which is joined).
_VOLATILE = ("timestamp", "ts", "seq", "seq_from", "text", "idx", "delta")
_VOLATILE_PART = ("text", "completed", "index")


def _key(env: Any) -> str | None:
    """What two deltas must share to merge (None: this envelope never merges)."""
    if not isinstance(env, dict) or env.get("type") != "chat.delta":
        return None
    part = env.get("delta")
    if not isinstance(part, dict) or not isinstance(part.get("text"), str) or type(part.get("index")) is not int:
        return None
    same = {k: v for k, v in env.items() if k not in _VOLATILE}
    same["delta"] = {k: v for k, v in part.items() if k not in _VOLATILE_PART}
    return json.dumps(same, sort_keys=True, separators=(",", ":"), default=str)


class MergedDelta(RelayMessage):
    """Deltas merged in one outbox (owned by it, never shared): the text is joined and the
    envelope built only when the writer takes it."""

    __slots__ = ("seq_from", "key", "_parts", "_last")

    def __init__(self, first: RelayMessage, key: str) -> None:
        env = first.data
        super().__init__(session_id=first.session_id, event=first.event, data=None, seq=first.seq,
                         timestamp=first.timestamp, target_sid=first.target_sid)
        self.seq_from = first.seq
        self.key = key
        self._parts = [env["delta"]["text"]]
        self._last = env

    def absorb(self, msg: RelayMessage, env: dict) -> None:
        assert self._json is None, "a merged delta grows only while it is queued"
        self._parts.append(env["delta"]["text"])
        self._last = env
        self.seq = msg.seq
        self.timestamp = msg.timestamp
        self._data = None

    @property
    def last_part(self) -> dict:
        return self._last["delta"]

    @property
    def data(self) -> Any:
        if self._data is None:
            text = "".join(self._parts)
            self._parts = [text]
            env = dict(self._last)  # the logged envelopes are shared: never edited in place
            env["delta"] = {**env["delta"], "text": text}
            env["text"] = text
            env["seq"] = self.seq
            env["seq_from"] = self.seq_from
            self._data = env
        return self._data


def _merge_key(msg: RelayMessage) -> str | None:
    if msg.event != DELTA or not msg.resumable:
        return None
    if isinstance(msg, MergedDelta):
        return msg.key
    return _key(msg.data)


def merge_into(tail: RelayMessage, msg: RelayMessage) -> MergedDelta | None:
    """`tail` with `msg` joined to it (a MergedDelta: `tail` itself when it already is one), or
    None when the two may not merge. Cheap refusals first: nothing is decoded for a non-delta."""
    if (msg.event != DELTA or tail.event != DELTA or msg.target_sid != tail.target_sid
            or msg.session_id != tail.session_id or msg.seq <= tail.seq):
        return None
    key = _merge_key(tail)
    if key is None or key != _merge_key(msg):
        return None
    part = tail.last_part if isinstance(tail, MergedDelta) else tail.data["delta"]
    env = msg.data
    if part.get("completed") is True or env["delta"]["index"] - part["index"] not in (0, 1):
        return None
    merged = tail if isinstance(tail, MergedDelta) else MergedDelta(tail, key)
    merged.absorb(msg, env)
    return merged


def compact(items: Iterable[RelayMessage]) -> list[RelayMessage]:
    """`items` with every run of consecutive mergeable deltas merged; order otherwise kept."""
    out: list[RelayMessage] = []
    for msg in items:
        merged = merge_into(out[-1], msg) if out else None
        if merged is None:
            out.append(msg)
        else:
            out[-1] = merged
    return out
