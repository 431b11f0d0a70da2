"""A tiny TCP proxy in threads (usable from trio, asyncio or a browser test) that can cut every
connection it carries, and refuse new ones for a while: a real dropped connection, not a mock.

It can also make connections go silent (`freeze`): nothing forwarded either way while both
sockets stay open — a half-open path, as a dead NAT entry or a pulled cable leaves it."""

from __future__ import annotations

import socket
import threading
import time

# One relay read; small enough that a cut lands between SSE events.
CHUNK = 16 * 1024


class TCPProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._refuse_until = 0.0
        self._sent: dict[socket.socket, bytearray] = {}  # first bytes each client sent (for freeze)
        self._frozen: set[socket.socket] = set()
        self.accepted = 0
        self.dropped = 0
        self._closed = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                down, _ = self._listener.accept()
            except OSError:
                return
            if time.monotonic() < self._refuse_until:
                down.close()  # the "server" is away: the client sees its connection end at once
                continue
            try:
                up = socket.create_connection(self.upstream, timeout=5)
                up.settimeout(None)
            except OSError:
                down.close()
                continue
            with self._lock:
                self._pairs.append((down, up))
                self.accepted += 1
            self._sent[down] = bytearray()
            threading.Thread(target=self._pump, args=(down, up, down), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, down, down), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, client: socket.socket) -> None:
        sent = self._sent[client] if src is client else None
        try:
            while data := src.recv(CHUNK):
                if client in self._frozen:
                    return  # silent: forward nothing, close nothing
                if sent is not None and len(sent) < CHUNK:
                    sent += data
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop_all(self, *, refuse_for_s: float = 0.0) -> int:
        """Cut every open connection (both sides see it end); with `refuse_for_s`, new connections
        are closed on arrival for that long. Returns how many were cut."""
        self._refuse_until = time.monotonic() + refuse_for_s
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for down, up in pairs:
            for s in (down, up):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
        self.dropped += len(pairs)
        return len(pairs)

    def freeze(self, match: bytes) -> int:
        """Silence every open connection whose client has sent `match` (e.g. b"SUBSCRIBE"); new
        connections are carried as before. Returns how many went silent."""
        with self._lock:
            hit = [down for down, _ in self._pairs if match in self._sent.get(down, b"")]
        self._frozen.update(hit)
        return len(hit)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.drop_all()
