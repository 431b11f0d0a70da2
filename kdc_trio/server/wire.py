"""A connection's outgoing bytes: sends under the write deadline, and write-through.

Every write of a connection goes through its `Wire`, in order. Two ways in:

- `send` (async): the connection's own tasks (a writer loop, a reply) — under
  `KDC_WRITE_TIMEOUT_S` for every PROGRESS_BYTES of it; a client that stops reading gets
  WriteDeadline, one that went away ClientGone. Bytes a write-through left behind go out first.
- `write_nowait` (sync, never blocks): write-through, for a caller that is not the connection's
  task (the relay fanning an event out, in the producer's own call). Allowed only while
  `can_write_now()`: no send under way and nothing pending, so bytes keep their order. It makes
  one non-blocking `send` on the raw socket; what the socket does not take becomes `pending`,
  and `on_pending` wakes the connection's writer task, which sends it with `send` — under the
  write deadline, so a stalled client is dropped on time exactly as before. Until that send has
  finished, `can_write_now()` is False and events queue in the connection's outbox as usual.

Write-through saves, per event, the writer task's wake-up, its cancel scope and trio's send_all
around what is one `send(2)` anyway. It needs a plain TCP socket (not TLS, not a test's memory
stream): without one `can_write_now()` is always False and everything goes through `send`.
"""

from __future__ import annotations

from typing import Callable

import trio

from kdc_trio.server.io import ClientGone, WriteDeadline
from kdc_trio.util.raw_socket import raw_socket

# The write deadline covers each piece of this size of a write, not the whole write: a client
# that keeps reading, only slower than its backlog drains (a fan-out burst to a slow reader), is
# not dropped because its backlog is long; one that stops reading still is, one deadline after
# the last piece it took. 64 KiB: well under a socket's send buffer, so a stalled reader is found
# about one deadline after its buffers fill; large enough that a piece costs nothing per event.
PROGRESS_BYTES = 64 << 10


class Wire:
    __slots__ = ("_stream", "_sock", "timeout", "_busy", "pending", "on_pending", "written_through")

    def __init__(self, stream: trio.abc.SendStream, timeout: float, *, write_through: bool = True) -> None:
        self._stream = stream
        self._sock = raw_socket(stream) if write_through else None
        self.timeout = timeout
        self._busy = False  # a `send` is under way (it may be parked on a full socket)
        self.pending: bytes | None = None  # what a write-through could not send; `send` sends it first
        self.on_pending: Callable[[], None] | None = None  # wakes the task that will `send` it
        self.written_through = 0  # write-throughs made (a writer's heartbeat counts them as traffic)

    @property
    def enabled(self) -> bool:
        """Whether write-through is possible at all (a plain TCP socket, the setting on)."""
        return self._sock is not None

    def can_write_now(self) -> bool:
        return self._sock is not None and not self._busy and self.pending is None

    def write_nowait(self, data: bytes) -> None:
        """Write-through (only when `can_write_now()`): one non-blocking send; the rest is left
        `pending` for the writer task (woken by `on_pending`). Never blocks, never raises: a
        broken connection leaves everything pending and the writer's `send` reports it."""
        self.written_through += 1
        try:
            n = self._sock.send(data)  # type: ignore[union-attr]
        except OSError:  # BlockingIOError (nothing fits now), or the connection broke
            n = 0
        if n < len(data):
            self.pending = data[n:]
            if self.on_pending is not None:
                self.on_pending()

    async def send(self, data: bytes) -> None:
        """Write `data` (after anything pending); raises WriteDeadline when the client takes no
        piece of it (PROGRESS_BYTES) within the write deadline, ClientGone when the connection is
        lost."""
        if not data and self.pending is None:
            return
        self._busy = True
        try:
            if self.pending is not None:
                await self._send_all(self.pending)
                self.pending = None
            if data:
                await self._send_all(data)
        finally:
            self._busy = False

    async def _send_all(self, data: bytes) -> None:
        n = len(data)
        view = memoryview(data) if n > PROGRESS_BYTES else None
        for at in range(0, n, PROGRESS_BYTES):
            # A bare CancelScope: trio.move_on_after's wrapper costs more than the send.
            with trio.CancelScope(deadline=trio.current_time() + self.timeout) as scope:
                try:
                    await self._stream.send_all(data if view is None else view[at:at + PROGRESS_BYTES])
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    raise ClientGone("connection lost") from exc
            if scope.cancelled_caught:
                raise WriteDeadline(f"write deadline ({self.timeout}s) passed: client not reading")
