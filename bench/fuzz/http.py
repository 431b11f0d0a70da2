"""Fuzz target `http`: the HTTP/1.1 server itself (framing, request line, headers, routing, REST).

Each connection carries 1–64 framed mutations of valid requests (pipelined; each must get its
own answer) and, half the time, one raw mutation last (versions, CL+TE, lying lengths, bad
chunks, bare LF, truncation, oversized lines), which may end the connection.
"""

from __future__ import annotations

import json
import random

from bench.fuzz.driver import Ctx
from bench.fuzz.httpgen import Req, mutate_framed, mutate_raw, pipeline

name = "http"
env: dict[str, str] = {}

JSON = (b"Content-Type", b"application/json")
SEEDS = [
    Req(b"GET", b"/health"),
    Req(b"GET", b"/ready"),
    Req(b"HEAD", b"/health"),
    Req(b"GET", b"/api/session", [(b"Authorization", b"Bearer abc.def.ghi")]),
    Req(b"GET", b"/api/session?bearer_token=x&user_session_id=nope"),
    Req(b"GET", b"/api/conv_status?conversation_id=c1"),
    Req(b"OPTIONS", b"/sse/chat", [(b"Origin", b"http://example.com"), (b"Access-Control-Request-Method", b"POST")]),
    Req(b"DELETE", b"/health"),
    Req(b"GET", b"/no/such/path?x=1&y=%zz"),
    Req(b"POST", b"/sse/conv_status.get", [JSON], json.dumps({"conversation_id": "c1", "stream_id": "s1"}).encode()),
    Req(b"POST", b"/health", [JSON], b"{}"),
    Req(b"GET", b"/health", [(b"Connection", b"keep-alive"), (b"Accept", b"*/*"), (b"Cookie", b"a=b; c=d")]),
    Req(b"GET", b"/health", [(b"Expect", b"100-continue")]),
]
RAW_SEEDS = [r.serialize() for r in SEEDS]


async def connection(ctx: Ctx, rng: random.Random) -> None:
    inputs = [mutate_framed(rng, rng.choice(SEEDS), RAW_SEEDS).serialize() for _ in range(rng.randint(1, 64))]
    if rng.random() < 0.5:
        inputs.append(mutate_raw(rng, rng.choice(SEEDS), RAW_SEEDS))
    await pipeline(ctx, rng, inputs)
