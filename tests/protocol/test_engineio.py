"""Engine.IO v4 packets: tables both ways, malformed input, split-at-every-offset, fuzzing."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.engineio import (SEPARATOR, EIOError, Packet, PacketType, decode_payload, decode_ws, encode_payload,
                               encode_ws, error_json, open_packet)
from protocol.errors import RemoteProtocolError

T = PacketType

# (WebSocket frame, packet): every packet type, with and without data, text and binary.
WS_TABLE = [
    ('0{"sid":"x"}', Packet(T.OPEN, '{"sid":"x"}')),
    ("1", Packet(T.CLOSE)),
    ("2", Packet(T.PING)),
    ("2probe", Packet(T.PING, "probe")),
    ("3", Packet(T.PONG)),
    ("3probe", Packet(T.PONG, "probe")),
    ("4hello", Packet(T.MESSAGE, "hello")),
    ("4", Packet(T.MESSAGE, "")),
    ("4é€😀", Packet(T.MESSAGE, "é€😀")),
    ('42["x",{"a":1}]', Packet(T.MESSAGE, '2["x",{"a":1}]')),
    ("5", Packet(T.UPGRADE)),
    ("6", Packet(T.NOOP)),
    (b"\x00\x01\xff", Packet(T.MESSAGE, b"\x00\x01\xff")),
    (b"", Packet(T.MESSAGE, b"")),
]


@pytest.mark.parametrize("frame,packet", WS_TABLE)
def test_websocket_frames_both_ways(frame, packet):
    assert decode_ws(frame) == packet
    assert encode_ws(packet) == frame


def test_every_packet_type_is_in_the_websocket_table():
    assert {p.type for _, p in WS_TABLE} == set(PacketType)


def test_a_bytearray_frame_is_a_binary_message():
    assert decode_ws(bytearray(b"\x01\x02")) == Packet(T.MESSAGE, b"\x01\x02")


# (polling body, packets): several packets per body, binary as "b" + base64.
PAYLOAD_TABLE = [
    (b"4hello", [Packet(T.MESSAGE, "hello")]),
    (b"bAQID", [Packet(T.MESSAGE, b"\x01\x02\x03")]),
    (b"b", [Packet(T.MESSAGE, b"")]),
    ("4hello\x1ebAQID\x1e2\x1e4€".encode(),
     [Packet(T.MESSAGE, "hello"), Packet(T.MESSAGE, b"\x01\x02\x03"), Packet(T.PING), Packet(T.MESSAGE, "€")]),
    (b'0{"sid":"s"}\x1e1\x1e2probe\x1e3probe\x1e4\x1e5\x1e6\x1ebAA==',
     [Packet(T.OPEN, '{"sid":"s"}'), Packet(T.CLOSE), Packet(T.PING, "probe"), Packet(T.PONG, "probe"),
      Packet(T.MESSAGE, ""), Packet(T.UPGRADE), Packet(T.NOOP), Packet(T.MESSAGE, b"\x00")]),
    (b'42["a"]\x1e42["b"]\x1e6', [Packet(T.MESSAGE, '2["a"]'), Packet(T.MESSAGE, '2["b"]'), Packet(T.NOOP)]),
]


@pytest.mark.parametrize("body,packets", PAYLOAD_TABLE)
def test_polling_payloads_both_ways(body, packets):
    assert decode_payload(body, max_payload=1000) == packets
    assert decode_payload(body.decode(), max_payload=1000) == packets, "a str body decodes the same"
    assert encode_payload(packets) == body


def test_binary_is_standard_base64_on_polling_and_raw_on_websocket():
    blob = bytes(range(256))
    packet = Packet(T.MESSAGE, blob)
    assert encode_payload([packet]) == b"b" + base64.b64encode(blob)
    assert encode_ws(packet) == blob


def test_open_packet_fields():
    p = open_packet("abc", upgrades=["websocket"], ping_interval_ms=25000, ping_timeout_ms=20000,
                    max_payload=1_000_000)
    assert p.type is T.OPEN
    frame = encode_ws(p)
    assert frame.startswith('0{"sid":"abc",')
    assert json.loads(frame[1:]) == {"sid": "abc", "upgrades": ["websocket"], "pingInterval": 25000,
                                     "pingTimeout": 20000, "maxPayload": 1_000_000}
    assert decode_payload(encode_payload([p]), max_payload=1000) == [p]
    after_upgrade = open_packet("s", upgrades=[], ping_interval_ms=300, ping_timeout_ms=200, max_payload=10)
    assert json.loads(after_upgrade.data)["upgrades"] == []


@pytest.mark.parametrize("code,message", [
    (0, "Transport unknown"), (1, "Session ID unknown"), (2, "Bad handshake method"), (3, "Bad request"),
    (4, "Forbidden"), (5, "Unsupported protocol version"),
])
def test_error_json(code, message):
    assert error_json(EIOError(code)) == {"code": code, "message": message}


def test_error_json_covers_every_code():
    assert [int(c) for c in EIOError] == [0, 1, 2, 3, 4, 5]


def test_only_messages_carry_binary():
    with pytest.raises(ValueError):
        Packet(T.PING, b"x")


@pytest.mark.parametrize("frame,why", [
    ("", "empty Engine.IO packet"), ("abc", "unknown Engine.IO packet type 'a'"), ("7", "packet type '7'"),
    ("9x", "packet type '9'"), ("x4", "packet type 'x'"), ("٤hello", "packet type"), ("\x1e4", "packet type"),
])
def test_bad_websocket_frames(frame, why):
    with pytest.raises(RemoteProtocolError, match=why) as info:
        decode_ws(frame)
    assert info.value.reason == "bad_packet"


@pytest.mark.parametrize("body,why", [
    (b"", "empty payload"),
    (b"4a\x1e", "empty Engine.IO packet"),
    (b"\x1e4a", "empty Engine.IO packet"),
    (b"\x1e", "empty Engine.IO packet"),
    (b"4a\x1e\x1e4b", "empty Engine.IO packet"),
    (b"9x", "packet type '9'"),
    (b"abc", "packet type 'a'"),
    (b"b!!!", "bad base64"),
    (b"bAQ", "bad base64"),
    (b"bAQI", "bad base64"),
    (b"b A==", "bad base64"),
    ("bé===".encode(), "bad base64"),
    (b"4\xff\xfe", r"not UTF-8 \(byte 1\)"),
    (b"4ok\x1e4\xc3", r"not UTF-8 \(byte 5\)"),
    (b"4" + b"x" * 100, "payload of 101 bytes exceeds maxPayload 50"),
])
def test_bad_polling_bodies(body, why):
    with pytest.raises(RemoteProtocolError, match=why):
        decode_payload(body, max_payload=50)


def test_oversized_body_says_413_and_1009():
    with pytest.raises(RemoteProtocolError) as info:
        decode_payload(b"4" * 11, max_payload=10)
    assert info.value.error_status_hint == 413 and info.value.close_code_hint == 1009
    assert info.value.reason == "payload_too_large"
    assert decode_payload(b"4" * 10, max_payload=10) == [Packet(T.MESSAGE, "4" * 9)], "the limit itself is allowed"


def test_packets_per_payload_are_capped_before_anything_is_split():
    for body in (b"\x1e".join([b"6"] * 11), "\x1e".join(["6"] * 11), b"\x1e" * 10):
        with pytest.raises(RemoteProtocolError, match="11 packets exceeds the limit of 10") as info:
            decode_payload(body, max_payload=1000, max_packets=10)
        assert info.value.error_status_hint == 400 and info.value.reason == "too_many_packets"
    assert len(decode_payload(b"\x1e".join([b"6"] * 10), max_payload=1000, max_packets=10)) == 10


# ---- split at every offset ----------------------------------------------------------------------

SPLIT_PACKETS = [Packet(T.MESSAGE, "héllo €"), Packet(T.MESSAGE, b"\x00" * 7), Packet(T.PONG),
                 Packet(T.PING, "probe"), Packet(T.MESSAGE, '2["x",{"a":"😀"}]'), Packet(T.MESSAGE, b"\xff\xfe\x01"),
                 Packet(T.NOOP)]
SPLIT_BODY = encode_payload(SPLIT_PACKETS)
# (start, end) byte offsets of each record in SPLIT_BODY
_starts = [0]
for _i, _b in enumerate(SPLIT_BODY):
    if _b == SEPARATOR.encode()[0]:
        _starts.append(_i + 1)
RECORDS = [(s, e - 1) for s, e in zip(_starts, _starts[1:] + [len(SPLIT_BODY) + 1])]


def _data_or_empty(p: Packet):
    return p.data if p.data is not None else ""


def _prefix_is_valid(record: bytes) -> bool:
    """A truncated record decodes iff it is non-empty, whole UTF-8 and (binary) whole base64 quanta."""
    if not record:
        return False
    try:
        record.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return record[:1] != b"b" or (len(record) - 1) % 4 == 0


def test_the_split_body_has_text_binary_and_bare_records():
    assert len(RECORDS) == len(SPLIT_PACKETS) and decode_payload(SPLIT_BODY, max_payload=1000) == SPLIT_PACKETS


@pytest.mark.parametrize("cut", range(len(SPLIT_BODY) + 1))
def test_polling_body_cut_at_every_offset(cut):
    """body[:cut] decodes to the whole records before the cut plus a truncated last one, or raises
    only RemoteProtocolError exactly where the cut leaves an empty record, half a UTF-8 character
    or half a base64 quantum; body[cut:] decodes whole when the cut is at a record start."""
    k = max(i for i, (s, _) in enumerate(RECORDS) if s <= cut)
    start, end = RECORDS[k]
    if cut == start and k > 0:  # the cut falls right after a separator: the prefix ends in an empty record
        k, (start, end) = k - 1, RECORDS[k - 1]
        last = SPLIT_BODY[start:end] + b"\x1e"
        expect_ok = False
    else:
        last = SPLIT_BODY[start:cut]
        expect_ok = _prefix_is_valid(last)
    try:
        packets = decode_payload(SPLIT_BODY[:cut], max_payload=10_000)
    except RemoteProtocolError:
        assert not expect_ok, f"body[:{cut}] should decode"
    else:
        assert expect_ok, f"body[:{cut}] = {SPLIT_BODY[:cut]!r} should be refused"
        assert packets[:-1] == SPLIT_PACKETS[:k]
        got, want = packets[-1], SPLIT_PACKETS[k]
        assert got.type is want.type
        got_data, want_data = _data_or_empty(got), _data_or_empty(want)
        assert want_data[:len(got_data)] == got_data
        if last[:1] == b"b":
            assert got_data == base64.b64decode(last[1:], validate=True)
        else:
            assert got_data == last[1:].decode()
    try:
        rest = decode_payload(SPLIT_BODY[cut:], max_payload=10_000)
    except RemoteProtocolError:
        assert cut not in {s for s, _ in RECORDS}
    else:
        if cut in {s for s, _ in RECORDS}:
            assert rest == SPLIT_PACKETS[[s for s, _ in RECORDS].index(cut):]


@pytest.mark.parametrize("frame,packet", [f for f in WS_TABLE if isinstance(f[0], str)])
def test_every_prefix_of_a_websocket_frame(frame, packet):
    """A truncated frame is refused only when empty; otherwise it is the same type with less data."""
    for cut in range(len(frame) + 1):
        try:
            got = decode_ws(frame[:cut])
        except RemoteProtocolError:
            assert cut == 0
        else:
            assert cut > 0 and got.type is packet.type
            assert (got.data or "") == (packet.data or "")[:cut - 1]


@pytest.mark.parametrize("body,packets", PAYLOAD_TABLE)
def test_every_prefix_of_a_table_body(body, packets):
    for cut in range(len(body) + 1):
        try:
            got = decode_payload(body[:cut], max_payload=1000)
        except RemoteProtocolError:
            continue
        assert got[:-1] == packets[:len(got) - 1] and got[-1].type is packets[len(got) - 1].type


# ---- fuzzing --------------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), st.binary()))
def test_fuzzed_frames_raise_only_protocol_errors(frame):
    refused = isinstance(frame, str) and (not frame or frame[0] not in "0123456")
    try:
        packet = decode_ws(frame)
    except RemoteProtocolError:
        assert refused
    else:
        assert not refused and isinstance(packet, Packet)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300)), st.integers(min_value=0, max_value=400))
def test_fuzzed_bodies_raise_only_protocol_errors_and_respect_max_payload(body, limit):
    try:
        decode_payload(body, max_payload=limit)
    except RemoteProtocolError as exc:
        if len(body) > limit:
            assert exc.reason == "payload_too_large"
        return
    assert len(body) <= limit


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.integers(min_value=0, max_value=199))
def test_bodies_over_max_payload_always_raise(body, limit):
    limit = min(limit, len(body) - 1)
    with pytest.raises(RemoteProtocolError, match="exceeds maxPayload"):
        decode_payload(body, max_payload=limit)


_edits = st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(["insert", "delete", "replace"]),
                            st.sampled_from([0x1e, 0x62, 0x34, 0x30, 0x3d, 0x2b, 0xff, 0xc3, 0x00, 0x20, 0x41])),
                  min_size=1, max_size=5)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([b for b, _ in PAYLOAD_TABLE] + [SPLIT_BODY]), _edits)
def test_mutated_bodies_raise_only_protocol_errors(body, edits):
    data = bytearray(body)
    for pos, op, byte in edits:
        pos = pos % (len(data) + 1)
        if op == "insert" or not data:
            data.insert(pos, byte)
        elif op == "delete":
            del data[min(pos, len(data) - 1)]
        else:
            data[min(pos, len(data) - 1)] = byte
    try:
        packets = decode_payload(bytes(data), max_payload=1000)
    except RemoteProtocolError:
        return
    assert decode_payload(encode_payload(packets), max_payload=1000) == packets


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=30).filter(lambda t: SEPARATOR not in t), st.binary(max_size=30)),
                min_size=1, max_size=6))
def test_payload_round_trip(messages):
    packets = [Packet(T.MESSAGE, m) for m in messages]
    assert decode_payload(encode_payload(packets), max_payload=10**6) == packets
    for p in packets:
        assert decode_ws(encode_ws(p)) == p
