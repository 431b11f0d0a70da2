"""RelayMessage from the wire: our data-last layout keeps the data's JSON text; anything else
(KDCube producers, other key orders) is decoded whole; garbage is an error, never a wrong message."""

from __future__ import annotations

import json

import pytest

from kdc_trio.relay.message import DATA_LAST, RelayMessage


def test_our_layout_keeps_the_data_text_verbatim():
    data = '{"seq":7,"type":"chat.delta","delta":{"text":"a,\\"data\\":b","index":0}}'
    raw = ('{"seq":7,"target_sid":"s1","session_id":"x","event":"chat_delta","timestamp":1.5,'
           f'"host_id":"h","fmt":"{DATA_LAST}","data":{data}}}').encode()
    m = RelayMessage.from_raw(raw)
    assert m.data_json() == data, "no decode/re-encode on the hot path"
    assert (m.seq, m.target_sid, m.session_id, m.event) == (7, "s1", "x", "chat_delta")
    assert m.data == json.loads(data)
    assert m.sio_text() == '42["chat_delta",' + data + "]"


@pytest.mark.parametrize("raw", [
    # a KDCube producer: no seq, no format marker
    '{"target_sid":null,"session_id":"x","event":"chat_step","data":{"a":1},"timestamp":0}',
    # data not last
    '{"seq":3,"session_id":"x","event":"e","data":{"a":1},"timestamp":0,"fmt":"other"}',
    # a nested object with a "data" key before the top-level one
    '{"seq":3,"meta":{"x":1,"data":2},"session_id":"x","event":"e","timestamp":0,"data":{"a":1}}',
])
def test_other_layouts_are_decoded_whole(raw):
    m = RelayMessage.from_raw(raw)
    assert m.data["a"] == 1 and m.session_id == "x"
    assert json.loads(m.data_json()) == m.data


@pytest.mark.parametrize("raw", [b"", b"not json", b'{"seq":1}', b'{"fmt":"kdc1","data":', b"[1,2]"])
def test_garbage_raises(raw):
    with pytest.raises((ValueError, KeyError, TypeError, AttributeError)):
        RelayMessage.from_raw(raw)


def test_socketio_offset_is_the_seq_as_a_last_string_and_only_on_session_events():
    from kdc_trio.relay.keys import PROJECT_SESSION

    m = RelayMessage(session_id="x", event="chat_delta", data={"seq": 12, "a": 1}, seq=12, timestamp=0.0)
    assert m.sio_text(True) == '42["chat_delta",{"seq":12,"a":1},"12"]'
    assert m.sio_text(False) == m.sio_text() == '42["chat_delta",{"seq":12,"a":1}]'
    gap = RelayMessage(session_id="x", event="chat_service", data={"type": "stream.gap"}, seq=0, timestamp=0.0)
    project = RelayMessage(session_id=PROJECT_SESSION, event="chat_step", data={"seq": 3}, seq=3, timestamp=0.0)
    assert gap.sio_text(True) == '42["chat_service",{"type":"stream.gap"}]'
    assert project.sio_text(True) == '42["chat_step",{"seq":3}]', "project-wide events have no session offset"


def test_the_codec_is_json_for_what_orjson_refuses_too():
    from kdc_trio.relay.message import dumps, loads

    odd = {"big": 2**70, "neg": -(2**65), "uni": "é ✓ \u2028", "nested": [{"a": None, "b": 1.5}], "t": True}
    assert json.loads(dumps(odd)) == odd
    assert json.loads(dumps({1: "non-string key"})) == {"1": "non-string key"}
    assert dumps({"a": [1, 2]}) == '{"a":[1,2]}', "compact, as the relay's wire format is"
    assert loads('{"big": 1180591620717411303424}') == {"big": 2**70}
    with pytest.raises(ValueError):
        loads('{"truncated": ')


def _fixed(seq: int, *, event: str = "chat_delta", target: str | None = None, session: str = "x",
           data: str = '"type":"chat.delta","delta":{"text":"a","index":0}}') -> bytes:
    from kdc_trio.relay.message import head_prefix

    before, after = head_prefix(event=event, target_sid=target, session_id=session, host_id="h:1")
    return ('{"seq":%d%s1.5%s%d,%s}' % (seq, before, after, seq, data)).encode()


def test_the_fixed_head_is_json_with_the_same_keys_and_reads_without_a_decode():
    raw = _fixed(9, target="s1")
    assert json.loads(raw) == {"seq": 9, "fmt": "kdc2", "event": "chat_delta", "target_sid": "s1", "session_id": "x",
                               "timestamp": 1.5, "host_id": "h:1",
                               "data": {"seq": 9, "type": "chat.delta", "delta": {"text": "a", "index": 0}}}
    errors: list = []
    (m,) = RelayMessage.from_raws([raw], errors.append)
    one = RelayMessage.from_raw(raw)
    for got in (m, one):
        assert (got.seq, got.event, got.target_sid, got.session_id, got.timestamp) == (9, "chat_delta", "s1", "x", 1.5)
        assert got.data_json() == '{"seq":9,"type":"chat.delta","delta":{"text":"a","index":0}}'
    assert RelayMessage.from_raws([_fixed(3)], errors.append)[0].target_sid is None and not errors


@pytest.mark.parametrize("session", ['a"b', "a\\b", "é\n"])
def test_a_fixed_head_with_escapes_is_read_as_json(session):
    (m,) = RelayMessage.from_raws([_fixed(4, session=session)], pytest.fail)
    assert (m.session_id, m.seq) == (session, 4)


def test_from_raws_leaves_out_garbage_and_says_so():
    errors: list = []
    got = RelayMessage.from_raws([b"not json", _fixed(5), b'{"fmt":"kdc2","data":', _fixed(6)[:40]], errors.append)
    assert [m.seq for m in got] == [5] and len(errors) == 3


def test_socketio_frame_is_the_text_framed_once_for_every_connection():
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import Message

    from kdc_trio.relay.keys import PROJECT_SESSION

    data = '{"seq":12,"type":"chat.delta","delta":{"text":"é ✓","index":0}}'
    m = RelayMessage(session_id="x", event="chat_delta", data=None, data_json=data, seq=12, timestamp=0.0)
    oracle = Connection(ConnectionType.SERVER)
    assert m.sio_frame() == oracle.send(Message(data=m.sio_text()))
    assert m.sio_frame(True) == oracle.send(Message(data=m.sio_text(True)))
    assert m.sio_frame(True) != m.sio_frame(False)
    assert m.sio_frame(True) is m.sio_frame(True) and m.sio_frame() is m.sio_frame(), "made once, shared"
    project = RelayMessage(session_id=PROJECT_SESSION, event="chat_step", data={"seq": 3}, seq=3, timestamp=0.0)
    assert project.sio_frame(True) == project.sio_frame(False) == oracle.send(Message(data=project.sio_text(True)))
    (fast,) = RelayMessage.from_raws([(
        '{"seq":12,"fmt":"kdc2","event":"chat_delta","target_sid":null,"session_id":"x","timestamp":1.5,'
        f'"host_id":"h","data":{data}}}').encode()], on_error=pytest.fail)
    assert fast.sio_frame(True) == m.sio_frame(True)


def test_a_merged_delta_is_framed_with_its_joined_text():
    from kdc_trio.relay.merge import merge_into

    def delta(seq: int, text: str) -> RelayMessage:
        env = {"seq": seq, "type": "chat.delta", "text": text, "delta": {"text": text, "index": seq, "marker": "answer"}}
        return RelayMessage(session_id="x", event="chat_delta", data=env, seq=seq, timestamp=0.0)

    first = delta(1, "a")
    first.sio_frame(True)  # framed for another connection before this one's outbox merged it
    merged = merge_into(first, delta(2, "b"))
    assert merged is not None and merged is not first
    assert b'"text":"ab"' in merged.sio_frame(True) and merged.sio_frame(True).endswith(b',"2"]')
    assert b'"text":"a"' in first.sio_frame(True), "the shared message is untouched"
