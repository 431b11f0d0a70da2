"""The accept loop and the handler nursery (trio.serve_listeners' shape), and graceful shutdown.

`Server.serve` listens, runs one task per connection in the handler nursery, and on
`drain()` stops accepting, tells streams to finish (`draining` event: SSE sends
`server_shutdown`, Socket.IO closes), closes idle kept-alive connections at once, and
cancels whatever is left after `KDC_SHUTDOWN_GRACE_S`.
"""

from __future__ import annotations

import errno
import logging
import resource
from typing import Callable

import trio

from kdc_trio.config import Settings
from kdc_trio.server.budget import BodyBudget
from kdc_trio.server.connection import MAX_STRAY_BYTES, Handler, HTTPConnection
from kdc_trio.server.hangup import HangupWatch
from kdc_trio.server.request import Request

log = logging.getLogger("kdc_trio.server")

# Accept errors that mean "out of a resource for now": log, wait, retry (as trio does).
ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
# How long to back off after such an error; short so we recover as soon as fds free up.
ACCEPT_CAPACITY_SLEEP_S = 0.1
# listen() backlog for SO_REUSEPORT listeners; trio's own default for open_tcp_listeners.
LISTEN_BACKLOG = 0xFFFF


async def reuse_port_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """Listeners with SO_REUSEPORT, so several processes (`serve --workers N`) share one port and
    the kernel spreads new connections over them."""
    listeners = []
    for family, type_, proto, _, addr in await trio.socket.getaddrinfo(
            host, port, type=trio.socket.SOCK_STREAM, flags=trio.socket.AI_PASSIVE):
        sock = trio.socket.socket(family, type_, proto)
        try:
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
            if family == trio.socket.AF_INET6:
                sock.setsockopt(trio.socket.IPPROTO_IPV6, trio.socket.IPV6_V6ONLY, 1)
            await sock.bind(addr)
            sock.listen(LISTEN_BACKLOG)
        except BaseException:
            sock.close()
            raise
        listeners.append(trio.SocketListener(sock))
    return listeners


# Descriptors kept free for everything that is not a client connection (listeners, Redis
# connections, log files, the accept of a connection we then refuse): a tenth of the file
# limit, at least this many. So the connection cap is reached before descriptors run out.
FD_RESERVE_MIN = 32
# The connection cap when the file limit is unlimited and the setting says "derive".
UNLIMITED_FILES_CAP = 65536


def connection_caps(settings: Settings, nofile: int | None = None) -> tuple[int, int, str | None]:
    """(connections per process, per client address, a warning or None), from the settings and
    RLIMIT_NOFILE: `KDC_MAX_CONNECTIONS` 0 means derived from the limit, and an explicit value
    that would let descriptors run out first is clamped (the warning says so);
    `KDC_MAX_CONNECTIONS_PER_ADDRESS` 0 means half the process cap."""
    if nofile is None:
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if nofile == resource.RLIM_INFINITY or nofile < 0:
        ceiling = UNLIMITED_FILES_CAP
    else:
        ceiling = max(1, nofile - max(FD_RESERVE_MIN, nofile // 10))
    wanted = settings.max_connections
    warning = None
    if not wanted:
        cap = ceiling
    elif wanted > ceiling and nofile != resource.RLIM_INFINITY:
        cap = ceiling
        warning = (f"KDC_MAX_CONNECTIONS={wanted} would run out of file descriptors first (RLIMIT_NOFILE "
                   f"{nofile}); clamped to {cap}. Raise the limit (ulimit -n) to allow more.")
    else:
        cap = wanted
    per_address = settings.max_connections_per_address or max(1, cap // 2)
    return cap, min(per_address, cap), warning


class Server:
    def __init__(self, settings: Settings, handler: Handler,
                 cors: Callable[[Request], list[tuple[str, str]]] | None = None) -> None:
        self.settings = settings
        self.handler = handler
        self.cors = cors or (lambda request: [])
        self.draining = trio.Event()
        self.connections = 0  # counted at accept, before the connection's task runs
        self.per_address: dict[str, int] = {}  # open connections by client address; 0s removed
        self.refused = 0  # accepted and closed at once: a cap was reached
        self.accept_errors = 0
        self.body_budget = BodyBudget(settings.max_body_bytes_in_flight)
        # Notices the clients of idle streams going away, one task for all (server/hangup.py).
        self.hangups = HangupWatch(MAX_STRAY_BYTES)
        self.max_connections, self.max_per_address, warning = connection_caps(settings)
        if warning:
            log.warning(warning)
        self._idle_scopes: set[trio.CancelScope] = set()
        # Called once when draining begins: a transport ends its long-lived streams from here
        # (one hook for all of them, not a task per stream waiting for `draining`).
        self.on_drain: list[Callable[[], None]] = []
        self.ports: list[int] = []

    def drain(self) -> None:
        """Begin graceful shutdown (idempotent)."""
        if not self.draining.is_set():
            log.info("draining: no new connections; streams get %ss", self.settings.shutdown_grace_s)
            self.draining.set()
            for scope in list(self._idle_scopes):
                scope.cancel()
            for hook in self.on_drain:
                hook()

    async def serve(self, *, task_status: trio.TaskStatus[list[int]] = trio.TASK_STATUS_IGNORED) -> None:
        if self.settings.reuse_port:
            listeners = await reuse_port_listeners(self.settings.host, self.settings.port)
        else:
            listeners = await trio.open_tcp_listeners(self.settings.port, host=self.settings.host)
        self.ports = sorted({ln.socket.getsockname()[1] for ln in listeners})
        try:
            async with trio.open_nursery() as watch:
                await watch.start(self.hangups.run)  # outlives every connection task
                async with trio.open_nursery() as handlers:
                    async with trio.open_nursery() as acceptors:
                        for ln in listeners:
                            acceptors.start_soon(self._accept_loop, ln, handlers)
                        log.info("listening on %s:%s (at most %s connections, %s per client address)",
                                 self.settings.host, self.ports[0], self.max_connections, self.max_per_address)
                        task_status.started(self.ports)
                        await self.draining.wait()
                        acceptors.cancel_scope.cancel()
                    for ln in listeners:
                        await ln.aclose()
                    handlers.cancel_scope.deadline = trio.current_time() + self.settings.shutdown_grace_s
                watch.cancel_scope.cancel()
        finally:
            for ln in listeners:
                await trio.aclose_forcefully(ln)

    async def _accept_loop(self, listener: trio.SocketListener, handlers: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno in ACCEPT_CAPACITY_ERRNOS:
                    self.accept_errors += 1
                    log.error("accept failed (%s); retrying in %ss", errno.errorcode.get(exc.errno, exc.errno),
                              ACCEPT_CAPACITY_SLEEP_S)
                    await trio.sleep(ACCEPT_CAPACITY_SLEEP_S)
                    continue
                raise
            try:
                peer = stream.socket.getpeername()
                address, client = peer[0], f"{peer[0]}:{peer[1]}"
            except OSError:
                address, client = "", None
            if (self.connections >= self.max_connections
                    or self.per_address.get(address, 0) >= self.max_per_address):
                self.refused += 1
                await trio.aclose_forcefully(stream)
                continue
            # Counted here, synchronously with the check: a burst of accepts cannot pass the
            # caps while the tasks that would have counted them wait to be scheduled.
            self.connections += 1
            self.per_address[address] = self.per_address.get(address, 0) + 1
            handlers.start_soon(self._run_connection, stream, address, client)

    def _release(self, address: str) -> None:
        self.connections -= 1
        left = self.per_address.get(address, 1) - 1
        if left > 0:
            self.per_address[address] = left
        else:
            self.per_address.pop(address, None)

    async def _run_connection(self, stream: trio.SocketStream, address: str, client: str | None) -> None:
        try:
            conn = HTTPConnection(stream, self.settings, self.handler, self.cors, self._idle_scopes, client,
                                  draining=self.draining, budget=self.body_budget, hangups=self.hangups)
            await conn.run()
        except Exception:
            log.exception("connection task crashed")  # a bug; this connection only
        except BaseExceptionGroup as group:  # Cancelled mixed with a bug: log the bug, let Cancelled go on
            bugs, rest = group.split(Exception)
            if bugs is not None:
                log.error("connection task crashed", exc_info=bugs)
            if rest is not None:
                raise rest
        finally:
            self._release(address)
            await trio.aclose_forcefully(stream)
