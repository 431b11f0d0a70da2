"""A WebSocket closed for a protocol error gets its close frame even while the socket's writer
is sending (found by `python3 -m bench.fuzz eio-ws`: ~0.15% of inputs ended in a bare EOF).

The reader's close frame waited for the write lock while the writer, finding the WebSocket
closed, ended the connection's tasks — cancelling the close frame's write.
"""

from __future__ import annotations

import os

import trio
from wsproto.events import TextMessage

from tests.support.gateway import running_gateway
from tests.support.raw_ws import Closed, RawWS


def masked_text_frame(payload: bytes) -> bytes:
    """One masked text frame, payload as given (wsproto would refuse to send invalid UTF-8)."""
    assert len(payload) < 126
    mask = os.urandom(4)
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def test_invalid_utf8_right_after_connect_is_closed_1007_every_time():
    outcomes = []
    async with running_gateway() as gw:
        for _ in range(30):
            ws = await RawWS.connect(gw.base_url, "/socket.io/?EIO=4&transport=websocket")
            await ws.recv()  # the open packet
            # A CONNECT (its reply is being written) and, in the same write, a frame that is not UTF-8.
            await ws.stream.send_all(ws.ws.send(TextMessage(data="40"))
                                     + masked_text_frame(b'42["x\x80"]'))
            with trio.fail_after(5):
                while not isinstance(msg := await ws.recv(), Closed):
                    pass
            outcomes.append(msg.code)
            await ws.aclose()
    assert outcomes == [1007] * 30, outcomes
