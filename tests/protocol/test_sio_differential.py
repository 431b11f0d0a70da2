"""Differential tests: our Engine.IO/Socket.IO codecs against python-engineio's and
python-socketio's packet classes, on generated packets (binary ones included)."""

from __future__ import annotations

import json

from engineio import packet as eio_packet
from engineio import payload as eio_payload
from hypothesis import given, settings
from hypothesis import strategies as st
from socketio import packet as sio_packet

from protocol.engineio import Packet as EPacket
from protocol.engineio import PacketType as EType
from protocol.engineio import decode_payload, decode_ws, encode_payload, encode_ws
from protocol.socketio import Decoder, Packet, PacketType, encode

SETTINGS = settings(max_examples=200, deadline=None)

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**53, 2**53), st.text(max_size=12),
                         st.floats(allow_nan=False, allow_infinity=False, width=32))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)), max_leaves=12)
with_binary = st.recursive(st.one_of(json_scalars, st.binary(max_size=16)), lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.text(max_size=6).filter(lambda k: k != "_placeholder"), inner, max_size=4)),
    max_leaves=12)
namespaces = st.one_of(st.just("/"), st.from_regex(r"/[a-z0-9_-]{1,12}", fullmatch=True))
event_names = st.text(min_size=1, max_size=12).filter(
    lambda t: t not in {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"})
ack_ids = st.one_of(st.none(), st.integers(0, 10**15 - 1))


def theirs_encode(p: Packet):
    out = sio_packet.Packet(int(p.type), data=p.data, namespace=p.namespace, id=p.id).encode()
    return out if isinstance(out, list) else [out]


def theirs_decode(messages):
    pkt = sio_packet.Packet(encoded_packet=messages[0])
    for m in messages[1:]:
        pkt.add_attachment(m)
    return pkt


def ours_decode(messages) -> Packet:
    d = Decoder(max_attachments=1000, max_payload=10**7)
    result = None
    for m in messages:
        result = d.feed(m)
    assert result is not None
    return result


def same(ours: Packet, theirs) -> None:
    assert int(ours.type) == theirs.packet_type
    assert ours.namespace == (theirs.namespace or "/")
    assert ours.data == theirs.data
    assert ours.id == theirs.id


@st.composite
def sio_packets(draw) -> Packet:
    kind = draw(st.sampled_from(["connect", "disconnect", "event", "ack", "connect_error"]))
    ns = draw(namespaces)
    if kind == "connect":
        return Packet(PacketType.CONNECT, ns, draw(st.one_of(st.none(), st.dictionaries(st.text(max_size=6),
                                                                                           json_values, max_size=3))))
    if kind == "disconnect":
        return Packet(PacketType.DISCONNECT, ns)
    if kind == "connect_error":
        return Packet(PacketType.CONNECT_ERROR, ns, {"message": draw(st.text(max_size=20))})
    args = draw(st.lists(with_binary, max_size=4))
    if kind == "event":
        return Packet(PacketType.EVENT, ns, [draw(event_names), *args], draw(ack_ids))
    return Packet(PacketType.ACK, ns, args, draw(st.integers(0, 10**15 - 1)))


@SETTINGS
@given(sio_packets())
def test_what_we_encode_python_socketio_decodes_the_same(p):
    ours = encode(p)
    theirs = theirs_decode(ours)
    assert theirs.packet_type == int(PacketType.BINARY_EVENT if p.type is PacketType.EVENT and len(ours) > 1
                                     else PacketType.BINARY_ACK if p.type is PacketType.ACK and len(ours) > 1
                                     else p.type)
    assert (theirs.namespace or "/") == p.namespace and theirs.id == p.id and theirs.data == p.data


@SETTINGS
@given(sio_packets())
def test_what_python_socketio_encodes_we_decode_the_same(p):
    messages = theirs_encode(p)
    ours = ours_decode(messages)
    same(ours, theirs_decode(messages))
    assert ours.data == p.data


@SETTINGS
@given(sio_packets())
def test_encodings_are_identical_for_ascii_data(p):
    ours, theirs = encode(p), theirs_encode(p)
    if all(" " <= c < "\x7f" for c in ours[0]):
        assert ours == theirs
    else:  # python-socketio escapes non-ASCII (\\u00e9), we send UTF-8: the same JSON values
        assert ours_decode(ours) == ours_decode(theirs)


engine_messages = st.one_of(st.text(max_size=30).filter(lambda t: "\x1e" not in t), st.binary(max_size=30))


@SETTINGS
@given(st.lists(engine_messages, min_size=1, max_size=6))
def test_engineio_payloads_agree_both_ways(messages):
    ours = [EPacket(EType.MESSAGE, m) for m in messages]
    theirs = [eio_packet.Packet(eio_packet.MESSAGE, m) for m in messages]
    body = encode_payload(ours)
    assert body.decode() == eio_payload.Payload(packets=theirs).encode()
    decoded_theirs = eio_payload.Payload(encoded_payload=body.decode()).packets if len(messages) <= 16 else None
    for m, p in zip(messages, decoded_theirs or []):
        if isinstance(m, bytes):
            assert p.binary and p.data == m
        else:  # python-engineio json-decodes text data when it can; compare the text forms
            assert p.data == m or json.dumps(p.data, separators=(",", ":")) == m or str(p.data) == m
    assert decode_payload(eio_payload.Payload(packets=theirs).encode().encode(), max_payload=10**6) == ours


@SETTINGS
@given(st.sampled_from(list(EType)), st.one_of(st.none(), st.text(max_size=20)))
def test_engineio_websocket_frames_agree(ptype, data):
    if ptype is EType.MESSAGE and data is None:
        data = ""
    ours = EPacket(ptype, data)
    theirs = eio_packet.Packet(int(ptype), data)
    assert encode_ws(ours) == theirs.encode()
    decoded = decode_ws(theirs.encode())
    assert decoded.type is ptype and (decoded.data or "") == (data or "")


@SETTINGS
@given(st.binary(max_size=64))
def test_engineio_binary_frames_agree(blob):
    theirs = eio_packet.Packet(eio_packet.MESSAGE, blob)
    assert encode_ws(EPacket(EType.MESSAGE, blob)) == theirs.encode()
    assert decode_ws(theirs.encode()) == EPacket(EType.MESSAGE, blob)
