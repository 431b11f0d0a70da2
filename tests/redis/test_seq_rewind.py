"""A Redis that comes back without events a gateway had delivered — a Sentinel failover to a
replica that had not got the old master's last writes (asynchronous replication), or a restart
that lost them — must not hand their seqs to new events: a connection drops any seq it already
has, so those new events would be lost without a word. After the pub/sub gap the bus raises the
session's seq to the last one it delivered (atomically with its log read) and tells the
connections `stream.gap`. Staged on one real Redis: the pub/sub connection is killed and the
session's seq and log are cut back in one transaction, as the promoted replica would have them."""

from __future__ import annotations

import httpx
import trio

from kdc_trio.redis.commands import transaction
from kdc_trio.relay.keys import SessionKey
from kdc_trio.relay.redis_bus import PUBLISH
from tests.redis.test_session_log_gap import gateway
from tests.support.sse_client import open_stream


async def lose_the_tail(gw, redis, key: SessionKey, *, keep: int, republish: int = 0) -> None:
    """Kill the pub/sub connection; keep `keep` events of the session (seq and log); then publish
    `republish` new events, as a producer would on the new master before the gateway is back."""
    bus = gw.bus
    commands = [("CLIENT", "KILL", "TYPE", "pubsub"), ("SET", bus._seq_key(key), keep),
                ("LTRIM", bus._log_key(key), 0, keep - 1)]
    for i in range(republish):
        keys, args = bus.publish_script_args(key, event="chat_delta", data={"text": f"new {i}"})
        commands.append(("EVAL", PUBLISH.source, len(keys), *keys, *args))
    await transaction(redis, commands)


async def stream_through(lost: int, republish: int) -> tuple[list, dict]:
    async with gateway("redis") as (gw, redis), httpx.AsyncClient(base_url=gw.base_url, timeout=20) as client:
        async with trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, "/sse/stream?stream_id=rewind")
            key = SessionKey(st.ready["tenant"], st.ready["project"], st.ready["session_id"])
            for i in range(5):
                await gw.relay.publish(key, event="chat_delta", data={"text": f"old {i}"})
            await st.wait_event("chat_delta", 5)
            await lose_the_tail(gw, redis, key, keep=5 - lost, republish=republish)
            await st.wait_event("chat_service", timeout=15)  # the gap is told once the bus is back
            await gw.relay.publish(key, event="chat_delta", data={"text": "after"})
            await st.wait_for(lambda s: any(e.data and e.data.get("text") == "after" for e in s.events))
            nursery.cancel_scope.cancel()
        return [e for e in st.events if e.event != "ready"], gw.bus.statistics()


async def test_a_lost_tail_is_told_and_new_events_continue_after_the_last_delivered_seq():
    events, stats = await stream_through(lost=2, republish=0)
    notice, after = events[5], events[6]
    assert [int(e.id) for e in events[:5]] == [1, 2, 3, 4, 5]
    assert notice.event == "chat_service" and notice.data["data"]["reason"] == "relay_gap"
    assert (notice.data["data"]["after_seq"], notice.data["data"]["last_seq"]) == (5, 3)
    assert after.id == "6", "not seq 4: the connection already had 4 and would have dropped it"
    assert len(events) == 7 and stats["seq_rewinds"] == 1


async def test_seqs_retaken_before_the_gateway_was_back_are_told_as_diverged():
    events, stats = await stream_through(lost=2, republish=2)  # new events took seqs 4 and 5
    notice = events[5]
    assert notice.event == "chat_service" and notice.data["data"]["reason"] == "diverged"
    assert notice.data["data"]["after_seq"] == 5 and notice.data["data"]["last_seq"] == 5
    assert events[6].id == "6" and events[6].data["text"] == "after"
    assert len(events) == 7 and stats["seq_rewinds"] == 1
