"""A master lost mid-exchange costs only the commands sent to it: the replies the other masters
gave in the same pipeline are kept (PartialPipelineError.replies), and a ScriptBatcher batch
spanning shards fails only its calls on the lost master — the others ran (their events were
published), so reporting them failed would make their turns run again (duplicates)."""

from __future__ import annotations

import pytest
import trio

from kdc_trio.redis.batching import ScriptBatcher
from kdc_trio.redis.cluster import ClusterClient
from kdc_trio.redis.commands import Script
from kdc_trio.redis.connection import PartialPipelineError, RedisConnectionError, RedisTimeoutError
from kdc_trio.redis.slots import key_slot
from tests.support.redis_cluster import RedisCluster, redis_cluster

INCR = Script("return redis.call('INCR', KEYS[1])")


def two_keys(cluster: RedisCluster) -> tuple[str, str, int]:
    """A key on the first master and one on another; the first master's port."""
    victim = cluster.masters()[0].port
    on_victim = next(f"k{i}" for i in range(10_000) if cluster.owner_port(key_slot(f"k{i}")) == victim)
    elsewhere = next(f"k{i}" for i in range(10_000) if cluster.owner_port(key_slot(f"k{i}")) != victim)
    return on_victim, elsewhere, victim


async def _kill_soon(cluster: RedisCluster, port: int) -> None:
    """SIGKILL the (paused) master once our exchange with it is in flight: it is lost."""
    await trio.sleep(0.5)
    await trio.to_thread.run_sync(cluster.node_at(port).server.kill)


@pytest.mark.parametrize("via", ["pipeline", "batcher"])
async def test_a_master_lost_mid_exchange_costs_only_its_commands(via: str):
    with redis_cluster(3) as cluster:
        a, b, victim = two_keys(cluster)
        client = ClusterClient(cluster.seed_url, command_timeout=20)
        try:
            await client.execute("SET", a, "0")
            await client.execute("SET", b, "0")
            # The victim holds every command (CLIENT PAUSE) and our exchange with it goes on a fresh
            # connection (the pool's idle ones closed), so its loss is final: not retried.
            cluster.node_at(victim).cmd("CLIENT", "PAUSE", "20000", "ALL")
            await client.node(("127.0.0.1", victim)).aclose()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_kill_soon, cluster, victim)
                if via == "pipeline":
                    with pytest.raises(PartialPipelineError) as caught:
                        await client.pipeline([("INCR", a), ("INCR", b)])
                    lost, kept = caught.value.replies
                    assert isinstance(lost, RedisConnectionError)
                    assert kept == 1
                else:
                    batcher = ScriptBatcher(client, INCR)
                    results: dict[str, object] = {}

                    async def call(key: str) -> None:
                        try:
                            results[key] = await batcher.call([key], [])
                        except RedisConnectionError as exc:
                            results[key] = exc

                    await nursery.start(batcher.run)
                    async with trio.open_nursery() as calls:  # both queued before the batch goes out
                        calls.start_soon(call, a)
                        calls.start_soon(call, b)
                    assert isinstance(results[a], RedisConnectionError)
                    assert results[b] == 1, results
                    nursery.cancel_scope.cancel()
            assert cluster.node_at(cluster.owner_port(key_slot(b))).cmd("GET", b) == b"1"
        finally:
            await client.aclose()


async def test_a_command_for_every_master_with_one_down_raises_a_connection_error():
    """DBSIZE/KEYS/FLUSHALL/SCRIPT go to every master: one master down is a RedisConnectionError
    (what callers catch, REDIS_FAILURES), not an ExceptionGroup out of the fan-out's nursery."""
    with redis_cluster(3) as cluster:
        client = ClusterClient(cluster.seed_url, command_timeout=5)
        try:
            assert await client.execute("DBSIZE") == 0
            cluster.masters()[0].server.kill()
            with pytest.raises(RedisConnectionError):
                await client.execute("DBSIZE")
        finally:
            await client.aclose()


async def test_a_master_that_does_not_answer_costs_only_its_commands():
    """A stalled (or partitioned) master: its exchange ends at its share of the deadline with a
    timeout in place, and the other masters' replies are kept (before: the whole pipeline waited
    its deadline and failed, and the publishes that had run on healthy shards were reported
    failed)."""
    with redis_cluster(3) as cluster:
        a, b, victim = two_keys(cluster)
        client = ClusterClient(cluster.seed_url, command_timeout=2)
        try:
            await client.execute("SET", a, "0")
            await client.execute("SET", b, "0")
            cluster.node_at(victim).cmd("CLIENT", "PAUSE", "4000", "ALL")
            start = trio.current_time()
            with pytest.raises(PartialPipelineError) as caught:
                await client.pipeline([("INCR", a), ("INCR", b)])
            assert trio.current_time() - start < 2.0, "within the pipeline's own deadline"
            lost, kept = caught.value.replies
            assert isinstance(lost, RedisTimeoutError)
            assert kept == 1
        finally:
            await client.aclose()
