"""`ShardedPubSub`: PubSub's interface over a Redis Cluster, one connection per master shard.

Redis Cluster's sharded pub/sub (`SSUBSCRIBE` / `SPUBLISH`, Redis ≥ 7.0) keeps a channel's
messages on the shard that owns the channel's slot, so publishing costs one shard, not the whole
cluster (classic PUBLISH is broadcast to every node). The relay's channels are per session, so
they spread over the shards by slot.

- One `PubSub` connection per master (`_Shard`, speaking `SHARDED` verbs), each carrying the
  wanted channels whose slot that master owns: same wanted-set diffing, batching per network
  read, PING liveness and reconnect backoff as `PubSub` (the code is PubSub's). Its commands
  are grouped by slot (SSUBSCRIBE takes channels of one slot only).
- The slot map is the process's ClusterClient's (kdc_trio/redis/cluster.py: one map per process;
  a MOVED its commands meet re-maps the pub/sub side too). It is refreshed (forced) when the
  topology says it changed:
  * a `MOVED` reply to an SSUBSCRIBE (the slot has another owner; the reply says which),
  * a forced `sunsubscribe` push for a channel we still want (Redis 7 sends it to every
    subscriber of a slot that leaves a node: migration, or a master turned replica),
  * a shard's connection lost (its master may be dead: the refresh repeats, with backoff,
    while a shard is down, until a replica is promoted and owns its slots).
- A channel whose owner changed is taken from the old shard's wanted set and given to the new
  owner's; once the new owner confirmed it, `on_reconnect(channels)` is called with exactly the
  channels that had a gap (the RedisBus fills each from its session log). A shard that
  reconnects to the same master reports its own channels the same way. A master no longer in
  the map with no channels left is closed.
"""

from __future__ import annotations

import logging
from typing import Callable, Collection

import trio

from kdc_trio.redis.cluster import ClusterClient
from kdc_trio.redis.connection import RedisError
from kdc_trio.redis.pubsub import SHARDED, Batch, PubSub, WantedChannels
from kdc_trio.redis.retry import REDIS_FAILURES, Backoff
from kdc_trio.redis.slots import Address, SlotMap, key_slot, parse_redirect
from kdc_trio.redis.url import RedisURL

log = logging.getLogger("kdc_trio.redis.sharded_pubsub")

# Slot-map refreshes while a shard is down or a channel has no owner: at most this far apart
# (capped exponential backoff from BACKOFF_INITIAL_S). A failover takes cluster-node-timeout plus
# an election (~1-2 s with a 1 s timeout); a 1 s cap keeps the re-map within a second of it.
REFRESH_MAX_S = 1.0
# A channel moved to a new owner is reported for gap-filling once the owner confirmed it, or after
# this long at most (then reported anyway: the log read gives what it has; a later confirmation
# after another re-map reports it again).
RECOVER_TIMEOUT_S = 30.0


class _Shard(PubSub):
    """One master's pub/sub connection; topology news goes to the ShardedPubSub that owns it."""

    verbs = SHARDED

    def __init__(self, owner: "ShardedPubSub", address: Address, url: RedisURL) -> None:
        super().__init__(url, on_batch=owner.on_batch, connect_timeout=owner.connect_timeout,
                         confirm_timeout=owner.confirm_timeout, backoff_initial=owner.backoff_initial,
                         backoff_max=owner.backoff_max, ping_interval=owner.ping_interval,
                         ping_timeout=owner.ping_timeout)
        self.owner = owner
        self.address = address
        self._confirm = owner._confirm  # one parking lot: the owner waits on every shard's confirmations
        self.scope = trio.CancelScope()

    def _commands(self, verb: str, channels: list[str]) -> list[tuple]:
        by_slot: dict[int, list[str]] = {}
        for c in channels:
            by_slot.setdefault(key_slot(c), []).append(c)
        chunk = super()._commands
        return [cmd for group in by_slot.values() for cmd in chunk(verb, group)]

    def _error_reply(self, reply: RedisError) -> None:
        redirect = parse_redirect(reply, self.address[0])
        text = str(reply)
        if redirect is None and not text.startswith(("CLUSTERDOWN", "TRYAGAIN")):
            super()._error_reply(reply)  # anything else: this connection is unusable
        pending = self._asked - self._confirmed
        if redirect is not None:
            refused = {c for c in pending if key_slot(c) == redirect.slot}
        else:
            refused = pending  # which command failed is not said: re-ask every unconfirmed channel
        self._asked -= refused
        self.owner._refused(self, refused, redirect.slot if redirect else None,
                            redirect.address if redirect else None, text)

    def _unsubscribed(self, channel: str) -> None:
        super()._unsubscribed(channel)
        if channel in self.wanted and channel in self._asked:  # not asked for: the slot left this node
            self._asked.discard(channel)
            self.owner._forced_out(self, channel)

    def _lost(self) -> None:
        self.owner._shard_lost(self)

    def _reconnected(self, channels: set[str]) -> None:
        self.owner._notify(channels)


class ShardedPubSub(WantedChannels):
    def __init__(self, cluster: ClusterClient, *, on_batch: Callable[[Batch], None],
                 on_reconnect: Callable[[set[str]], None] | None = None, connect_timeout: float = 5.0,
                 confirm_timeout: float = 10.0, backoff_initial: float = 0.05, backoff_max: float = 5.0,
                 ping_interval: float = 5.0, ping_timeout: float = 3.0,
                 on_gap: Callable[[set[str]], None] | None = None) -> None:
        self.cluster = cluster  # its slot map, and the nodes' URLs (credentials, TLS)
        self.on_batch = on_batch
        self.on_reconnect = on_reconnect
        self.on_gap = on_gap  # channels whose delivery stopped (lost shard, new owner): hold them
        self.connect_timeout = connect_timeout
        self.confirm_timeout = confirm_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.wanted: set[str] = set()
        self.shards: dict[Address, _Shard] = {}
        self._home: dict[str, Address] = {}   # wanted channel -> the master it is asked on
        self._homeless: set[str] = set()      # wanted channels whose slot has no known owner
        self._confirm = trio.lowlevel.ParkingLot()
        self._refresh = trio.Event()
        self._recovering: set[str] = set()    # channels waiting for a confirmation to be reported
        self._nursery: trio.Nursery | None = None
        self.refreshes = 0     # slot-map refreshes asked for
        self.moved = 0         # channels moved to another master
        self.recovered_channels = 0  # channels reported for gap-filling
        self._retired = {"gaps": 0, "received": 0, "pings_missed": 0}

    @property
    def map(self) -> SlotMap:
        return self.cluster.slot_map or SlotMap(())

    # ---- statistics (PubSub's names, summed over shards) ------------------------------------
    @property
    def gaps(self) -> int:
        return self._sum("gaps") + self.moved

    @property
    def received(self) -> int:
        return self._sum("received")

    @property
    def pings_missed(self) -> int:
        return self._sum("pings_missed")

    def _sum(self, counter: str) -> int:  # closed shards' counts stay counted
        return self._retired[counter] + sum(getattr(s, counter) for s in self.shards.values())

    @property
    def connected(self) -> bool:
        return bool(self.shards) and all(s.connected for s in self.shards.values())

    def statistics(self) -> dict:
        return {"shards": len(self.shards), "refreshes": self.refreshes, "moved": self.moved,
                "recovered_channels": self.recovered_channels, "gaps": self.gaps, "received": self.received,
                "per_shard": {f"{h}:{p}": {"channels": len(s.wanted), "connected": s.connected, "gaps": s.gaps}
                              for (h, p), s in self.shards.items()}}

    # ---- the wanted set ------------------------------------------------------------------------
    def _want(self, channels: Collection[str]) -> None:
        for c in channels:
            owner = self.map.owner(key_slot(c))
            if owner is None:
                self._homeless.add(c)
                self._refresh.set()
            else:
                self._place(c, owner)

    def _unwant(self, channels: Collection[str]) -> None:
        for c in channels:
            self._homeless.discard(c)
            address = self._home.pop(c, None)
            shard = self.shards.get(address) if address else None
            if shard is not None:
                shard.wanted.discard(c)
                shard._unwant((c,))

    def _is_confirmed(self, channel: str) -> bool:
        address = self._home.get(channel)
        shard = self.shards.get(address) if address else None
        return shard is not None and channel in shard._confirmed

    def _place(self, channel: str, address: Address) -> bool:
        """Ask for `channel` on `address`'s shard (taken from its old one); True if it moved."""
        old = self._home.get(channel)
        if old == address:
            self.shards[address]._want((channel,))  # re-ask (after a refusal or a forced unsubscribe)
            return False
        if old is not None and old in self.shards:
            self.shards[old].wanted.discard(channel)
            self.shards[old]._unwant((channel,))
        self._homeless.discard(channel)
        shard = self._shard(address)
        shard.wanted.add(channel)
        shard._want((channel,))
        self._home[channel] = address
        return old is not None

    def _shard(self, address: Address) -> _Shard:
        shard = self.shards.get(address)
        if shard is None:
            if self._nursery is None:
                raise RuntimeError("ShardedPubSub is not running")
            shard = self.shards[address] = _Shard(self, address, self.cluster.node_url(address))
            self._nursery.start_soon(self._run_shard, shard, True)
        return shard

    # ---- the topology ----------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.cluster.refresh(force=True)  # no node answers: raises, as PubSub's first connect does
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.cluster.add_map_listener(self._apply)
            try:
                for address in self.map.masters:  # every master connected before we are started
                    shard = self.shards[address] = _Shard(self, address, self.cluster.node_url(address))
                    await nursery.start(self._run_shard, shard, False)
                nursery.start_soon(self._topology)
                task_status.started()
                await trio.sleep_forever()
            finally:
                self.cluster.remove_map_listener(self._apply)
                self._nursery = None

    async def _run_shard(self, shard: _Shard, retry_first: bool, *,
                         task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with shard.scope:
            await shard.run(task_status=task_status, retry_first=retry_first)

    async def _topology(self) -> None:
        backoff = Backoff(REFRESH_MAX_S, initial=self.backoff_initial)
        while True:
            await self._refresh.wait()
            self._refresh = trio.Event()
            self.refreshes += 1
            try:
                new = await self.cluster.refresh(force=True)
            except REDIS_FAILURES as exc:
                log.warning("Redis Cluster slot map not refreshed (%s)", exc)
            else:
                self._apply(new)  # also when unchanged: refused channels are asked again
            # unsettled (a channel without owner, a shard down, or asked again meanwhile: the
            # cluster is still changing): look again soon, never in a tight loop
            if self._homeless or self._refresh.is_set() or not all(s.connected for s in self.shards.values()):
                await trio.sleep(backoff.next_delay())
                self._refresh.set()
            else:
                backoff.reset()

    def _apply(self, new: SlotMap) -> None:
        """Adopt a fresh slot map: channels whose owner changed move; idle departed masters close."""
        if self._nursery is None:
            return
        moved: set[str] = set()
        for c in sorted(self.wanted):
            owner = new.owner(key_slot(c))
            if owner is None:
                if c not in self._home:
                    self._homeless.add(c)
                continue  # unknown owner (failover under way): stay where it is asked
            if self._place(c, owner) or c in self._homeless:
                moved.add(c)
        self._homeless -= moved
        if moved:
            self.moved += len(moved)
            log.warning("Redis Cluster topology changed: %d channels re-subscribed on their new shard", len(moved))
            self._recover(moved)
        masters = set(new.masters)
        for address, shard in list(self.shards.items()):
            if address not in masters and not shard.wanted:
                shard.scope.cancel()
                del self.shards[address]
                for counter in self._retired:
                    self._retired[counter] += getattr(shard, counter)

    def _recover(self, channels: set[str]) -> None:
        """Report `channels` for gap-filling once their (new) shard confirmed them; the owner is
        told of the gap now, before the new shard can deliver any of their messages."""
        self._gap(channels)
        channels = channels - self._recovering
        if self._nursery is not None and channels:
            self._recovering |= channels
            self._nursery.start_soon(self._recover_when_confirmed, channels)

    async def _recover_when_confirmed(self, channels: set[str]) -> None:
        try:
            with trio.move_on_after(RECOVER_TIMEOUT_S):
                while not all(self._is_confirmed(c) for c in channels if c in self.wanted):
                    await self._confirm.park()
        finally:
            self._recovering -= channels
        self._notify(channels)

    def _notify(self, channels: set[str]) -> None:
        channels = channels & self.wanted
        if channels and self.on_reconnect is not None:
            self.recovered_channels += len(channels)
            self.on_reconnect(channels)

    # ---- news from the shards ------------------------------------------------------------------
    def _refused(self, shard: _Shard, channels: set[str], slot: int | None, address: Address | None,
                 why: str) -> None:
        """An SSUBSCRIBE was refused (MOVED: the slot is `address`'s now; CLUSTERDOWN, TRYAGAIN)."""
        log.info("SSUBSCRIBE on %s:%d refused (%s): re-mapping %d channels", *shard.address, why, len(channels))
        if slot is not None and address is not None:
            self.cluster.note_moved(slot, address)  # the process's map too (its listener is _apply)
            moved = {c for c in channels if c in self.wanted and self._place(c, address)}
            if moved:
                self.moved += len(moved)
                self._recover(moved)
        else:
            self._recover({c for c in channels if c in self.wanted})
        self._refresh.set()

    def _forced_out(self, shard: _Shard, channel: str) -> None:
        """Redis unsubscribed a channel we want (its slot left the node): re-map, re-subscribe, recover."""
        log.warning("Redis Cluster unsubscribed %s on %s:%d (its slot moved): re-mapping", channel, *shard.address)
        self._recover({channel})
        self._refresh.set()

    def _gap(self, channels: set[str]) -> None:
        channels = channels & self.wanted
        if channels and self.on_gap is not None:
            self.on_gap(channels)

    def _shard_lost(self, shard: _Shard) -> None:
        self._gap(set(shard.wanted))
        self._refresh.set()
