"""Engine.IO v4 packets: tables, malformed input, split-at-every-offset, fuzzing."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.engineio import (EIOError, Packet, PacketType, decode_payload, decode_ws, encode_payload, encode_ws,
                               error_json, open_packet)
from protocol.errors import RemoteProtocolError

WS_TABLE = [
    ("0{\"sid\":\"x\"}", Packet(PacketType.OPEN, '{"sid":"x"}')),
    ("1", Packet(PacketType.CLOSE)),
    ("2", Packet(PacketType.PING)),
    ("2probe", Packet(PacketType.PING, "probe")),
    ("3", Packet(PacketType.PONG)),
    ("3probe", Packet(PacketType.PONG, "probe")),
    ("4hello", Packet(PacketType.MESSAGE, "hello")),
    ("4", Packet(PacketType.MESSAGE, "")),
    ("4é€😀", Packet(PacketType.MESSAGE, "é€😀")),
    ("5", Packet(PacketType.UPGRADE)),
    ("6", Packet(PacketType.NOOP)),
    (b"\x00\x01\xff", Packet(PacketType.MESSAGE, b"\x00\x01\xff")),
]


@pytest.mark.parametrize("frame,packet", WS_TABLE)
def test_websocket_frames_both_ways(frame, packet):
    assert decode_ws(frame) == packet
    assert encode_ws(packet) == frame


def test_polling_payload_joins_with_record_separator_and_base64s_binary():
    packets = [Packet(PacketType.MESSAGE, "hello"), Packet(PacketType.MESSAGE, b"\x01\x02\x03"),
               Packet(PacketType.PING), Packet(PacketType.MESSAGE, "€")]
    body = encode_payload(packets)
    assert body == "4hello\x1ebAQID\x1e2\x1e4€".encode()
    assert decode_payload(body, max_payload=1000) == packets


def test_open_packet_and_error_json():
    p = open_packet("abc", upgrades=["websocket"], ping_interval_ms=25000, ping_timeout_ms=20000,
                    max_payload=1_000_000)
    assert p.type is PacketType.OPEN
    assert json.loads(p.data) == {"sid": "abc", "upgrades": ["websocket"], "pingInterval": 25000,
                                  "pingTimeout": 20000, "maxPayload": 1_000_000}
    assert [error_json(c) for c in EIOError] == [
        {"code": 0, "message": "Transport unknown"}, {"code": 1, "message": "Session ID unknown"},
        {"code": 2, "message": "Bad handshake method"}, {"code": 3, "message": "Bad request"},
        {"code": 4, "message": "Forbidden"}, {"code": 5, "message": "Unsupported protocol version"}]


def test_only_messages_carry_binary():
    with pytest.raises(ValueError):
        Packet(PacketType.PING, b"x")


@pytest.mark.parametrize("frame,why", [
    ("", "empty"), ("abc", "packet type"), ("7", "packet type"), ("x4", "packet type"),
])
def test_bad_websocket_frames(frame, why):
    with pytest.raises(RemoteProtocolError, match=why):
        decode_ws(frame)


@pytest.mark.parametrize("body,why", [
    (b"", "empty payload"), (b"4a\x1e", "empty Engine.IO packet"), (b"\x1e", "empty Engine.IO packet"),
    (b"9x", "packet type"), (b"b!!!", "base64"), (b"bAQ", "base64"), (b"4\xff\xfe", "UTF-8"),
    (b"4" + b"x" * 100, "maxPayload"),
])
def test_bad_polling_bodies(body, why):
    with pytest.raises(RemoteProtocolError, match=why):
        decode_payload(body, max_payload=50)


def test_oversized_body_says_413_and_1009():
    with pytest.raises(RemoteProtocolError) as info:
        decode_payload(b"4" * 11, max_payload=10)
    assert info.value.error_status_hint == 413 and info.value.close_code_hint == 1009


SPLIT_BODY = encode_payload([Packet(PacketType.MESSAGE, "héllo"), Packet(PacketType.MESSAGE, b"\x00" * 7),
                             Packet(PacketType.PONG), Packet(PacketType.MESSAGE, '42["x",{"a":1}]')])


@pytest.mark.parametrize("cut", range(len(SPLIT_BODY) + 1))
def test_every_prefix_decodes_or_fails_with_a_protocol_error(cut):
    try:
        packets = decode_payload(SPLIT_BODY[:cut], max_payload=10_000)
    except RemoteProtocolError:
        return
    assert all(isinstance(p, Packet) for p in packets)
    if cut == len(SPLIT_BODY):
        assert len(packets) == 4


@pytest.mark.parametrize("frame,_", [f for f in WS_TABLE if isinstance(f[0], str)])
def test_every_prefix_of_a_frame(frame, _):
    for cut in range(len(frame) + 1):
        try:
            decode_ws(frame[:cut])
        except RemoteProtocolError:
            assert cut == 0


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.binary()))
def test_fuzzed_frames_raise_only_protocol_errors(frame):
    try:
        decode_ws(frame)
    except RemoteProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=400))
def test_fuzzed_bodies_raise_only_protocol_errors_and_respect_max_payload(body, limit):
    try:
        decode_payload(body, max_payload=limit)
    except RemoteProtocolError:
        return
    assert len(body) <= limit


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(min_size=0, max_size=30).filter(lambda t: "\x1e" not in t),
                          st.binary(max_size=30)), min_size=1, max_size=6))
def test_payload_round_trip(messages):
    packets = [Packet(PacketType.MESSAGE, m) for m in messages]
    assert decode_payload(encode_payload(packets), max_payload=10**6) == packets
    for p in packets:
        assert decode_ws(encode_ws(p)) == p


def test_base64_is_strict():
    good = "b" + base64.b64encode(b"\xfa\xfb").decode()
    assert decode_payload(good.encode(), max_payload=100) == [Packet(PacketType.MESSAGE, b"\xfa\xfb")]
    with pytest.raises(RemoteProtocolError):
        decode_payload(good[:-1].encode() + b"*", max_payload=100)
