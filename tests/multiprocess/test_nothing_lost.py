"""Nothing lost across reconnects (issue 12), proven under faults with real processes and clients.

Two gateway processes and a worker joined by a real Redis; the turn's events are targeted to the
connection that sent the message (tests.support.bundles.SlowTargetedBundle), so a client that comes
back on a new connection gets the rest only if it keeps its stream. Each test prints its counts.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import ExitStack

import httpx
import pytest
import trio

from tests.support.bundles import TARGETED_DELTAS
from tests.support.delivery import count, start_node_recovery
from tests.support.processes import KdcProcess, spawn
from tests.support.redis_server import redis_server
from tests.support.sio_client import run_sio
from tests.support.sse_client import open_stream
from tests.support.tcp_proxy import TCPProxy

BUNDLE = "tests.support.bundles:SlowTargetedBundle"
TEXTS = [f"t{i} " for i in range(TARGETED_DELTAS)]


def cluster(stack: ExitStack, url: str, gateways: int = 2) -> list[KdcProcess]:
    env = {"REDIS_URL": url, "KDC_BUNDLE": BUNDLE, "KDC_RELAY_LINGER_MS": "0"}
    gws = [spawn(stack, "serve", env, "--no-worker") for _ in range(gateways)]
    spawn(stack, "worker", env)
    return gws


def sse_turn(events: list) -> tuple[list[int], int, int, list[str]]:
    """(session seqs received, first and last seq of the turn, delta texts) of SSE events."""
    seqs = [int(e.id) for e in events if e.id]
    first = next(int(e.id) for e in events if e.event == "chat_start")
    last = next(int(e.id) for e in events if e.event == "chat_complete")
    return seqs, first, last, [e.data["delta"]["text"] for e in events if e.event == "chat_delta"]


async def test_socketio_gateway_sigkilled_mid_turn_official_client_recovers_on_another_gateway():
    with redis_server() as srv, ExitStack() as stack:
        a, b = cluster(stack, srv.url)
        proxy = TCPProxy(a.port)  # the load balancer: after the kill it sends new connections to B
        stack.callback(proxy.close)
        async with trio.open_nursery() as nursery:
            run = await start_node_recovery(nursery, proxy.url, {}, "recover me")
            await run.wait_for(lambda r: len(r.events("chat_delta")) >= 5)
            proxy.upstream = ("127.0.0.1", b.port)
            killed_at = time.time() * 1000
            a.kill()
            await run.wait_for(lambda r: r.of("done"), timeout=40)
    events = run.events()
    connects = run.of("connect")
    assert [c["recovered"] for c in connects] == [False, True], run.lines
    assert connects[0]["id"] == connects[1]["id"], "a recovered socket keeps its id (its stream)"
    assert run.of("done")[0]["reason"] == "complete"
    for e in events:  # the offset is the session seq, as a string; nothing else ends with a string
        assert e["offset"] == (str(e["seq"]) if e["event"] not in ("session_info",) and e["seq"] else None), e
    seqs = [e["seq"] for e in events if e["offset"] is not None]
    first = next(e["seq"] for e in events if e["event"] == "chat_start")
    last = next(e["seq"] for e in events if e["event"] == "chat_complete")
    after = [e for e in events if e["at"] >= killed_at and e["offset"]]
    c = count(seqs, first, last, (after[0]["at"] - killed_at) / 1000 if after else None)
    print(c.line("socket.io, gateway SIGKILL, recovered on another gateway"))
    assert (c.duplicates, c.gaps, c.reordered) == (0, 0, 0) and c.received == c.sent
    assert [e["text"] for e in events if e["event"] == "chat_delta"] == TEXTS


async def test_sse_gateway_sigkilled_mid_turn_resumes_on_another_gateway_with_last_event_id():
    with redis_server() as srv, ExitStack() as stack:
        a, b = cluster(stack, srv.url)
        async with httpx.AsyncClient(timeout=10) as client, trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, f"{a.base_url}/sse/stream?stream_id=kill-me", tolerate_drop=True)
            sid = st.ready["session_id"]
            r = await client.post(f"{a.base_url}/sse/chat?stream_id=kill-me&user_session_id={sid}",
                                  json={"message": "survive the gateway"})
            assert r.status_code == 202, r.text
            await st.wait_event("chat_delta", count=5, timeout=20)
            a.kill()
            killed = time.monotonic()
            await st.wait_for(lambda s: s.dropped is not None or s.status is None, timeout=10)
            last_id = [e.id for e in st.events if e.id][-1]
            again = await open_stream(nursery, client, f"{b.base_url}/sse/stream?stream_id=kill-me&user_session_id={sid}",
                                      headers={"last-event-id": last_id})
            await again.wait_for(lambda s: any(e.id for e in s.events))
            recover_s = time.monotonic() - killed
            await again.wait_event("chat_complete", timeout=30)
            nursery.cancel_scope.cancel()
    seqs, first, last, texts = sse_turn(st.events + again.events)
    c = count(seqs, first, last, recover_s)
    print(c.line("SSE, gateway SIGKILL, Last-Event-ID on another gateway"))
    assert (c.duplicates, c.gaps, c.reordered) == (0, 0, 0) and c.received == c.sent
    assert texts == TEXTS


OUTAGE_S = 1.0


def outage(srv) -> float:
    """Redis SIGKILLed, down OUTAGE_S, restarted from its append-only file; when it went down."""
    srv.kill()
    down = time.monotonic()
    time.sleep(OUTAGE_S)
    srv.start()
    return down


async def sse_through_outage(gw: KdcProcess, srv) -> tuple[list, float]:
    async with httpx.AsyncClient(timeout=10) as client, trio.open_nursery() as nursery:
        st = await open_stream(nursery, client, f"{gw.base_url}/sse/stream?stream_id=stay")
        sid = st.ready["session_id"]
        r = await client.post(f"{gw.base_url}/sse/chat?stream_id=stay&user_session_id={sid}", json={"message": "hold 0.5"})
        assert r.status_code == 202, r.text
        await st.wait_event("chat_delta", count=3, timeout=20)
        n = len(st.events)
        down = await trio.to_thread.run_sync(outage, srv)
        await st.wait_for(lambda s: len(s.events) > n, timeout=30)
        recover_s = time.monotonic() - down
        await st.wait_event("chat_complete", timeout=40)
        nursery.cancel_scope.cancel()
    assert st.dropped is None
    return [(int(e.id), e.event, e.data) for e in st.events if e.id], recover_s


async def node_through_outage(gw: KdcProcess, srv) -> tuple[list, float]:
    async with trio.open_nursery() as nursery:
        run = await start_node_recovery(nursery, gw.base_url, {}, "hold 0.5")
        await run.wait_for(lambda r: len(r.events("chat_delta")) >= 3)
        n = len(run.events())
        down = await trio.to_thread.run_sync(outage, srv)
        await run.wait_for(lambda r: len(r.events()) > n, timeout=30)
        recover_s = time.monotonic() - down
        await run.wait_for(lambda r: r.of("done"), timeout=40)
    assert len(run.of("connect")) == 1 and not run.of("disconnect")[:-1], "stayed connected"
    return [(e["seq"], e["event"], {"delta": {"text": e["text"]}}) for e in run.events() if e["offset"]], recover_s


async def python_sio_through_outage(gw: KdcProcess, srv) -> tuple[list, float]:
    marks: dict[str, float] = {}

    async def scenario(sio, res):
        await res.wait_for(lambda r: r.of("session_info"))
        await sio.call("chat_message", {"message": "hold 0.5"}, timeout=10)
        await res.wait_for(lambda r: len(r.of("chat_delta")) >= 3, timeout=20)
        n = len(res.events)
        marks["down"] = await asyncio.to_thread(outage, srv)
        await res.wait_for(lambda r: len(r.events) > n, timeout=30)
        marks["up"] = time.monotonic()
        await res.wait_for(lambda r: r.of("chat_complete"), timeout=25)

    res = await run_sio(gw.base_url, scenario, transports=["websocket"], timeout=60)
    assert not res.disconnected or res.of("chat_complete")
    # python-socketio gets no offsets: each event is one argument, as before
    return [(d["seq"], e, d) for e, d in res.events if isinstance(d, dict) and d.get("seq")], marks["up"] - marks["down"]


@pytest.mark.parametrize("client", [sse_through_outage, node_through_outage, python_sio_through_outage],
                         ids=["sse", "socket.io-client", "python-socketio"])
async def test_redis_killed_and_restarted_mid_turn_connected_clients_lose_nothing(client):
    # appendonly + fsync always: the restarted Redis has the log and the sequence it had.
    with redis_server("--appendonly", "yes", "--appendfsync", "always") as srv, ExitStack() as stack:
        (gw,) = cluster(stack, srv.url, gateways=1)
        got, recover_s = await client(gw, srv)
    seqs = [s for s, _, _ in got]
    first = next(s for s, ev, _ in got if ev == "chat_start")
    last = [s for s, ev, _ in got if ev == "chat_complete"][-1]
    texts = [d["delta"]["text"] for _, ev, d in got if ev == "chat_delta"]
    c = count(seqs, first, last, recover_s)
    print(c.line(f"{client.__name__}: Redis SIGKILL + restart ({OUTAGE_S} s down), "
                 f"chat_start x{sum(1 for _, ev, _ in got if ev == 'chat_start')}"))
    assert (c.duplicates, c.gaps, c.reordered) == (0, 0, 0) and c.received == c.sent
    assert texts[-TARGETED_DELTAS:] == TEXTS


async def test_transport_swapped_mid_session_sse_to_socketio_and_back_nothing_lost():
    with redis_server() as srv, ExitStack() as stack:
        a, b = cluster(stack, srv.url)
        async with httpx.AsyncClient(timeout=10) as client, trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, f"{a.base_url}/sse/stream?stream_id=swap")
            sid = st.ready["session_id"]
            r = await client.post(f"{a.base_url}/sse/chat?stream_id=swap&user_session_id={sid}",
                                  json={"message": "swap transports"})
            assert r.status_code == 202, r.text
            await st.wait_event("chat_delta", count=4, timeout=20)
            nursery.cancel_scope.cancel()
        n_sse = int([e.id for e in st.events if e.id][-1])
        # SSE -> Socket.IO on gateway B (the official client: same stream, resume after n_sse)
        async with trio.open_nursery() as nursery:
            run = await start_node_recovery(nursery, b.base_url,
                                            {"user_session_id": sid, "stream_id": "swap", "last_event_id": n_sse},
                                            "-", quit_after_deltas=10)
            await run.wait_for(lambda r: r.of("done"), timeout=30)
        sio_events = [e for e in run.events() if e["offset"]]
        n_sio = int(sio_events[-1]["offset"])
        # Socket.IO -> SSE on gateway A with the last offset as Last-Event-ID
        async with httpx.AsyncClient(timeout=10) as client, trio.open_nursery() as nursery:
            back = await open_stream(nursery, client, f"{a.base_url}/sse/stream?stream_id=swap&user_session_id={sid}",
                                     headers={"last-event-id": str(n_sio)})
            await back.wait_event("chat_complete", timeout=30)
            nursery.cancel_scope.cancel()
    seqs = [int(e.id) for e in st.events if e.id] + [e["seq"] for e in sio_events] + \
        [int(e.id) for e in back.events if e.id]
    every = [(int(e.id), e.event) for e in st.events if e.id] + [(e["seq"], e["event"]) for e in sio_events] + \
        [(int(e.id), e.event) for e in back.events if e.id]
    first = next(s for s, ev in every if ev == "chat_start")
    last = next(s for s, ev in every if ev == "chat_complete")
    c = count(seqs, first, last, None)
    print(c.line(f"transport swap SSE(..{n_sse}) -> Socket.IO(..{n_sio}) -> SSE"))
    assert (c.duplicates, c.gaps, c.reordered) == (0, 0, 0) and c.received == c.sent
    assert n_sse < n_sio < last, "each leg carried part of the turn"
