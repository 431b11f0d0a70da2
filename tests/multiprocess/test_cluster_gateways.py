"""Gateway and worker processes joined by a real Redis Cluster (`redis+cluster://`): the sharded relay.

Two `kdc-trio serve` processes and a `kdc-trio worker` run whole turns through a 3-master
cluster; the sessions' channels spread over every shard (`PUBSUB SHARDNUMSUB` on each master).
Then a failover: a 3-master + 1-replica-each cluster (cluster-node-timeout 1 s), a client
streaming a long turn stays connected while its session's master is SIGKILLed and its replica
promoted; it gets every event once, in order (what pub/sub missed is filled from the session
log). The failover test prints events sent/received, events filled from the log and time to recover.
"""

from __future__ import annotations

import asyncio
import re
import time
from contextlib import ExitStack

import httpx
import pytest
import trio

from kdc_trio.config import Settings
from kdc_trio.redis.slots import key_slot
from kdc_trio.relay.keys import SessionKey
from tests.support.bundles import SLOW_DELTAS, TARGETED_DELTAS
from tests.support.delivery import count
from tests.support.processes import KdcProcess, spawn
from tests.support.redis_cluster import RedisCluster, redis_cluster
from tests.support.sio_client import run_sio
from tests.support.sse_client import SSEStream, open_stream

TURN = ["chat_start"] + ["chat_delta"] * SLOW_DELTAS + ["chat_complete"]
# Sessions get random ids, so a shard gets none of n with chance ~3 x (2/3)^n: 2.3 % at 12 (seen in a
# run), 0.02 % at 24.
SESSIONS = 24
PREFIX = "kdc"  # KDC_REDIS_PREFIX's default: the turn queue is `kdc:{turns}`


def channel_of(st: SSEStream) -> str:
    key = SessionKey(st.ready["tenant"], st.ready["project"], st.ready["session_id"])
    return key.channel(Settings.from_env({}).relay_prefix)  # the processes' default relay prefix




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
            per_master = await trio.to_thread.run_sync(cluster.shard_subscriptions, channels)
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


async def sse_through_failover(cluster: RedisCluster, gw: KdcProcess, client: httpx.AsyncClient,
                               nursery: trio.Nursery, st: SSEStream, stream_id: str) -> tuple[list, dict]:
    """The SSE stream `st` posts a turn and streams it while its session's master fails over."""
    sid = st.ready["session_id"]
    r = await client.post(f"{gw.base_url}/sse/chat?stream_id={stream_id}&user_session_id={sid}",
                          json={"message": "hold 0.3"})
    assert r.status_code == 202, r.text
    await st.wait_event("chat_delta", count=3, timeout=20)
    n = len(st.events)
    marks = await trio.to_thread.run_sync(kill_session_master, cluster, channel_of(st))
    await st.wait_for(lambda s: len(s.events) > n, timeout=30)
    marks["recover_s"] = time.monotonic() - marks["killed"]
    await st.wait_event("chat_complete", timeout=40)
    assert st.dropped is None, "the client stayed connected"
    return [(int(e.id), e.event, e.data) for e in st.events if e.id], marks


async def python_sio_through_failover(cluster: RedisCluster, gw: KdcProcess, client: httpx.AsyncClient,
                                      nursery: trio.Nursery, st: SSEStream, stream_id: str) -> tuple[list, dict]:
    """python-socketio joins the SSE stream's session, posts the turn (targeted to it) and streams it."""
    marks: dict = {}

    async def scenario(sio, res):
        await res.wait_for(lambda r: r.of("session_info"))
        await sio.call("chat_message", {"message": "hold 0.3"}, timeout=10)
        await res.wait_for(lambda r: len(r.of("chat_delta")) >= 3, timeout=20)
        n = len(res.events)
        marks.update(await asyncio.to_thread(kill_session_master, cluster, channel_of(st)))
        await res.wait_for(lambda r: len(r.events) > n, timeout=30)
        marks["recover_s"] = time.monotonic() - marks["killed"]
        await res.wait_for(lambda r: r.of("chat_complete"), timeout=40)
        marks["dropped"] = res.disconnected  # (reconnection is off: a drop would have ended the turn here)

    res = await run_sio(gw.base_url, scenario, auth={"user_session_id": st.ready["session_id"]},
                        transports=["websocket"], timeout=90)
    assert marks.get("dropped") is False, "the client stayed connected through the turn"
    return [(d["seq"], e, d) for e, d in res.events if isinstance(d, dict) and d.get("seq")], marks


def kill_session_master(cluster: RedisCluster, channel: str) -> dict:
    victim = cluster.owner_port(key_slot(channel))
    killed = time.monotonic()
    promoted = cluster.kill_master(victim)
    return {"victim": victim, "promoted": promoted.port, "killed": killed,
            "promoted_s": time.monotonic() - killed}


@pytest.mark.parametrize("through", [sse_through_failover, python_sio_through_failover], ids=["sse", "python-socketio"])
async def test_a_shard_master_sigkilled_mid_turn_the_connected_client_loses_nothing(through):
    with redis_cluster(3, 1) as cluster, ExitStack() as stack:
        env = {"REDIS_URL": cluster.seed_url, "KDC_BUNDLE": "tests.support.bundles:SlowTargetedBundle",
               "KDC_RELAY_LINGER_MS": "0"}
        gw = spawn(stack, "serve", env, "--no-worker")
        spawn(stack, "serve", env, "--no-worker")  # a second gateway, on the same cluster, undisturbed
        spawn(stack, "worker", env)
        async with httpx.AsyncClient(timeout=10) as client, trio.open_nursery() as nursery:
            for i in range(20):  # a session whose shard does not hold the turn queue
                st = await open_stream(nursery, client, f"{gw.base_url}/sse/stream?stream_id=f{i}")
                if await trio.to_thread.run_sync(pick_session_off_the_queue_shard, cluster, channel_of(st)):
                    break
            got, marks = await through(cluster, gw, client, nursery, st, f"f{i}")
            filled = await metric(client, gw, "kdc_redis_gap_events_recovered")
            reconnects = await metric(client, gw, "kdc_redis_reconnects")
            nursery.cancel_scope.cancel()
    seqs = [seq for seq, _, _ in got]
    first = next(seq for seq, ev, _ in got if ev == "chat_start")
    last = next(seq for seq, ev, _ in got if ev == "chat_complete")
    c = count(seqs, first, last, marks["recover_s"])
    print(c.line(f"{through.__name__}: shard master :{marks['victim']} SIGKILLed mid-turn, replica "
                 f":{marks['promoted']} promoted in {marks['promoted_s']:.2f}s; filled from the log: {filled:.0f} "
                 f"events; pub/sub gaps: {reconnects:.0f}"))
    assert (c.duplicates, c.gaps, c.reordered) == (0, 0, 0) and c.received == c.sent
    assert [d["delta"]["text"] for _, ev, d in got if ev == "chat_delta"] == [f"t{i} " for i in range(TARGETED_DELTAS)]
    assert sum(1 for _, ev, _ in got if ev == "chat_start") == 1, "the turn was not run again"
