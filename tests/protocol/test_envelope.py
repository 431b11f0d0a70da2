"""protocol/envelope.py: builder tables, socket event names, JSON round trips, validation."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import envelope as E
from protocol.errors import LocalProtocolError, RemoteProtocolError

NOW = 1_700_000_000.25  # 2023-11-14T22:13:20.250Z
STAMP = {"timestamp": "2023-11-14T22:13:20.250Z", "ts": 1_700_000_000_250}

SVC = E.ServiceCtx(request_id="req-1", tenant="acme", project="demo", user="u-1", user_type="registered")
CONV = E.ConvCtx(session_id="sess-1", conversation_id="conv-1", turn_id="turn-1")
SVC_D = {"request_id": "req-1", "tenant": "acme", "project": "demo", "user": "u-1", "user_type": "registered"}
CONV_D = {"session_id": "sess-1", "conversation_id": "conv-1", "turn_id": "turn-1"}


def head(type_: str, agent: Any, step: str, status: str, title: Any, conv: Any = CONV_D) -> dict[str, Any]:
    return {
        "type": type_,
        **STAMP,
        "service": SVC_D,
        "conversation": conv,
        "event": {"agent": agent, "step": step, "status": status, "title": title},
    }


def json_round_trip(env: dict[str, Any]) -> dict[str, Any]:
    return E.validate(json.loads(json.dumps(env, ensure_ascii=False)))


# --------------------------------------------------------------------------- builder tables

BUILD_TABLE = [
    (
        "start",
        E.start(SVC, CONV, message="hello", now=NOW),
        {**head("chat.start", None, "turn", "started", "Turn Started"), "data": {"message": "hello"}},
        "chat_start",
    ),
    (
        "start-extra-data",
        E.start(SVC, CONV, agent="user", data={"queue_stats": {"depth": 2}}, now=NOW),
        {
            **head("chat.start", "user", "turn", "started", "Turn Started"),
            "data": {"message": "", "queue_stats": {"depth": 2}},
        },
        "chat_start",
    ),
    (
        "step",
        E.step(SVC, CONV, step="attachments_received", status="completed", title="Files",
               agent="demo", data={"items": [{"filename": "a.txt"}]}, metadata={"k": 1}, now=NOW),
        {
            **head("chat.step", "demo", "attachments_received", "completed", "Files"),
            "data": {"items": [{"filename": "a.txt"}]},
            "metadata": {"k": 1},
        },
        "chat_step",
    ),
    (
        "step-minimal",
        E.step(SVC, CONV, step="plan", status="started", now=NOW),
        {**head("chat.step", None, "plan", "started", None), "data": {}},
        "chat_step",
    ),
    (
        "delta",
        E.delta(SVC, CONV, text="Hel", index=0, now=NOW),
        {
            **head("chat.delta", "assistant", "stream", "running", "Assistant Delta"),
            "delta": {"text": "Hel", "index": 0, "marker": "answer", "completed": False},
            "extra": {},
            "text": "Hel",
            "idx": 0,
        },
        "chat_delta",
    ),
    (
        "delta-canvas",
        E.delta(SVC, CONV, text="# Doc", index=4, marker="canvas", agent="writer", completed=True,
                format="markdown", artifact_name="report.md", sub_type="doc", metadata={"m": True}, now=NOW),
        {
            **head("chat.delta", "writer", "stream", "running", "Assistant Delta"),
            "delta": {
                "text": "# Doc", "index": 4, "marker": "canvas", "completed": True,
                "format": "markdown", "artifact_name": "report.md", "sub_type": "doc",
            },
            "extra": {"format": "markdown", "artifact_name": "report.md", "sub_type": "doc"},
            "text": "# Doc",
            "idx": 4,
            "metadata": {"m": True},
        },
        "chat_delta",
    ),
    (
        "complete",
        E.complete(SVC, CONV, data={"final_answer": "hi"}, now=NOW),
        {
            **head("chat.complete", "answer_generator", "stream", "completed", "Turn Completed"),
            "data": {"final_answer": "hi"},
        },
        "chat_complete",
    ),
    (
        "complete-minimal",
        E.complete(SVC, CONV, agent="bundle", now=NOW),
        {**head("chat.complete", "bundle", "stream", "completed", "Turn Completed"), "data": {}},
        "chat_complete",
    ),
    (
        "error",
        E.error(SVC, CONV, message="boom", now=NOW),
        {**head("chat.error", None, "chat.error", "error", "Workflow Error"), "data": {"error": "boom"}},
        "chat_error",
    ),
    (
        "error-full",
        E.error(SVC, CONV, message="limit", agent="ingress", step="ingress", title="Rejected",
                data={"limit": "CHAT_MAX_UPLOAD_MB", "error": "overridden"}, now=NOW),
        {
            **head("chat.error", "ingress", "ingress", "error", "Rejected"),
            "data": {"limit": "CHAT_MAX_UPLOAD_MB", "error": "limit"},
        },
        "chat_error",
    ),
    (
        "typed-followups",
        E.typed(SVC, CONV, type="chat.followups", agent="demo", data={"items": ["more?"]}, now=NOW),
        {**head("chat.followups", "demo", "event", "update", None), "data": {"items": ["more?"]}},
        "chat_step",
    ),
    (
        "typed-routed",
        E.typed(SVC, CONV, type="chat.citations", step="cite", status="completed", title="Sources",
                route="chat_service", now=NOW),
        {
            **head("chat.citations", None, "cite", "completed", "Sources"),
            "data": {},
            "route": "chat_service",
        },
        "chat_service",
    ),
    (
        "service",
        E.service(SVC, CONV, type="gateway.rate_limit", data={"retry_after": 3}, now=NOW),
        {
            **head("gateway.rate_limit", None, "service", "update", None),
            "data": {"retry_after": 3},
            "route": "chat_service",
        },
        "chat_service",
    ),
    (
        "service-no-conversation",
        E.service(SVC, None, type="queue.enqueue_rejected", now=NOW),
        {
            **head("queue.enqueue_rejected", None, "service", "update", None,
                   conv={"session_id": None, "conversation_id": None, "turn_id": None}),
            "data": {},
            "route": "chat_service",
        },
        "chat_service",
    ),
    (
        "service-custom-type",
        E.service(SVC, CONV, type="accounting.usage", now=NOW),
        {**head("accounting.usage", None, "service", "update", None), "data": {}, "route": "chat_service"},
        "chat_service",
    ),
    (
        "conv-status",
        E.conv_status(SVC, CONV, state="in_progress", updated_at="2023-11-14T22:13:20.000Z",
                      current_turn_id="turn-1", completion=None, origin_stream_id="stream-9", now=NOW),
        {
            **head("conv.status", None, "conv.state", "in_progress", None),
            "data": {
                "state": "in_progress",
                "updated_at": "2023-11-14T22:13:20.000Z",
                "current_turn_id": "turn-1",
                "completion": None,
                "origin_stream_id": "stream-9",
            },
        },
        "conv_status",
    ),
    (
        "conv-status-idle",
        E.conv_status(SVC, CONV, state="idle", updated_at="2023-11-14T22:13:20.000Z",
                      current_turn_id=None, completion="rollback", origin_stream_id=None, now=NOW),
        {
            **head("conv.status", None, "conv.state", "idle", None),
            "data": {
                "state": "idle",
                "updated_at": "2023-11-14T22:13:20.000Z",
                "current_turn_id": None,
                "completion": "rollback",
                "origin_stream_id": None,
            },
        },
        "conv_status",
    ),
]
BUILD_IDS = [row[0] for row in BUILD_TABLE]


@pytest.mark.parametrize(("name", "env", "expected", "socket_event"), BUILD_TABLE, ids=BUILD_IDS)
def test_builder_table(name: str, env: dict, expected: dict, socket_event: str) -> None:
    assert env == expected


@pytest.mark.parametrize(("name", "env", "expected", "socket_event"), BUILD_TABLE, ids=BUILD_IDS)
def test_socket_event_for_builders(name: str, env: dict, expected: dict, socket_event: str) -> None:
    assert E.socket_event_for(env) == socket_event
    assert socket_event in E.SOCKET_EVENTS


@pytest.mark.parametrize(("name", "env", "expected", "socket_event"), BUILD_TABLE, ids=BUILD_IDS)
def test_builder_json_round_trip(name: str, env: dict, expected: dict, socket_event: str) -> None:
    assert json_round_trip(env) == env
    assert E.socket_event_for(json_round_trip(env)) == socket_event


def test_builders_do_not_share_mutable_parts() -> None:
    a = E.delta(SVC, CONV, text="a", index=0, now=NOW)
    b = E.delta(SVC, CONV, text="b", index=1, now=NOW)
    a["service"]["user"] = "mutated"
    a["conversation"]["turn_id"] = "mutated"
    assert b["service"]["user"] == "u-1"
    assert b["conversation"]["turn_id"] == "turn-1"
    c = E.service(SVC, None, type="gateway.x", now=NOW)
    c["conversation"]["session_id"] = "mutated"
    assert E.service(SVC, None, type="gateway.x", now=NOW)["conversation"]["session_id"] is None


@pytest.mark.parametrize(
    ("envelope", "expected"),
    [
        ({"type": "chat.start"}, "chat_start"),
        ({"type": "chat.step"}, "chat_step"),
        ({"type": "chat.delta"}, "chat_delta"),
        ({"type": "chat.complete"}, "chat_complete"),
        ({"type": "chat.error"}, "chat_error"),
        ({"type": "conv.status"}, "conv_status"),
        ({"type": "chat.service"}, "chat_service"),
        ({"type": "gateway.rate_limit"}, "chat_service"),
        ({"type": "queue.enqueue_rejected"}, "chat_service"),
        ({"type": "chat.followups"}, "chat_step"),
        ({"type": "chat.citations"}, "chat_step"),
        ({"type": "my.custom.card"}, "chat_step"),
        ({"type": "chat.followups", "route": "chat_service"}, "chat_service"),
        ({"type": "chat.followups", "route": "chat.service"}, "chat_service"),
        ({"type": "chat.followups", "route": "chat_complete"}, "chat_complete"),
        ({"type": "chat.followups", "route": "no_such_route"}, "chat_step"),
        ({"type": "chat.followups", "route": ["x"]}, "chat_step"),
    ],
)
def test_socket_event_for_table(envelope: dict, expected: str) -> None:
    assert E.socket_event_for(envelope) == expected


def test_socket_event_for_needs_a_type() -> None:
    with pytest.raises(LocalProtocolError):
        E.socket_event_for({"route": None})


# --------------------------------------------------------------------------- markers & time


@pytest.mark.parametrize(
    "marker", ["thinking", "answer", "subsystem", "canvas", "timeline_text", "tool", "my-marker \u2728", " x "]
)
def test_markers_pass_through_untouched(marker: str) -> None:
    env = E.delta(SVC, CONV, text="t", index=1, marker=marker, now=NOW)
    assert env["delta"]["marker"] == marker
    assert json_round_trip(env)["delta"]["marker"] == marker


@pytest.mark.parametrize(
    ("now", "timestamp", "ts"),
    [
        (0, "1970-01-01T00:00:00.000Z", 0),
        (0.999, "1970-01-01T00:00:00.999Z", 999),
        (86_400.5, "1970-01-02T00:00:00.500Z", 86_400_500),
        (NOW, STAMP["timestamp"], STAMP["ts"]),
        (4_102_444_800, "2100-01-01T00:00:00.000Z", 4_102_444_800_000),
    ],
)
def test_timestamps(now: float, timestamp: str, ts: int) -> None:
    env = E.step(SVC, CONV, step="s", status="running", now=now)
    assert (env["timestamp"], env["ts"]) == (timestamp, ts)
    assert E.iso_timestamp(now) == timestamp


def test_timestamp_second_cache_does_not_leak_between_seconds() -> None:
    assert E.iso_timestamp(10.5) == "1970-01-01T00:00:10.500Z"
    assert E.iso_timestamp(11.25) == "1970-01-01T00:00:11.250Z"
    assert E.iso_timestamp(10.0) == "1970-01-01T00:00:10.000Z"


def test_now_defaults_to_current_time() -> None:
    before = int(time.time() * 1000)
    env = E.delta(SVC, CONV, text="x", index=0)
    after = int(time.time() * 1000)
    assert before <= env["ts"] <= after
    assert env["timestamp"] == E.iso_timestamp(env["ts"] / 1000)


# --------------------------------------------------------------------------- builder errors


@pytest.mark.parametrize(
    "build",
    [
        lambda: E.delta(SVC, CONV, text="x", index=-1),
        lambda: E.delta(SVC, CONV, text="x", index=True),
        lambda: E.delta(SVC, CONV, text="x", index=1.0),
        lambda: E.delta(SVC, CONV, text="x", index="1"),
        lambda: E.delta(SVC, CONV, text=None, index=0),
        lambda: E.delta(SVC, CONV, text=b"x", index=0),
        lambda: E.delta(SVC, CONV, text="x", index=0, marker=""),
        lambda: E.delta(SVC, CONV, text="x", index=0, marker=None),
        lambda: E.delta(SVC, CONV, text="x", index=0, completed=1),
        lambda: E.delta(SVC, CONV, text="x", index=0, format=3),
        lambda: E.delta(SVC, CONV, text="x", index=0, metadata=[1]),
        lambda: E.step(SVC, CONV, step="", status="running"),
        lambda: E.step(SVC, CONV, step="s", status=None),
        lambda: E.step(SVC, CONV, step="s", status="running", data=[1]),
        lambda: E.start(SVC, CONV, message=5),
        lambda: E.complete(SVC, CONV, data="done"),
        lambda: E.error(SVC, CONV, message=None),
        lambda: E.typed(SVC, CONV, type=""),
        lambda: E.typed(SVC, CONV, type="chat.delta"),
        lambda: E.typed(SVC, CONV, type="conv.status"),
        lambda: E.typed(SVC, CONV, type="chat.followups", route="nowhere"),
        lambda: E.service(SVC, None, type=""),
        lambda: E.conv_status(SVC, CONV, state="running", updated_at="t", current_turn_id=None,
                              completion=None, origin_stream_id=None),
        lambda: E.conv_status(SVC, CONV, state=["idle"], updated_at="t", current_turn_id=None,
                              completion=None, origin_stream_id=None),
        lambda: E.conv_status(SVC, CONV, state="idle", updated_at="t", current_turn_id=None,
                              completion="done", origin_stream_id=None),
        lambda: E.conv_status(SVC, CONV, state="idle", updated_at=None, current_turn_id=None,
                              completion=None, origin_stream_id=None),
        lambda: E.conv_status(SVC, CONV, state="idle", updated_at=True, current_turn_id=None,
                              completion=None, origin_stream_id=None),
        lambda: E.conv_status(SVC, CONV, state="idle", updated_at="t", current_turn_id=5,
                              completion=None, origin_stream_id=None),
        lambda: E.ServiceCtx(request_id=1, tenant="t", project="p", user=None, user_type="anonymous"),
        lambda: E.ServiceCtx(request_id="r", tenant=None, project="p", user=None, user_type="anonymous"),
        lambda: E.ServiceCtx(request_id="r", tenant="t", project="p", user=5, user_type="anonymous"),
        lambda: E.ConvCtx(session_id="s", conversation_id=None, turn_id="t"),
    ],
)
def test_builders_reject_bad_arguments(build) -> None:
    with pytest.raises(LocalProtocolError):
        build()


@pytest.mark.parametrize(("updated_at", "wire"), [(1.5, "1970-01-01T00:00:01.500Z"), (NOW, STAMP["timestamp"]),
                                                   (0, "1970-01-01T00:00:00.000Z"), ("2020", "2020")])
def test_conv_status_updated_at_accepts_epoch_seconds(updated_at: float | str, wire: str) -> None:
    env = E.conv_status(SVC, CONV, state="idle", updated_at=updated_at, current_turn_id=None,
                        completion=None, origin_stream_id=None, now=NOW)
    assert env["data"]["updated_at"] == wire


def test_contexts_are_frozen_and_keyword_only() -> None:
    with pytest.raises(AttributeError):
        SVC.tenant = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        E.ConvCtx("s", "c", "t")  # type: ignore[misc]


@pytest.mark.parametrize("state", sorted(E.CONV_STATES))
@pytest.mark.parametrize("completion", [None, *sorted(E.CONV_COMPLETIONS)])
def test_conv_status_every_state_and_completion(state: str, completion: str | None) -> None:
    env = E.conv_status(SVC, CONV, state=state, updated_at=E.iso_timestamp(NOW), current_turn_id=None,
                        completion=completion, origin_stream_id=None, now=NOW)
    assert json_round_trip(env) == env
    assert env["event"]["status"] == env["data"]["state"] == state
    assert env["data"]["completion"] == completion


# --------------------------------------------------------------------------- round-trip properties

json_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)
names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), json_text)
json_value = st.recursive(
    json_leaf,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(json_text, kids, max_size=4),
    max_leaves=12,
)
json_obj = st.dictionaries(json_text, json_value, max_size=5)


@given(
    text=json_text,
    index=st.integers(min_value=0, max_value=2**53),
    marker=st.one_of(st.sampled_from(["thinking", "answer", "subsystem", "canvas", "timeline_text"]), names),
    agent=st.one_of(st.none(), names),
    completed=st.booleans(),
    fmt=st.one_of(st.none(), names),
    now=st.floats(min_value=0, max_value=4e9),
)
def test_delta_json_round_trip(text, index, marker, agent, completed, fmt, now) -> None:
    env = E.delta(SVC, CONV, text=text, index=index, marker=marker, agent=agent, completed=completed,
                  format=fmt, now=now)
    assert json_round_trip(env) == env
    assert env["text"] == env["delta"]["text"] == text
    assert env["idx"] == env["delta"]["index"] == index
    assert env["delta"]["marker"] == marker


@given(type_=names, data=st.one_of(st.none(), json_obj), title=st.one_of(st.none(), json_text),
       step_=st.one_of(st.none(), names), status=st.one_of(st.none(), names))
def test_typed_json_round_trip(type_, data, title, step_, status) -> None:
    if type_ in ("chat.delta", "conv.status", "chat.error"):
        return  # built and validated by their own builders (delta, conv_status, error: data.error required)
    env = E.typed(SVC, CONV, type=type_, step=step_, status=status, title=title, data=data, now=NOW)
    assert json_round_trip(env) == env


@given(message=json_text, data=st.one_of(st.none(), json_obj))
def test_error_and_start_json_round_trip(message, data) -> None:
    env = E.error(SVC, CONV, message=message, data=data, now=NOW)
    assert json_round_trip(env) == env
    assert env["data"]["error"] == message
    env = E.start(SVC, CONV, message=message, data=data, now=NOW)
    assert json_round_trip(env) == env


# --------------------------------------------------------------------------- validate rejects

VALID = {
    "delta": E.delta(SVC, CONV, text="x", index=2, format="markdown", now=NOW),
    "step": E.step(SVC, CONV, step="s", status="running", now=NOW),
    "error": E.error(SVC, CONV, message="boom", now=NOW),
    "conv": E.conv_status(SVC, CONV, state="idle", updated_at=E.iso_timestamp(NOW), current_turn_id=None,
                          completion="success", origin_stream_id=None, now=NOW),
    "service": E.service(SVC, None, type="gateway.rate_limit", now=NOW),
}

_DELETE = object()


def mutated(kind: str, path: tuple, value: Any) -> dict:
    env = copy.deepcopy(VALID[kind])
    target = env
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return env


REJECT_TABLE = [
    ("delta", ("type",), _DELETE),
    ("delta", ("type",), ""),
    ("delta", ("type",), 5),
    ("delta", ("timestamp",), _DELETE),
    ("delta", ("timestamp",), "yesterday"),
    ("delta", ("timestamp",), "2023-11-14 22:13:20Z"),
    ("delta", ("ts",), "1700000000250"),
    ("delta", ("ts",), True),
    ("delta", ("ts",), -1),
    ("delta", ("ts",), 1.5),
    ("delta", ("service",), None),
    ("delta", ("service",), []),
    ("delta", ("service", "request_id"), _DELETE),
    ("delta", ("service", "tenant"), 1),
    ("delta", ("service", "user_type"), None),
    ("delta", ("service", "user"), _DELETE),
    ("delta", ("service", "user"), 5),
    ("delta", ("conversation",), _DELETE),
    ("delta", ("conversation", "session_id"), None),
    ("delta", ("conversation", "conversation_id"), 3),
    ("delta", ("conversation", "turn_id"), _DELETE),
    ("delta", ("event",), "stream"),
    ("delta", ("event", "step"), None),
    ("delta", ("event", "status"), _DELETE),
    ("delta", ("event", "agent"), 1),
    ("delta", ("event", "title"), _DELETE),
    ("delta", ("delta",), _DELETE),
    ("delta", ("delta",), "x"),
    ("delta", ("delta", "text"), None),
    ("delta", ("delta", "index"), -1),
    ("delta", ("delta", "index"), "2"),
    ("delta", ("delta", "index"), False),
    ("delta", ("delta", "marker"), ""),
    ("delta", ("delta", "marker"), ["answer"]),
    ("delta", ("delta", "completed"), "false"),
    ("delta", ("delta", "completed"), _DELETE),
    ("delta", ("delta", "format"), 7),
    ("delta", ("text",), _DELETE),
    ("delta", ("text",), "y"),
    ("delta", ("idx",), 3),
    ("delta", ("idx",), 2.0),
    ("delta", ("extra",), []),
    ("delta", ("extra",), _DELETE),
    ("delta", ("metadata",), "m"),
    ("delta", ("route",), "nowhere"),
    ("delta", ("route",), {"x": 1}),
    ("step", ("data",), _DELETE),
    ("step", ("data",), []),
    ("step", ("conversation", "session_id"), None),
    ("error", ("data", "error"), _DELETE),
    ("error", ("data", "error"), {"msg": "x"}),
    ("conv", ("data", "state"), "running"),
    ("conv", ("data", "state"), ["idle"]),
    ("conv", ("data", "completion"), "done"),
    ("conv", ("data", "completion"), {"x": 1}),
    ("conv", ("data", "updated_at"), _DELETE),
    ("conv", ("data", "current_turn_id"), _DELETE),
    ("conv", ("data", "origin_stream_id"), 4),
    ("conv", ("event", "status"), "in_progress"),
    ("service", ("data",), None),
    ("service", ("conversation",), None),
]


@pytest.mark.parametrize(("kind", "path", "value"), REJECT_TABLE)
def test_validate_rejects(kind: str, path: tuple, value: Any) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        E.validate(mutated(kind, path, value))
    assert info.value.reason == "bad_envelope"
    assert info.value.error_status_hint == 400


@pytest.mark.parametrize("obj", [None, [], "chat.delta", 5, {"type": "chat.delta"}, {}])
def test_validate_rejects_non_envelopes(obj: Any) -> None:
    with pytest.raises(RemoteProtocolError):
        E.validate(obj)


def test_validate_accepts_kdcube_microsecond_timestamps() -> None:
    env = mutated("step", ("timestamp",), "2025-01-02T03:04:05.123456Z")
    assert E.validate(env) is env


def test_validate_accepts_service_notice_without_conversation() -> None:
    assert E.validate(copy.deepcopy(VALID["service"]))["conversation"]["session_id"] is None


@given(json_value)
def test_validate_fuzz_only_remote_errors(obj: Any) -> None:
    try:
        E.validate(obj)
    except RemoteProtocolError:
        pass


@given(kind=st.sampled_from(sorted(VALID)), data=st.data())
def test_validate_fuzz_mutated_envelopes(kind: str, data: st.DataObject) -> None:
    env = copy.deepcopy(VALID[kind])
    target = env
    while True:
        key = data.draw(st.sampled_from(sorted(target)))
        if isinstance(target[key], dict) and target[key] and data.draw(st.booleans()):
            target = target[key]
            continue
        target[key] = data.draw(json_value)
        break
    try:
        assert E.validate(env) is env
    except RemoteProtocolError:
        pass
