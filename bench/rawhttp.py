"""A minimal HTTP/1.1 response reader for raw-socket clients (the fuzzers pipeline requests and
must see every response as the server framed it; the soak's polling clients keep one connection).

`ResponseParser.feed(bytes)` returns the responses completed so far; a response whose body is
an event stream (`text/event-stream`, or a 101 upgrade) is returned at its head with
`streaming=True` and the parser stops there (what follows is not HTTP).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

MAX_HEAD = 64 * 1024


class BadResponse(Exception):
    """The server's bytes are not an HTTP/1.1 response (a finding for the fuzzers)."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    streaming: bool = False
    raw_head: bytes = field(default=b"", repr=False)

    @property
    def closes(self) -> bool:
        return self.headers.get("connection", "").lower() == "close"


class ResponseParser:
    def __init__(self) -> None:
        self.buf = bytearray()
        self.stopped = False  # a streaming response or a 101: the rest is not HTTP
        self._head: Response | None = None
        self._need = -1  # body bytes still expected (content-length), or -2 chunked
        self.no_body: list[bool] = []  # per request in order, when known: True for HEAD (no body follows)
        self.answered = 0

    def feed(self, data: bytes) -> list[Response]:
        self.buf += data
        out = []
        while not self.stopped:
            r = self._next()
            if r is None:
                break
            out.append(r)
        return out

    def _next(self) -> Response | None:
        if self._head is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    raise BadResponse("response head too large")
                return None
            head = bytes(self.buf[:end])
            del self.buf[:end + 4]
            lines = head.split(b"\r\n")
            parts = lines[0].split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
                raise BadResponse(f"bad status line {lines[0][:80]!r}")
            headers = {}
            for line in lines[1:]:
                k, sep, v = line.partition(b":")
                if not sep:
                    raise BadResponse(f"bad header line {line[:80]!r}")
                headers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
            resp = Response(int(parts[1]), headers, raw_head=head)
            if 100 <= resp.status < 200 and resp.status != 101:
                return self._next()  # interim (100 Continue): the final response follows
            if resp.status == 101 or headers.get("content-type", "").startswith("text/event-stream"):
                resp.streaming = True
                self.stopped = True
                return resp
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self._need = -2
            else:
                self._need = int(headers.get("content-length", "0") or 0)
            if resp.status in (204, 304) or 100 <= resp.status < 200:
                self._need = 0
            self._head = resp
        resp = self._head
        if self._need > 0 and self.answered < len(self.no_body) and self.no_body[self.answered]:
            # A HEAD's answer has no body, unless the server could not parse the request as a HEAD
            # (e.g. an illegal request line): then its error body follows. Tell by what comes next.
            if len(self.buf) < 7:
                return None
            if self.buf.startswith(b"HTTP/1."):
                self._need = 0
        if self._need >= 0:
            if len(self.buf) < self._need:
                return None
            resp.body = bytes(self.buf[:self._need])
            del self.buf[:self._need]
        else:
            body = self._chunked()
            if body is None:
                return None
            resp.body = body
        self._head = None
        self.answered += 1
        return resp

    def _chunked(self) -> bytes | None:
        pos, body = 0, bytearray()
        while True:
            eol = self.buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(bytes(self.buf[pos:eol]).split(b";")[0] or b"0", 16)
            if size == 0:
                if len(self.buf) < eol + 4:
                    return None
                if self.buf[eol + 2:eol + 4] == b"\r\n":
                    end = eol + 4
                else:  # trailers
                    idx = self.buf.find(b"\r\n\r\n", eol + 2)
                    if idx < 0:
                        return None
                    end = idx + 4
                del self.buf[:end]
                return bytes(body)
            if len(self.buf) < eol + 2 + size + 2:
                return None
            body += self.buf[eol + 2:eol + 2 + size]
            pos = eol + 2 + size + 2


def request_bytes(method: str, target: str, host: str, *, body: bytes = b"",
                  headers: list[tuple[str, str]] = ()) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


class HTTPClient:
    """One kept-alive connection, one request at a time (the soak's polling clients)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.stream: trio.SocketStream | None = None
        self.parser = ResponseParser()
        self._lock = trio.Lock()  # one request at a time, whichever task asks

    async def request(self, method: str, target: str, *, body: bytes = b"",
                      headers: list[tuple[str, str]] = ()) -> Response:
        async with self._lock:
            return await self._request(method, target, body, headers)

    async def _request(self, method: str, target: str, body: bytes, headers) -> Response:
        reused = self.stream is not None
        if self.stream is None:
            self.stream = await trio.open_tcp_stream(self.host, self.port)
            self.parser = ResponseParser()
        try:
            await self.stream.send_all(request_bytes(method, target, self.host, body=body, headers=headers))
            data = await self.stream.receive_some(1 << 16)
        except (trio.BrokenResourceError, OSError):
            data = b""
        if not data and reused:
            # the server closed the idle kept-alive connection first (its keep-alive timeout): retry once
            await self.aclose()
            return await self._request(method, target, body, headers)
        while True:
            if not data:
                await self.aclose()
                raise ConnectionError("server closed the connection")
            got = self.parser.feed(data)
            if got:
                resp = got[0]
                if resp.closes:
                    await self.aclose()
                return resp
            data = await self.stream.receive_some(1 << 16)

    async def aclose(self) -> None:
        if self.stream is not None:
            stream, self.stream = self.stream, None
            await stream.aclose()
