"""The chat event envelope, in KDCube's shape: pure dict builders and a validator.

Every envelope is a JSON-ready dict:

    {type, timestamp, ts, service, conversation, event, ...family payload}

- `timestamp` is ISO-8601 UTC with milliseconds and a `Z`; `ts` is the same instant in
  epoch milliseconds.
- `service` = {request_id, tenant, project, user, user_type}
- `conversation` = {session_id, conversation_id, turn_id}
- `event` = {agent, step, status, title}
- deltas carry `delta` {text, index, marker, completed[, format, artifact_name, sub_type]}
  and the mirrors `text` / `idx` that KDCube clients read, and `extra` (always; `{}` at least)
  with the optional fields, where KDCube puts them;
- every other family carries `data` (errors: `data.error`); `metadata` is optional.

`socket_event_for` names the transport event (SSE `event:` / Socket.IO event) of an
envelope. Builders raise LocalProtocolError on arguments no envelope may have (a bug in the
caller); `validate` raises RemoteProtocolError on a decoded envelope that is malformed.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from protocol.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "ServiceCtx",
    "ConvCtx",
    "CONV_STATES",
    "CONV_COMPLETIONS",
    "SOCKET_EVENTS",
    "start",
    "step",
    "delta",
    "complete",
    "error",
    "typed",
    "service",
    "conv_status",
    "socket_event_for",
    "validate",
    "iso_timestamp",
]

CONV_STATES = frozenset({"idle", "created", "in_progress", "error"})
CONV_COMPLETIONS = frozenset({"success", "error", "rollback", "queued_next"})

# envelope type -> transport event name, for the fixed families
_FAMILY_EVENTS = {
    "chat.start": "chat_start",
    "chat.step": "chat_step",
    "chat.delta": "chat_delta",
    "chat.complete": "chat_complete",
    "chat.error": "chat_error",
    "chat.service": "chat_service",
    "conv.status": "conv_status",
}
#: Every transport event name an envelope can travel under.
SOCKET_EVENTS = frozenset(_FAMILY_EVENTS.values())
# A `route` may name the transport event either way ("chat_service" or "chat.service").
_ROUTES = {**_FAMILY_EVENTS, **{name: name for name in SOCKET_EVENTS}}
# Types whose payload a generic typed card cannot build.
_RESERVED_TYPES = frozenset({"chat.delta", "conv.status"})
_SERVICE_PREFIXES = ("gateway.", "queue.")

# KDCube's defaults for the fixed families' `event` block.
_DELTA_AGENT = "assistant"
_COMPLETE_AGENT = "answer_generator"
_ERROR_STEP = "chat.error"
_ERROR_TITLE = "Workflow Error"

_ISO_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z\Z")


# --------------------------------------------------------------------------- contexts


def _check_str(name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise LocalProtocolError(f"{name} must be a str, not {type(value).__name__}")


@dataclass(frozen=True, kw_only=True, slots=True)
class ServiceCtx:
    """Who the turn runs for: the `service` block of every envelope."""

    request_id: str
    tenant: str
    project: str
    user: str | None
    user_type: str

    def __post_init__(self) -> None:
        for name in ("request_id", "tenant", "project", "user_type"):
            _check_str(f"ServiceCtx.{name}", getattr(self, name))
        _check_str("ServiceCtx.user", self.user, optional=True)

    def as_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "tenant": self.tenant,
            "project": self.project,
            "user": self.user,
            "user_type": self.user_type,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class ConvCtx:
    """Where the turn belongs: the `conversation` block of every envelope."""

    session_id: str
    conversation_id: str
    turn_id: str

    def __post_init__(self) -> None:
        for name in ("session_id", "conversation_id", "turn_id"):
            _check_str(f"ConvCtx.{name}", getattr(self, name))

    def as_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "conversation_id": self.conversation_id,
            "turn_id": self.turn_id,
        }


def _member(value: object, allowed: frozenset[str]) -> bool:
    return isinstance(value, str) and value in allowed


_NO_CONVERSATION = {"session_id": None, "conversation_id": None, "turn_id": None}


# --------------------------------------------------------------------------- time

# The formatted seconds of the last stamp: deltas come many per second, and strftime is
# the costly part of a timestamp. The milliseconds come from a table (a format per event was
# a tenth of a delta's envelope).
_last_second: tuple[int, str] = (-1, "")
_MILLIS = tuple(f".{i:03d}Z" for i in range(1000))


def _stamp(now: float | None) -> tuple[str, int]:
    global _last_second
    ms = time.time_ns() // 1_000_000 if now is None else int(now * 1000)
    secs, millis = divmod(ms, 1000)
    cached_secs, prefix = _last_second
    if secs != cached_secs:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
        _last_second = (secs, prefix)
    return prefix + _MILLIS[millis], ms


def iso_timestamp(now: float | None = None) -> str:
    """`now` (epoch seconds; the current time if None) as ISO-8601 UTC, ms, 'Z'."""
    return _stamp(now)[0]


# --------------------------------------------------------------------------- builders

Env = dict[str, Any]
Data = dict[str, Any] | None


def _base(type_: str, svc: ServiceCtx, conv: ConvCtx | None, now: float | None,
          agent: str | None, step_: str, status: str, title: str | None) -> Env:
    timestamp, ts = _stamp(now)
    return {
        "type": type_,
        "timestamp": timestamp,
        "ts": ts,
        "service": svc.as_dict(),
        "conversation": dict(_NO_CONVERSATION) if conv is None else conv.as_dict(),
        "event": {"agent": agent, "step": step_, "status": status, "title": title},
    }


def _check_name(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise LocalProtocolError(f"{name} must be a non-empty str, not {value!r}")


def _check_dict(name: str, value: object) -> None:
    if value is not None and not isinstance(value, dict):
        raise LocalProtocolError(f"{name} must be a dict, not {type(value).__name__}")


def start(svc: ServiceCtx, conv: ConvCtx, *, message: str | None = None, agent: str | None = None,
          data: Data = None, now: float | None = None) -> Env:
    """`chat.start`: the turn began; `data.message` is the user's text."""
    _check_str("message", message, optional=True)
    _check_dict("data", data)
    env = _base("chat.start", svc, conv, now, agent, "turn", "started", "Turn Started")
    env["data"] = {"message": "" if message is None else message, **(data or {})}
    return env


def step(svc: ServiceCtx, conv: ConvCtx, *, step: str, status: str, title: str | None = None,
         agent: str | None = None, data: Data = None, metadata: Data = None,
         now: float | None = None) -> Env:
    """`chat.step`: a progress card (`status` e.g. started, running, completed, error, skipped)."""
    _check_name("step", step)
    _check_name("status", status)
    _check_dict("data", data)
    _check_dict("metadata", metadata)
    env = _base("chat.step", svc, conv, now, agent, step, status, title)
    env["data"] = data if data is not None else {}
    if metadata is not None:
        env["metadata"] = metadata
    return env


def delta(svc: ServiceCtx, conv: ConvCtx, *, text: str, index: int, marker: str = "answer",
          agent: str | None = None, completed: bool = False, format: str | None = None,
          artifact_name: str | None = None, sub_type: str | None = None, metadata: Data = None,
          extra: Data = None, now: float | None = None) -> Env:
    """`chat.delta`: one streamed piece of text; the marker passes through untouched.

    Every delta has `extra` (KDCube's clients read it on each one): `{}` at least, the optional
    `format` / `artifact_name` / `sub_type` in it (and mirrored in `delta`, as before), plus any
    other keys the caller adds (`title`, `search_id`, ...; the named arguments win).
    """
    if type(text) is not str:
        raise LocalProtocolError(f"delta text must be a str, not {type(text).__name__}")
    if type(index) is not int or index < 0:
        raise LocalProtocolError(f"delta index must be a non-negative int, not {index!r}")
    if type(marker) is not str or not marker:
        raise LocalProtocolError(f"delta marker must be a non-empty str, not {marker!r}")
    if type(completed) is not bool:
        raise LocalProtocolError(f"delta completed must be a bool, not {completed!r}")
    _check_dict("extra", extra)
    agent = _DELTA_AGENT if agent is None else agent
    env = _base("chat.delta", svc, conv, now, agent, "stream", "running", "Assistant Delta")
    part: Env = {"text": text, "index": index, "marker": marker, "completed": completed}
    more: Env = dict(extra) if extra else {}
    if format is not None or artifact_name is not None or sub_type is not None:
        optional = (("format", format), ("artifact_name", artifact_name), ("sub_type", sub_type))
        for key, value in optional:
            if value is not None:
                _check_str(key, value)
                part[key] = more[key] = value
    env["extra"] = more  # where KDCube puts them; `delta` carries them too
    env["delta"] = part
    env["text"] = text
    env["idx"] = index
    if metadata is not None:
        _check_dict("metadata", metadata)
        env["metadata"] = metadata
    return env


def complete(svc: ServiceCtx, conv: ConvCtx, *, data: Data = None, agent: str | None = None,
             now: float | None = None) -> Env:
    """`chat.complete`: the turn finished."""
    _check_dict("data", data)
    agent = _COMPLETE_AGENT if agent is None else agent
    env = _base("chat.complete", svc, conv, now, agent, "stream", "completed", "Turn Completed")
    env["data"] = data if data is not None else {}
    return env


def error(svc: ServiceCtx, conv: ConvCtx, *, message: str, agent: str | None = None,
          step: str | None = None, title: str | None = None, data: Data = None,
          now: float | None = None) -> Env:
    """`chat.error`: the turn failed; `data.error` is `message` (it wins over data["error"])."""
    _check_str("message", message)
    _check_dict("data", data)
    step = _ERROR_STEP if step is None else step
    title = _ERROR_TITLE if title is None else title
    env = _base("chat.error", svc, conv, now, agent, step, "error", title)
    env["data"] = {**(data or {}), "error": message}
    return env


def typed(svc: ServiceCtx, conv: ConvCtx, *, type: str, step: str | None = None,  # noqa: A002
          status: str | None = None, title: str | None = None, agent: str | None = None,
          data: Data = None, route: str | None = None, now: float | None = None) -> Env:
    """A typed UI card (e.g. `chat.followups`); travels as `chat_step` unless `route` says."""
    _check_name("type", type)
    if type in _RESERVED_TYPES:
        raise LocalProtocolError(f"{type} has its own builder; typed() cannot build it")
    if route is not None and route not in _ROUTES:
        raise LocalProtocolError(f"unknown route {route!r}; one of {sorted(SOCKET_EVENTS)}")
    _check_dict("data", data)
    step = "event" if step is None else step
    status = "update" if status is None else status
    env = _base(type, svc, conv, now, agent, step, status, title)
    env["data"] = data if data is not None else {}
    if route is not None:
        env["route"] = route
    return env


def service(svc: ServiceCtx, conv: ConvCtx | None, *, type: str,  # noqa: A002
            data: Data = None, now: float | None = None) -> Env:
    """A gateway/queue notice (`gateway.rate_limit`, `queue.enqueue_rejected`, ...).

    Travels as `chat_service`; `conv` is None for a notice outside any conversation.
    """
    _check_name("type", type)
    _check_dict("data", data)
    env = _base(type, svc, conv, now, None, "service", "update", None)
    env["data"] = data if data is not None else {}
    env["route"] = "chat_service"
    return env


def conv_status(svc: ServiceCtx, conv: ConvCtx, *, state: str, updated_at: str | float,
                current_turn_id: str | None, completion: str | None,
                origin_stream_id: str | None, now: float | None = None) -> Env:
    """`conv.status`: the conversation's state (idle, created, in_progress, error).

    `updated_at` is an ISO-8601 string, or epoch seconds that are written as one.
    """
    if not _member(state, CONV_STATES):
        raise LocalProtocolError(f"conv state must be one of {sorted(CONV_STATES)}, not {state!r}")
    if completion is not None and not _member(completion, CONV_COMPLETIONS):
        raise LocalProtocolError(
            f"conv completion must be None or one of {sorted(CONV_COMPLETIONS)}, not {completion!r}"
        )
    if type(updated_at) in (int, float):
        updated_at = iso_timestamp(updated_at)  # epoch seconds -> the ISO string on the wire
    _check_str("updated_at", updated_at)
    _check_str("current_turn_id", current_turn_id, optional=True)
    _check_str("origin_stream_id", origin_stream_id, optional=True)
    env = _base("conv.status", svc, conv, now, None, "conv.state", state, None)
    env["data"] = {
        "state": state,
        "updated_at": updated_at,
        "current_turn_id": current_turn_id,
        "completion": completion,
        "origin_stream_id": origin_stream_id,
    }
    return env


# --------------------------------------------------------------------------- routing


def _is_service(env: dict[str, Any]) -> bool:
    type_, route = env.get("type"), env.get("route")
    if isinstance(route, str) and _ROUTES.get(route) == "chat_service":
        return True
    return isinstance(type_, str) and (
        type_ == "chat.service" or type_.startswith(_SERVICE_PREFIXES)
    )


def socket_event_for(envelope: dict[str, Any]) -> str:
    """The transport event (SSE `event:`, Socket.IO event name) an envelope travels under."""
    route = envelope.get("route")
    if route is not None:
        mapped = _ROUTES.get(route) if isinstance(route, str) else None
        if mapped is not None:
            return mapped
    type_ = envelope.get("type")
    if not isinstance(type_, str):
        raise LocalProtocolError(f"envelope type must be a str, not {type_!r}")
    family = _FAMILY_EVENTS.get(type_)
    if family is not None:
        return family
    if type_.startswith(_SERVICE_PREFIXES):
        return "chat_service"
    return "chat_step"


# --------------------------------------------------------------------------- validation


def _bad(msg: str) -> RemoteProtocolError:
    return RemoteProtocolError(
        f"malformed envelope: {msg}", error_status_hint=400, reason="bad_envelope"
    )


def _need_dict(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise _bad(f"{key} must be an object")
    return value


def _need_str(obj: dict[str, Any], key: str, where: str, *, optional: bool = False) -> None:
    if key not in obj:
        raise _bad(f"{where}.{key} is missing")
    value = obj[key]
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise _bad(f"{where}.{key} must be a string{' or null' if optional else ''}")


def _need_int(obj: dict[str, Any], key: str, where: str) -> int:
    value = obj.get(key)
    if type(value) is not int or value < 0:
        raise _bad(f"{where}.{key} must be a non-negative integer")
    return value


def validate(obj: object) -> dict[str, Any]:
    """Check an envelope decoded from JSON; return it, or raise RemoteProtocolError."""
    if not isinstance(obj, dict):
        raise _bad("not an object")
    _need_str(obj, "type", "envelope")
    type_ = obj["type"]
    if not type_:
        raise _bad("type is empty")
    _need_str(obj, "timestamp", "envelope")
    if not _ISO_RE.match(obj["timestamp"]):
        raise _bad("timestamp must be ISO-8601 UTC ending in Z")
    _need_int(obj, "ts", "envelope")

    svc = _need_dict(obj, "service")
    for key in ("request_id", "tenant", "project", "user_type"):
        _need_str(svc, key, "service")
    _need_str(svc, "user", "service", optional=True)

    conv = _need_dict(obj, "conversation")
    loose = _is_service(obj)  # gateway/queue notices may belong to no conversation
    for key in ("session_id", "conversation_id"):
        _need_str(conv, key, "conversation", optional=loose)
    _need_str(conv, "turn_id", "conversation", optional=True)

    ev = _need_dict(obj, "event")
    _need_str(ev, "step", "event")
    _need_str(ev, "status", "event")
    for key in ("agent", "title"):
        _need_str(ev, key, "event", optional=True)

    if "metadata" in obj and not isinstance(obj["metadata"], dict):
        raise _bad("metadata must be an object")
    if "route" in obj and not (isinstance(obj["route"], str) and obj["route"] in _ROUTES):
        raise _bad("route names no known event")

    if type_ == "chat.delta":
        _validate_delta(obj)
        return obj
    data = _need_dict(obj, "data")
    if type_ == "chat.error":
        _need_str(data, "error", "data")
    elif type_ == "conv.status":
        if not _member(data.get("state"), CONV_STATES):
            raise _bad(f"data.state must be one of {sorted(CONV_STATES)}")
        if ev["status"] != data["state"]:
            raise _bad("event.status must equal data.state")
        completion = data.get("completion")
        if completion is not None and not _member(completion, CONV_COMPLETIONS):
            raise _bad(f"data.completion must be null or one of {sorted(CONV_COMPLETIONS)}")
        _need_str(data, "updated_at", "data")
        _need_str(data, "current_turn_id", "data", optional=True)
        _need_str(data, "origin_stream_id", "data", optional=True)
    return obj


def _validate_delta(obj: dict[str, Any]) -> None:
    part = _need_dict(obj, "delta")
    _need_str(part, "text", "delta")
    index = _need_int(part, "index", "delta")
    _need_str(part, "marker", "delta")
    if not part["marker"]:
        raise _bad("delta.marker is empty")
    if type(part.get("completed")) is not bool:
        raise _bad("delta.completed must be a boolean")
    for key in ("format", "artifact_name", "sub_type"):
        if key in part:
            _need_str(part, key, "delta", optional=True)
    if obj.get("text") != part["text"] or type(obj.get("idx")) is not int or obj["idx"] != index:
        raise _bad("text/idx must mirror delta.text/delta.index")
    if not isinstance(obj.get("extra"), dict):
        raise _bad("extra must be an object")
