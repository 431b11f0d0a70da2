"""One RESP connection on a trio stream: `hiredis.pack_command` out, `hiredis.Reader` in.

A connection that was interrupted mid-command (cancelled, timed out, peer gone) is broken:
its reply stream is out of step, so it is closed and never reused.
"""

from __future__ import annotations

import ssl
from typing import Any, Sequence

import hiredis
import trio

from kdc_trio.errors import Unavailable
from kdc_trio.redis.url import RedisURL
from kdc_trio.util.raw_socket import raw_socket

# One network read. Not larger: a relaying gateway makes a few objects per pub/sub message of a
# read (its payload, its RelayMessage, its data's bytes, its SSE bytes), all freed once the
# read's events are written. From a 256 KiB read that is ~1.5 MB of small objects at once, which
# CPython's allocator takes from fresh 1 MiB arenas and hands back to the kernel when they empty:
# every read then paid ~140 page faults (zeroed pages), and the cyclic collector walked the
# read's messages while they were alive. From 64 KiB reads the arenas stay in use: relay receive
# (bench/redis_relay_rate.py, gateway pinned to one core) 0.53-0.85 -> 0.34-0.36 CPU s/100k
# events, minor faults 75,000 -> ~100 per 400k events; 32 KiB and 128 KiB measured worse.
READ_SIZE = 64 * 1024
# hiredis' reader moves what it has not parsed yet to the front of its buffer each time a reply is
# taken past its first KiB of parsed bytes: fed a whole 256 KiB read, a stream of small replies
# (pub/sub messages of ~300 B) pays a move of the read's remainder every few replies, ~30 times
# the read's size in copying (23 % of a relaying gateway's CPU). Fed in pieces of this size, each
# move is short: 1.2 -> 0.38 us per message parsed (`receive` + `feed_piece`, the pub/sub reader).
FEED_SIZE = 8 * 1024


class RedisError(Exception):
    """The server answered with an error reply (its text is the message)."""


class RedisConnectionError(ConnectionError, Unavailable):
    """The connection could not be opened, or it was lost (an HTTP request failing on it gets 503)."""


class RedisConnectFailed(RedisConnectionError):
    """The connection could not be opened: nothing was sent on it (safe to retry elsewhere)."""


class PartialPipelineError(RedisConnectionError):
    """A pipeline spread over several servers (Redis Cluster) lost the connection to some of
    them mid-exchange: their commands may have run. `replies` holds, in call order, what the
    other servers answered and this error's kind in the place of each command that was lost."""

    def __init__(self, message: str, replies: list) -> None:
        super().__init__(message)
        self.replies = replies


class RedisTimeoutError(RedisConnectionError, trio.TooSlowError):
    """A command (or pipeline) got no reply within its deadline: Redis is stalled or the road to
    it is cut. Still a `trio.TooSlowError` for callers that wait on deadlines."""


async def open_stream(url: RedisURL, timeout: float) -> trio.abc.Stream:
    try:
        with trio.fail_after(timeout):
            if url.unix_path:
                return await trio.open_unix_socket(url.unix_path)
            stream: trio.abc.Stream = await trio.open_tcp_stream(url.host, url.port)
            if url.ssl:
                tls = trio.SSLStream(stream, ssl.create_default_context(), server_hostname=url.host)
                await tls.do_handshake()
                stream = tls
            return stream
    except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
        raise RedisConnectFailed(f"cannot connect to {url!r}: {exc or type(exc).__name__}") from None


class Connection:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._sock = raw_socket(stream)
        self.reader = hiredis.Reader(replyError=RedisError)
        self.broken = False
        self.exchanges = 0  # completed or attempted exchanges (the pool retries only reused ones)
        self.epoch = 0  # its connector's master epoch when it was opened (Sentinel: a switch makes it stale)

    @classmethod
    async def open(cls, url: RedisURL, *, timeout: float = 5.0) -> "Connection":
        conn = cls(await open_stream(url, timeout))
        try:
            with trio.move_on_after(timeout) as deadline:
                if url.password:
                    auth = ("AUTH", url.username, url.password) if url.username else ("AUTH", url.password)
                    await conn.execute(*auth)
                if url.db:
                    await conn.execute("SELECT", url.db)
        except BaseException:
            await conn.aclose()
            raise
        if deadline.cancelled_caught:
            await conn.aclose()
            raise RedisTimeoutError(f"no reply from {url!r} to AUTH/SELECT within {timeout}s")
        return conn

    async def send(self, commands: Sequence[Sequence[Any]]) -> None:
        """Write the commands. First one non-blocking `send` on the raw socket: a command or a
        pipeline fits in the socket's buffer almost always, and then no trio send (its
        checkpoint is a whole scheduler pass, about a third of a round trip's CPU) is needed;
        what does not fit goes through the stream. Not a checkpoint by itself: the reply's read
        that follows is one."""
        data = b"".join([hiredis.pack_command(tuple(c)) for c in commands])
        sock = self._sock
        if sock is not None and not self.broken:
            try:
                n = sock.send(data)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                self.broken = True
                raise RedisConnectionError(f"connection lost while sending: {exc}") from None
            if n == len(data):
                return
            data = memoryview(data)[n:]  # type: ignore[assignment]
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.broken = True
            raise RedisConnectionError(f"connection lost while sending: {exc}") from None

    async def fill(self) -> None:
        """One network read into the parser."""
        self.reader.feed(await self.receive())

    async def receive(self) -> bytes:
        """One network read, not yet fed to the parser: a caller that takes many replies from it
        feeds it FEED_SIZE at a time (`reader.feed(data, offset, length)`), taking the replies of
        each piece before the next."""
        try:
            data = await self.stream.receive_some(READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.broken = True
            raise RedisConnectionError(f"connection lost: {exc}") from None
        if not data:
            self.broken = True
            raise RedisConnectionError("connection closed by the server")
        return data

    async def read_reply(self) -> Any:
        while True:
            reply = self.reader.gets()
            if reply is not False:
                return reply
            await self.fill()

    async def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send all, read all; error replies come back in place as RedisError instances."""
        try:
            await self.send(commands)
            return [await self.read_reply() for _ in commands]
        except BaseException:
            self.broken = True  # interrupted mid-exchange: replies would be out of step
            raise

    async def execute(self, *args: Any) -> Any:
        (reply,) = await self.pipeline([args])
        if isinstance(reply, RedisError):
            raise reply
        return reply

    async def aclose(self) -> None:
        self.broken = True
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(self.stream)
