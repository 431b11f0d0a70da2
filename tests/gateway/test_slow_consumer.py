"""Slow consumers, merge then close: a real client reading at a tenth of the producing rate
(a raw TCP socket with a small receive window: SSE through h11, Socket.IO through wsproto) gets
the whole answer byte for byte, in far fewer events than were produced, and stays connected."""

from __future__ import annotations

import json
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, field

import h11
import httpx
import pytest
import trio

from protocol.sse import NEED_DATA, SSEDecoder, SSEEvent
from tests.support.gateway import running_gateway, test_settings
from tests.support.raw_ws import Closed, RawWS, open_tcp
from tests.support.redis_server import redis_server

DELTAS = 2000  # produced, 10 per 10 ms: up to 1,000 deltas/s (about 0.7 MB/s of SSE events)
THINKING = 100  # the first ones are `thinking`, then a step (a barrier), then the answer
CHUNK, PACE_S = 1024, 1 / 64  # the reader: 64 KiB/s, a tenth of the producing rate or less
RCVBUF = 4096


def piece(i: int) -> str:
    return f"{i:04d}é✓ part of the answer; "  # non-ASCII on purpose: byte for byte


class FloodBundle:
    async def run(self, turn, comm):
        await comm.start(message=turn.message.text)
        if turn.message.text == "again":
            await comm.delta("still here", index=0, completed=True)
            await comm.complete(data={})
            return
        for i in range(DELTAS):
            if i == THINKING:
                await comm.step("search", "completed", title="a barrier between the two streams")
            # pieces numbered per stream, as KDCube's bundles and the demo do
            await comm.delta(piece(i), index=i if i < THINKING else i - THINKING,
                             marker="thinking" if i < THINKING else "answer")
            if i % 10 == 9:
                await trio.sleep(0.01)
        await comm.delta("", index=DELTAS - THINKING, marker="answer", completed=True)
        await comm.complete(data={"deltas": DELTAS})


@asynccontextmanager
async def flood_gateway(bus: str):
    """SSE_CLIENT_QUEUE 40: merging starts at 20 waiting (KDC_OUTBOX_MERGE_AT 0.5). Through Redis
    the events arrive as JSON text, decoded only when they merge."""
    with ExitStack() as stack:
        extra = {"redis_url": stack.enter_context(redis_server()).url} if bus == "redis" else {}
        async with running_gateway(test_settings(client_queue=40, **extra), bundle=FloodBundle()) as gw:
            yield gw


BUSES = pytest.mark.parametrize("bus", ["memory", "redis"])


@dataclass
class Got:
    events: list[tuple[str, dict]] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)

    def add(self, event: str, data: dict) -> None:
        self.events.append((event, data))
        self.changed.set()

    async def wait_for(self, pred, timeout: float = 60.0) -> None:
        with trio.fail_after(timeout):
            while not pred(self):
                self.changed = trio.Event()
                await self.changed.wait()

    def completes(self) -> int:
        return sum(1 for e, _ in self.events if e == "chat_complete")


def check_merged_turn(got: Got) -> int:
    """The first turn, whole and in order; returns how many delta events carried it."""
    upto = next(i for i, (e, _) in enumerate(got.events) if e == "chat_complete")
    logged = [(e, d) for e, d in got.events[:upto + 1] if isinstance(d.get("seq"), int)]
    seqs = [d["seq"] for _, d in logged]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "sequences strictly increase"
    covered = []
    for e, d in logged:
        lo = d.get("seq_from", d["seq"])
        assert e == "chat_delta" or lo == d["seq"], "only deltas cover a range"
        covered.extend(range(lo, d["seq"] + 1))
    assert covered == list(range(covered[0], seqs[-1] + 1)), "ranges contiguous: every seq covered once"
    turn_id = got.events[upto][1]["conversation"]["turn_id"]
    turn = [(e, d) for e, d in logged if e.startswith("chat_") and d["conversation"]["turn_id"] == turn_id]
    assert turn[0][0] == "chat_start"
    # start, step, DELTAS deltas, the completing delta, complete
    assert sum(d["seq"] - d.get("seq_from", d["seq"]) + 1 for _, d in turn) == DELTAS + 4
    names = [e for e, _ in turn]
    step_at = names.index("chat_step")
    deltas = [d for e, d in turn if e == "chat_delta"]
    thinking = "".join(d["delta"]["text"] for d in deltas if d["delta"]["marker"] == "thinking")
    answer = "".join(d["delta"]["text"] for d in deltas if d["delta"]["marker"] == "answer")
    assert thinking.encode() == "".join(piece(i) for i in range(THINKING)).encode()
    assert answer.encode() == "".join(piece(i) for i in range(THINKING, DELTAS)).encode()
    assert all(d["delta"]["marker"] == "thinking" for e, d in turn[:step_at] if e == "chat_delta")
    assert all(d["delta"]["marker"] == "answer" for e, d in turn[step_at:] if e == "chat_delta")
    assert all(d["text"] == d["delta"]["text"] and d["idx"] == d["delta"]["index"] for d in deltas)
    for marker in ("thinking", "answer"):  # a merged delta has its last piece's index: they still increase
        idx = [d["delta"]["index"] for d in deltas if d["delta"]["marker"] == marker]
        assert idx == sorted(set(idx)), idx
    assert deltas[-1]["delta"]["completed"] is True and names[-1] == "chat_complete"
    return len(deltas)


# ---- SSE: a raw socket, HTTP through h11, events through our decoder ------------------------
async def slow_sse(base_url: str, target: str, got: Got, ready: trio.Event, state: dict) -> None:
    host, port = base_url.rsplit("//", 1)[1].rsplit(":", 1)
    stream = await open_tcp(host, int(port), RCVBUF)
    h = h11.Connection(h11.CLIENT)
    await stream.send_all(h.send(h11.Request(method="GET", target=target,
                                             headers=[("Host", f"{host}:{port}"), ("Accept", "text/event-stream")])))
    dec = SSEDecoder(max_event_data_chars=1 << 24)
    while True:
        await trio.sleep(PACE_S)
        data = await stream.receive_some(CHUNK)
        state["bytes"] = state.get("bytes", 0) + len(data)
        h.receive_data(data)
        while True:
            ev = h.next_event()
            if ev is h11.NEED_DATA:
                break
            if isinstance(ev, h11.Response):
                assert ev.status_code == 200
            elif isinstance(ev, h11.Data):
                dec.receive_data(bytes(ev.data))
            elif isinstance(ev, (h11.EndOfMessage, h11.ConnectionClosed)):
                state["ended"] = True
                got.changed.set()
                return
        while (sse := dec.next_event()) is not NEED_DATA:
            if isinstance(sse, SSEEvent):
                payload = json.loads(sse.data)
                if sse.event == "ready":
                    state["session_id"] = payload["session_id"]
                    ready.set()
                else:
                    assert int(sse.id) == payload["seq"], "the SSE id is the merged event's last seq"
                    got.add(sse.event, payload)
            else:
                state.setdefault("comments", []).append(sse.text)


@BUSES
async def test_sse_client_reading_at_a_tenth_gets_merged_deltas_and_stays_open(bus):
    async with flood_gateway(bus) as gw, \
            httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        got, ready, state = Got(), trio.Event(), {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_sse, gw.base_url, "/sse/stream?stream_id=slow", got, ready, state)
            with trio.fail_after(10):
                await ready.wait()
            sid = state["session_id"]
            r = await client.post(f"/sse/chat?stream_id=slow&user_session_id={sid}", json={"message": {"text": "go"}})
            assert r.status_code == 202, r.text
            await got.wait_for(lambda g: g.completes() >= 1 or state.get("ended"))
            assert not state.get("ended"), f"the stream was closed: {state.get('comments')}"
            n = check_merged_turn(got)
            metrics = (await client.get("/metrics")).text
            merged = next(line for line in metrics.splitlines() if line.startswith("kdc_deltas_merged_total"))
            assert float(merged.split()[1]) == DELTAS + 1 - n, "each merge is one delta event fewer"
            # still open: the next turn arrives on the same stream
            r = await client.post(f"/sse/chat?stream_id=slow&user_session_id={sid}", json={"message": {"text": "again"}})
            assert r.status_code == 202, r.text
            await got.wait_for(lambda g: g.completes() >= 2 or state.get("ended"))
            assert not state.get("ended") and not state.get("comments")
            nursery.cancel_scope.cancel()
    print(f"SSE ({bus}): {DELTAS + 1} deltas produced, {n} received, {state['bytes']} bytes read")
    assert n <= (DELTAS + 1) // 4, f"far fewer events: {n} deltas for {DELTAS + 1} produced"


# ---- Socket.IO: a raw WebSocket, Engine.IO/Socket.IO packets by hand ------------------------
@BUSES
async def test_socketio_client_reading_at_a_tenth_gets_merged_deltas_and_stays_open(bus):
    async with flood_gateway(bus) as gw:
        ws = await RawWS.connect(gw.base_url, "/socket.io/?EIO=4&transport=websocket", rcvbuf=RCVBUF)
        got = Got()
        assert (await ws.recv()).startswith("0{")  # Engine.IO open
        await ws.send("40")

        async def read() -> None:
            while True:
                m = await ws.recv(120, max_bytes=CHUNK, pace_s=PACE_S)
                if isinstance(m, Closed):
                    got.add("closed", {"code": m.code, "reason": m.reason})
                    return
                if m == "2":
                    await ws.send("3")
                elif m.startswith("42"):
                    event, data, *offset = json.loads(m[2:])  # recovery offset: the seq (the last merged)
                    assert offset == ([str(data["seq"])] if data.get("seq") and event != "session_info" else []), m
                    got.add(event, data)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await got.wait_for(lambda g: any(e == "session_info" for e, _ in g.events), 10)
            await ws.send('42["chat_message",{"message":{"text":"go"}}]')
            await got.wait_for(lambda g: g.completes() >= 1 or any(e == "closed" for e, _ in g.events))
            assert not any(e == "closed" for e, _ in got.events), got.events[-1]
            n = check_merged_turn(got)
            await ws.send('42["chat_message",{"message":{"text":"again"}}]')
            await got.wait_for(lambda g: g.completes() >= 2 or any(e == "closed" for e, _ in g.events))
            assert not any(e == "closed" for e, _ in got.events), got.events[-1]
            nursery.cancel_scope.cancel()
        await ws.aclose()
    print(f"Socket.IO ({bus}): {DELTAS + 1} deltas produced, {n} received")
    assert n <= (DELTAS + 1) // 4, f"far fewer events: {n} deltas for {DELTAS + 1} produced"
