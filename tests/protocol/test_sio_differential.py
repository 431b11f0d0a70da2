"""Differential tests: our Engine.IO/Socket.IO codecs against python-engineio's and
python-socketio's packet classes, on generated packets (binary ones included), both directions."""

from __future__ import annotations

import json

from engineio import packet as eio_packet
from engineio import payload as eio_payload
from hypothesis import given, settings
from hypothesis import strategies as st
from socketio import packet as sio_packet

from protocol.engineio import SEPARATOR, decode_payload, decode_ws, encode_payload, encode_ws
from protocol.engineio import Packet as EPacket
from protocol.engineio import PacketType as EType
from protocol.socketio import RESERVED_EVENTS, Decoder, Packet, PacketType, encode

SETTINGS = settings(max_examples=200, deadline=None)

# ---- generated Socket.IO packets ----------------------------------------------------------------

unicode_text = st.text(st.characters(codec="utf-8"), max_size=12)  # é, 😀, CJK, controls …
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**53, 2**53), unicode_text,
                         st.floats(allow_nan=False, allow_infinity=False))
keys = unicode_text.filter(lambda k: k != "_placeholder")
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)), max_leaves=12)
with_binary = st.recursive(st.one_of(json_scalars, st.binary(max_size=16)), lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)), max_leaves=12)
namespaces = st.one_of(st.just("/"), st.from_regex(r"/[a-zA-Z0-9_\-é😀.]{1,12}", fullmatch=True))
event_names = unicode_text.filter(lambda t: t and t not in RESERVED_EVENTS)
ack_ids = st.integers(0, 10**15 - 1)


@st.composite
def sio_packets(draw) -> Packet:
    kind = draw(st.sampled_from(list(PacketType)))
    ns = draw(namespaces)
    if kind is PacketType.CONNECT:
        return Packet(kind, ns, draw(st.one_of(st.none(), st.dictionaries(keys, json_values, max_size=3))))
    if kind is PacketType.DISCONNECT:
        return Packet(kind, ns)
    if kind is PacketType.CONNECT_ERROR:
        return Packet(kind, ns, draw(st.one_of(st.builds(lambda m: {"message": m}, unicode_text), unicode_text)))
    if kind in (PacketType.EVENT, PacketType.BINARY_EVENT):
        args = draw(st.lists(with_binary if kind is PacketType.EVENT else st.binary(max_size=16), max_size=4))
        if kind is PacketType.BINARY_EVENT:  # a binary packet holds at least one binary value
            args.append(draw(st.binary(max_size=16)))
        return Packet(PacketType.EVENT, ns, [draw(event_names), *args], draw(st.one_of(st.none(), ack_ids)))
    args = draw(st.lists(with_binary, max_size=4))
    if kind is PacketType.BINARY_ACK:
        args.insert(0, {"file": draw(st.binary(max_size=16))})
    return Packet(PacketType.ACK, ns, args, draw(ack_ids))


def wire_type(p: Packet) -> int:
    """The type a packet travels as: EVENT/ACK holding bytes become BINARY_EVENT/BINARY_ACK."""
    if any(True for _ in _binaries(p.data)):
        return {PacketType.EVENT: PacketType.BINARY_EVENT, PacketType.ACK: PacketType.BINARY_ACK}[p.type]
    return int(p.type)


def theirs_encode(p: Packet) -> list:
    out = sio_packet.Packet(int(p.type), data=p.data, namespace=p.namespace, id=p.id).encode()
    return out if isinstance(out, list) else [out]


def theirs_decode(messages: list):
    pkt = sio_packet.Packet(encoded_packet=messages[0])
    assert pkt.attachment_count == len(messages) - 1
    for i, m in enumerate(messages[1:], 1):
        assert pkt.add_attachment(m) is (i == len(messages) - 1)
    return pkt


def ours_decode(messages: list) -> Packet:
    d = Decoder(max_attachments=1000, max_payload=10**7)
    *head, last = messages
    for m in head:
        assert d.feed(m) is None
    result = d.feed(last)
    assert result is not None
    return result


def through_engineio(messages: list) -> list:
    """Each Socket.IO message as an Engine.IO message on a WebSocket frame and back (ours)."""
    return [decode_ws(encode_ws(EPacket(EType.MESSAGE, m))).data for m in messages]


def _binaries(v):
    if isinstance(v, bytes):
        yield v
    elif isinstance(v, list):
        for x in v:
            yield from _binaries(x)
    elif isinstance(v, dict):
        for x in v.values():
            yield from _binaries(x)


@SETTINGS
@given(sio_packets())
def test_what_we_encode_python_socketio_decodes_the_same(p):
    ours = encode(p)
    assert ours[1:] == list(_binaries(p.data)), "one attachment per binary value, in order"
    theirs = theirs_decode(ours)
    assert theirs.packet_type == wire_type(p)
    assert (theirs.namespace or "/") == p.namespace and theirs.id == p.id and theirs.data == p.data


@SETTINGS
@given(sio_packets())
def test_what_python_socketio_encodes_we_decode_the_same(p):
    messages = theirs_encode(p)
    ours = ours_decode(through_engineio(messages))
    theirs = theirs_decode(messages)
    assert int(ours.type) == theirs.packet_type == wire_type(p)
    assert ours.namespace == (theirs.namespace or "/") == p.namespace
    assert ours.id == theirs.id == p.id
    assert ours.data == theirs.data == p.data


@SETTINGS
@given(sio_packets())
def test_encodings_are_identical_for_ascii_data(p):
    ours, theirs = encode(p), theirs_encode(p)
    assert ours[1:] == theirs[1:], "the same attachments in the same order"
    if all(c < "\x7f" for c in ours[0]):
        assert ours[0] == theirs[0]
    else:  # python-socketio escapes non-ASCII and DEL (\u00e9), we send UTF-8: the same packet either way
        assert ours_decode(ours) == ours_decode(theirs)
        assert theirs_decode(ours).data == theirs_decode(theirs).data


# ---- Engine.IO ----------------------------------------------------------------------------------------

def their_text_view(text: str):
    """What python-engineio's decode makes of a text message: JSON values when the text parses
    as JSON and does not start with a digit, else the text itself."""
    if text and not text[0].isnumeric():
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


engine_text = st.text(st.characters(codec="utf-8", blacklist_characters=SEPARATOR), max_size=30)
engine_json = json_values.map(lambda v: json.dumps(v, separators=(",", ":"), ensure_ascii=False))
engine_packets = st.one_of(
    st.builds(lambda d: EPacket(EType.MESSAGE, d), st.one_of(engine_text, engine_json, st.binary(max_size=30))),
    st.builds(EPacket, st.sampled_from([t for t in EType if t is not EType.MESSAGE]),
              st.one_of(st.none(), st.just("probe"))),
)


def same_engineio(ours: EPacket, theirs) -> None:
    assert theirs.packet_type == int(ours.type)
    if isinstance(ours.data, bytes):
        assert theirs.binary and theirs.data == ours.data
    else:
        assert not theirs.binary
        want = their_text_view(ours.data or "")
        assert theirs.data == want or repr(theirs.data) == repr(want)


@SETTINGS
@given(st.lists(engine_packets, min_size=1, max_size=8))
def test_engineio_payloads_agree_both_ways(packets):
    body = encode_payload(packets)
    theirs_body = eio_payload.Payload(packets=[eio_packet.Packet(int(p.type), p.data) for p in packets]).encode()
    assert body == theirs_body.encode()
    for ours, theirs in zip(packets, eio_payload.Payload(encoded_payload=body.decode()).packets, strict=True):
        same_engineio(ours, theirs)
    assert decode_payload(theirs_body.encode(), max_payload=10**6) == packets


@SETTINGS
@given(engine_packets)
def test_engineio_websocket_frames_agree_both_ways(p):
    theirs = eio_packet.Packet(int(p.type), p.data)
    assert encode_ws(p) == theirs.encode()
    same_engineio(p, eio_packet.Packet(encoded_packet=encode_ws(p)))
    decoded = decode_ws(theirs.encode())
    assert decoded.type is p.type and (decoded.data or "") == (p.data or "")


@SETTINGS
@given(sio_packets())
def test_socketio_over_engineio_polling_agrees(p):
    """A Socket.IO packet with its attachments in one polling body: python-engineio splits it as we
    do, python-socketio reassembles what our Decoder reassembles."""
    messages = encode(p)
    body = encode_payload([EPacket(EType.MESSAGE, m) for m in messages])
    their_payload = eio_payload.Payload()
    their_payload.max_decode_packets = 1000  # one packet per attachment, more than its default 16
    their_payload.decode(body.decode())
    theirs = their_payload.packets
    assert all(t.packet_type == eio_packet.MESSAGE for t in theirs)
    assert [t.data for t in theirs] == messages, "Socket.IO headers start with a digit: kept as text"
    ours = [q.data for q in decode_payload(body, max_payload=10**7)]
    assert ours == messages
    assert ours_decode(ours).data == theirs_decode(messages).data == p.data
