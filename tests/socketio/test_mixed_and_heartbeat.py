"""One session on SSE and Socket.IO at once; a socket that stops answering pings is dropped."""

from __future__ import annotations

import httpx
import trio

from kdc_trio.relay.keys import SessionKey
from tests.support.gateway import running_gateway, test_settings
from tests.support.raw_ws import Closed, RawWS
from tests.support.sio_client import run_sio
from tests.support.sse_client import open_stream

N_DELTAS = 5


class BroadcastBundle:
    """Every event to the whole session, so each connection of it sees each one."""

    async def run(self, turn, comm):
        await comm.start(message=turn.message.text, broadcast=True)
        for i in range(N_DELTAS):
            await comm.delta(f"d{i}", index=i, marker="answer", broadcast=True)
        await comm.complete(data={"n": N_DELTAS}, broadcast=True)


async def wait_refcount(gw, key: SessionKey, n: int) -> None:
    with trio.fail_after(10):
        while gw.relay.refcount(key) != n:
            await trio.sleep(0.01)


async def test_one_sse_stream_and_two_sockets_get_every_event():
    async with running_gateway(bundle=BroadcastBundle()) as gw, \
            httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        async with trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, "/sse/stream?stream_id=sse1")
            sid = st.ready["session_id"]
            key = SessionKey(st.ready["tenant"], st.ready["project"], sid)
            results = []

            async def scenario(sio, res):
                await res.wait_for(lambda r: r.of("chat_complete"), timeout=20)

            async def socket(transports):
                results.append(await run_sio(gw.base_url, scenario, auth={"user_session_id": sid},
                                             transports=transports))

            nursery.start_soon(socket, ["websocket"])
            nursery.start_soon(socket, ["polling"])
            await wait_refcount(gw, key, 3)
            r = await client.post(f"/sse/chat?stream_id=sse1&user_session_id={sid}", json={"message": "all"})
            assert r.status_code == 202
            await st.wait_event("chat_complete")
            with trio.fail_after(20):
                while len(results) < 2:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    want = ["chat_start"] + ["chat_delta"] * N_DELTAS + ["chat_complete"]
    sse_seqs = [int(e.id) for e in st.events if e.event in ("chat_start", "chat_delta", "chat_complete")]
    assert [e.event for e in st.events if e.event in want] == want
    for res in results:
        assert res.of("session_info")[0]["session_id"] == sid
        assert [e for e in res.names() if e in want] == want
        assert [d["seq"] for e, d in res.events if e in want] == sse_seqs, "same events, same sequence"


async def test_socket_that_stops_answering_pings_is_closed():
    settings = test_settings(sio_ping_interval_ms=200, sio_ping_timeout_ms=150)
    async with running_gateway(settings) as gw:
        ws = await RawWS.connect(gw.base_url, "/socket.io/?EIO=4&transport=websocket")
        start = trio.current_time()
        texts = [await ws.recv()]
        await ws.send("40")
        while not isinstance(texts[-1], Closed):  # never answers the pings
            texts.append(await ws.recv())
        closed = trio.current_time() - start
        assert 0.3 <= closed < 1.5, closed  # pingInterval + pingTimeout = 0.35 s, never answered
        assert "2" in texts and any(isinstance(t, str) and t.startswith("40") for t in texts)
        with trio.fail_after(5):
            while gw.engineio.sockets or gw.counters.sio_sockets:
                await trio.sleep(0.01)
        await ws.aclose()
