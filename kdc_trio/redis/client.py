"""`RedisClient`: a bounded pool of RESP connections with per-command deadlines.

Each call borrows one connection for one exchange (a command or a pipeline), so concurrent
tasks never interleave on a connection; at most `max_connections` are open, further callers
wait for one. A connection that broke (lost, or interrupted by cancellation or a deadline)
is closed instead of returned; the next caller opens a fresh one, so a Redis restart costs
the commands in flight and nothing else. Behind a `redis+sentinel://` URL each new connection
goes to the master the Sentinels name at that moment (kdc_trio/redis/sentinel.py), so a
failover costs the same; a connection opened before the master switched is closed when it is
next taken or given back.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Sequence

import trio

from kdc_trio.redis.connection import Connection, RedisConnectionError, RedisError, RedisTimeoutError
from kdc_trio.redis.sentinel import Connector, connector_for
from kdc_trio.redis.url import RedisURL, SentinelURL


def _demoted(replies: list[Any]) -> bool:
    """A `-READONLY` reply: the server is a replica now (a master demoted after a failover)."""
    return any(isinstance(r, RedisError) and str(r).startswith("READONLY") for r in replies)


class RedisClient:
    def __init__(self, url: str | RedisURL | SentinelURL | Connector, *, max_connections: int = 16,
                 connect_timeout: float = 5.0, command_timeout: float = 10.0) -> None:
        self.connector = connector_for(url)  # where each new connection goes (Sentinel: resolved then)
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._slots = trio.Semaphore(max_connections)
        self._idle: list[Connection] = []
        self.opened = 0
        self.demoted = 0  # exchanges answered -READONLY (tried again on a fresh connection)

    async def _take(self) -> Connection:
        """Borrow a slot and a connection in it (opened on demand; `_give_back` returns it, or
        closes it when broken). A free slot and an idle connection are taken without a
        scheduler pass (trio's Semaphore would yield even then): the exchange that follows
        reads a reply, which is the checkpoint."""
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            await self._slots.acquire()
        try:
            conn = self._idle.pop() if self._idle else None
            while conn is not None and self.connector.stale(conn):  # opened before a master switch
                await conn.aclose()
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = await self.connector.open(timeout=self.connect_timeout)
                self.opened += 1
            return conn
        except BaseException:
            self._slots.release()
            raise

    async def _give_back(self, conn: Connection) -> None:
        try:
            if conn.broken or self.connector.stale(conn):
                await conn.aclose()
            else:
                self._idle.append(conn)
        finally:
            self._slots.release()

    async def execute(self, *args: Any, timeout: float | None = None) -> Any:
        """One command; an error reply raises RedisError, a lost connection RedisConnectionError."""
        (reply,) = await self.pipeline([args], timeout=timeout)
        if isinstance(reply, RedisError):
            raise reply
        return reply

    async def pipeline(self, commands: Sequence[Sequence[Any]], *, timeout: float | None = None) -> list[Any]:
        """Many commands in one write and one round trip; error replies are returned in place.

        A pooled connection found dead (the server restarted or dropped it while idle) is
        replaced and the exchange tried once more on a fresh one: the server closed it before
        it could have read our commands. A connection lost mid-exchange is not retried.
        A `-READONLY` reply means the connection's server was demoted to a replica (a Sentinel
        failover): it ran no write of the exchange, so the connection and the idle ones are
        closed and the exchange is tried once more on a fresh connection (to the new master)."""
        if not commands:
            return []
        limit = self.command_timeout if timeout is None else timeout
        if limit < 0:
            raise ValueError(f"timeout must be non-negative, not {limit}")
        # A bare CancelScope: trio.move_on_after's wrapper costs more than the exchange's Python.
        with trio.CancelScope(deadline=trio.current_time() + limit) as deadline:
            # Nothing else before the first send checks: a caller already cancelled, or whose
            # deadline has passed, must not have its commands run (no scheduler pass taken).
            await trio.lowlevel.checkpoint_if_cancelled()
            for attempt in (1, 2):
                conn = await self._take()
                try:
                    reused = conn.exchanges > 0
                    conn.exchanges += 1
                    try:
                        replies = await conn.pipeline(commands)
                    except RedisConnectionError:
                        if not reused or attempt == 2 or conn.reader.has_data():
                            raise
                    else:
                        if attempt == 2 or not _demoted(replies):
                            return replies
                        conn.broken = True
                        self.demoted += 1
                finally:
                    await self._give_back(conn)
                await self._drop_idle()
        if deadline.cancelled_caught:
            raise RedisTimeoutError(f"no reply from Redis within {limit}s ({commands[0][0]!s})")
        raise AssertionError("unreachable")

    async def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.aclose()

    async def publish(self, channel: str, message: bytes | str) -> int:
        return int(await self.execute("PUBLISH", channel, message))

    async def aclose(self) -> None:
        await self._drop_idle()


@asynccontextmanager
async def open_redis(url: str, **options: Any) -> AsyncIterator[RedisClient]:
    client = RedisClient(url, **options)
    try:
        await client.execute("PING")
        yield client
    finally:
        await client.aclose()


__all__ = ["RedisClient", "RedisError", "RedisConnectionError", "RedisTimeoutError", "open_redis"]
