"""Socket.IO packets: tables, binary reassembly, every malformed case, split-at-every-offset."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import RemoteProtocolError
from protocol.socketio import Decoder, Packet, PacketType, decode_header, encode, encode_event_text

T = PacketType
TABLE = [
    ("0", Packet(T.CONNECT)),
    ('0{"token":"x"}', Packet(T.CONNECT, data={"token": "x"})),
    ("0/custom,", Packet(T.CONNECT, "/custom")),
    ('0/custom,{"a":1}', Packet(T.CONNECT, "/custom", {"a": 1})),
    ("1", Packet(T.DISCONNECT)),
    ("1/custom,", Packet(T.DISCONNECT, "/custom")),
    ('2["hello",1]', Packet(T.EVENT, data=["hello", 1])),
    ('2/chat,12["msg",{"é":"😀"}]', Packet(T.EVENT, "/chat", ["msg", {"é": "😀"}], 12)),
    ("3456[]", Packet(T.ACK, data=[], id=456)),
    ('3/x,7["ok"]', Packet(T.ACK, "/x", ["ok"], 7)),
    ('4{"message":"Invalid namespace"}', Packet(T.CONNECT_ERROR, data={"message": "Invalid namespace"})),
    ('4/nope,{"message":"Invalid namespace"}', Packet(T.CONNECT_ERROR, "/nope", {"message": "Invalid namespace"})),
]


@pytest.mark.parametrize("text,packet", TABLE)
def test_text_packets_both_ways(text, packet):
    assert Decoder(max_attachments=4, max_payload=1000).feed(text) == packet
    assert encode(packet) == [text]


@pytest.mark.parametrize("text,packet", [
    ("0/custom", Packet(T.CONNECT, "/custom")),  # namespace without the trailing comma
    ("1/custom", Packet(T.DISCONNECT, "/custom")),
])
def test_namespace_without_comma(text, packet):
    assert Decoder(max_attachments=4, max_payload=1000).feed(text) == packet


def test_binary_event_reassembled_from_header_and_frames():
    d = Decoder(max_attachments=4, max_payload=1000)
    assert d.feed('52-["upload",{"a":{"_placeholder":true,"num":0}},[{"_placeholder":true,"num":1}]]') is None
    assert d.awaiting_attachments == 2
    assert d.feed(b"first") is None
    packet = d.feed(b"second")
    assert packet == Packet(T.BINARY_EVENT, "/", ["upload", {"a": b"first"}, [b"second"]])
    assert d.feed('2["next"]') == Packet(T.EVENT, data=["next"]), "the decoder is ready for the next packet"


def test_binary_ack_with_namespace_and_id():
    d = Decoder(max_attachments=4, max_payload=1000)
    assert d.feed('61-/nsp,7[{"_placeholder":true,"num":0}]') is None
    assert d.feed(b"\x00") == Packet(T.BINARY_ACK, "/nsp", [b"\x00"], 7)


def test_encode_turns_binary_into_placeholders_in_order():
    out = encode(Packet(T.EVENT, "/", ["file", {"meta": 1, "blob": b"a"}, [b"b", b"c"]], id=3))
    assert out == ['53-3["file",{"meta":1,"blob":{"_placeholder":true,"num":0}},'
                   '[{"_placeholder":true,"num":1},{"_placeholder":true,"num":2}]]', b"a", b"b", b"c"]
    assert encode(Packet(T.ACK, "/n", [b"z"], id=9)) == ['61-/n,9[{"_placeholder":true,"num":0}]', b"z"]


def test_event_text_fast_path_matches_encode():
    assert encode_event_text("chat_delta", '{"a":1}') == encode(Packet(T.EVENT, data=["chat_delta", {"a": 1}]))[0]
    assert encode_event_text('we"ird', "{}") == encode(Packet(T.EVENT, data=['we"ird', {}]))[0]


MALFORMED = [
    ("", "empty"),
    ("9", "packet type"),
    ("abc", "packet type"),
    ("2{}", "list starting with"),
    ('2abc["x"]', "not JSON"),
    ("2[]", "list starting with"),
    ("2[1]", "list starting with"),
    ('2["connect"]', "non-reserved"),
    ('2["x"', "not JSON"),
    ("3[]", "without an ack id"),
    ('3"x"', "must be a list"),
    ("0[1]", "object or nothing"),
    ('1{"a":1}', "must be nothing"),
    ('412{"message":"x"}', "may not carry an ack id"),
    ("05", "may not carry an ack id"),
    ("2" + "1" * 16 + '["x"]', "ack id of 16 digits"),
    ('5x-["x"]', "attachments"),
    ('5-["x"]', "attachments"),
    ('5["x"]', "attachments"),
    ('55-["x"]', "more than the 4 allowed"),
    ("0/" + "n" * 300 + ",", "namespace longer"),
]


@pytest.mark.parametrize("text,why", MALFORMED)
def test_malformed_text_is_a_protocol_error_that_says_why(text, why):
    with pytest.raises(RemoteProtocolError, match=why):
        Decoder(max_attachments=4, max_payload=1000).feed(text)


PH = '{"_placeholder":true,"num":%s}'


@pytest.mark.parametrize("header,frames,why", [
    ('51-["x",%s]' % (PH % 1), [b"a"], "out of range"),
    ('51-["x",%s]' % (PH % -1), [b"a"], "out of range"),
    ('52-["x",%s,%s]' % (PH % 0, PH % 0), [b"a", b"b"], "repeated"),
    ('52-["x",%s]' % (PH % 0), [b"a", b"b"], r"attachments \[1\] have no placeholder"),
    ('51-["x",{"_placeholder":true}]', [b"a"], "without num"),
    ('51-["x",%s]' % (PH % '"0"'), [b"a"], "not an integer"),
    ('51-["x",%s]' % (PH % "true"), [b"a"], "not an integer"),
    ('51-["x",%s]' % (PH % "0.0"), [b"a"], "not an integer"),
    ('52-["x",%s,%s]' % (PH % 0, PH % 1), [b"a", "text"], "text message while binary attachment 2 of 2"),
    ('51-["x",%s]' % (PH % 0), [b"x" * 600, ], "exceed maxPayload"),
])
def test_bad_attachments(header, frames, why):
    d = Decoder(max_attachments=4, max_payload=500)
    with pytest.raises(RemoteProtocolError, match=why):
        assert d.feed(header) is None
        for f in frames:
            d.feed(f)


def test_binary_without_header_and_oversized_text():
    with pytest.raises(RemoteProtocolError, match="without a BINARY_EVENT"):
        Decoder(max_attachments=4, max_payload=100).feed(b"x")
    with pytest.raises(RemoteProtocolError, match="exceeds maxPayload") as info:
        Decoder(max_attachments=4, max_payload=100).feed('2["x","' + "y" * 100 + '"]')
    assert info.value.close_code_hint == 1009


BIN_HEADER = '52-/up,5["file",%s,{"b":%s}]' % (PH % 0, PH % 1)


@pytest.mark.parametrize("cut", range(len(BIN_HEADER) + 1))
def test_every_prefix_of_a_binary_header(cut):
    d = Decoder(max_attachments=4, max_payload=1000)
    try:
        result = d.feed(BIN_HEADER[:cut])
    except RemoteProtocolError:
        return
    if result is None:  # a prefix that parsed as a complete header waits for its frames
        for frame in (b"a", b"b"):
            try:
                result = d.feed(frame)
            except RemoteProtocolError:
                return
    if cut == len(BIN_HEADER):
        assert result == Packet(T.BINARY_EVENT, "/up", ["file", b"a", {"b": b"b"}], 5)


@pytest.mark.parametrize("text,_", TABLE)
def test_every_prefix_of_the_table(text, _):
    for cut in range(len(text) + 1):
        try:
            Decoder(max_attachments=4, max_payload=1000).feed(text[:cut])
        except RemoteProtocolError:
            pass


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=60), st.binary(max_size=20),
                          st.sampled_from(["51-", '51-["x",', '51-["x",{"_placeholder":true,"num":0}]', "2[",
                                           '3/a,1["b"]', "0/", "60-1[]"])),
                max_size=6))
def test_fuzzed_message_sequences_raise_only_protocol_errors(messages):
    d = Decoder(max_attachments=3, max_payload=200)
    for m in messages:
        try:
            d.feed(m)
        except RemoteProtocolError:
            d = Decoder(max_attachments=3, max_payload=200)  # a server closes the connection here


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_fuzzed_headers(text):
    try:
        decode_header(text, max_attachments=3)
    except RemoteProtocolError:
        pass
