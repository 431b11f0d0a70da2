"""The app `kdc-trio conformance` serves for the official suites: the behaviours they rely on.

The suites themselves are not ours to commit; these tests pin what they check most often, so
a regression shows in CI before anyone runs them by hand.
"""

from __future__ import annotations

import json

import trio

from kdc_trio.transports.conformance import serve_conformance
from tests.support.gateway import test_settings
from tests.support.raw_ws import RawWS


async def with_app(nursery: trio.Nursery) -> str:
    port = await nursery.start(serve_conformance, test_settings(), 0)
    return f"http://127.0.0.1:{port}"


async def test_engineio_echo_and_socketio_namespaces_events_and_acks():
    async with trio.open_nursery() as nursery:
        base = await with_app(nursery)
        echo = await RawWS.connect(base, "/engine.io/?EIO=4&transport=websocket")
        hs = json.loads((await echo.recv())[1:])
        await echo.send("4hello")
        await echo.send(b"\x01\x02")
        echoed = [await echo.recv(), await echo.recv()]

        sio = await RawWS.connect(base, "/socket.io/?EIO=4&transport=websocket")
        await sio.recv()
        await sio.send('40/custom,{"token":"abc"}')
        connect, auth = await sio.recv(), await sio.recv()
        await sio.send('42/custom,["message",1,"2",{"3":[true]}]')
        back = await sio.recv()
        await sio.send('42/custom,7["message-with-ack",1]')
        ack = await sio.recv()
        await sio.send('452-/custom,["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]')
        await sio.send(b"\x01")
        await sio.send(b"\x02")
        binary = [await sio.recv(), await sio.recv(), await sio.recv()]
        await sio.send("40/nope,")
        invalid = await sio.recv()
        nursery.cancel_scope.cancel()
    assert hs["pingInterval"] == 300 and hs["pingTimeout"] == 200 and hs["maxPayload"] == 1_000_000
    assert echoed == ["4hello", b"\x01\x02"]
    assert connect.startswith("40/custom,{") and auth == '42/custom,["auth",{"token":"abc"}]'
    assert back == '42/custom,["message-back",1,"2",{"3":[true]}]'
    assert ack == '43/custom,7[1]'
    assert binary == ['452-/custom,["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
                      b"\x01", b"\x02"]
    assert invalid == '44/nope,{"message":"Invalid namespace"}'
