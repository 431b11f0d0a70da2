"""Fuzz target `eio-polling`: Engine.IO HTTP long-polling — mutated handshakes (EIO, transport,
sid, method) and POST payloads: `\x1e`-separated records of mutated packets (types, probes,
`b`-base64 binary with bad base64, empty records, thousands of no-ops, upgrade packets out of
place). Each connection: one handshake for a sid, then up to 16 POSTs pipelined (each must get
its own answer), and a closing `1`."""

from __future__ import annotations

import json
import random

from bench.fuzz.driver import Ctx, status_class
from bench.fuzz.httpgen import Req, mutate_framed, pipeline
from bench.fuzz.mutators import mutate_bytes
from bench.rawhttp import HTTPClient

name = "eio-polling"
env: dict[str, str] = {}

EIO = b"/socket.io/?EIO=4&transport=polling"
RECORDS = [b"2", b"3", b"4hello", b"4", b"6", b"5", b"1", b"40", b'40{"bearer_token":"x"}', b"42[\"ping\"]",
           b"bAQID", b"b!!!", b"b", b"2probe", b"0", b"", b"4" + "é".encode() * 10, b"7"]


def payload(rng: random.Random) -> bytes:
    recs = [rng.choice(RECORDS) for _ in range(rng.choice((1, 1, 2, 3, 10)))]
    if rng.random() < 0.05:
        recs = [b"6"] * rng.choice((1000, 20000))  # a flood of no-ops in one POST
    body = b"\x1e".join(recs)
    return mutate_bytes(rng, body, others=RECORDS) if rng.random() < 0.6 else body


def query_mutation(rng: random.Random, sid: bytes) -> bytes:
    target = EIO + b"&sid=" + sid
    return mutate_bytes(rng, target).replace(b" ", b"%20").replace(b"\r", b"").replace(b"\n", b"") or b"/"


async def connection(ctx: Ctx, rng: random.Random) -> None:
    client = HTTPClient(ctx.host, ctx.port)
    try:
        hs = await client.request("GET", EIO.decode())
        ctx.record(status_class(hs.status), EIO)
    finally:
        await client.aclose()
    if hs.status != 200 or not hs.body.startswith(b"0"):
        return
    sid = json.loads(hs.body[1:])["sid"].encode()
    reqs = []
    for _ in range(rng.randint(1, 16)):
        c = rng.random()
        if c < 0.8:
            reqs.append(Req(b"POST", EIO + b"&sid=" + sid, [(b"Content-Type", b"text/plain;charset=UTF-8")],
                            payload(rng)))
        elif c < 0.9:
            reqs.append(Req(rng.choice((b"POST", b"PUT", b"DELETE")), query_mutation(rng, sid), [], payload(rng)))
        else:
            r = mutate_framed(rng, Req(b"POST", EIO + b"&sid=" + sid, [], payload(rng)), RECORDS)
            # a GET on the sid is a long-poll: it legitimately waits up to pingInterval (25 s)
            reqs.append(Req(b"POST", r.target, r.headers, r.body, r.version, r.chunked) if r.method == b"GET" else r)
    reqs.append(Req(b"POST", EIO + b"&sid=" + sid, [], b"1"))
    await pipeline(ctx, rng, [r.serialize() for r in reqs])
