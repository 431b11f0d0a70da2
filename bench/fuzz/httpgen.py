"""HTTP/1.1 requests as parts (method, target, version, headers, body) and their mutations, and the
pipelined exchange every HTTP-shaped target uses.

A *framed* mutation changes what a request says but keeps it delimited (Content-Length follows
the mutated body, no CR/LF inside header values), so the server answers it and later requests on
the connection still count; a *raw* mutation edits the serialized bytes and may break framing,
so it goes last on its connection.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

import trio

from bench.fuzz.driver import Ctx, send_split, status_class
from bench.fuzz.mutators import mutate_bytes, pick_number
from bench.rawhttp import BadResponse, ResponseParser

METHODS = [b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE", b"get", b"G\xc3ET",
           b"", b"POST " * 3]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/9.9", b"HTTP/1.10", b"HTTP/0.9", b"http/1.1", b"HTTP/1"]


@dataclass
class Req:
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    version: bytes = b"HTTP/1.1"
    chunked: bool = False
    length: bytes | None = None  # a Content-Length that lies, when set

    def serialize(self, host: bytes = b"127.0.0.1") -> bytes:
        lines = [self.method + b" " + self.target + b" " + self.version, b"Host: " + host]
        lines += [k + b": " + v for k, v in self.headers]
        if self.chunked:
            lines.append(b"Transfer-Encoding: chunked")
            body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks(self.body)) + b"0\r\n\r\n"
        else:
            if self.body or self.method == b"POST" or self.length is not None:
                lines.append(b"Content-Length: " + (self.length if self.length is not None else b"%d" % len(self.body)))
            body = self.body
        return b"\r\n".join(lines) + b"\r\n\r\n" + body


def chunks(body: bytes) -> list[bytes]:
    if not body:
        return []
    step = max(1, len(body) // 3)
    return [body[i:i + step] for i in range(0, len(body), step)]


def clean(value: bytes) -> bytes:
    """A header value or target that keeps the request framed: no CR/LF (spaces kept)."""
    return value.replace(b"\r", b"").replace(b"\n", b"")


HEADER_NAMES = [b"Content-Type", b"Cookie", b"Authorization", b"X-ID-Token", b"Origin", b"Last-Event-ID",
                b"Accept", b"Connection", b"Expect", b"Upgrade", b"Range", b"X-Forwarded-For", b"Transfer-Encoding",
                b"Content-Length", b"Content-Encoding", b"Bad Header", b"", b"X-" + b"a" * 300]


def mutate_framed(rng: random.Random, req: Req, others: list[bytes]) -> Req:
    """One semantic change that keeps the request delimited."""
    c = rng.randrange(11)
    if c in (0, 1):
        return replace(req, target=clean(mutate_bytes(rng, req.target, others=others)).replace(b" ", b"%20") or b"/")
    if c == 2 and req.headers:
        hs = list(req.headers)
        i = rng.randrange(len(hs))
        hs[i] = (hs[i][0], clean(mutate_bytes(rng, hs[i][1])))
        return replace(req, headers=hs)
    if c == 3:
        name = rng.choice(HEADER_NAMES)
        if name in (b"Transfer-Encoding", b"Content-Length"):
            name = b"X-Not-" + name  # the framing headers are the raw mutations' job
        value = clean(rng.choice([b"", b"x" * rng.choice((10, 9000, 17000)), pick_number(rng), b"close",
                                  b"keep-alive, Upgrade", b"100-continue", b"websocket", b"\xff\xfe",
                                  b"__Secure-LATC=abc; __Secure-LITC=" + b"y" * 100, b"Bearer a.b.c"]))
        return replace(req, headers=[*req.headers, (name, value)])
    if c == 4:
        return replace(req, headers=req.headers * rng.choice((2, 50)))
    if c in (5, 6, 7):
        return replace(req, body=mutate_bytes(rng, req.body, others=others))
    if c == 8:
        return replace(req, chunked=True)
    if c == 9:
        return replace(req, method=rng.choice(METHODS[:7]))
    return replace(req, body=req.body + rng.randbytes(rng.randint(1, 64)))


def mutate_raw(rng: random.Random, req: Req, others: list[bytes]) -> bytes:
    """Edits that may break framing: versions, CL+TE, lying lengths, bad chunk sizes, bare LF, bytes."""
    c = rng.randrange(9)
    if c == 0:
        return replace(req, version=rng.choice(VERSIONS)).serialize()
    if c == 1:
        return replace(req, length=rng.choice([b"-1", b"99999999999", b"1e3", b"0x10", b"1, 2", b"+5", b" 5",
                                               b"%d" % (len(req.body) + rng.randint(1, 100)),
                                               b"%d" % max(0, len(req.body) - 1)])).serialize()
    if c == 2:
        data = replace(req, chunked=True).serialize()
        return data.replace(b"\r\n\r\n", b"\r\nContent-Length: 5\r\n\r\n", 1)
    if c == 3:
        data = replace(req, chunked=True).serialize()
        head, _, body = data.partition(b"\r\n\r\n")
        return head + b"\r\n\r\n" + mutate_bytes(rng, body)
    if c == 4:
        return req.serialize().replace(b"\r\n", b"\n")
    if c == 5:
        return req.serialize().replace(b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip, chunked") \
            if req.chunked else replace(req, headers=[*req.headers, (b"Transfer-Encoding", rng.choice(
                [b"gzip", b"identity", b"chunked, chunked", b"x"]))]).serialize()
    if c == 6:  # a request line or header far too long
        return replace(req, target=req.target + b"a" * rng.choice((16000, 70000))).serialize()
    if c == 7:
        return mutate_bytes(rng, req.serialize(), others=others, ops=rng.randint(1, 6))
    return req.serialize()[:rng.randrange(1, max(2, len(req.serialize())))]  # truncated


async def pipeline(ctx: Ctx, rng: random.Random, inputs: list[bytes], *, terminal_ok: bool = True) -> None:
    """Send `inputs` back to back on one connection (in split writes), half-close, read every
    response, and record one class per input: its status class; `closed` for the input at which
    the server closed without answering; later inputs are not counted (never reached the server's
    parser as requests). A streaming response (SSE 200, 101) ends the exchange."""
    stream = await ctx.open()
    parser = ResponseParser()
    parser.no_body = [d[:5].upper() == b"HEAD " for d in inputs]
    responses = []
    async with stream:
        async def write() -> None:
            try:
                for data in inputs:
                    await send_split(rng, stream, data)
                await stream.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass  # the server closed after an answer that said so; the reader counts it

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            try:
                while not parser.stopped:
                    try:
                        data = await stream.receive_some(1 << 16)
                    except (trio.BrokenResourceError, OSError):
                        data = b""
                    if not data:
                        break
                    responses += parser.feed(data)
            except BadResponse as exc:
                ctx.record("bad_response", f"{exc}: after {len(responses)} responses; server sent "
                           f"{bytes(parser.buf[:300])!r}; input {inputs[min(len(responses), len(inputs) - 1)][:300]!r}")
                nursery.cancel_scope.cancel()
                return
            nursery.cancel_scope.cancel()
    for i, data in enumerate(inputs):
        if i < len(responses):
            r = responses[i]
            ctx.record(status_class(r.status), data)
            if r.streaming:
                return
        else:
            ctx.record("closed", data)  # the server closed here without an answer (or after one that said so)
            return
