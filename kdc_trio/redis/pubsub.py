"""`PubSub`: one dedicated connection carrying every channel this process listens to.

- Subscriptions are *wanted* state. Callers add or remove channels; one writer task turns the
  difference between what is wanted and what the server was asked for into one SUBSCRIBE and
  one UNSUBSCRIBE carrying many channels, so churn from many sessions shares round trips.
  `subscribe()` returns once the server confirmed (bounded by `confirm_timeout`).
- The reader hands messages on in batches: everything parsed from one network read goes to
  `on_batch({channel: [data, ...]})` in one call — never one await per message; each channel's
  messages in the order they came (channels as Redis names them, bytes), no object per message
  beyond its data. The order across channels within one read is not kept. `on_batch` must not block (the relay only moves messages into bounded buffers).
- A lost connection is survived: `on_gap()` is called at once (before any message of the next
  connection is handed on, so the owner can hold them), then reconnect with capped exponential
  backoff and full jitter, re-SUBSCRIBE everything wanted *now*, count the gap (`gaps`, logged
  once per gap) and call `on_reconnect()` so the owner can recover what was published while it
  was away. `on_reconnect` runs in a task woken by the re-SUBSCRIBE's confirmation: messages read
  on the new connection may reach `on_batch` before it (the same read, or a read before that task
  runs), which is why the owner starts holding at `on_gap`, not at `on_reconnect`. Behind a
  `redis+sentinel://` URL each reconnection goes to the master the Sentinels name then, and a
  master switch the connector learns of (kdc_trio/redis/sentinel_watch.py) drops the connection
  to the old one: a failover is one more gap.
- The connection proves it is alive: a PING every `ping_interval` (`KDC_PUBSUB_PING_INTERVAL_S`);
  no PONG within `ping_timeout` (`KDC_PUBSUB_PING_TIMEOUT_S`) counts as a lost connection (a
  half-open TCP connection, a stalled server), so a process is never silently deaf.
- A `subscribe()` that fails (confirmation timed out, cancelled) takes back what it added to
  the wanted set: no channel stays subscribed, and re-sent after every reconnect, for nobody.

The same connection speaks sharded pub/sub (SSUBSCRIBE / `smessage`) when given `SHARDED`
verbs: `kdc_trio.redis.sharded_pubsub` runs one per Redis Cluster shard and overrides the hooks
marked *hook* (how commands are grouped, what an error reply or a forced unsubscribe means).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Collection

import trio

from kdc_trio.redis.connection import FEED_SIZE, Connection, RedisConnectionError, RedisError
from kdc_trio.redis.retry import Backoff
from kdc_trio.redis.sentinel import Connector, connector_for
from kdc_trio.redis.url import RedisURL, SentinelURL

log = logging.getLogger("kdc_trio.redis.pubsub")

# One read's messages: channel (as Redis sent it) -> its messages' data, in the order they came.
Batch = dict[bytes, list[bytes]]
async def pong_missed(pubsub: Any, seen: int, reads: int) -> bool:
    """After a pinger's wait for the PONG of its PING (taken when the connection had counted
    `seen` PONGs and `reads` reads): whether the PING counts as missed. Both backends' pingers.

    - The deadline may have passed while this whole process was stalled (a GC pause, a busy box)
      and the PONG arrived meanwhile: trio then wakes the reader (its socket is readable) and the
      pinger (its deadline passed) in the same batch, in either order. One checkpoint lets the
      reader take what is in the socket first.
    - No PONG yet, but messages came since the PING: the connection is alive, its PONG is queued
      behind messages this process has not read yet (a backlog longer than the ping timeout, e.g.
      a burst relayed slower than Redis took it). Dropping the connection would lose that
      backlog; the next PING asks again."""
    if pubsub._pongs == seen:
        await trio.lowlevel.checkpoint()
    return pubsub._pongs == seen and pubsub.reads == reads


# Channels per SUBSCRIBE/UNSUBSCRIBE command: keeps one command's size sane.
CHUNK = 1000


@dataclass(frozen=True)
class Verbs:
    """The commands a pub/sub connection sends and the kinds of the replies it reads."""

    subscribe: str
    unsubscribe: str
    message: bytes
    subscribed: bytes
    unsubscribed: bytes


CLASSIC = Verbs("SUBSCRIBE", "UNSUBSCRIBE", b"message", b"subscribe", b"unsubscribe")
SHARDED = Verbs("SSUBSCRIBE", "SUNSUBSCRIBE", b"smessage", b"ssubscribe", b"sunsubscribe")


class WantedChannels:
    """`subscribe` / `unsubscribe` over a wanted set, for one connection or many (one per shard).

    A subclass says where a wanted channel goes (`_want`, `_unwant`) and whether the server
    confirmed it (`_is_confirmed`); it unparks `_confirm` whenever confirmations arrive."""

    wanted: set[str]
    confirm_timeout: float
    _confirm: trio.lowlevel.ParkingLot

    async def subscribe(self, *channels: str) -> None:
        added = [c for c in channels if c not in self.wanted]
        self.wanted.update(added)
        self._want(added)
        try:
            with trio.fail_after(self.confirm_timeout):
                while not all(self._is_confirmed(c) for c in channels if c in self.wanted):
                    await self._confirm.park()
        except BaseException:
            self.wanted.difference_update(added)  # not confirmed: nobody wants it any more
            self._unwant(added)
            raise

    async def unsubscribe(self, *channels: str) -> None:
        """Stop wanting the channels; the UNSUBSCRIBE goes out with the next batch (no wait)."""
        self.wanted.difference_update(channels)
        self._unwant(channels)
        await trio.lowlevel.checkpoint()

    def _want(self, channels: Collection[str]) -> None:
        raise NotImplementedError

    def _unwant(self, channels: Collection[str]) -> None:
        raise NotImplementedError

    def _is_confirmed(self, channel: str) -> bool:
        raise NotImplementedError


class PubSub(WantedChannels):
    verbs = CLASSIC

    def __init__(self, url: str | RedisURL | SentinelURL | Connector, *, on_batch: Callable[[Batch], None],
                 on_reconnect: Callable[[], None] | None = None, connect_timeout: float = 5.0,
                 confirm_timeout: float = 10.0, backoff_initial: float = 0.05, backoff_max: float = 5.0,
                 ping_interval: float = 5.0, ping_timeout: float = 3.0,
                 on_gap: Callable[[], None] | None = None) -> None:
        self.connector = connector_for(url)  # where each (re)connection goes
        self.on_batch = on_batch
        self.on_reconnect = on_reconnect
        self.on_gap = on_gap
        self.connect_timeout = connect_timeout
        self.confirm_timeout = confirm_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.ping_interval = ping_interval  # 0 = no liveness PINGs
        self.ping_timeout = ping_timeout
        self.wanted: set[str] = set()
        self._asked: set[str] = set()       # what this connection asked the server for
        self._confirmed: set[str] = set()   # what the server confirmed on this connection
        self._changed = trio.Event()        # wanted changed: the writer has work
        self._confirm = trio.lowlevel.ParkingLot()
        self._ping_due = False              # the writer sends a PING with its next batch
        self._pongs = 0                     # PONG replies on the current connection
        self._pong = trio.lowlevel.ParkingLot()
        self.connected = False
        self.pings_missed = 0
        self.reads = 0                      # network reads (the pinger: bytes came, the connection lives)
        self.gaps = 0
        self.received = 0
        self.batches = 0

    # ---- the wanted set -------------------------------------------------------------------------
    def _want(self, channels: Collection[str]) -> None:
        self._changed.set()

    def _unwant(self, channels: Collection[str]) -> None:
        self._changed.set()

    def _is_confirmed(self, channel: str) -> bool:
        return channel in self._confirmed

    async def wait_confirmed(self, channels: Collection[str], timeout: float) -> bool:
        """Until the server confirmed every one of `channels` still wanted (or `timeout`)."""
        with trio.move_on_after(timeout):
            while not all(c in self._confirmed for c in channels if c in self.wanted):
                await self._confirm.park()
            return True
        return False

    # ---- the connection's life ----------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  retry_first: bool = False) -> None:
        """Connect (the first failure raises unless `retry_first`), then serve and reconnect forever."""
        backoff = Backoff(self.backoff_max, initial=self.backoff_initial)
        first = True
        while True:
            try:
                conn = await self.connector.open(timeout=self.connect_timeout)
            except (RedisConnectionError, RedisError, OSError) as exc:
                if first and not retry_first:
                    raise
                delay = backoff.next_delay()
                log.warning("Redis pub/sub (re)connect to %r failed (%s); next try in %.2fs", self.connector, exc,
                            delay)
                await trio.sleep(delay)
                continue
            backoff.reset()
            self._asked, self._confirmed = set(), set()
            self._pongs, self._ping_due = 0, False
            self._changed.set()
            self.connected = True
            if first:
                task_status.started()
            else:
                log.warning("Redis pub/sub reconnected to %r after gap #%d; re-subscribing %d channels",
                            self.connector, self.gaps, len(self.wanted))
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, conn)
                    nursery.start_soon(self._follow_master, conn.epoch)
                    if self.ping_interval > 0:
                        nursery.start_soon(self._pinger)
                    if not first:
                        nursery.start_soon(self._after_reconnect)
                    first = False
                    await self._reader(conn)  # returns only by raising
            except* RedisConnectionError as group:
                self.gaps += 1
                log.warning("Redis pub/sub connection to %r lost (%s): gap #%d", self.connector,
                            group.exceptions[0], self.gaps)
                self._lost()
            finally:
                self.connected = False
                self._confirmed = set()
                await conn.aclose()

    async def _after_reconnect(self) -> None:
        channels = set(self.wanted)
        await self.wait_confirmed(channels, self.confirm_timeout)
        self._reconnected(channels)

    def _reconnected(self, channels: set[str]) -> None:
        """*hook*: re-subscribed after a gap: tell the owner, who recovers what it missed."""
        if self.on_reconnect is not None:
            self.on_reconnect()

    def _lost(self) -> None:
        """*hook*: the connection was lost (a reconnect follows): tell the owner, who holds live
        messages from now until it has recovered what the gap hid."""
        if self.on_gap is not None:
            self.on_gap()

    async def _follow_master(self, epoch: int) -> None:
        """Behind Sentinel: the master switched → this connection is on the old one (raises)."""
        await self.connector.wait_switch(epoch)
        raise RedisConnectionError("the Sentinels switched the master: reconnecting to the new one")

    async def _pinger(self) -> None:
        """PING every interval; no PONG in time → the connection is lost (raises, so it is re-made)."""
        while True:
            await trio.sleep(self.ping_interval)
            seen = self._pongs
            reads = self.reads
            self._ping_due = True
            self._changed.set()
            with trio.move_on_after(self.ping_timeout):
                while self._pongs == seen:
                    await self._pong.park()
            if await pong_missed(self, seen, reads):
                self.pings_missed += 1
                raise RedisConnectionError(f"no PONG within {self.ping_timeout}s: the connection is half-open "
                                           "or Redis is stalled")

    def _commands(self, verb: str, channels: list[str]) -> list[tuple[Any, ...]]:
        """*hook*: the commands that (un)subscribe `channels` (sorted), in chunks."""
        return [(verb, *channels[i:i + CHUNK]) for i in range(0, len(channels), CHUNK)]

    async def _writer(self, conn: Connection) -> None:
        while True:
            await self._changed.wait()
            self._changed = trio.Event()
            add = sorted(self.wanted - self._asked)
            drop = sorted(self._asked - self.wanted)
            cmds = self._commands(self.verbs.subscribe, add) + self._commands(self.verbs.unsubscribe, drop)
            if self._ping_due:
                self._ping_due = False
                cmds.append(("PING",))
            if cmds:
                self._asked.update(add)
                self._asked.difference_update(drop)
                await conn.send(cmds)

    def _error_reply(self, reply: RedisError) -> None:
        """*hook*: an error reply on a pub/sub connection (here: the connection is unusable)."""
        raise RedisConnectionError(f"pub/sub error reply: {reply}")

    def _unsubscribed(self, channel: str) -> None:
        """*hook*: the server says `channel` is no longer subscribed on this connection."""
        self._confirmed.discard(channel)

    async def _reader(self, conn: Connection) -> None:
        reader = conn.reader
        verbs = self.verbs
        message = verbs.message
        while True:
            data = await conn.receive()
            self.reads += 1
            batch: Batch = {}
            n = 0
            channel: Any = None  # the channel of the message before, and its list in `batch`
            datas: list[bytes] = []
            confirmed = False
            pongs = self._pongs
            size = len(data)
            for offset in range(0, size, FEED_SIZE):  # in pieces: see FEED_SIZE
                reader.feed(data, offset, min(FEED_SIZE, size - offset))
                while (reply := reader.gets()) is not False:
                    if type(reply) is list and reply[0] == message:  # the hot path: no other test
                        if reply[1] != channel:
                            channel = reply[1]
                            datas = batch.get(channel) or batch.setdefault(channel, [])
                        datas.append(reply[2])
                        n += 1
                        continue
                    if isinstance(reply, RedisError):
                        self._error_reply(reply)
                        continue
                    if isinstance(reply, bytes):  # +PONG: a PING while no channel is subscribed
                        self._pongs += 1
                        continue
                    kind = reply[0]
                    if kind == verbs.subscribed:
                        self._confirmed.add(reply[1].decode())
                        confirmed = True
                    elif kind == verbs.unsubscribed:
                        self._unsubscribed(reply[1].decode())
                    elif kind == b"pong":
                        self._pongs += 1
            if self._pongs != pongs:
                self._pong.unpark_all()
            if confirmed:
                self._confirm.unpark_all()
            if batch:
                self.received += n
                self.batches += 1
                self.on_batch(batch)
