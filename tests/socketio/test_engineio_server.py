"""The Engine.IO server at the wire: handshake errors, polling rules, the upgrade, bad packets.

The official conformance suites check the same things from Node; these run in CI against a
gateway started in the test, with httpx for polling and a bare wsproto client for WebSockets.
"""

from __future__ import annotations

import json

import httpx
import pytest
import trio

from tests.support.gateway import running_gateway, test_settings
from tests.support.raw_ws import Closed, RawWS

EIO = "/socket.io/?EIO=4"


async def open_polling(client: httpx.AsyncClient) -> dict:
    r = await client.get(f"{EIO}&transport=polling")
    assert r.status_code == 200 and r.text.startswith("0"), r.text
    return json.loads(r.text[1:])


@pytest.mark.parametrize("method,query,code", [
    ("GET", "/socket.io/?EIO=3&transport=polling", 5),
    ("GET", "/socket.io/?transport=polling", 5),
    ("GET", f"{EIO}&transport=carrier-pigeon", 0),
    ("GET", f"{EIO}&transport=polling&sid=nope", 1),
    ("POST", f"{EIO}&transport=polling", 2),
    ("PUT", f"{EIO}&transport=polling", 2),
    ("GET", f"{EIO}&transport=websocket", 3),  # websocket transport without an Upgrade
])
async def test_bad_requests_get_the_engineio_error_json(method, query, code):
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=5) as client:
        r = await client.request(method, query, content=b"" if method != "GET" else None)
    assert r.status_code == 400
    assert r.json()["code"] == code and r.json()["message"]


async def test_handshakes_announce_upgrades_and_the_derived_max_payload():
    settings = test_settings(sio_ping_interval_ms=1234, sio_ping_timeout_ms=567)
    async with running_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=5) as client:
        hs = await open_polling(client)
        ws = await RawWS.connect(gw.base_url, f"{EIO}&transport=websocket")
        opened = await ws.recv()
        await ws.aclose()
    assert hs["upgrades"] == ["websocket"] and hs["pingInterval"] == 1234 and hs["pingTimeout"] == 567
    assert hs["maxPayload"] == settings.effective_sio_max_payload > 20 * 1024 * 1024
    assert isinstance(opened, str) and json.loads(opened[1:])["upgrades"] == []


async def test_a_second_pending_poll_closes_the_session():
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=5) as client:
        sid = (await open_polling(client))["sid"]
        poll = f"{EIO}&transport=polling&sid={sid}"
        first: list[httpx.Response] = []
        async with trio.open_nursery() as nursery:
            async def pending():
                first.append(await client.get(poll))
            nursery.start_soon(pending)
            with trio.fail_after(5):
                while not any(s._poll_pending for s in gw.engineio.sockets.values()):
                    await trio.sleep(0.005)
            second = await client.get(poll)
        third = await client.get(poll)
    assert second.status_code == 400
    assert first[0].status_code == 200 and first[0].text == "1", "the pending poll learns the session closed"
    assert third.status_code == 400 and third.json()["code"] == 1


async def test_oversized_and_malformed_posts_close_the_session():
    settings = test_settings(sio_max_payload=1000)
    async with running_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=5) as client:
        big_sid = (await open_polling(client))["sid"]
        big = await client.post(f"{EIO}&transport=polling&sid={big_sid}", content=b"4" + b"x" * 2000)
        bad_sid = (await open_polling(client))["sid"]
        bad = await client.post(f"{EIO}&transport=polling&sid={bad_sid}", content=b"abc")
        after = [await client.get(f"{EIO}&transport=polling&sid={s}") for s in (big_sid, bad_sid)]
    assert big.status_code == 413
    assert bad.status_code == 400 and "packet type" in bad.json()["detail"]
    assert [r.status_code for r in after] == [400, 400]


async def test_upgrade_dance_then_polling_and_a_second_websocket_are_refused():
    settings = test_settings(sio_upgrade_timeout_ms=300)
    async with running_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=5) as client:
        sid = (await open_polling(client))["sid"]
        poll = f"{EIO}&transport=polling&sid={sid}"
        assert (await client.post(poll, content=b"40")).text == "ok"
        connect = await client.get(poll)
        assert connect.text.startswith("40{")
        polled: list[httpx.Response] = []
        async with trio.open_nursery() as nursery:
            async def pending():
                polled.append(await client.get(poll))
            nursery.start_soon(pending)
            ws = await RawWS.connect(gw.base_url, f"{EIO}&transport=websocket&sid={sid}")
            await ws.send("2probe")
            assert await ws.recv() == "3probe"
        assert polled[0].text == "6", "the pending poll ends with a noop"
        await ws.send("5")
        await trio.sleep(0.6)  # past the upgrade timeout: the upgraded socket must live on
        refused_poll = await client.get(poll)
        second = await RawWS.connect(gw.base_url, f"{EIO}&transport=websocket&sid={sid}")
        second_end = await second.recv()
        await ws.send('42["ping",{}]')
        got = await ws.recv_until(lambda m: isinstance(m, str) and m.startswith('42["pong"'))
        await ws.aclose()
        await second.aclose()
    assert refused_poll.status_code == 400
    assert isinstance(second_end, Closed) and second_end.code == 1008
    assert isinstance(got[-1], str) and got[-1].startswith('42["pong"')


@pytest.mark.parametrize("packet", ['42{}', '42abc["x"]', '4abc', '451-["x",{"_placeholder":true,"num":3}]'])
async def test_a_bad_socketio_packet_closes_the_connection(packet):
    async with running_gateway() as gw:
        ws = await RawWS.connect(gw.base_url, f"{EIO}&transport=websocket")
        await ws.recv()
        await ws.send("40")
        await ws.recv_until(lambda m: isinstance(m, str) and m.startswith("40"))
        await ws.send(packet)
        if packet.startswith("451-"):
            await ws.send(b"\x01")
        got = await ws.recv_until(lambda m: False)
        await ws.aclose()
        with trio.fail_after(5):
            while gw.engineio.sockets:
                await trio.sleep(0.01)
    assert isinstance(got[-1], Closed), got


async def test_unknown_namespace_and_connect_timeout():
    settings = test_settings(sio_connect_timeout_ms=300)
    async with running_gateway(settings) as gw:
        ws = await RawWS.connect(gw.base_url, f"{EIO}&transport=websocket")
        await ws.recv()
        await ws.send("40/nope,")
        refused = await ws.recv()
        start = trio.current_time()
        end = await ws.recv_until(lambda m: False)
        waited = trio.current_time() - start
        await ws.aclose()
    assert refused == '44/nope,{"message":"Invalid namespace"}'
    assert isinstance(end[-1], Closed) and 0.1 < waited < 3, (end, waited)


async def test_packets_after_a_close_in_one_payload_are_ignored_not_a_500():
    # Found by bench/fuzz: `1` then `40` in one POST ran the CONNECT on a closed socket and the
    # namespace task was started in its finished nursery (RuntimeError → 500).
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=5) as client:
        sid = (await open_polling(client))["sid"]
        r = await client.post(f"{EIO}&transport=polling&sid={sid}", content=b"1\x1e40")
        with trio.fail_after(5):
            while gw.engineio.sockets or gw.counters.sio_sockets:
                await trio.sleep(0.01)
        after = await client.get(f"{EIO}&transport=polling&sid={sid}")
    assert r.status_code == 200 and r.text == "ok"
    assert after.status_code == 400 and after.json()["code"] == 1
    assert gw.relay.statistics()["sessions"] == 0
