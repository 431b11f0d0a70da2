"""One load-generator process: many connections to one target, raw sockets, minimal parsing.

    python3 bench/loadgen/client.py '<json spec>'

Spec: {"proto": "sse"|"sio", "flavor": "kdc"|"peer", "base": "http://127.0.0.1:P",
       "connections": C, "session": id or null, "trigger": {n,size,rate,broadcast} or null,
       "trigger_all": bool, "expect": events per connection, "timeout": s, "mode": "count"|"idle"|"churn",
       "duration": s (churn), "open_concurrency": handshakes in flight (64),
       "spread": {"first": i, "of": C} or null (paced triggers: each connection's trigger gets a
       `phase`, the seconds before its first event, so the C sessions' events are spread evenly
       over one period instead of all due at once)}

Protocol on stdio: prints `{"ready": true, "session": …}` once every connection is open, waits for
`go` on stdin, sends the trigger(s), counts `chat_delta` deliveries until each connection has
`expect` of them (or the timeout), and prints one JSON result: deliveries, wall seconds from the
first trigger to the last delivery, latency samples (ms, producer timestamp → read), the bytes
read for the `chat_delta`s (`delta_bytes`: each SSE event's block with its separator and any HTTP
chunk framing before it; each WebSocket message's frame header and payload), the first
`chat_delta` envelope decoded (`sample`: the bench compares the targets' key sets), and this
process's CPU seconds (`cpu_bound` when it used more than 80% of a core: the numbers are then
the client's, not the server's).
"""

from __future__ import annotations

import json
import sys
import time
from array import array

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Message, Request, TextMessage

TEXT_KEY = b'"text":"'
DELTA_SSE = b"event: chat_delta"
DELTA_SIO = '42["chat_delta"'
OPEN_CONCURRENCY = 64  # handshakes in flight per process: fast opening, well under a listen backlog


class Stats:
    def __init__(self) -> None:
        self.deliveries = 0
        self.latencies = array("d")
        self.last = 0.0
        self.done = trio.Event()
        self.pending = 0
        self.delta_bytes = 0
        self.sample: dict | None = None
        self.lags = array("d")
        self.interval_ns = 0  # of a paced trigger (rate > 0)

    def record(self, ts_ns: int | None, nbytes: int, conn=None) -> None:
        now = time.time_ns()
        self.deliveries += 1
        self.delta_bytes += nbytes
        self.last = time.perf_counter()
        if ts_ns:
            self.latencies.append((now - ts_ns) / 1e6)
            if conn is not None and self.interval_ns:
                # Schedule lag: the i-th delta of a paced stream is due at first + i × interval;
                # a producer held back by a saturated server shows here, not in the latency
                # (its timestamp is taken when it finally emits).
                if conn.first_ns is None:
                    conn.first_ns = ts_ns
                self.lags.append((now - conn.first_ns - (conn.got - 1) * self.interval_ns) / 1e6)


def timestamp_in(block: bytes | str) -> int | None:
    key = TEXT_KEY if isinstance(block, bytes) else TEXT_KEY.decode()
    i = block.find(key)
    if i < 0:
        return None
    j = block.find(b"|" if isinstance(block, bytes) else "|", i)
    try:
        return int(block[i + len(key):j])
    except ValueError:
        return None


def ws_frame_bytes(text: str) -> int:
    """What a server's (unmasked, uncompressed) WebSocket text frame of `text` takes on the wire."""
    n = len(text) if text.isascii() else len(text.encode())
    return n + (2 if n < 126 else 4 if n < 65536 else 10)


def host_port(base: str) -> tuple[str, int]:
    host, port = base.rsplit("//", 1)[1].rsplit(":", 1)
    return host, int(port)


# ---- SSE ----------------------------------------------------------------------------------------

class SSEConn:
    def __init__(self, spec: dict, stats: Stats, session: str | None, index: int) -> None:
        self.spec, self.stats, self.session, self.index = spec, stats, session, index
        self.stream_id = f"lg{index}-{time.monotonic_ns()}"
        self.got = 0
        self.first_ns: int | None = None  # producer timestamp of the first delta
        self.ready = trio.Event()

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        host, port = host_port(self.spec["base"])
        stream = await trio.open_tcp_stream(host, port)
        q = f"stream_id={self.stream_id}"
        if self.session:
            q += f"&user_session_id={self.session}&session={self.session}"
        await stream.send_all(f"GET /sse/stream?{q} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        self.stream = stream
        buf = b""
        started = False
        expect = self.spec["expect"]
        try:
            while True:
                data = await stream.receive_some(1 << 18)
                if not data:
                    return
                buf += data
                if b"\n\n" not in buf:
                    continue
                blocks = buf.split(b"\n\n")
                buf = blocks.pop()
                for block in blocks:
                    if DELTA_SSE in block:
                        self.got += 1
                        self.stats.record(timestamp_in(block), len(block) + 2, self)
                        if self.stats.sample is None:
                            self.stats.sample = json.loads(block.split(b"data: ", 1)[1].split(b"\n", 1)[0])
                        if self.got == expect:
                            self.stats.pending -= 1
                            if self.stats.pending == 0:
                                self.stats.done.set()
                    elif not started and b"event: ready" in block:
                        ready = json.loads(block.split(b"data: ", 1)[1].split(b"\n", 1)[0])
                        self.session = self.session or ready.get("session_id")
                        started = True
                        self.ready.set()
                        task_status.started()
        finally:
            await stream.aclose()

    async def trigger(self, trig: dict) -> None:
        host, port = host_port(self.spec["base"])
        body = json.dumps({"message": {"text": json.dumps(trig)}}).encode()
        q = f"stream_id={self.stream_id}&user_session_id={self.session}&session={self.session}"
        s = await trio.open_tcp_stream(host, port)
        await s.send_all(f"POST /sse/chat?{q} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        reply = b""
        while chunk := await s.receive_some(65536):
            reply += chunk
        await s.aclose()
        if not reply.startswith(b"HTTP/1.1 20"):
            raise RuntimeError(f"trigger refused: {reply[:300]!r}")


# ---- Socket.IO over a raw WebSocket ---------------------------------------------------------------

class SIOConn:
    def __init__(self, spec: dict, stats: Stats, session: str | None, index: int) -> None:
        self.spec, self.stats, self.session, self.index = spec, stats, session, index
        self.got = 0
        self.first_ns: int | None = None  # producer timestamp of the first delta
        self.ready = trio.Event()
        self.ws = WSConnection(ConnectionType.CLIENT)

    async def send(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(Message(data=text)))

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        host, port = host_port(self.spec["base"])
        self.stream = stream = await trio.open_tcp_stream(host, port)
        await stream.send_all(self.ws.send(Request(host=host, target="/socket.io/?EIO=4&transport=websocket")))
        expect = self.spec["expect"]
        parts: list[str] = []
        try:
            while True:
                data = await stream.receive_some(1 << 18)
                if not data:
                    return
                self.ws.receive_data(data)
                for ev in self.ws.events():
                    if isinstance(ev, TextMessage):
                        parts.append(ev.data)
                        if not ev.message_finished:
                            continue
                        text, parts = "".join(parts), []
                        if text.startswith(DELTA_SIO):
                            self.got += 1
                            self.stats.record(timestamp_in(text), ws_frame_bytes(text), self)
                            if self.stats.sample is None:
                                self.stats.sample = json.loads(text[2:])[1]
                            if self.got == expect:
                                self.stats.pending -= 1
                                if self.stats.pending == 0:
                                    self.stats.done.set()
                        elif text == "2":
                            await self.send("3")
                        elif text.startswith("0"):
                            auth = {"user_session_id": self.session, "session": self.session} if self.session else {}
                            await self.send("40" + json.dumps(auth))
                        elif text.startswith('42["session_info"'):
                            info = json.loads(text[2:])[1]
                            self.session = self.session or info.get("session_id")
                            self.ready.set()
                            task_status.started()
                        elif text.startswith("44"):
                            raise RuntimeError(f"connect refused: {text}")
                    elif isinstance(ev, CloseConnection):
                        return
                    elif isinstance(ev, AcceptConnection):
                        pass
        finally:
            await stream.aclose()

    async def trigger(self, trig: dict) -> None:
        await self.send('42["chat_message",' + json.dumps({"message": {"text": json.dumps(trig)}}) + "]")


# ---- modes --------------------------------------------------------------------------------------

def trigger_for(trig: dict, spread: dict | None, index: int) -> dict:
    """Connection `index`'s trigger: with `spread` {"first", "of"} and a paced trigger, its first
    event comes (first + index) / of of a period after the trigger (`phase`, seconds)."""
    if not spread or not trig.get("rate"):
        return trig
    return {**trig, "phase": round((spread["first"] + index) / spread["of"] / trig["rate"], 6)}


async def main(spec: dict) -> None:
    cls = SSEConn if spec["proto"] == "sse" else SIOConn
    stats = Stats()
    session = spec.get("session")
    conns = []
    cpu0, t_open = time.process_time(), time.perf_counter()
    async with trio.open_nursery() as nursery:
        if spec.get("mode") == "churn":
            await churn(spec, cls, stats, nursery)
            return
        limiter = trio.CapacityLimiter(spec.get("open_concurrency", OPEN_CONCURRENCY))

        async def open_one(i: int) -> None:
            c = cls(spec, stats, session, i)
            async with limiter:
                with trio.fail_after(spec.get("timeout", 60)):
                    await nursery.start(c.run)
            conns.append(c)

        if spec["connections"] and spec.get("share_session") and session is None:
            await open_one(0)  # the first connection makes the session; the others join it
            session = conns[0].session
        async with trio.open_nursery() as openers:  # handshakes overlap, at most `limiter` at once
            for i in range(len(conns), spec["connections"]):
                openers.start_soon(open_one, i)
        print(json.dumps({"ready": True, "session": session, "open_s": time.perf_counter() - t_open,
                          "open_cpu_s": time.process_time() - cpu0}), flush=True)
        line = await trio.to_thread.run_sync(sys.stdin.readline)
        if spec.get("mode") == "idle" or line.strip() != "go":
            nursery.cancel_scope.cancel()
            return
        stats.pending = len(conns)
        start, cpu0 = time.perf_counter(), time.process_time()
        trig = spec["trigger"]
        if trig and trig.get("rate"):
            stats.interval_ns = int(1e9 / trig["rate"])
        with trio.move_on_after(spec.get("timeout", 60)):  # a server that stalls still gets a result
            for c in (conns if spec.get("trigger_all") else conns[:1] if trig else []):
                await c.trigger(trigger_for(trig, spec.get("spread"), c.index))
            await stats.done.wait()
        wall = (stats.last or time.perf_counter()) - start
        cpu = time.process_time() - cpu0
        lat = sorted(stats.latencies)
        print(json.dumps({"deliveries": stats.deliveries, "wall_s": wall, "cpu_s": cpu,
                          "cpu_bound": cpu > 0.8 * wall, "complete": stats.pending == 0,
                          "delta_bytes": stats.delta_bytes, "sample": stats.sample,
                          "latency_ms": sample(lat, 2000), "lag_ms": sample(sorted(stats.lags), 2000)}), flush=True)
        nursery.cancel_scope.cancel()


async def churn(spec: dict, cls, stats: Stats, nursery: trio.Nursery) -> None:
    cycles, errors = 0, 0
    cpu0, start = time.process_time(), time.perf_counter()
    print(json.dumps({"ready": True, "session": None}), flush=True)
    await trio.to_thread.run_sync(sys.stdin.readline)
    start, cpu0 = time.perf_counter(), time.process_time()
    deadline = trio.current_time() + spec["duration"]

    async def worker():
        nonlocal cycles, errors
        while trio.current_time() < deadline:
            c = cls(spec, stats, None, cycles)
            try:
                async with trio.open_nursery() as inner:
                    with trio.fail_after(10):
                        await inner.start(c.run)
                    inner.cancel_scope.cancel()
                cycles += 1
            except Exception:
                errors += 1

    async with trio.open_nursery() as inner:
        for _ in range(spec["connections"]):
            inner.start_soon(worker)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    print(json.dumps({"cycles": cycles, "errors": errors, "wall_s": wall, "cpu_s": cpu,
                      "cpu_bound": cpu > 0.8 * wall}), flush=True)


def sample(values: list[float], k: int) -> list[float]:
    if len(values) <= k:
        return [round(v, 3) for v in values]
    step = len(values) / k
    return [round(values[int(i * step)], 3) for i in range(k)] + [round(values[-1], 3)]


if __name__ == "__main__":
    trio.run(main, json.loads(sys.argv[1]))
