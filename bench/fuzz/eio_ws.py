"""Fuzz target `eio-ws`: Engine.IO over WebSocket — the framing (RFC 6455 violations: opcodes,
reserved bits, unmasked and oversized frames, fragmented control frames, bad UTF-8, bad close
codes, lengths up to 2^63) and the Engine.IO packets inside valid frames (mutated types, probes,
upgrades out of place, binary). Each connection: up to 16 inputs, a frame-level violation last
half the time, then a sentinel ping (see wsgen)."""

from __future__ import annotations

import random

from bench.fuzz.driver import Ctx
from bench.fuzz.mutators import mutate_bytes
from bench.fuzz.wsgen import BINARY, HEARTBEAT_ENV, WSSession, frame, malformed, text

name = "eio-ws"
env: dict[str, str] = dict(HEARTBEAT_ENV)

PACKETS = [b"2", b"3", b"4hello", b"4", b"6", b"5", b"2probe", b"3probe", b"1", b"0", b"4" + b"x" * 1000,
           b'40{"token":"x"}', b"42[\"ping\"]", b"7", b"9", b"", b"b4AQID", b"4\x1e4"]


def one(rng: random.Random) -> bytes:
    c = rng.random()
    if c < 0.35:
        return text(rng.choice(PACKETS))
    if c < 0.85:
        return text(mutate_bytes(rng, rng.choice(PACKETS), others=PACKETS))
    if c < 0.95:
        return frame(BINARY, rng.randbytes(rng.choice((0, 1, 10, 1000))))
    return text(mutate_bytes(rng, rng.choice(PACKETS))) * rng.randint(2, 50)


async def connection(ctx: Ctx, rng: random.Random) -> None:
    ws = await WSSession.open(ctx, rng)
    if ws is None:
        return
    opened = await ws.recv_text(b"0")
    if opened is None:
        ctx.record("no_open_packet")
        await ws.stream.aclose()
        return
    inputs = [one(rng) for _ in range(rng.randint(1, 16))]
    if rng.random() < 0.5:
        inputs.append(malformed(rng, rng.choice(PACKETS)))
    await ws.batch(inputs)
