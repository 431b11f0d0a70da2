"""The gateway on a real 3-master Redis Cluster (`redis+cluster://`): the sharded relay.

Session channels are SSUBSCRIBEd on the master owning their slot (one pub/sub connection per
master) and the publish script SPUBLISHes there; sessions spread over every shard (checked
with `PUBSUB SHARDNUMSUB` on each master); project-wide events still reach project listeners.
The processes-level tests (two gateways, a worker, a failover) are in
tests/multiprocess/test_cluster_gateways.py."""

from __future__ import annotations

import httpx
import trio

from kdc_trio.redis.cluster import ClusterClient
from kdc_trio.redis.sharded_pubsub import ShardedPubSub
from kdc_trio.relay.keys import SessionKey
from kdc_trio.relay.service import ServiceCommunicator
from tests.gateway.test_project_events import AnnouncingBundle
from tests.support.gateway import running_gateway, test_settings
from tests.support.redis_cluster import redis_cluster
from tests.support.sse_client import open_stream

SESSIONS = 24




async def test_sessions_spread_over_every_shard_turns_and_project_events_arrive():
    with redis_cluster(3) as cluster:
        settings = test_settings(redis_url=cluster.seed_url)
        async with running_gateway(settings, bundle=AnnouncingBundle()) as gw, \
                httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client, trio.open_nursery() as nursery:
            pubsub = gw.bus.service.pubsub
            assert isinstance(pubsub, ShardedPubSub) and len(pubsub.shards) == 3
            listener = await open_stream(nursery, client, "/sse/stream?stream_id=l&project_events=true")
            streams = [await open_stream(nursery, client, f"/sse/stream?stream_id=s{i}") for i in range(SESSIONS)]
            channels = [SessionKey(s.ready["tenant"], s.ready["project"], s.ready["session_id"])
                        .channel(settings.relay_prefix) for s in streams]
            per_master = await trio.to_thread.run_sync(cluster.shard_subscriptions, channels)
            print(f"{SESSIONS} sessions, subscribed channels per master: {per_master}")
            assert len(per_master) == 3 and all(n > 0 for n in per_master.values()), per_master
            assert sum(per_master.values()) == SESSIONS
            for i, st in enumerate(streams):
                r = await client.post(f"/sse/chat?stream_id=s{i}&user_session_id={st.ready['session_id']}",
                                      json={"message": f"hello {i}"})
                assert r.status_code == 202, r.text
            for st in streams:
                await st.wait_event("chat_complete", timeout=20)
            await listener.wait_for(lambda s: len([e for e in s.of("chat_step")
                                                   if e.data["type"] == "project.notice"]) >= SESSIONS, timeout=20)
            nursery.cancel_scope.cancel()
    for i, st in enumerate(streams):
        turn = [e.event for e in st.events if e.event in ("chat_start", "chat_complete")]
        assert turn == ["chat_start", "chat_complete"], (i, turn)
        ids = [int(e.id) for e in st.events if e.id]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
    said = sorted(e.data["data"]["said"] for e in listener.of("chat_step") if e.data["type"] == "project.notice")
    assert said == sorted(f"hello {i}" for i in range(SESSIONS)), "every session's project event, once"
    assert pubsub.gaps == 0


async def test_service_communicator_publishes_with_spublish_to_each_channels_shard():
    with redis_cluster(3) as cluster:
        client = ClusterClient(cluster.seed_url)
        listener = ServiceCommunicator(client, host_id="listener", sharded=True)
        listener.pubsub = ShardedPubSub(client, on_batch=listener.on_batch, on_reconnect=listener.on_reconnect)
        speaker = ServiceCommunicator(client, host_id="speaker", sharded=True)
        channels = [f"svc.{i}" for i in range(30)]
        got: dict[str, list[dict]] = {c: [] for c in channels}
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.run)
            for c in channels:
                await listener.listen(c, got[c].extend)
            per_shard = [len(shard.wanted) for shard in listener.pubsub.shards.values()]
            for i, c in enumerate(channels):
                assert await speaker.publish(c, {"n": i}) == 1, "SPUBLISH reached the one subscriber"
            with trio.fail_after(10):
                while sum(map(len, got.values())) < len(channels):
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        await client.aclose()
    assert [got[c][0]["n"] for c in channels] == list(range(30))
    assert {m["host_id"] for ms in got.values() for m in ms} == {"speaker"}
    assert len(per_shard) == 3 and min(per_shard) > 0, per_shard
