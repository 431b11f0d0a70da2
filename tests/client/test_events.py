"""kdc_trio.client.events: SSE event + envelope -> typed event (pure, no sockets)."""

from __future__ import annotations

import json

import pytest

from kdc_trio.client import Answer, Complete, Delta, Error, Gap, Start, Status, Step, decode


def env(type_: str, seq: int | None = 7, **extra) -> str:
    e = {"type": type_, "conversation": {"session_id": "s", "conversation_id": "c", "turn_id": "t"},
         "event": {"agent": "a", "step": "x", "status": "completed", "title": "X"}, **extra}
    if seq is not None:
        e["seq"] = seq
    return json.dumps(e)


@pytest.mark.parametrize("name, type_, extra, cls", [
    ("chat_start", "chat.start", {"data": {"message": "hi"}}, Start),
    ("chat_step", "chat.followups", {"data": {"items": ["a"]}}, Step),
    ("chat_delta", "chat.delta", {"delta": {"text": "x", "index": 2, "marker": "thinking", "completed": True}}, Delta),
    ("chat_complete", "chat.complete", {"data": {}}, Complete),
    ("chat_error", "chat.error", {"data": {"error": "boom"}}, Error),
    ("conv_status", "conv.status", {"data": {"state": "idle", "completion": "success"}}, Status),
])
def test_each_family(name, type_, extra, cls):
    ev = decode(name, "7", env(type_, **extra))
    assert type(ev) is cls and ev.seq == 7 and ev.turn_id == "t" and ev.conversation_id == "c"


def test_fields():
    d = decode("chat_delta", "7", env("chat.delta", delta={"text": "x", "index": 2, "marker": "canvas",
                                                            "format": "markdown", "artifact_name": "a.md"}))
    assert (d.text, d.index, d.marker, d.completed, d.format, d.artifact_name) == ("x", 2, "canvas", False,
                                                                                   "markdown", "a.md")
    s = decode("chat_step", "7", env("chat.followups", data={"items": ["a", "b"]}))
    assert s.type == "chat.followups" and s.data["items"] == ["a", "b"]
    assert decode("chat_error", "7", env("chat.error", data={"error": "boom"})).error == "boom"


def test_sequence_only_when_the_event_had_its_id():
    # an SSE client repeats the last id for an event without one: it must not count as that seq
    assert decode("chat_delta", "6", env("chat.delta", seq=7, delta={})).seq is None
    assert decode("chat_delta", "7", env("chat.delta", seq=None, delta={})).seq is None
    assert decode("chat_delta", None, env("chat.delta", seq=7, delta={})).seq is None
    assert decode("chat_delta", "1", env("chat.delta", seq=True, delta={})).seq is None


def test_not_a_turn_event():
    assert decode("ready", None, "{}") is None
    assert decode("server_shutdown", None, "{}") is None
    assert decode("chat_service", None, env("gateway.rate_limit")) is None


def test_gap():
    g = decode("chat_service", "9", env("stream.gap", seq=None,
                                        data={"after_seq": 3, "first_seq": 9, "last_seq": 12, "reason": "evicted"}))
    assert isinstance(g, Gap) and (g.after_seq, g.first_seq, g.reason, g.seq) == (3, 9, "evicted", None)


@pytest.mark.parametrize("data", ["", "{", "[1]", "null", '"text"', "{\"delta\": {\"index\": \"x\"}}"])
def test_malformed_data_is_a_value_error(data):
    with pytest.raises((ValueError, TypeError)):
        decode("chat_delta", "1", data)


def test_wrong_shapes_inside_an_object_are_tolerated():
    ev = decode("chat_step", "1", json.dumps({"conversation": 5, "event": [], "data": "x", "seq": 1}))
    assert isinstance(ev, Step) and ev.turn_id is None and ev.data == {} and ev.seq == 1


def test_answer_assembles_markers_steps_and_followups():
    events = [decode("chat_delta", str(i + 1), env("chat.delta", seq=i + 1, delta={"text": t, "marker": m}))
              for i, (t, m) in enumerate([("Hm", "thinking"), ("Hel", "answer"), ("lo", "answer"), ("# c", "canvas")])]
    events.append(decode("chat_step", "5", env("chat.followups", seq=5, data={"items": ["More"]})))
    events.append(decode("chat_complete", "6", env("chat.complete", seq=6, data={})))
    a = Answer.of(events)
    assert (a.text, a.thinking, a.streams["canvas"], a.followups) == ("Hello", "Hm", "# c", ("More",))
    assert a.complete is events[-1] and a.error is None and a.gap is None and len(a.steps) == 1
