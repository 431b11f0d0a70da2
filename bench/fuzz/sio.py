"""Fuzz target `sio`: Socket.IO packets over a WebSocket — CONNECT with mutated auth, then events
(`chat_message` with attachments as binary frames, `conv_status.get`, `ping`, unknown events),
acks, binary placeholders that lie about their count, namespaces, deep and hostile JSON, and
bytes mutations of all of these. Each connection: the CONNECT (an input of its own, recorded
by its reply), up to 16 packets, then a sentinel ping (see wsgen)."""

from __future__ import annotations

import json
import random

from bench.fuzz.driver import Ctx
from bench.fuzz.mutators import dump, mutate_bytes, mutate_json
from bench.fuzz.wsgen import BINARY, HEARTBEAT_ENV, WSSession, frame, malformed, text

name = "sio"
env: dict[str, str] = dict(HEARTBEAT_ENV)

AUTHS = [{}, {"user_session_id": "nope"}, {"bearer_token": "a.b.c"}, {"tenant": "t", "project": "p"},
         {"last_event_id": "5"}]
EVENTS = [
    ["conv_status.get", {"conversation_id": "c1"}],
    ["ping"],
    ["unknown_event", 1, "two", {"three": [3]}],
    ["chat_message", {"message": {"text": "hi"}, "attachment_meta": []}],
]
RAW = [b"2", b"3[1]", b"1", b"0/other,", b"41", b"4", b"5", b"6", b'2/nsp,["x"]', b"21[\"ping\"]",
       b'51-["chat_message",{"message":{"text":"f"},"attachment_meta":[{"filename":"a"}]},{"_placeholder":true,"num":0}]',
       b'52-["x",{"_placeholder":true,"num":5}]', b'2["x",{"_placeholder":true,"num":0}]', b"2[]", b"2{}", b"2\"x\""]


def packet(rng: random.Random) -> list[bytes]:
    c = rng.random()
    if c < 0.45:
        ev = rng.choice(EVENTS)
        if ev[0] == "chat_message" and rng.random() < 0.7:
            ev = ["chat_message", {"message": {"text": "x"}, "attachment_meta": "bad"}]  # mostly refused: few turns
        body = mutate_json(rng, ev) if rng.random() < 0.8 else dump(ev)
        ack = str(rng.choice(("", "", "1", "4294967296", "-1"))).encode()
        return [text(b"42" + ack + body)]
    if c < 0.75:
        return [text(b"4" + mutate_bytes(rng, rng.choice(RAW), others=RAW))]
    if c < 0.9:
        return [text(b"4" + rng.choice(RAW)), frame(BINARY, rng.randbytes(rng.choice((0, 3, 100))))]
    return [text(b"4" + rng.choice(RAW))]


async def connection(ctx: Ctx, rng: random.Random) -> None:
    ws = await WSSession.open(ctx, rng)
    if ws is None:
        return
    if await ws.recv_text(b"0") is None:
        ctx.record("no_open_packet")
        await ws.stream.aclose()
        return
    auth = rng.choice(AUTHS)
    connect = b"40" + (mutate_json(rng, auth) if rng.random() < 0.3 else json.dumps(auth).encode())
    await ws.stream.send_all(text(connect))
    reply = await ws.recv_text(b"4")
    if reply is None:
        ctx.record(ws.ended or "eof", connect)
        return
    ctx.record("connect_ok" if reply.startswith(b"40") else "connect_error" if reply.startswith(b"44")
               else "connect_other", connect)
    inputs = [b"".join(packet(rng)) for _ in range(rng.randint(1, 16))]
    if rng.random() < 0.25:
        inputs.append(malformed(rng, b"42[\"ping\"]"))
    await ws.batch(inputs)
