"""Socket.IO packets: tables both ways (alone and inside Engine.IO frames), binary reassembly,
every malformed case, split-at-every-offset, fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import engineio
from protocol.errors import RemoteProtocolError
from protocol.socketio import (MAX_NESTING, Decoder, Packet, PacketType, decode_header, encode, encode_event_text,
                               reconstruct)

T = PacketType
PH = '{"_placeholder":true,"num":%s}'


def decoder(max_attachments: int = 4, max_payload: int = 1000) -> Decoder:
    return Decoder(max_attachments=max_attachments, max_payload=max_payload)


def feed_all(d: Decoder, messages) -> Packet | None:
    """Feed messages in order; every one but the last must leave the packet incomplete."""
    *head, last = messages
    for m in head:
        assert d.feed(m) is None
    return d.feed(last)


TABLE = [
    ("0", Packet(T.CONNECT)),
    ('0{"token":"x"}', Packet(T.CONNECT, data={"token": "x"})),
    ("0/custom,", Packet(T.CONNECT, "/custom")),
    ('0/custom,{"a":1}', Packet(T.CONNECT, "/custom", {"a": 1})),
    ("1", Packet(T.DISCONNECT)),
    ("1/custom,", Packet(T.DISCONNECT, "/custom")),
    ('2["hello",1]', Packet(T.EVENT, data=["hello", 1])),
    ('21["hello"]', Packet(T.EVENT, data=["hello"], id=1)),
    ('2/chat,12["msg",{"é":"😀"}]', Packet(T.EVENT, "/chat", ["msg", {"é": "😀"}], 12)),
    ('2' + "9" * 15 + '["x"]', Packet(T.EVENT, data=["x"], id=10**15 - 1)),
    ("3456[]", Packet(T.ACK, data=[], id=456)),
    ('3/x,7["ok",null]', Packet(T.ACK, "/x", ["ok", None], 7)),
    ('4{"message":"Invalid namespace"}', Packet(T.CONNECT_ERROR, data={"message": "Invalid namespace"})),
    ('4/nope,{"message":"Invalid namespace"}', Packet(T.CONNECT_ERROR, "/nope", {"message": "Invalid namespace"})),
    ('4"not authorized"', Packet(T.CONNECT_ERROR, data="not authorized")),
]


@pytest.mark.parametrize("text,packet", TABLE)
def test_text_packets_both_ways(text, packet):
    assert decoder().feed(text) == packet
    assert encode(packet) == [text]
    assert decode_header(text, max_attachments=0) == (packet, 0)


# Socket.IO inside Engine.IO WebSocket frames: (frames, packet, encodes back to the same frames)
ENGINE_TABLE = [
    (["40"], Packet(T.CONNECT), True),
    (["40/custom,"], Packet(T.CONNECT, "/custom"), True),
    (["40/custom"], Packet(T.CONNECT, "/custom"), False),  # no trailing comma: accepted, written with one
    (['40{"token":"x"}'], Packet(T.CONNECT, data={"token": "x"}), True),
    (['40/custom,{"token":"x"}'], Packet(T.CONNECT, "/custom", {"token": "x"}), True),
    (["41"], Packet(T.DISCONNECT), True),
    (["41/custom,"], Packet(T.DISCONNECT, "/custom"), True),
    (['42["x"]'], Packet(T.EVENT, data=["x"]), True),
    (['4213["message-with-ack",1,"2"]'], Packet(T.EVENT, data=["message-with-ack", 1, "2"], id=13), True),
    (['43/custom,13[1,"2"]'], Packet(T.ACK, "/custom", [1, "2"], 13), True),
    (['44{"message":"Invalid namespace"}'], Packet(T.CONNECT_ERROR, data={"message": "Invalid namespace"}), True),
    (['451-["x",%s]' % (PH % 0), b"\x01\x02"], Packet(T.BINARY_EVENT, data=["x", b"\x01\x02"]), True),
    (['461-/nsp,7[%s]' % (PH % 0), b"\xff"], Packet(T.BINARY_ACK, "/nsp", [b"\xff"], 7), True),
    (['452-/up,3["f",{"a":%s},[%s]]' % (PH % 0, PH % 1), b"A", b"B"],
     Packet(T.BINARY_EVENT, "/up", ["f", {"a": b"A"}, [b"B"]], 3), True),
]


@pytest.mark.parametrize("frames,packet,canonical", ENGINE_TABLE)
def test_packets_inside_engineio_frames(frames, packet, canonical):
    messages = []
    for f in frames:
        eio = engineio.decode_ws(f)
        assert eio.type is engineio.PacketType.MESSAGE
        messages.append(eio.data)
    assert feed_all(decoder(), messages) == packet
    out = [engineio.encode_ws(engineio.Packet(engineio.PacketType.MESSAGE, m)) for m in encode(packet)]
    assert (out == frames) is canonical


@pytest.mark.parametrize("frame,layer,why", [
    ("42{}", "socketio", "EVENT payload must be a list"),
    ('42abc["x"]', "socketio", "EVENT payload is not JSON"),
    ("4abc", "socketio", "unknown Socket.IO packet type 'a'"),
    ("4", "socketio", "empty Socket.IO packet"),
    ("abc", "engineio", "unknown Engine.IO packet type 'a'"),
    ("", "engineio", "empty Engine.IO packet"),
])
def test_suite_strings_that_are_errors(frame, layer, why):
    with pytest.raises(RemoteProtocolError, match=why):
        eio = engineio.decode_ws(frame)
        assert layer == "socketio", "the Engine.IO layer should have refused it"
        decoder().feed(eio.data)


def test_binary_event_reassembled_from_header_and_frames():
    d = decoder()
    assert d.feed('52-["upload",{"a":%s},[%s]]' % (PH % 0, PH % 1)) is None
    assert d.awaiting_attachments == 2
    assert d.feed(b"first") is None
    assert d.awaiting_attachments == 1
    assert d.feed(bytearray(b"second")) == Packet(T.BINARY_EVENT, "/", ["upload", {"a": b"first"}, [b"second"]])
    assert d.awaiting_attachments == 0
    assert d.feed('2["next"]') == Packet(T.EVENT, data=["next"]), "the decoder is ready for the next packet"


def test_placeholders_may_come_in_any_order_and_zero_attachments_is_allowed():
    assert feed_all(decoder(), ['52-["x",%s,%s]' % (PH % 1, PH % 0), b"a", b"b"]) == \
        Packet(T.BINARY_EVENT, data=["x", b"b", b"a"])
    assert decoder().feed('50-["x",1]') == Packet(T.BINARY_EVENT, data=["x", 1])


def test_encode_turns_binary_into_placeholders_in_order():
    out = encode(Packet(T.EVENT, "/", ["file", {"meta": 1, "blob": b"a"}, [b"b", {"deep": [bytearray(b"c")]}]], id=3))
    assert out == ['53-3["file",{"meta":1,"blob":%s},[%s,{"deep":[%s]}]]' % (PH % 0, PH % 1, PH % 2),
                   b"a", b"b", b"c"]
    assert all(type(m) is bytes for m in out[1:])
    assert encode(Packet(T.ACK, "/n", [b"z"], id=9)) == ['61-/n,9[%s]' % (PH % 0), b"z"]
    assert encode(Packet(T.EVENT, data=["x", memoryview(b"m")])) == ['51-["x",%s]' % (PH % 0), b"m"]
    assert feed_all(decoder(), out) == Packet(T.BINARY_EVENT, "/", ["file", {"meta": 1, "blob": b"a"},
                                                                     [b"b", {"deep": [b"c"]}]], 3)


def test_reconstruct_is_the_inverse_of_encode():
    header, *attachments = encode(Packet(T.EVENT, data=["x", [b"1", {"k": b"2"}], b"3"]))
    packet, count = decode_header(header, max_attachments=3)
    assert count == 3
    assert reconstruct(packet.data, attachments) == ["x", [b"1", {"k": b"2"}], b"3"]


def test_event_text_fast_path_matches_encode():
    assert encode_event_text("chat_delta", '{"a":1}') == encode(Packet(T.EVENT, data=["chat_delta", {"a": 1}]))[0]
    assert encode_event_text('we"ird é', "{}") == encode(Packet(T.EVENT, data=['we"ird é', {}]))[0]
    assert decoder().feed(encode_event_text("e", "[1,2]")) == Packet(T.EVENT, data=["e", [1, 2]])


MALFORMED = [
    ("", "empty Socket.IO packet"),
    ("9", "unknown Socket.IO packet type '9'"),
    ("abc", "packet type 'a'"),
    ("2{}", "EVENT payload must be a list starting with"),
    ('2abc["x"]', "EVENT payload is not JSON"),
    ("2", "EVENT payload must be a list"),
    ("2[]", "list starting with"),
    ("2[1]", "list starting with"),
    ('2["connect"]', "non-reserved event name"),
    ('2["disconnecting",1]', "non-reserved event name"),
    ('2["x"', "not JSON"),
    ("2[\"x\"]junk", "not JSON"),
    ("3[]", "ACK without an ack id"),
    ('3/nsp,[1]', "ACK without an ack id"),
    ('3"x"', "ACK payload must be a list"),
    ('37{}', "ACK payload must be a list"),
    ("0[1]", "CONNECT payload must be an object or nothing"),
    ('0"token"', "CONNECT payload must be an object or nothing"),
    ('1{"a":1}', "DISCONNECT payload must be nothing"),
    ("4", "CONNECT_ERROR payload must be a string or an object"),
    ('412{"message":"x"}', "CONNECT_ERROR may not carry an ack id"),
    ("05", "CONNECT may not carry an ack id"),
    ("2" + "1" * 16 + '["x"]', "ack id of 16 digits, more than 15"),
    ('5x-["x"]', "BINARY_EVENT without a valid '<attachments>-' count"),
    ('5-["x"]', "BINARY_EVENT without a valid '<attachments>-' count"),
    ('5["x"]', "without a valid '<attachments>-' count"),
    ('6²-1[]', "BINARY_ACK without a valid '<attachments>-' count"),
    ('51234567-["x"]', "valid '<attachments>-' count"),
    ('55-["x"]', "5 binary attachments, more than the 4 allowed"),
    ('61-[%s]' % (PH % 0), "BINARY_ACK without an ack id"),
    ("0/" + "n" * 300 + ",", "namespace longer than 256"),
    ('2["x",' + "[" * MAX_NESTING + "]" * MAX_NESTING + "]", f"nested deeper than {MAX_NESTING} levels"),
    ('2["x",' + "[" * 100_000 + "]" * 100_000 + "]", "EVENT payload nested deeper"),
    # deep enough that walking it for placeholders used to hit Python's recursion limit
    ('50-["x",' + "[" * 500 + "]" * 500 + "]", "BINARY_EVENT payload nested deeper"),
]


@pytest.mark.parametrize("text,why", MALFORMED)
def test_malformed_text_is_a_protocol_error_that_says_why(text, why):
    with pytest.raises(RemoteProtocolError, match=why):
        decoder(max_payload=10**6).feed(text)


def test_nesting_up_to_the_limit_is_accepted():
    depth = MAX_NESTING - 1  # plus the event's own list
    data = decoder().feed('2["x",' + "[" * depth + "]" * depth + "]").data
    assert data[0] == "x" and len(data) == 2


def test_too_many_attachments_names_its_reason():
    with pytest.raises(RemoteProtocolError) as info:
        decoder(max_attachments=2).feed('53-["x",%s,%s,%s]' % (PH % 0, PH % 1, PH % 2))
    assert info.value.reason == "too_many_attachments"


@pytest.mark.parametrize("header,frames,why", [
    ('51-["x",%s]' % (PH % 1), [b"a"], r"placeholder num 1 out of range 0\.\.0"),
    ('52-["x",%s,%s]' % (PH % 0, PH % 2), [b"a", b"b"], "placeholder num 2 out of range"),
    ('51-["x",%s]' % (PH % -1), [b"a"], "placeholder num -1 out of range"),
    ('52-["x",%s,%s]' % (PH % 0, PH % 0), [b"a", b"b"], "placeholder num 0 repeated"),
    ('52-["x",%s]' % (PH % 0), [b"a", b"b"], r"attachments \[1\] have no placeholder"),
    ('52-["x"]', [b"a", b"b"], r"attachments \[0, 1\] have no placeholder"),
    ('51-["x",{"_placeholder":true}]', [b"a"], "placeholder without num"),
    ('51-["x",%s]' % (PH % '"0"'), [b"a"], "placeholder num '0' is not an integer"),
    ('51-["x",%s]' % (PH % "true"), [b"a"], "placeholder num True is not an integer"),
    ('51-["x",%s]' % (PH % "0.0"), [b"a"], "placeholder num 0.0 is not an integer"),
    ('51-["x",%s]' % (PH % "null"), [b"a"], "placeholder num None is not an integer"),
    ('51-["x",%s]' % (PH % "[0]"), [b"a"], "is not an integer"),
    ('52-["x",%s,%s]' % (PH % 0, PH % 1), [b"a", "text"], "text message while binary attachment 2 of 2"),
    ('51-["x",%s]' % (PH % 0), ['2["x"]'], "text message while binary attachment 1 of 1"),
    ('51-["x",%s]' % (PH % 0), [b"x" * 501], "attachments of 501\\+ bytes exceed maxPayload 500"),
    ('52-["x",%s,%s]' % (PH % 0, PH % 1), [b"x" * 300, b"y" * 201], "attachments of 501\\+ bytes exceed maxPayload"),
])
def test_bad_attachments(header, frames, why):
    d = decoder(max_payload=500)
    assert d.feed(header) is None
    with pytest.raises(RemoteProtocolError, match=why):
        for f in frames:
            d.feed(f)


def test_a_placeholder_in_a_packet_without_attachments_is_out_of_range():
    with pytest.raises(RemoteProtocolError, match="out of range"):
        decoder().feed('50-["x",%s]' % (PH % 0))


def test_attachments_exactly_at_max_payload_are_allowed():
    packet = feed_all(decoder(max_payload=500), ['52-["x",%s,%s]' % (PH % 0, PH % 1), b"x" * 300, b"y" * 200])
    assert packet.data == ["x", b"x" * 300, b"y" * 200]


def test_binary_without_header_and_oversized_text():
    with pytest.raises(RemoteProtocolError, match="binary message without a BINARY_EVENT/BINARY_ACK header"):
        decoder().feed(b"x")
    with pytest.raises(RemoteProtocolError, match="packet of 109 characters exceeds maxPayload 100") as info:
        decoder(max_payload=100).feed('2["x","' + "y" * 100 + '"]')
    assert info.value.close_code_hint == 1009 and info.value.reason == "payload_too_large"


# ---- split at every offset -------------------------------------------------------------------------

BIN_STREAM = ['52-/up,5["file",%s,{"b":%s}]' % (PH % 0, PH % 1), b"attachment-one", b"\x00two\xff"]
BIN_PACKET = Packet(T.BINARY_EVENT, "/up", ["file", b"attachment-one", {"b": b"\x00two\xff"}], 5)
CUTS = [(k, j) for k, m in enumerate(BIN_STREAM) for j in range(len(m) + 1)]


def _with(a1: bytes, a2: bytes) -> Packet:
    return Packet(T.BINARY_EVENT, "/up", ["file", a1, {"b": a2}], 5)


@pytest.mark.parametrize("k,j", CUTS)
def test_binary_event_truncated_at_every_offset(k, j):
    """The stream cut at (message k, offset j), the cut message delivered short: a short header is
    refused; a short attachment is taken as it is (the frame layer says where a message ends)."""
    d = decoder()
    messages = BIN_STREAM[:k] + [BIN_STREAM[k][:j]]
    if k == 0 and j < len(BIN_STREAM[0]):
        with pytest.raises(RemoteProtocolError):
            d.feed(messages[0])
        return
    results = [d.feed(m) for m in messages]
    if k < 2:
        assert results == [None] * len(messages)
        assert d.awaiting_attachments == (2 if k == 0 else 1)  # an empty message is an (empty) attachment
    else:
        assert results[:-1] == [None, None] and results[-1] == _with(BIN_STREAM[1], BIN_STREAM[2][:j])


@pytest.mark.parametrize("k,j", CUTS)
def test_binary_event_split_into_two_messages_at_every_offset(k, j):
    """Message k delivered as two messages (cut at j): the whole stream decodes only when the cut
    is at an end; otherwise a RemoteProtocolError, after at most one packet built from the pieces."""
    pieces = BIN_STREAM[:k] + [p for p in (BIN_STREAM[k][:j], BIN_STREAM[k][j:]) if p] + BIN_STREAM[k + 1:]
    d = decoder()
    packets = []
    try:
        for m in pieces:
            result = d.feed(m)
            if result is not None:
                packets.append(result)
    except RemoteProtocolError:
        whole = False
    else:
        whole = True
    if j in (0, len(BIN_STREAM[k])):
        assert whole and packets == [BIN_PACKET]
    elif k == 0:
        assert not whole and packets == []
    else:
        assert not whole, "an extra binary message after the packet has no header"
        a1, a2 = (BIN_STREAM[1][:j], BIN_STREAM[1][j:]) if k == 1 else (BIN_STREAM[1], BIN_STREAM[2][:j])
        assert packets == [_with(a1, a2)]


@pytest.mark.parametrize("text,packet", TABLE)
def test_every_prefix_of_the_table(text, packet):
    """A truncated packet is refused, or it is a packet of the same type (a shorter namespace or id)."""
    for cut in range(len(text) + 1):
        try:
            got = decoder().feed(text[:cut])
        except RemoteProtocolError:
            continue
        assert got.type is packet.type and packet.namespace.startswith(got.namespace)
        assert got.data in (None, packet.data) and (got.id is None or str(packet.id).startswith(str(got.id)))


@pytest.mark.parametrize("frames,packet,_", ENGINE_TABLE)
def test_every_prefix_of_the_engineio_table(frames, packet, _):
    for cut in range(len(frames[0]) + 1):
        try:
            decoder().feed(engineio.decode_ws(frames[0][:cut]).data)
        except RemoteProtocolError:
            pass


# ---- fuzzing -----------------------------------------------------------------------------------------

_snippets = st.sampled_from(["51-", '51-["x",', '51-["x",%s]' % (PH % 0), "2[", '3/a,1["b"]', "0/", "60-1[]",
                             '52-["x",%s,%s]' % (PH % 1, PH % 0), '2["x"]', '0{"a":1}', PH % 0, "/", ",", "-"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=60), st.binary(max_size=20), _snippets), max_size=8))
def test_fuzzed_message_sequences_raise_only_protocol_errors(messages):
    d = decoder(max_attachments=3, max_payload=200)
    for m in messages:
        try:
            result = d.feed(m)
        except RemoteProtocolError:
            d = decoder(max_attachments=3, max_payload=200)  # a server closes the connection here
        else:
            assert result is None or isinstance(result, Packet)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=80), st.lists(_snippets, max_size=6).map("".join)))
def test_fuzzed_headers(text):
    try:
        packet, count = decode_header(text, max_attachments=3)
    except RemoteProtocolError:
        return
    assert 0 <= count <= 3 and (count == 0 or packet.type in (T.BINARY_EVENT, T.BINARY_ACK))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([t for t, _ in TABLE] + [BIN_STREAM[0]]),
       st.lists(st.tuples(st.integers(0, 10**6), st.booleans(), st.sampled_from(list('0123456789-/,[]{}":\\ xé'))),
                min_size=1, max_size=4))
def test_mutated_packets_raise_only_protocol_errors(text, edits):
    chars = list(text)
    for pos, insert, ch in edits:
        pos = pos % (len(chars) + 1)
        if insert or not chars:
            chars.insert(pos, ch)
        else:
            chars[min(pos, len(chars) - 1)] = ch
    d = decoder(max_attachments=2)
    try:
        for m in ["".join(chars), b"a", b"b"]:
            if d.feed(m) is not None:
                break
    except RemoteProtocolError:
        pass
