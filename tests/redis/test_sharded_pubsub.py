"""ShardedPubSub on a real Redis Cluster (3 masters): one connection per shard, channels on the
shard owning their slot, batches, and the topology changing under it — a slot migrated (Redis
pushes `sunsubscribe`) and a master SIGKILLed with its replica promoted. Messages are sent with
SPUBLISH straight to the owning master, so these tests need no cluster command client."""

from __future__ import annotations

import time

import trio

from kdc_trio.redis.cluster import ClusterClient
from kdc_trio.redis.sharded_pubsub import ShardedPubSub
from kdc_trio.redis.slots import key_slot
from tests.support.redis_cluster import RedisCluster, command, redis_cluster
from tests.support.redis_server import messages


class Sink:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.batches = 0
        self.recovered: list[set[str]] = []

    def on_batch(self, batch) -> None:
        self.batches += 1
        self.messages.extend((c.decode(), d) for c, d in messages(batch))

    def on_reconnect(self, channels) -> None:
        self.recovered.append(set(channels))

    def of(self, channel: str) -> list[bytes]:
        return [d for c, d in self.messages if c == channel]


def pubsub(cluster: RedisCluster, sink: Sink, **kw) -> ShardedPubSub:
    client = ClusterClient(f"redis+cluster://127.0.0.1:{cluster.nodes[0].port}")
    return ShardedPubSub(client, on_batch=sink.on_batch, on_reconnect=sink.on_reconnect, backoff_max=0.5,
                         ping_interval=1.0, ping_timeout=1.0, **kw)


def spublish(cluster: RedisCluster, channel: str, data: str) -> int:
    return int(command(cluster.owner_port(key_slot(channel)), "SPUBLISH", channel, data))




async def wait_until(cond, timeout: float = 10.0, what: str = "condition") -> None:
    try:
        with trio.fail_after(timeout):
            while not cond():
                await trio.sleep(0.01)
    except trio.TooSlowError:
        raise trio.TooSlowError(f"gave up waiting for {what} after {timeout} s") from None


async def test_channels_spread_over_every_shard_arrive_in_batches_and_unsubscribe():
    with redis_cluster(3) as cluster:
        sink = Sink()
        ps = pubsub(cluster, sink)
        channels = [f"kdc.t:p:chat.events.s{i}" for i in range(300)]
        async with trio.open_nursery() as nursery:
            await nursery.start(ps.run)
            assert len(ps.shards) == 3, "one connection per master"
            await ps.subscribe(*channels)
            per_master = await trio.to_thread.run_sync(cluster.shard_subscriptions, channels)
            print("subscriptions per master:", per_master)
            assert len(per_master) == 3 and all(n > 0 for n in per_master.values())
            assert sum(per_master.values()) == len(channels)
            for i, c in enumerate(channels):
                await trio.to_thread.run_sync(spublish, cluster, c, f"m{i}")
            await wait_until(lambda: len(sink.messages) == len(channels))
            assert sorted(sink.messages) == sorted((c, f"m{i}".encode()) for i, c in enumerate(channels))
            await ps.unsubscribe(*channels[:150])
            await wait_until(lambda: sum(len(s._asked) for s in ps.shards.values()) == 150)
            await trio.sleep(0.2)
            assert sum((await trio.to_thread.run_sync(cluster.shard_subscriptions, channels)).values()) == 150
            assert await trio.to_thread.run_sync(spublish, cluster, channels[0], "late") == 0
            assert not sink.recovered, "no topology change, no gap"
            nursery.cancel_scope.cancel()
        await ps.cluster.aclose()


async def test_a_migrated_slot_is_followed_to_its_new_owner_and_reported_for_gap_filling():
    with redis_cluster(3) as cluster:
        sink = Sink()
        ps = pubsub(cluster, sink)
        channel, other = "kdc.t:p:chat.events.moving", "kdc.t:p:chat.events.staying"
        async with trio.open_nursery() as nursery:
            await nursery.start(ps.run)
            await ps.subscribe(channel, other)
            slot = key_slot(channel)
            source = cluster.owner_port(slot)
            target = next(n for n in cluster.masters() if n.port != source)
            src_id, dst_id = command(source, "CLUSTER", "MYID"), target.cmd("CLUSTER", "MYID")
            target.cmd("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
            command(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
            target.cmd("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
            command(source, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)  # source pushes `sunsubscribe`
            await wait_until(lambda: channel in set().union(*sink.recovered), what="the moved channel reported")
            assert sink.recovered == [{channel}], "exactly the channel that moved"
            assert ps._home[channel] == target.address
            reply = target.cmd("PUBSUB", "SHARDNUMSUB", channel)
            assert reply[1] == 1, "re-subscribed on the new owner"
            assert target.cmd("SPUBLISH", channel, "after") == 1
            await wait_until(lambda: sink.of(channel) == [b"after"])
            nursery.cancel_scope.cancel()
        await ps.cluster.aclose()


async def test_a_killed_master_is_replaced_by_its_replica_and_only_its_channels_are_recovered():
    with redis_cluster(3, 1) as cluster:
        sink = Sink()
        ps = pubsub(cluster, sink)
        channels = [f"kdc.t:p:chat.events.f{i}" for i in range(60)]
        async with trio.open_nursery() as nursery:
            await nursery.start(ps.run)
            await ps.subscribe(*channels)
            victim = cluster.owner_port(key_slot(channels[0]))
            lost = {c for c in channels if cluster.owner_port(key_slot(c)) == victim}
            killed = time.monotonic()
            promoted = await trio.to_thread.run_sync(cluster.kill_master, victim)
            await wait_until(lambda: lost <= set().union(*sink.recovered), timeout=20, what="recovery")
            recover_s = time.monotonic() - killed
            print(f"master :{victim} SIGKILLed, replica :{promoted.port} promoted; {len(lost)} channels "
                  f"re-subscribed and reported in {recover_s:.2f}s; shards {ps.statistics()['per_shard']}")
            seen = (f"reported {[len(r) for r in sink.recovered]} for {len(lost)} lost; "
                    f"pings missed {ps.pings_missed}; {ps.statistics()}")
            assert set().union(*sink.recovered) == lost, "only the dead shard's channels had a gap: " + seen
            assert all(ps._home[c] == promoted.address for c in lost), seen
            assert victim not in {p for _, p in ps.shards}, "the dead master's connection is closed: " + seen
            for c in channels:
                await trio.to_thread.run_sync(spublish, cluster, c, "after")
            await wait_until(lambda: len(sink.messages) == len(channels), timeout=20, what="one message per channel")
            assert sorted(c for c, _ in sink.messages) == sorted(channels)
            nursery.cancel_scope.cancel()
        await ps.cluster.aclose()


async def test_a_subscribe_on_a_stale_map_follows_the_moved_reply():
    with redis_cluster(3) as cluster:
        sink = Sink()
        ps = pubsub(cluster, sink)
        channel = "kdc.t:p:chat.events.late"
        async with trio.open_nursery() as nursery:
            await nursery.start(ps.run)
            slot = key_slot(channel)
            source = cluster.owner_port(slot)
            target = next(n for n in cluster.masters() if n.port != source)
            for node in cluster.masters():  # the slot moves before anyone here asks for the channel
                node.cmd("CLUSTER", "SETSLOT", slot, "NODE", target.cmd("CLUSTER", "MYID"))
            assert ps.map.owner(slot)[1] == source, "the process's map is stale"
            await ps.subscribe(channel)  # SSUBSCRIBE on the old owner → MOVED → asked on the new one
            assert b"errorstat_MOVED:count=1" in command(source, "INFO", "errorstats"), "refused with MOVED"
            assert ps._home[channel] == target.address
            assert ps.map.owner(slot) == target.address, "the MOVED re-pointed the process's map"
            assert target.cmd("SPUBLISH", channel, "hi") == 1
            await wait_until(lambda: sink.of(channel) == [b"hi"])
            nursery.cancel_scope.cancel()
        await ps.cluster.aclose()
