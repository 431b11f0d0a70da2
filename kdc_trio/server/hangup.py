"""One task for the whole process notices the clients of idle streams going away.

An SSE client sends nothing once its request is in: the only thing to read on its socket is
the end (EOF, a reset) or stray bytes. A reader task per stream to notice that cost ~3 KiB per
idle connection (a task, its coroutine frames, an epoll registration in trio). `HangupWatch`
does it for every stream with one task and one epoll set of its own (Linux): the task waits
for that set to be readable in trio's loop, then reads each ready socket without blocking; EOF,
an error or more than `max_stray` stray bytes calls the stream's `on_gone` (which closes its
outbox: the stream's writer wakes and ends) at once, as the reader task did.

A WebSocket's client does send (pings, pongs, events), so its socket must be read and its frames
parsed: `notify` registers it to be told instead (one-shot): when the socket is readable,
`on_readable` is called (it wakes the connection's one task, which reads it without blocking)
and the socket is not watched again until that task, having read all there was, calls `rearm`.
An idle Socket.IO socket so holds no reader task parked in `receive_some`.

Where there is no epoll (not Linux) or no plain socket (TLS, a test's memory stream), `watch`
and `notify` return False and the caller keeps its own reader task.
"""

from __future__ import annotations

import logging
import select
import socket
from typing import Callable

import trio

from kdc_trio.server.io import RECV_SIZE

log = logging.getLogger("kdc_trio.server")

# Readiness events one poll takes at most; the rest are taken on the next round.
POLL_BATCH = 1024
_EVENTS = getattr(select, "EPOLLIN", 0) | getattr(select, "EPOLLRDHUP", 0)
_ONESHOT = _EVENTS | getattr(select, "EPOLLONESHOT", 0)


class _Watched:
    __slots__ = ("sock", "on_gone", "stray")

    def __init__(self, sock: socket.socket, on_gone: Callable[[], None]) -> None:
        self.sock = sock
        self.on_gone = on_gone
        self.stray = 0  # bytes read from a client that should send none


class _Notified:
    __slots__ = ("sock", "on_readable")

    def __init__(self, sock: socket.socket, on_readable: Callable[[], None]) -> None:
        self.sock = sock
        self.on_readable = on_readable


class HangupWatch:
    __slots__ = ("max_stray", "_ep", "_watched", "_running")

    def __init__(self, max_stray: int) -> None:
        self.max_stray = max_stray
        self._ep = select.epoll() if hasattr(select, "epoll") else None
        self._watched: dict[int, _Watched | _Notified] = {}
        self._running = False

    def watch(self, sock: socket.socket | None, on_gone: Callable[[], None]) -> bool:
        """Call `on_gone` (once) when `sock`'s client goes; False when this cannot watch it (the
        caller then reads the socket itself). Call `unwatch` before the socket is closed."""
        return self._register(sock, _EVENTS, _Watched, on_gone)

    def notify(self, sock: socket.socket | None, on_readable: Callable[[], None]) -> bool:
        """Call `on_readable` when `sock` is readable (data, EOF or an error), once: `rearm` for
        the next time. False when this cannot (the caller reads the socket in a task of its own).
        Call `unwatch` before the socket is closed."""
        return self._register(sock, _ONESHOT, _Notified, on_readable)

    def _register(self, sock: socket.socket | None, events: int,
                  entry: "type[_Watched] | type[_Notified]", callback: Callable[[], None]) -> bool:
        if self._ep is None or not self._running or sock is None:
            return False
        fd = sock.fileno()
        if fd < 0 or fd in self._watched:
            return False
        try:
            self._ep.register(fd, events)
        except OSError:
            return False
        self._watched[fd] = entry(sock, callback)
        return True

    def rearm(self, sock: socket.socket) -> None:
        """Watch a `notify` socket again (its reader found it drained): a socket readable by
        now is reported at once (level-triggered)."""
        fd = sock.fileno()
        w = self._watched.get(fd)
        if w is not None and w.sock is sock and self._ep is not None:
            try:
                self._ep.modify(fd, _ONESHOT)
            except OSError:  # closed meanwhile: its owner finds out by reading
                pass

    def unwatch(self, sock: socket.socket) -> None:
        w = self._watched.get(sock.fileno())
        if w is not None and w.sock is sock:
            self._forget(sock.fileno())

    def _forget(self, fd: int) -> None:
        del self._watched[fd]
        try:
            self._ep.unregister(fd)  # type: ignore[union-attr]
        except OSError:  # already gone from the set (the socket was closed)
            pass

    def __len__(self) -> int:
        return len(self._watched)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The watching task (until cancelled). Without epoll it only sleeps: `watch` says False."""
        if self._ep is None:
            task_status.started()
            await trio.sleep_forever()
        ep = self._ep
        self._running = True
        try:
            task_status.started()
            while True:
                await trio.lowlevel.wait_readable(ep.fileno())
                for fd, _ in ep.poll(0, POLL_BATCH):
                    self._readable(fd)
        finally:
            self._running = False
            for fd in list(self._watched):  # by fd: a socket closed meanwhile has fileno() -1
                self._forget(fd)
            trio.lowlevel.notify_closing(ep.fileno())
            ep.close()
            self._ep = None

    def _readable(self, fd: int) -> None:
        w = self._watched.get(fd)
        if w is None:
            return
        if type(w) is _Notified:  # disarmed (one-shot) until its reader calls rearm
            try:
                w.on_readable()
            except Exception:
                log.exception("readable callback failed")
            return
        try:
            data = w.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset: gone
            data = b""
        if data:
            w.stray += len(data)
            if w.stray <= self.max_stray:
                return
        self._forget(fd)
        try:
            w.on_gone()
        except Exception:  # a bug in the callback must not end the watch of every other stream
            log.exception("hang-up callback failed")
