"""One soak client process: holds its share of connections and sends turns on them.

    python3 -m bench.soak.clients '<json spec>'

Spec: {"host", "port", "conns", "kinds": ["sse", "ws", "polling"], "secret": JWT secret,
"turn_every_s": mean seconds between one connection's turns, "turn": {n, size, rate}, "interval": s}.
Connection i is of kind `kinds[i % len(kinds)]`; every other connection presents a token (the
rest are anonymous). A connection that drops is counted and reopened after a second. Every
`interval` seconds one JSON line: connections open per kind, turns posted/refused, deltas
received, delivery latency of the window (producer timestamp → read, ms), errors. Ends when
stdin closes.
"""

from __future__ import annotations

import json
import random
import sys
import time
from array import array
from urllib.parse import quote

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import CloseConnection, Message, Ping, Request, TextMessage

from bench.loadgen.client import timestamp_in
from bench.rawhttp import HTTPClient, request_bytes

EIO = "/socket.io/?EIO=4"
CONNECT_TIMEOUT_S = 30
OPEN_BATCH = 50


class Totals:
    def __init__(self) -> None:
        self.open = {"sse": 0, "ws": 0, "polling": 0}
        self.posted = self.refused = self.deltas = self.reconnects = 0
        self.errors: dict[str, int] = {}
        self.lat = array("d")

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    def delta(self, text: str | bytes) -> None:
        self.deltas += 1
        ts = timestamp_in(text)
        if ts:
            self.lat.append((time.time_ns() - ts) / 1e6)

    def window(self) -> dict:
        lat, self.lat = sorted(self.lat), array("d")
        q = (lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else None)
        return {"open": dict(self.open), "posted": self.posted, "refused": self.refused, "deltas": self.deltas,
                "reconnects": self.reconnects, "errors": dict(self.errors), "lat_n": len(lat),
                "lat_p50_ms": q(0.5), "lat_p99_ms": q(0.99), "lat_max_ms": round(lat[-1], 2) if lat else None}


def mint(secret: str, subject: str) -> str:
    import dataclasses

    from kdc_trio.auth.mint import mint_token
    from kdc_trio.config import Settings

    return mint_token(dataclasses.replace(Settings.from_env({}), jwt_secret=secret), subject=subject, ttl_s=86400)


def describe(exc: BaseException) -> str:
    """The first leaf of an exception group, short: what the error counters are keyed by."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {str(exc)[:60]}"


def turn_text(spec: dict) -> str:
    return json.dumps({"message": {"text": json.dumps(spec["turn"])}})


class Conn:
    def __init__(self, spec: dict, totals: Totals, index: int) -> None:
        self.spec, self.totals, self.index = spec, totals, index
        self.kind = spec["kinds"][index % len(spec["kinds"])]
        # every other connection presents a token of its own user (no session is shared by many)
        self.token = mint(spec["secret"], f"soak-user-{index}") if spec.get("secret") and index % 2 else None
        self.host, self.port = spec["host"], spec["port"]
        self.session: str | None = None
        self.ready = trio.Event()
        self.first_try = trio.Event()  # the first open succeeded or failed

    async def forever(self) -> None:
        first = True
        while True:
            self.ready = trio.Event()  # per attempt: set by this connection's session_info
            try:
                async with trio.open_nursery() as nursery:
                    with trio.fail_after(CONNECT_TIMEOUT_S):
                        await nursery.start(getattr(self, "run_" + self.kind))
                    self.totals.open[self.kind] += 1
                    try:
                        if first:
                            first = False
                            self.first_try.set()
                        await self.turns()
                    finally:
                        self.totals.open[self.kind] -= 1
            except Exception as exc:  # noqa: BLE001 - any failure of one connection: count it, reopen it
                self.totals.error(f"{self.kind}:{describe(exc)}")
                if first:
                    first = False
                    self.first_try.set()
            self.totals.reconnects += 1
            await trio.sleep(1.0)

    async def turns(self) -> None:
        """Post a turn now and then; returns (ending the connection's nursery) if the connection ends."""
        while True:
            await trio.sleep(random.expovariate(1.0 / self.spec["turn_every_s"]))
            await self.post_turn()
            self.totals.posted += 1

    # ---- SSE -----------------------------------------------------------------------------
    async def run_sse(self, task_status) -> None:
        self.stream_id = f"soak{self.index}-{time.monotonic_ns()}"
        q = f"stream_id={self.stream_id}"
        if self.token:
            q += f"&bearer_token={quote(self.token)}"
        if self.session:
            q += f"&user_session_id={self.session}"
        stream = await trio.open_tcp_stream(self.host, self.port)
        async with stream:
            await stream.send_all(request_bytes("GET", f"/sse/stream?{q}", self.host))
            buf, started = b"", False
            while True:
                data = await stream.receive_some(1 << 16)
                if not data:
                    raise ConnectionError("sse stream ended")
                buf += data
                if not started and b"\r\n\r\n" in buf:
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    if not head.startswith(b"HTTP/1.1 200"):
                        raise ConnectionError(f"sse refused: {head[:40]!r}")
                *blocks, buf = buf.split(b"\n\n")
                for block in blocks:
                    if b"event: chat_delta" in block:
                        self.totals.delta(block)
                    elif not started and b"event: ready" in block:
                        ready = json.loads(block.split(b"data: ", 1)[1].split(b"\n", 1)[0])
                        self.session = ready["session_id"]
                        started = True
                        task_status.started()

    async def post_turn_sse(self) -> None:
        body = turn_text(self.spec).encode()
        headers = [("Content-Type", "application/json"), ("Connection", "close")]
        if self.token:
            headers.append(("Authorization", f"Bearer {self.token}"))
        client = HTTPClient(self.host, self.port)
        try:
            with trio.fail_after(30):
                resp = await client.request(
                    "POST", f"/sse/chat?stream_id={self.stream_id}&user_session_id={self.session}",
                    body=body, headers=headers)
        finally:
            await client.aclose()
        if resp.status != 202:
            self.totals.refused += 1
            self.totals.error(f"post:{resp.status}")

    # ---- Socket.IO over WebSocket ---------------------------------------------------------
    def auth(self) -> str:
        auth = {}
        if self.token:
            auth["bearer_token"] = self.token
        if self.session:
            auth["user_session_id"] = self.session
        return "40" + json.dumps(auth)

    def on_sio(self, text: str, task_status) -> str | None:
        """One Socket.IO packet; returns a reply to send, if any."""
        if text.startswith('42["chat_delta"'):
            self.totals.delta(text)
        elif text.startswith('42["session_info"'):
            self.session = json.loads(text[2:])[1]["session_id"]
            if not self.ready.is_set():
                self.ready.set()
                task_status.started()
        elif text.startswith("44"):
            raise ConnectionError(f"connect refused: {text[:100]}")
        elif text.startswith("42"):
            if '"error"' in text[:200] and '"chat_error"' not in text[:30]:
                self.totals.error("sio:error_event")
        return None

    async def run_ws(self, task_status) -> None:
        ws = WSConnection(ConnectionType.CLIENT)
        stream = await trio.open_tcp_stream(self.host, self.port)
        lock = trio.Lock()

        async def send(text: str) -> None:
            async with lock:
                await stream.send_all(ws.send(Message(data=text)))

        self.ws_send = send
        async with stream:
            await stream.send_all(ws.send(Request(host=self.host, target=f"{EIO}&transport=websocket")))
            parts: list[str] = []
            while True:
                data = await stream.receive_some(1 << 16)
                if not data:
                    raise ConnectionError("websocket ended")
                ws.receive_data(data)
                for ev in ws.events():
                    if isinstance(ev, TextMessage):
                        parts.append(ev.data)
                        if not ev.message_finished:
                            continue
                        text, parts = "".join(parts), []
                        if text == "2":
                            await self.ws_send("3")
                        elif text.startswith("0"):
                            await self.ws_send(self.auth())
                        elif text.startswith("4"):
                            self.on_sio(text, task_status)
                        elif text == "1":
                            raise ConnectionError("engine.io close")
                    elif isinstance(ev, Ping):
                        async with lock:
                            await stream.send_all(ws.send(ev.response()))
                    elif isinstance(ev, CloseConnection):
                        raise ConnectionError(f"websocket closed {ev.code}")

    # ---- Socket.IO over HTTP long-polling ---------------------------------------------------
    async def run_polling(self, task_status) -> None:
        poller, poster = HTTPClient(self.host, self.port), HTTPClient(self.host, self.port)
        try:
            resp = await poller.request("GET", f"{EIO}&transport=polling")
            if resp.status != 200 or not resp.body.startswith(b"0"):
                raise ConnectionError(f"handshake {resp.status}")
            sid = json.loads(resp.body[1:])["sid"]
            target = f"{EIO}&transport=polling&sid={sid}"

            async def post(text: str) -> None:
                r = await poster.request("POST", target, body=text.encode(),
                                         headers=[("Content-Type", "text/plain;charset=UTF-8")])
                if r.status != 200:
                    raise ConnectionError(f"polling post {r.status}")

            self.poll_post = post
            await post(self.auth())
            while True:
                resp = await poller.request("GET", target)
                if resp.status != 200:
                    raise ConnectionError(f"poll {resp.status}")
                for rec in resp.body.decode().split("\x1e"):
                    if rec == "2":
                        await post("3")
                    elif rec.startswith("4"):
                        self.on_sio(rec, task_status)
                    elif rec == "1":
                        raise ConnectionError("engine.io close")
        finally:
            await poller.aclose()
            await poster.aclose()

    async def post_turn(self) -> None:
        if self.kind == "sse":
            await self.post_turn_sse()
        elif self.kind == "ws":
            await self.ws_send("42" + '["chat_message",' + turn_text(self.spec) + "]")
        else:
            await self.poll_post("42" + '["chat_message",' + turn_text(self.spec) + "]")


async def main(spec: dict) -> None:
    totals = Totals()
    async with trio.open_nursery() as nursery:
        t0 = time.monotonic()
        conns = [Conn(spec, totals, spec.get("first_index", 0) + i) for i in range(spec["conns"])]
        for at in range(0, len(conns), OPEN_BATCH):  # open a batch at a time, each batch concurrently
            for conn in conns[at:at + OPEN_BATCH]:
                nursery.start_soon(conn.forever)
            for conn in conns[at:at + OPEN_BATCH]:
                await conn.first_try.wait()
        print(json.dumps({"ready": True, "open_s": round(time.monotonic() - t0, 2), **totals.window()}), flush=True)

        async def report() -> None:
            while True:
                await trio.sleep(spec["interval"])
                print(json.dumps(totals.window()), flush=True)

        nursery.start_soon(report)
        await trio.to_thread.run_sync(sys.stdin.read)  # until the parent closes stdin
        print(json.dumps({"final": True, **totals.window()}), flush=True)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main, json.loads(sys.argv[1]))
