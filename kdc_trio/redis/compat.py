"""The compatibility backend: redis-py's `redis.asyncio` under trio-asyncio, same interface.

For deployments that need redis-py itself (Sentinel is native too: redis/sentinel.py). `CompatClient`
offers `execute`/`pipeline` with raw RESP2 replies and our error types, exactly like
`RedisClient`; `CompatPubSub` offers `subscribe`/`unsubscribe`/`run` and hands messages on in
batches (everything redis-py has buffered, one trio await per batch) like `PubSub`. redis-py
re-subscribes after a reconnect by itself; we call `on_gap` as it reconnects (before anything it
reads is handed on), count the gap and call `on_reconnect` once all is re-subscribed. Like
`PubSub` it PINGs its connection (no PONG in time → the connection is dropped and re-made) and
a subscribe that fails takes its channels back out of the wanted set.

Every call needs the trio-asyncio loop: `open_compat_loop()` opens it for the tasks below it
(the gateway and worker wiring enter it when `KDC_REDIS_BACKEND=compat`).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Sequence

import redis.asyncio as aioredis
import redis.exceptions as rex
import trio
import trio_asyncio

from kdc_trio.redis.connection import RedisConnectionError, RedisError, RedisTimeoutError
from kdc_trio.redis.pubsub import pong_missed
from kdc_trio.redis.retry import Backoff

log = logging.getLogger("kdc_trio.redis.compat")

aio = trio_asyncio.aio_as_trio
# redis-py needs a channel before it has a pub/sub connection to read from.
KEEPALIVE_CHANNEL = "__kdc_compat_keepalive__"
MAX_BATCH = 10_000


@asynccontextmanager
async def open_compat_loop() -> AsyncIterator[None]:
    async with trio_asyncio.open_loop():
        yield


def _ours(exc: BaseException) -> BaseException:
    if isinstance(exc, rex.NoScriptError):  # redis-py strips the code callers match on
        return RedisError(f"NOSCRIPT {exc}")
    if isinstance(exc, rex.ResponseError):
        return RedisError(str(exc))
    if isinstance(exc, rex.TimeoutError):
        return RedisTimeoutError(str(exc))
    if isinstance(exc, (rex.ConnectionError, OSError)):
        return RedisConnectionError(str(exc))
    return exc


def _raw_client(url: str, **kw: Any) -> aioredis.Redis:
    r = aioredis.Redis.from_url(url, protocol=2, **kw)
    r.response_callbacks.clear()  # raw RESP replies, as the native client gives them
    return r


class CompatClient:
    def __init__(self, url: str, *, max_connections: int = 16, connect_timeout: float = 5.0,
                 command_timeout: float = 10.0) -> None:
        self.url = url
        self.command_timeout = command_timeout
        # A blocking pool: past max_connections callers wait for a connection, as with the
        # native client, instead of failing with "Too many connections".
        pool = aioredis.BlockingConnectionPool.from_url(
            url, protocol=2, max_connections=max_connections, timeout=command_timeout,
            socket_connect_timeout=connect_timeout, retry_on_error=[rex.ConnectionError])
        self._r = aioredis.Redis(connection_pool=pool)
        self._r.response_callbacks.clear()  # raw RESP replies, as the native client gives them

    async def execute(self, *args: Any, timeout: float | None = None) -> Any:
        limit = self.command_timeout if timeout is None else timeout
        with trio.move_on_after(limit):
            try:
                return await aio(self._r.execute_command)(*args)
            except (rex.RedisError, OSError) as exc:
                raise _ours(exc) from None
        raise RedisTimeoutError(f"no reply from Redis within {limit}s")

    async def pipeline(self, commands: Sequence[Sequence[Any]], *, timeout: float | None = None) -> list[Any]:
        async def run() -> list[Any]:
            p = self._r.pipeline(transaction=False)
            for c in commands:
                p.execute_command(*c)
            return await p.execute(raise_on_error=False)

        if not commands:
            return []
        limit = self.command_timeout if timeout is None else timeout
        replies = None
        with trio.move_on_after(limit):
            try:
                replies = await aio(run)()
            except (rex.RedisError, OSError) as exc:
                raise _ours(exc) from None
        if replies is None:
            raise RedisTimeoutError(f"no reply from Redis within {limit}s")
        return [_ours(r) if isinstance(r, BaseException) else r for r in replies]

    async def publish(self, channel: str, message: bytes | str) -> int:
        return int(await self.execute("PUBLISH", channel, message))

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await aio(self._r.aclose)()


class CompatPubSub:
    def __init__(self, url: str, *, on_batch: Callable[[dict[Any, list[Any]]], None],
                 on_reconnect: Callable[[], None] | None = None, confirm_timeout: float = 10.0,
                 backoff_max: float = 5.0, ping_interval: float = 5.0, ping_timeout: float = 3.0,
                 on_gap: Callable[[], None] | None = None) -> None:
        self.url = url
        self.on_batch = on_batch
        self.on_reconnect = on_reconnect
        self.on_gap = on_gap
        self.confirm_timeout = confirm_timeout
        self.backoff_max = backoff_max
        self.ping_interval = ping_interval  # 0 = no liveness PINGs
        self.ping_timeout = ping_timeout
        self.wanted: set[str] = set()
        self._confirmed: set[str] = set()
        self._confirm = trio.lowlevel.ParkingLot()
        self._pongs = 0
        self._pong = trio.lowlevel.ParkingLot()
        # socket_timeout bounds what redis-py does while reconnecting (handshake, re-SUBSCRIBE) on a
        # stalled server; our own reads pass their timeout explicitly.
        self._r = _raw_client(url, socket_connect_timeout=5.0, socket_timeout=confirm_timeout)
        self._ps = self._r.pubsub()
        self._connects = 0
        self._gaps_told = 0
        self.gaps = 0
        self.pings_missed = 0
        self.received = 0
        self.batches = 0
        self.reads = 0  # reads that brought anything (the pinger: bytes since the PING keep it alive)

    async def subscribe(self, *channels: str) -> None:
        added = [c for c in channels if c not in self.wanted]
        self.wanted.update(added)
        try:
            try:
                await aio(self._ps.subscribe)(*channels)
            except (rex.RedisError, OSError) as exc:
                raise _ours(exc) from None
            with trio.fail_after(self.confirm_timeout):
                while not all(c in self._confirmed for c in channels if c in self.wanted):
                    await self._confirm.park()
        except BaseException:
            await self._take_back(added)
            raise

    async def _take_back(self, channels: list[str]) -> None:
        """A failed subscribe: not wanted, and not in redis-py's set either (it re-subscribes those
        after every reconnect); the UNSUBSCRIBE is best effort (the connection may be gone)."""
        self.wanted.difference_update(channels)
        for c in channels:
            self._ps.channels.pop(c.encode(), None)
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            try:
                await aio(self._ps.unsubscribe)(*channels)
            except (rex.RedisError, OSError) as exc:
                log.info("UNSUBSCRIBE after a failed subscribe not sent: %s", exc)

    async def unsubscribe(self, *channels: str) -> None:
        self.wanted.difference_update(channels)
        try:
            await aio(self._ps.unsubscribe)(*channels)
        except (rex.RedisError, OSError) as exc:
            raise _ours(exc) from None

    def _connected(self, _connection: Any) -> None:
        self._connects += 1
        if self._connects > 1:
            self.gaps += 1
            self._confirmed = set()
            log.warning("Redis pub/sub (compat) reconnected: gap #%d", self.gaps)
            if self.on_gap is not None:  # before anything read on this connection is handed on
                self.on_gap()

    async def _read_batch(self) -> list[dict]:
        first = await self._ps.get_message(ignore_subscribe_messages=False, timeout=1.0)
        if first is None:
            return []
        out = [first]
        while len(out) < MAX_BATCH:
            m = await self._ps.get_message(ignore_subscribe_messages=False, timeout=0)
            if m is None:
                break
            out.append(m)
        return out

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.wanted.add(KEEPALIVE_CHANNEL)  # confirmed by the read loop below
        await aio(self._ps.subscribe)(KEEPALIVE_CHANNEL)
        self._ps.connection.register_connect_callback(self._connected)
        self._connects = 1
        task_status.started()
        try:
            async with trio.open_nursery() as nursery:
                if self.ping_interval > 0:
                    nursery.start_soon(self._pinger)
                await self._read_loop()
        finally:
            with trio.CancelScope(shield=True):
                await aio(self._ps.aclose)()
                await aio(self._r.aclose)()

    async def _read_loop(self) -> None:
        backoff = Backoff(self.backoff_max)
        while True:
            try:
                msgs = await aio(self._read_batch)()
            except (rex.RedisError, OSError) as exc:  # lost, timed out, or an error reply (LOADING …)
                delay = backoff.next_delay()
                log.warning("Redis pub/sub (compat) read failed: %s; retry in %.2fs", exc, delay)
                await trio.sleep(delay)
                continue
            backoff.reset()
            if msgs:
                self.reads += 1
            self._dispatch(msgs)

    async def _pinger(self) -> None:
        """PING every interval; no PONG in time → drop the connection: the next read re-makes it
        (redis-py re-subscribes) and the gap is told through `on_reconnect`. Judged as PubSub's
        pinger judges (`pong_missed`: a stall, a backlog)."""
        while True:
            await trio.sleep(self.ping_interval)
            seen = self._pongs
            reads = self.reads
            with trio.move_on_after(self.ping_timeout):
                try:
                    await aio(self._ps.ping)()
                except (rex.RedisError, OSError) as exc:
                    log.info("Redis pub/sub (compat) PING not sent: %s", exc)
                    continue  # the read loop is already reconnecting
                while self._pongs == seen:
                    await self._pong.park()
            if await pong_missed(self, seen, reads) and self._ps.connection is not None:
                self.pings_missed += 1
                log.warning("Redis pub/sub (compat): no PONG within %ss; dropping the connection", self.ping_timeout)
                with trio.move_on_after(self.ping_timeout):
                    try:
                        await aio(self._ps.connection.disconnect)()
                    except (rex.RedisError, OSError) as exc:
                        log.info("Redis pub/sub (compat) disconnect: %s", exc)

    def _dispatch(self, msgs: list[dict]) -> None:
        batch: dict[Any, list[Any]] = {}  # as PubSub's: channel -> its messages' data, in order
        n = 0
        confirmed = False
        for m in msgs:
            kind = m["type"]
            kind = kind.decode() if isinstance(kind, bytes) else kind
            channel = m["channel"]
            name = channel.decode() if isinstance(channel, bytes) else (channel or "")
            if kind == "pong":
                self._pongs += 1
                self._pong.unpark_all()
            elif kind == "message" and name in self.wanted:
                batch.setdefault(channel, []).append(m["data"])
                n += 1
            elif kind == "subscribe":
                self._confirmed.add(name)
                confirmed = True
        if confirmed:
            self._confirm.unpark_all()
            # redis-py re-subscribed after a reconnect: once all is back, the owner fills the gap
            if self._gaps_told < self.gaps and self.wanted <= self._confirmed:
                self._gaps_told = self.gaps
                if self.on_reconnect is not None:
                    self.on_reconnect()
        if batch:
            self.received += n
            self.batches += 1
            self.on_batch(batch)
