"""Fuzz target `sse`: the chat endpoints — POST /sse/chat (JSON and multipart, KDCube's
`external_events` too), POST /sse/conv_status.get, GET /sse/stream, GET /api/conv_status.

Bodies are structure-aware: JSON templates with one field replaced by a boundary or hostile value
(deep nesting, huge strings, lone surrogates, wrong types), multipart bodies with mutated parts,
names, boundaries and attachment metadata; then, sometimes, byte-level edits. A /sse/stream that
opens (200, `text/event-stream`) ends its connection's batch.
"""

from __future__ import annotations

import json
import random
from urllib.parse import quote

from bench.fuzz.driver import Ctx
from bench.fuzz.httpgen import Req, mutate_framed, mutate_raw, pipeline
from bench.fuzz.mutators import mutate_bytes, mutate_json, weird_value, dump

name = "sse"
env: dict[str, str] = {}

MESSAGES = [
    {"message": {"text": "hello"}},
    {"message": {"text": "hi", "conversation_id": "c1"}, "attachment_meta": []},
    {"message": "plain string", "conversation_id": "c2", "turn_id": "t1"},
    {"text": "top-level text"},
    {"external_events": [{"type": "event.user.prompt", "data": {"text": "hey"}},
                         {"type": "event.user.attachment.file", "data": {"file_index": 0, "filename": "a.txt"}}]},
    {"message": {"text": "x", "payload": {"a": [1, 2, {"b": None}]}}, "attachment_meta": [{"filename": "a.txt"}]},
]
CONV = [{"conversation_id": "c1", "stream_id": "s1"}, {"conversation_id": "c1"}, {}]
BOUNDARY = b"fuzzBoundary7MA4YWxkTrZu0gW"


def multipart(rng: random.Random) -> tuple[bytes, bytes]:
    """(content-type, body) of a form with message, attachment_meta, files; parts mutated."""
    parts = [(b"message", None, dump(rng.choice(MESSAGES).get("message", "m") if rng.random() < 0.5 else {"text": "m"})),
             (b"attachment_meta", None, dump([{"filename": "a.txt", "mime": "text/plain"}]))]
    for i in range(rng.choice((0, 1, 1, 2, 11))):
        parts.append((b"files", b"f%d.bin" % i, rng.randbytes(rng.choice((0, 10, 1000)))))
    if rng.random() < 0.3:
        parts.append((b"event_submission", None, mutate_json(rng, {"external_events": []})))
    if rng.random() < 0.6:
        k = rng.randrange(len(parts))
        n, f, v = parts[k]
        c = rng.randrange(4)
        parts[k] = (mutate_bytes(rng, n) if c == 0 else n, f if c != 1 else mutate_bytes(rng, f or b"x"),
                    json_or_bytes(rng, v) if c == 2 and f is None else mutate_bytes(rng, v), )
    boundary = BOUNDARY if rng.random() < 0.9 else mutate_bytes(rng, BOUNDARY)
    out = b""
    for n, f, v in parts:
        disp = b'form-data; name="' + n + b'"' + (b'; filename="' + f + b'"' if f is not None else b"")
        out += b"--" + boundary + b"\r\nContent-Disposition: " + disp + b"\r\n\r\n" + v + b"\r\n"
    out += b"--" + boundary + b"--\r\n"
    if rng.random() < 0.2:
        out = mutate_bytes(rng, out)
    return b"multipart/form-data; boundary=" + boundary, out


def json_or_bytes(rng: random.Random, v: bytes) -> bytes:
    try:
        return mutate_json(rng, json.loads(v))
    except (ValueError, RecursionError):
        return mutate_bytes(rng, v)


def q(value: object) -> str:
    return quote(str(value), safe="", errors="surrogatepass")


def query(rng: random.Random) -> bytes:
    params = {"stream_id": rng.choice(["s1", "s2", "", "x" * 300, "\u202e", "%00"])}
    if rng.random() < 0.3:
        params["user_session_id"] = rng.choice(["nope", "", "a" * 100, "../x"])
    if rng.random() < 0.2:
        params["bearer_token"] = rng.choice(["a.b.c", "eyJhbGciOiJub25lIn0.e30.", "x" * 5000])
    if rng.random() < 0.1:
        params[rng.choice(["tenant", "project", "project_events", "id_token"])] = str(weird_value(rng))[:200]
    return "&".join(f"{k}={q(v)}" for k, v in params.items()).encode()


def request(rng: random.Random) -> Req:
    c = rng.randrange(10)
    if c < 4:
        body = mutate_json(rng, rng.choice(MESSAGES)) if rng.random() < 0.9 else dump(rng.choice(MESSAGES))
        ctype = rng.choice([b"application/json"] * 8 + [b"text/plain", b"application/json; charset=latin-1"])
        return Req(b"POST", b"/sse/chat?" + query(rng), [(b"Content-Type", ctype)], body)
    if c < 6:
        ctype, body = multipart(rng)
        return Req(b"POST", b"/sse/chat?" + query(rng), [(b"Content-Type", ctype)], body)
    if c < 8:
        return Req(b"POST", b"/sse/conv_status.get?" + query(rng), [(b"Content-Type", b"application/json")],
                   mutate_json(rng, rng.choice(CONV)))
    if c == 8:
        return Req(b"GET", b"/api/conv_status?conversation_id=" + q(str(weird_value(rng))[:300]).encode()
                   + b"&" + query(rng))
    headers = [(b"Last-Event-ID", rng.choice([b"5", b"-1", b"99999999999999999999", b"abc", b""]))] \
        if rng.random() < 0.5 else []
    return Req(b"GET", b"/sse/stream?" + mutate_bytes(rng, query(rng)).replace(b" ", b"+").replace(b"\r", b"")
               .replace(b"\n", b"") if rng.random() < 0.3 else b"/sse/stream?" + query(rng), headers)


async def connection(ctx: Ctx, rng: random.Random) -> None:
    reqs = [request(rng) for _ in range(rng.randint(1, 32))]
    inputs = [(mutate_framed(rng, r, []) if rng.random() < 0.15 else r).serialize() for r in reqs]
    if rng.random() < 0.2:
        inputs.append(mutate_raw(rng, request(rng), []))
    # an opened stream ends the batch: at most one, last
    streams = [d for d in inputs if d.startswith(b"GET /sse/stream")]
    inputs = [d for d in inputs if not d.startswith(b"GET /sse/stream")] + streams[:1]
    await pipeline(ctx, rng, inputs)
