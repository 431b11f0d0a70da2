"""A resume whose replay is longer than the outbox still reaches the client.

Before: the log replayed into an outbox bounded at SSE_CLIENT_QUEUE before the writer took
anything, so a log of more non-mergeable events than that (steps, not deltas) closed the
connection `outbox_full` before it wrote a byte, and the client, resuming from the same point,
did so forever.
"""

from __future__ import annotations

import httpx
import trio

from kdc_trio.relay.keys import SessionKey
from kdc_trio.relay.outbox import CloseReason, Outbox
from tests.gateway.test_outbox_merge import delta, step
from tests.support.gateway import running_gateway, test_settings
from tests.support.sse_client import open_stream


def test_a_replay_longer_than_the_outbox_is_queued_whole_and_the_bound_returns_after_the_take():
    ob = Outbox("conn", 3, merge_at=0.0)
    ob.hold()
    ob.offer(step(11))  # live, held while the log is read
    for seq in range(1, 11):
        ob.offer_replayed(step(seq))
    ob.release()
    assert ob.closed_reason is None and ob.depth() == 11
    assert [m.seq for m in ob._q.take_nowait()] == list(range(1, 12))


async def test_after_a_replay_the_live_bound_holds_again():
    ob = Outbox("conn", 3, merge_at=0.0)
    ob.hold()
    for seq in range(1, 11):
        ob.offer_replayed(step(seq))
    ob.release()
    assert len(await ob.take()) == 10
    for seq in range(11, 15):
        ob.offer(step(seq))
    assert ob.closed_reason is not None and ob.closed_reason.reason is CloseReason.OUTBOX_FULL


def test_live_events_held_during_a_log_read_are_bounded_by_the_outbox():
    ob = Outbox("conn", 3, merge_at=0.0)
    ob.hold()
    for seq in range(1, 5):
        ob.offer(delta(seq, "x"))
    assert ob.closed_reason is not None and ob.closed_reason.reason is CloseReason.OUTBOX_FULL
    assert "while the session log was read" in str(ob.closed_reason)


async def test_sse_resume_with_more_logged_steps_than_the_outbox_holds_gets_them_all():
    settings = test_settings(client_queue=20, session_log_size=100)
    async with running_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        async with trio.open_nursery() as nursery:
            first = await open_stream(nursery, client, "/sse/stream?stream_id=a")  # makes the session
            sid = first.ready["session_id"]
            key = SessionKey(first.ready["tenant"], first.ready["project"], sid)
            nursery.cancel_scope.cancel()
        async with trio.open_nursery() as nursery:
            seqs = [await gw.relay.publish(key, event="chat_step", data={"n": i}) for i in range(60)]
            resumed = await open_stream(nursery, client, f"/sse/stream?stream_id=b&user_session_id={sid}",
                                        headers={"Last-Event-ID": str(seqs[0])})
            await resumed.wait_event("chat_step", 59)
            assert [int(e.id) for e in resumed.of("chat_step")] == seqs[1:]
            # ... and it stays open: live events follow
            live = await gw.relay.publish(key, event="chat_step", data={"n": "live"})
            await resumed.wait_for(lambda s: s.of("chat_step")[-1].id == str(live))
            assert not resumed.ended
            nursery.cancel_scope.cancel()
