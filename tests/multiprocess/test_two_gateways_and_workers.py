"""Two gateway processes and worker processes joined only by a real Redis.

SSE on gateway A, Socket.IO on gateway B, the message posted through B: both connections get
the whole turn, in order, with one session sequence. A worker killed in the middle of a turn:
another worker takes the turn over and the client gets the complete retried turn.
"""

from __future__ import annotations

from contextlib import ExitStack

import httpx
import trio

from tests.support.bundles import SLOW_DELTAS
from tests.support.processes import spawn
from tests.support.redis_server import redis_server
from tests.support.sio_client import run_sio
from tests.support.sse_client import open_stream

BUNDLE = "tests.support.bundles:SlowBroadcastBundle"
TURN = ["chat_start"] + ["chat_delta"] * SLOW_DELTAS + ["chat_complete"]


async def test_sse_on_a_and_socketio_on_b_both_get_a_turn_run_by_a_worker():
    with redis_server() as srv, ExitStack() as stack:
        env = {"REDIS_URL": srv.url, "KDC_BUNDLE": BUNDLE, "KDC_RELAY_LINGER_MS": "0"}
        a = spawn(stack, "serve", env, "--no-worker")
        b = spawn(stack, "serve", env, "--no-worker")
        spawn(stack, "worker", env)
        async with httpx.AsyncClient(timeout=10) as client, trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, f"{a.base_url}/sse/stream?stream_id=on-a")
            sid = st.ready["session_id"]

            async def scenario(sio, res):
                await res.wait_for(lambda r: r.of("session_info"))
                res.acks.append(await sio.call("chat_message", {"message": "across processes"}, timeout=10))
                await res.wait_for(lambda r: r.of("chat_complete"), timeout=30)

            res = await run_sio(b.base_url, scenario, auth={"user_session_id": sid}, transports=["websocket"],
                                timeout=40)
            await st.wait_event("chat_complete", timeout=30)
            nursery.cancel_scope.cancel()
    assert res.of("session_info")[0]["session_id"] == sid
    assert res.acks[0]["status"] == "processing_started"
    sio_turn = [(e, d["seq"]) for e, d in res.events if e in TURN]
    sse_turn = [(e.event, int(e.id)) for e in st.events if e.event in TURN]
    assert [e for e, _ in sse_turn] == TURN, "the whole turn, in order, on gateway A"
    assert sio_turn == sse_turn, "the same events with the same sequence on gateway B"
    texts = [e.data["delta"]["text"] for e in st.of("chat_delta")]
    assert texts == [f"d{i} " for i in range(SLOW_DELTAS)]


async def test_a_worker_killed_mid_turn_is_replaced_and_the_turn_completes():
    with redis_server() as srv, ExitStack() as stack:
        env = {"REDIS_URL": srv.url, "KDC_BUNDLE": BUNDLE, "KDC_TURN_LEASE_MS": "1000"}
        gw = spawn(stack, "serve", env, "--no-worker")
        first = spawn(stack, "worker", env)
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client, trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, "/sse/stream?stream_id=s")
            sid = st.ready["session_id"]
            r = await client.post(f"/sse/chat?stream_id=s&user_session_id={sid}", json={"message": "survive"})
            assert r.status_code == 202, r.text
            await st.wait_event("chat_delta", count=3, timeout=20)
            first.kill()
            spawn(stack, "worker", env)
            await st.wait_for(lambda s: any(e.data["data"].get("retried") for e in s.of("chat_start")), timeout=20)
            await st.wait_event("chat_complete", timeout=20)
            nursery.cancel_scope.cancel()
    starts = st.of("chat_start")
    assert len(starts) == 2 and starts[1].data["data"]["attempt"] == 2
    retried_at = st.events.index(starts[1])
    after = [e.event for e in st.events[retried_at:] if e.event in TURN]
    assert after == TURN, "the retried turn runs whole"
    assert not st.of("chat_error")
    ids = [int(e.id) for e in st.events if e.id]
    assert ids == sorted(ids)
