"""protocol/wsframe.py: our server data frames are byte for byte what wsproto writes (the oracle),
at every length boundary of RFC 6455 §5.2, and a wsproto client reads them back whole, fed at
once or split at every offset."""

from __future__ import annotations

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, Message, TextMessage

from protocol.wsframe import BINARY, TEXT, data_frame, frame_payload, text_frame

SIZES = [0, 1, 125, 126, 127, 65535, 65536, 70000]


@pytest.mark.parametrize("size", SIZES)
def test_frames_equal_wsprotos(size):
    server = Connection(ConnectionType.SERVER)
    ascii_text, wide = "x" * size, ("é✓" * size)[:size]  # 2- and 3-byte UTF-8: the length is in bytes
    assert text_frame(ascii_text) == server.send(Message(data=ascii_text))
    assert text_frame(wide) == server.send(Message(data=wide)) == data_frame(wide)
    assert data_frame(b"\x00" * size) == server.send(Message(data=b"\x00" * size))
    assert frame_payload(TEXT, wide.encode()) == text_frame(wide)
    assert frame_payload(BINARY, b"\xff" * size) == data_frame(b"\xff" * size)


def _client_reads(data: bytes, cuts: list[int]) -> list:
    client = Connection(ConnectionType.CLIENT)
    out, at = [], 0
    for cut in [*cuts, len(data)]:
        client.receive_data(data[at:cut])
        at = cut
        out.extend(client.events())
    return out


def _whole(events: list) -> list:
    """Messages reassembled from wsproto's partial events."""
    msgs, parts = [], []
    for ev in events:
        assert isinstance(ev, (TextMessage, BytesMessage)), ev
        parts.append(ev.data)
        if ev.message_finished:
            msgs.append("".join(parts) if isinstance(ev, TextMessage) else b"".join(parts))
            parts = []
    assert not parts
    return msgs


def test_a_client_reads_joined_frames_split_at_every_offset():
    messages = ['42["chat_delta",{"text":"é"}]', "", "2", b"\x01\x02", "x" * 200]
    data = b"".join(data_frame(m) for m in messages)
    assert _whole(_client_reads(data, [])) == messages
    for i in range(1, len(data)):
        assert _whole(_client_reads(data, [i])) == messages, i


def test_a_large_frame_reads_back():
    text = "é" * 40000  # 80,000 bytes: the 64-bit length
    assert _whole(_client_reads(text_frame(text), [1, 2, 9, 10, 50000])) == [text]
