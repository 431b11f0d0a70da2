"""A turn's events as typed objects, decoded from the SSE event name and the JSON envelope.

Pure: no I/O. `decode(event, id, data)` returns one of the frozen dataclasses below, or None for
events that are not a turn's (`ready`, heartbeats, unknown names); `Answer` assembles a turn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    """What every turn event carries: its session sequence (the SSE `id:`), whose turn it is,
    and the whole envelope as received."""

    seq: int | None
    turn_id: str | None
    conversation_id: str | None
    agent: str | None = None
    envelope: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class Start(Event):
    message: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Step(Event):
    """A `chat_step`: `type` is the envelope type (`chat.step`, or a card such as `chat.followups`)."""

    type: str
    step: str | None
    status: str | None
    title: str | None
    data: dict[str, Any]


@dataclass(frozen=True, kw_only=True, slots=True)
class Delta(Event):
    """A piece of streamed text; `marker` says which stream (`thinking`, `answer`, `canvas`, …)."""

    text: str
    marker: str
    index: int
    completed: bool
    format: str | None = None
    artifact_name: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Complete(Event):
    data: dict[str, Any]


@dataclass(frozen=True, kw_only=True, slots=True)
class Error(Event):
    error: str
    data: dict[str, Any]


@dataclass(frozen=True, kw_only=True, slots=True)
class Status(Event):
    """`conv_status`: the conversation's state (`in_progress`, `idle`, …) and how the turn ended."""

    state: str | None
    completion: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class Gap(Event):
    """`stream.gap`: on a resume the gateway no longer held every event after the client's last
    one; sequences `after_seq + 1 … first_seq - 1` are lost. It ends every turn that was open."""

    after_seq: int
    first_seq: int
    reason: str | None


TurnEvent = Start | Step | Delta | Complete | Error | Status | Gap
GAP_TYPE = "stream.gap"


def _seq(event_id: str | None, env: dict[str, Any]) -> int | None:
    """The session sequence when the event carried one: its `id:` and the envelope's `seq` agree.
    (An SSE client keeps the last id for events without one, so `id` alone would mislabel them.)"""
    seq = env.get("seq")
    if isinstance(seq, int) and not isinstance(seq, bool) and event_id == str(seq):
        return seq
    return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def decode(event: str, event_id: str | None, data: str) -> TurnEvent | None:
    """The typed event for one SSE event of a turn's family; None for anything else.
    Raises ValueError on a family event whose data is not a JSON object."""
    if event not in ("chat_start", "chat_step", "chat_delta", "chat_complete", "chat_error", "conv_status",
                     "chat_service"):
        return None
    env = json.loads(data)
    if not isinstance(env, dict):
        raise ValueError(f"{event}: data is not a JSON object")
    if event == "chat_service":
        body = _dict(env.get("data"))
        if env.get("type") != GAP_TYPE:
            return None  # other gateway notices are not a turn's
        return Gap(seq=None, turn_id=None, conversation_id=None, envelope=env,
                   after_seq=int(body.get("after_seq") or 0), first_seq=int(body.get("first_seq") or 0),
                   reason=body.get("reason"))
    conv, ev, body = _dict(env.get("conversation")), _dict(env.get("event")), _dict(env.get("data"))
    base = dict(seq=_seq(event_id, env), turn_id=conv.get("turn_id"), conversation_id=conv.get("conversation_id"),
                agent=ev.get("agent"), envelope=env)
    if event == "chat_start":
        return Start(**base, message=body.get("message"))
    if event == "chat_step":
        return Step(**base, type=str(env.get("type") or "chat.step"), step=ev.get("step"), status=ev.get("status"),
                    title=ev.get("title"), data=body)
    if event == "chat_delta":
        d = _dict(env.get("delta"))
        return Delta(**base, text=str(d.get("text") or ""), marker=str(d.get("marker") or "answer"),
                     index=int(d.get("index") or 0), completed=bool(d.get("completed")), format=d.get("format"),
                     artifact_name=d.get("artifact_name"))
    if event == "chat_complete":
        return Complete(**base, data=body)
    if event == "chat_error":
        return Error(**base, error=str(body.get("error") or "error"), data=body)
    return Status(**base, state=body.get("state"), completion=body.get("completion"))


@dataclass(frozen=True, kw_only=True)
class Answer:
    """A whole turn, assembled: each marker's text, the steps, the follow-ups, how it ended."""

    text: str
    thinking: str
    streams: dict[str, str]  # marker -> joined text (answer, thinking, canvas, timeline_text, custom)
    steps: tuple[Step, ...]
    followups: tuple[str, ...]
    complete: Complete | None
    error: Error | None
    gap: Gap | None  # some of the turn's events were lost (the resume point had left the log)
    events: tuple[TurnEvent, ...] = field(repr=False)

    @classmethod
    def of(cls, events: list[TurnEvent] | tuple[TurnEvent, ...]) -> "Answer":
        streams: dict[str, list[str]] = {}
        steps: list[Step] = []
        followups: tuple[str, ...] = ()
        complete = error = gap = None
        for e in events:
            if isinstance(e, Delta):
                streams.setdefault(e.marker, []).append(e.text)
            elif isinstance(e, Step):
                steps.append(e)
                if e.type == "chat.followups":
                    followups = tuple(str(i) for i in e.data.get("items") or ())
            elif isinstance(e, Complete):
                complete = e
            elif isinstance(e, Error):
                error = e
            elif isinstance(e, Gap):
                gap = e
        joined = {k: "".join(v) for k, v in streams.items()}
        return cls(text=joined.get("answer", ""), thinking=joined.get("thinking", ""), streams=joined,
                   steps=tuple(steps), followups=followups, complete=complete, error=error, gap=gap,
                   events=tuple(events))
