"""WebSocket frames built by hand (so they can be wrong) and the session every WebSocket target runs.

A batch of inputs (each one or more client frames) follows the handshake; then a sentinel ping
frame: a pong means the server read every frame before it, a close frame or EOF means it ended
the connection. Every input of the batch is recorded with the connection's outcome (`pong`,
`close:<code>`, `eof`); the driver's deadline makes a silent connection a `timeout`.
"""

from __future__ import annotations

import base64
import os
import random
import struct

import trio

from bench.fuzz.driver import Ctx, send_split
from bench.fuzz.mutators import mutate_bytes

TEXT, BINARY, CLOSE, PING, PONG, CONT = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0
SENTINEL = b"fuzz-sentinel"
# The WebSocket targets' server heartbeat: a frame whose header declares more bytes than were sent
# (a mutated length) legitimately keeps the server waiting for them, until Engine.IO's heartbeat
# ends the connection at pingInterval + pingTimeout (45 s by default, past the driver's 20 s
# deadline: one such "timeout" in 1,000,000 inputs). At 6 + 6 s a silent connection still ends
# well within the deadline, so a timeout is a real hang.
HEARTBEAT_ENV = {"KDC_SIO_PING_INTERVAL_MS": "6000", "KDC_SIO_PING_TIMEOUT_MS": "6000"}


def frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True, rsv: int = 0,
          length: int | None = None) -> bytes:
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    m = 0x80 if masked else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 1 << 16:
        head += bytes([m | 126]) + struct.pack("!H", n)
    else:
        head += bytes([m | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i & 3] for i, b in enumerate(payload))


def text(s: bytes) -> bytes:
    return frame(TEXT, s)


def malformed(rng: random.Random, payload: bytes) -> bytes:
    """One frame-level violation (RFC 6455): the server must close with a code, never hang."""
    c = rng.randrange(11)
    if c == 0:
        return frame(rng.choice((3, 4, 5, 6, 7, 0xB, 0xC, 0xF)), payload)
    if c == 1:
        return frame(TEXT, payload, rsv=rng.randint(1, 7))
    if c == 2:
        return frame(TEXT, payload, masked=False)
    if c == 3:
        return frame(PING, b"p" * rng.choice((126, 200)))
    if c == 4:
        return frame(PING, b"p", fin=False)
    if c == 5:
        return frame(CONT, payload)
    if c == 6:
        return frame(TEXT, payload, length=rng.choice((2**63 - 1, 2**32, 10**9, 70_000_000)))
    if c == 7:
        return frame(TEXT, rng.choice((b"4\xff\xfe", b"4\xed\xa0\x80", b"4\xc0\x80", b"4\xf4\x90\x80\x80")))
    if c == 8:
        return frame(CLOSE, rng.choice((b"\x03\xe8", b"\x00\x00", b"\x03\xe8\xff", b"\x0b\xb8", b"\x01", b"\x13\x88")))
    if c == 9:
        return frame(TEXT, payload, fin=False) + frame(TEXT, payload)  # a new message inside a fragmented one
    return mutate_bytes(rng, frame(TEXT, payload))


def handshake(host: str, target: bytes = b"/socket.io/?EIO=4&transport=websocket") -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (b"GET " + target + b" HTTP/1.1\r\nHost: " + host.encode() + b"\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")


class FrameReader:
    """Server frames (unmasked) from a byte stream."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buf += data
        out = []
        while len(self.buf) >= 2:
            op, n = self.buf[0] & 0x0F, self.buf[1] & 0x7F
            pos = 2
            if n == 126:
                if len(self.buf) < 4:
                    break
                n, pos = struct.unpack("!H", self.buf[2:4])[0], 4
            elif n == 127:
                if len(self.buf) < 10:
                    break
                n, pos = struct.unpack("!Q", self.buf[2:10])[0], 10
            if len(self.buf) < pos + n:
                break
            out.append((op, bytes(self.buf[pos:pos + n])))
            del self.buf[:pos + n]
        return out


class WSSession:
    """An open WebSocket to the server (after the 101), with its frame reader."""

    def __init__(self, ctx: Ctx, rng: random.Random, stream: trio.SocketStream) -> None:
        self.ctx, self.rng, self.stream = ctx, rng, stream
        self.reader = FrameReader()
        self.pending: list[tuple[int, bytes]] = []
        self.ended: str | None = None

    @classmethod
    async def open(cls, ctx: Ctx, rng: random.Random) -> "WSSession | None":
        stream = await ctx.open()
        await stream.send_all(handshake(ctx.host))
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = await stream.receive_some(1 << 16)
            if not data:
                await stream.aclose()
                ctx.record("handshake_eof")
                return None
            buf += data
        head, _, rest = buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            await stream.aclose()
            ctx.record("handshake_" + head[9:12].decode(errors="replace"))
            return None
        self = cls(ctx, rng, stream)
        self.pending += self.reader.feed(rest)
        return self

    async def recv(self) -> tuple[int, bytes] | None:
        """The next server frame; None at EOF (`ended` says how the connection ended)."""
        while not self.pending:
            try:
                data = await self.stream.receive_some(1 << 16)
            except (trio.BrokenResourceError, OSError):
                data = b""
            if not data:
                self.ended = self.ended or "eof"
                return None
            self.pending += self.reader.feed(data)
        op, payload = self.pending.pop(0)
        if op == CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            self.ended = f"close:{code}"
        return op, payload

    async def recv_text(self, prefix: bytes) -> bytes | None:
        while True:
            got = await self.recv()
            if got is None or got[0] == CLOSE:
                return None
            if got[0] == TEXT and got[1].startswith(prefix):
                return got[1]
            if got[0] == TEXT and got[1] == b"2":
                await self.stream.send_all(text(b"3"))

    async def batch(self, inputs: list[bytes]) -> None:
        """Send the inputs, then the sentinel ping; record each input with the outcome."""
        try:
            for data in inputs:
                await send_split(self.rng, self.stream, data)
            await self.stream.send_all(frame(PING, SENTINEL))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        outcome = None
        while outcome is None:
            got = await self.recv()
            if got is None or got[0] == CLOSE:
                outcome = self.ended or "eof"
            elif got[0] == PONG and got[1] == SENTINEL:
                outcome = "pong"
            elif got[0] == TEXT and got[1] == b"2":
                try:
                    await self.stream.send_all(text(b"3"))
                except (trio.BrokenResourceError, OSError):
                    pass
        for data in inputs:
            self.ctx.record(outcome, data)
        await self.stream.aclose()
