"""RelayMessage from the wire: our data-last layout keeps the data's JSON text; anything else
(KDCube producers, other key orders) is decoded whole; garbage is an error, never a wrong message."""

from __future__ import annotations

import json

import pytest

from kdc_trio.relay.message import DATA_LAST, RelayMessage
from protocol.sse import encode_event


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


# ---- from_raws: one split for a whole batch, one by one when the batch is not all ours -------------
def _same(a: RelayMessage, b: RelayMessage) -> None:
    assert (a.seq, a.event, a.target_sid, a.session_id, a.timestamp) == \
        (b.seq, b.event, b.target_sid, b.session_id, b.timestamp)
    assert a.data_json() == b.data_json() and a.sse_bytes() == b.sse_bytes()
    assert a.sio_text(True) == b.sio_text(True) and a.data == b.data


_VARIED = [
    _fixed(1), _fixed(2, target="sid-1"), _fixed(3, event="chat_step", data='"type":"x"}'), _fixed(0),
    _fixed(4, session="é-ü"),  # UTF-8 in the head
    _fixed(5, data='"t":"line\\nbreak \\u2028 ✓"}'),  # escapes and UTF-8 in the data
    _fixed(6, session='a"b'),  # an escape in the head: not the fixed pattern, read as JSON
    _fixed(7, target=""),  # an empty target is the session
    b'{"target_sid":null,"session_id":"x","event":"chat_step","data":{"a":1},"timestamp":0}',  # KDCube's
]


def test_a_batch_reads_as_each_message_alone_would():
    errors: list = []
    got = RelayMessage.from_raws(_VARIED, errors.append)
    assert not errors and len(got) == len(_VARIED)
    for m, raw in zip(got, _VARIED):
        _same(m, RelayMessage.from_raw(raw))
    assert got[3].sse_bytes().startswith(b"event: chat_delta\ndata: "), "seq 0: no id line"
    assert got[1].sse_bytes().startswith(b"event: chat_delta\nid: 2\ndata: {")


@pytest.mark.parametrize("breaks", ["\n", "\r\n", "\r"])
def test_raw_line_breaks_in_the_data_get_a_data_line_each_in_a_batch_too(breaks):
    """A read without a raw line break lets its messages' SSE skip the scan for one; a message with
    one between its JSON tokens (a publisher that pretty-prints) in a read with others still gets
    a `data:` line per line."""
    pretty = _fixed(2, data=f'{breaks}"type":"chat.delta",{breaks}"n":1}}')
    raws = [_fixed(1), pretty, _fixed(3)]
    got = RelayMessage.from_raws(raws, pytest.fail)
    assert [m.seq for m in got] == [1, 2, 3]
    for m, raw in zip(got, raws):
        _same(m, RelayMessage.from_raw(raw))
    block = got[1].sse_bytes()
    assert block.endswith(b"\n\n") and b"\r" not in block
    assert block.count(b"\ndata: ") == 3 and got[1].data == {"seq": 2, "type": "chat.delta", "n": 1}
    assert got[0].sse_bytes() == encode_event(event="chat_delta", id=1, data=got[0].data_json())


def test_a_batch_of_ours_keeps_every_message_and_its_order():
    raws = [_fixed(i, target=None if i % 3 else f"t{i}") for i in range(1, 400)]
    got = RelayMessage.from_raws(raws, pytest.fail)
    assert [m.seq for m in got] == list(range(1, 400))
    assert [m.target_sid for m in got] == [None if i % 3 else f"t{i}" for i in range(1, 400)]
    for m, raw in zip(got, raws):
        _same(m, RelayMessage.from_raw(raw))


def _alone(raw: bytes) -> list[RelayMessage]:
    """What `from_raw` makes of `raw` read alone: the message, or nothing when it cannot."""
    try:
        return [RelayMessage.from_raw(raw)]
    except (ValueError, KeyError, TypeError, AttributeError):
        return []


@pytest.mark.parametrize("bad", [
    b"", b"{", b"not json", _fixed(9)[:-1], _fixed(9)[:60], _fixed(9) + b"x", _fixed(9) + b"}",
    _fixed(9).replace(b"a", b"\xff"),  # not UTF-8
    _fixed(9).replace(b'"index"', b'"\x00index"'),  # a NUL inside
])
def test_a_bad_message_in_a_batch_is_told_and_the_rest_delivered(bad):
    errors: list = []
    got = RelayMessage.from_raws([_fixed(1), bad, _fixed(2)], errors.append)
    alone = _alone(bad)
    assert [m.seq for m in got] == [1, *(m.seq for m in alone), 2]
    assert len(errors) == 1 - len(alone)
    assert all(isinstance(e, (ValueError, KeyError, TypeError, AttributeError)) for e in errors)


def test_a_nul_cannot_make_one_message_pass_for_two():
    # joined after NULs, "one\x00two" + garbage would split into two matches: the count must not fool it
    errors: list = []
    raws = [_fixed(1) + b"\x00" + _fixed(2), b"garbage"]
    got = RelayMessage.from_raws(raws, errors.append)
    assert len(got) + len(errors) == 2 and len(errors) == 1


def test_random_damage_gives_what_each_message_alone_gives_and_only_our_errors():
    import random

    rng = random.Random(11)
    base = [_fixed(i, target=rng.choice([None, "t"])) for i in range(1, 30)]
    for _ in range(300):
        raws = list(base)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(raws))
            raw = bytearray(raws[i])
            op = rng.randrange(3)
            pos = rng.randrange(len(raw))
            if op == 0:
                raw[pos] = rng.randrange(256)
            elif op == 1:
                del raw[pos:pos + rng.randint(1, 40)]
            else:
                raw[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 5)))
            raws[i] = bytes(raw)
        errors: list = []
        got = RelayMessage.from_raws(raws, errors.append)
        expected = []
        for raw in raws:
            try:
                expected.append(RelayMessage.from_raw(raw))
            except (ValueError, KeyError, TypeError, AttributeError):
                pass
        assert len(got) == len(expected) and len(errors) == len(raws) - len(expected)
        for a, b in zip(got, expected):
            assert (a.seq, a.event, a.target_sid, a.session_id, a.timestamp) == \
                (b.seq, b.event, b.target_sid, b.session_id, b.timestamp)
            assert a.data_json() == b.data_json()


def test_text_from_a_decoding_client_reads_as_its_bytes():
    raws = [_fixed(1).decode(), _fixed(2, session="é").decode(), "\ud800 not json"]
    errors: list = []
    got = RelayMessage.from_raws(raws, errors.append)
    assert [(m.seq, m.session_id) for m in got] == [(1, "x"), (2, "é")] and len(errors) == 1


@pytest.mark.parametrize("session", ['a\\\\"b', "a\\\\b", "a\x01b", "a\\u0041"])
def test_a_head_the_batch_takes_loosely_is_checked_once_before_it_is_used(session):
    # the batch's pattern takes a head's strings as "[^"]*"; a head with an escape or a control
    # character is then read one by one, as each message alone would be
    raw = _fixed(3).replace(b'"session_id":"x"', b'"session_id":"' + session.encode() + b'"')
    errors: list = []
    got = RelayMessage.from_raws([_fixed(1), raw, _fixed(2)], errors.append)
    alone = _alone(raw)
    assert [m.seq for m in got] == [1, *(m.seq for m in alone), 2] and len(errors) == 1 - len(alone)
    for a, b in zip(got[1:-1], alone):
        assert a.session_id == b.session_id


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
