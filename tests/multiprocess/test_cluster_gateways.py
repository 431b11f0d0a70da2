"""Gateway and worker processes joined by a real Redis Cluster (`redis+cluster://`): the sharded relay.

Two `kdc-trio serve` processes and a `kdc-trio worker` run whole turns through a 3-master
cluster; the sessions' channels spread over every shard (`PUBSUB SHARDNUMSUB` on each master).
Then a failover: a 3-master + 1-replica-each cluster (cluster-node-timeout 1 s), a client
streaming a long turn stays connected while its session's master is SIGKILLed and its replica
promoted; it gets every event once, in order (what pub/sub missed is filled from the session
log). The failover test prints events sent/received, events filled from the log and time to recover.
"""

from __future__ import annotations

import re
import time
from contextlib import ExitStack

import httpx
import trio

from kdc_trio.config import Settings
from kdc_trio.redis.slots import key_slot
from kdc_trio.relay.keys import SessionKey
from tests.support.bundles import SLOW_DELTAS, TARGETED_DELTAS
from tests.support.delivery import count
from tests.support.processes import KdcProcess, spawn
from tests.support.redis_cluster import RedisCluster, redis_cluster
from tests.support.sse_client import SSEStream, open_stream

TURN = ["chat_start"] + ["chat_delta"] * SLOW_DELTAS + ["chat_complete"]
SESSIONS = 12
PREFIX = "kdc"  # KDC_REDIS_PREFIX's default: the turn queue is `kdc:{turns}`


def channel_of(st: SSEStream) -> str:
    key = SessionKey(st.ready["tenant"], st.ready["project"], st.ready["session_id"])
    return key.channel(Settings.from_env({}).relay_prefix)  # the processes' default relay prefix


def subscribers_per_master(cluster: RedisCluster, channels: list[str]) -> dict[int, int]:
    """Per master: the subscriptions (connections × channels) it holds for `channels`."""
    out = {}
    for node in cluster.masters():
        mine = [c for c in channels if cluster.owner_port(key_slot(c)) == node.port]
        reply = node.cmd("PUBSUB", "SHARDNUMSUB", *mine) if mine else []
        out[node.port] = sum(reply[i] for i in range(1, len(reply), 2))
    return out


async def metric(client: httpx.AsyncClient, gw: KdcProcess, name: str) -> float:
    text = (await client.get(f"{gw.base_url}/metrics")).text
    m = re.search(rf"^{name}(?:_total)? ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


async def test_two_gateways_and_a_worker_run_turns_over_every_shard_of_a_3_master_cluster():
    with redis_cluster(3) as cluster, ExitStack() as stack:
        env = {"REDIS_URL": cluster.seed_url, "KDC_BUNDLE": "tests.support.bundles:SlowBroadcastBundle",
               "KDC_RELAY_LINGER_MS": "0"}
        a = spawn(stack, "serve", env, "--no-worker")
        b = spawn(stack, "serve", env, "--no-worker")
        spawn(stack, "worker", env)
        async with httpx.AsyncClient(timeout=10) as client, trio.open_nursery() as nursery:
            on_a = [await open_stream(nursery, client, f"{a.base_url}/sse/stream?stream_id=a{i}")
                    for i in range(SESSIONS)]
            # each session also streamed on gateway B: the turn reaches both processes
            on_b = [await open_stream(nursery, client, f"{b.base_url}/sse/stream?stream_id=b{i}"
                                      f"&user_session_id={st.ready['session_id']}") for i, st in enumerate(on_a)]
            channels = [channel_of(st) for st in on_a]
            per_master = await trio.to_thread.run_sync(subscribers_per_master, cluster, channels)
            print(f"{SESSIONS} sessions x 2 gateways: SSUBSCRIBEd channels per master {per_master}")
            assert len(per_master) == 3 and all(n > 0 for n in per_master.values()), per_master
            assert sum(per_master.values()) == 2 * SESSIONS, "one subscription per session per gateway"
            for i, st in enumerate(on_a):  # posted through A and B alternately
                gw = a if i % 2 else b
                r = await client.post(f"{gw.base_url}/sse/chat?stream_id=a{i}&user_session_id={st.ready['session_id']}",
                                      json={"message": f"turn {i}"})
                assert r.status_code == 202, r.text
            for st in on_a + on_b:
                await st.wait_event("chat_complete", timeout=40)
            nursery.cancel_scope.cancel()
    for st_a, st_b in zip(on_a, on_b):
        turn_a = [(e.event, int(e.id)) for e in st_a.events if e.event in TURN]
        turn_b = [(e.event, int(e.id)) for e in st_b.events if e.event in TURN]
        assert [e for e, _ in turn_a] == TURN, "the whole turn, in order, on gateway A"
        assert turn_b == turn_a, "the same events with the same session seqs on gateway B"


def pick_session_off_the_queue_shard(cluster: RedisCluster, channel: str) -> bool:
    """The session's shard is not the turn queue's: killing it tests the relay, not the queue."""
    return cluster.owner_port(key_slot(channel)) != cluster.owner_port(key_slot(f"{PREFIX}:{{turns}}"))


async def test_a_shard_master_sigkilled_mid_turn_the_connected_client_loses_nothing():
    with redis_cluster(3, 1) as cluster, ExitStack() as stack:
        env = {"REDIS_URL": cluster.seed_url, "KDC_BUNDLE": "tests.support.bundles:SlowTargetedBundle",
               "KDC_RELAY_LINGER_MS": "0"}
        gw = spawn(stack, "serve", env, "--no-worker")
        spawn(stack, "serve", env, "--no-worker")  # a second gateway, on the same cluster, undisturbed
        spawn(stack, "worker", env)
        async with httpx.AsyncClient(timeout=10) as client, trio.open_nursery() as nursery:
            for i in range(20):
                st = await open_stream(nursery, client, f"{gw.base_url}/sse/stream?stream_id=f{i}")
                if await trio.to_thread.run_sync(pick_session_off_the_queue_shard, cluster, channel_of(st)):
                    break
            sid, stream_id = st.ready["session_id"], f"f{i}"
            victim = cluster.owner_port(key_slot(channel_of(st)))
            r = await client.post(f"{gw.base_url}/sse/chat?stream_id={stream_id}&user_session_id={sid}",
                                  json={"message": "hold 0.3"})
            assert r.status_code == 202, r.text
            await st.wait_event("chat_delta", count=3, timeout=20)
            n = len(st.events)
            killed = time.monotonic()
            promoted = await trio.to_thread.run_sync(cluster.kill_master, victim)
            promoted_s = time.monotonic() - killed
            await st.wait_for(lambda s: len(s.events) > n, timeout=30)
            recover_s = time.monotonic() - killed
            await st.wait_event("chat_complete", timeout=40)
            filled = await metric(client, gw, "kdc_redis_gap_events_recovered")
            reconnects = await metric(client, gw, "kdc_redis_reconnects")
            nursery.cancel_scope.cancel()
    assert st.dropped is None, "the client stayed connected"
    seqs = [int(e.id) for e in st.events if e.id]
    first = next(int(e.id) for e in st.events if e.event == "chat_start")
    last = next(int(e.id) for e in st.events if e.event == "chat_complete")
    c = count(seqs, first, last, recover_s)
    print(c.line(f"SSE, shard master :{victim} SIGKILLed mid-turn, replica :{promoted.port} promoted "
                 f"in {promoted_s:.2f}s; filled from the log: {filled:.0f} events; pub/sub gaps: {reconnects:.0f}"))
    assert (c.duplicates, c.gaps, c.reordered) == (0, 0, 0) and c.received == c.sent
    assert [e.data["delta"]["text"] for e in st.of("chat_delta")] == [f"t{i} " for i in range(TARGETED_DELTAS)]
    assert len(st.of("chat_start")) == 1, "the turn was not run again"
