"""A bare WebSocket client (wsproto over a trio TCP stream) for protocol-level tests."""

from __future__ import annotations

from dataclasses import dataclass

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, RejectConnection, Request, TextMessage


async def open_tcp(host: str, port: int, rcvbuf: int | None = None) -> trio.SocketStream:
    """A TCP stream; with `rcvbuf`, SO_RCVBUF is set before connecting (the window it offers)."""
    if rcvbuf is None:
        return await trio.open_tcp_stream(host, port)
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, rcvbuf)
    await sock.connect((host, port))
    return trio.SocketStream(sock)


@dataclass
class Closed:
    code: int
    reason: str


class RawWS:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self._pending: list[str | bytes | Closed] = []
        self._parts: list = []
        self.closed: Closed | None = None

    @classmethod
    async def connect(cls, base_url: str, target: str, *, timeout: float = 5.0,
                      rcvbuf: int | None = None) -> "RawWS":
        """`rcvbuf`: a small SO_RCVBUF set before connecting, for a client that reads slowly."""
        host, port = base_url.rsplit("//", 1)[1].rsplit(":", 1)
        with trio.fail_after(timeout):
            self = cls(await open_tcp(host, int(port), rcvbuf))
            await self.stream.send_all(self.ws.send(Request(host=f"{host}:{port}", target=target)))
            while True:
                data = await self.stream.receive_some(65536)
                if not data:
                    raise ConnectionError("closed during the WebSocket handshake")
                self.ws.receive_data(data)
                for ev in self.ws.events():
                    if isinstance(ev, AcceptConnection):
                        self._drain_events()
                        return self
                    if isinstance(ev, RejectConnection):
                        raise ConnectionError(f"WebSocket handshake refused: {ev.status_code}")

    def _drain_events(self) -> None:
        for ev in self.ws.events():
            if isinstance(ev, (TextMessage, BytesMessage)):
                self._parts.append(ev.data)
                if ev.message_finished:
                    joined = "".join(self._parts) if isinstance(ev, TextMessage) else b"".join(self._parts)
                    self._parts = []
                    self._pending.append(joined)
            elif isinstance(ev, CloseConnection):
                self.closed = Closed(ev.code, ev.reason)
                self._pending.append(self.closed)

    async def send(self, message: str | bytes) -> None:
        event = TextMessage(data=message) if isinstance(message, str) else BytesMessage(data=message)
        await self.stream.send_all(self.ws.send(event))

    async def recv(self, timeout: float = 5.0, *, max_bytes: int = 65536, pace_s: float = 0.0) -> str | bytes | Closed:
        """The next message, or `Closed` once the server closed (repeatedly after that).
        A slow reader reads at most `max_bytes` per `pace_s`."""
        with trio.fail_after(timeout):
            while not self._pending:
                if self.closed is not None:
                    return self.closed
                if pace_s:
                    await trio.sleep(pace_s)
                data = await self.stream.receive_some(max_bytes)
                if not data:
                    self.closed = self.closed or Closed(1006, "connection lost")
                    return self.closed
                self.ws.receive_data(data)
                self._drain_events()
            return self._pending.pop(0)

    async def recv_until(self, pred, timeout: float = 5.0) -> list[str | bytes | Closed]:
        """Messages up to and including the first that satisfies `pred` (pings answered)."""
        got = []
        with trio.fail_after(timeout):
            while True:
                m = await self.recv(timeout)
                got.append(m)
                if m == "2":
                    await self.send("3")
                if pred(m) or isinstance(m, Closed):
                    return got

    async def aclose(self) -> None:
        await self.stream.aclose()
