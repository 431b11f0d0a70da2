"""A tiny TCP proxy in threads (usable from trio, asyncio or a browser test) that can cut every
connection it carries, and refuse new ones for a while: a real dropped connection, not a mock."""

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
            threading.Thread(target=self._pump, args=(down, up), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, down), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(CHUNK):
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

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.drop_all()
