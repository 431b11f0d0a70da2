"""Continuations in the conversation-status store, the same contract in memory and in a real
Redis (both client backends, and a 3-master Redis Cluster): offer / take_pending / finish and their atomic decisions."""

from __future__ import annotations

import pytest
import trio

from kdc_trio.ingress.models import FOLLOWUP, STEER, Attachment, ChatMessage
from kdc_trio.processor.conv_status import ConvStatus, MemoryConvStatusStore
from kdc_trio.processor.redis_conv_status import RedisConvStatusStore
from kdc_trio.processor.turn import Turn
from kdc_trio.sessions.model import Session, UserType
from kdc_trio.redis.cluster import ClusterClient
from tests.redis.backends import BACKENDS
from tests.support.redis_cluster import cluster3  # noqa: F401  (the fixture)
from tests.support.redis_server import redis_server

SESSION = Session(session_id="s1", user_type=UserType.ANONYMOUS, tenant="home", project="demo")


def turn(turn_id: str, *, event_type: str = FOLLOWUP, target: str | None = None, session=SESSION,
         data: bytes = b"") -> Turn:
    atts = [Attachment(filename="f.bin", mime="application/octet-stream", data=data)] if data else []
    msg = ChatMessage(text=f"text of {turn_id}", payload={}, conversation_id="c1", turn_id=turn_id,
                      event_type=event_type, active_turn_id=target, attachments=atts,
                      external_events=[{"type": event_type, "payload": {"event": {"text": turn_id}}}])
    return Turn(session=session, stream_id=f"stream-{turn_id}", message=msg, conversation_id="c1", turn_id=turn_id)


def status(turn_id: str, state: str = "in_progress", session_id: str = "s1", completion=None) -> ConvStatus:
    return ConvStatus(conversation_id="c1", session_id=session_id, state=state, current_turn_id=turn_id,
                      completion=completion, origin_stream_id=f"stream-{turn_id}")


@pytest.fixture(params=["memory", "native", "compat", "cluster"])
async def store(request):
    if request.param == "memory":
        yield MemoryConvStatusStore()
        return
    if request.param == "cluster":
        client = ClusterClient(request.getfixturevalue("cluster3").seed_url)
        await client.execute("FLUSHALL")
        yield RedisConvStatusStore(client, prefix="t", poll_s=0.01)
        assert (client.moved, client.asked) == (0, 0), "every command went to its slot's master at once"
        await client.aclose()
        return
    backend = BACKENDS[request.param]
    with redis_server() as srv:
        async with backend.loop():
            client = backend.client(srv.url)
            yield RedisConvStatusStore(client, prefix="t", poll_s=0.01)
            await client.aclose()


async def test_offer_start_continue_take_and_finish(store):
    off = await store.offer(status("t1"), turn("t1"), max_pending=2)
    assert off.outcome == "started" and off.previous is None
    # while t1 runs: a follow-up waits; a steer for another turn is a mismatch; no room past 2
    assert (await store.offer(status("f1"), turn("f1", data=b"\x00\x01"), max_pending=2)).outcome == "continued"
    off = await store.offer(status("s0"), turn("s0", event_type=STEER, target="other"), max_pending=2)
    assert off.outcome == "mismatch" and off.previous.current_turn_id == "t1"
    assert (await store.offer(status("s1"), turn("s1", event_type=STEER, target="t1"), max_pending=2)).outcome \
        == "continued"
    assert (await store.offer(status("f2"), turn("f2"), max_pending=2)).outcome == "full"
    # only the running turn takes; it gets the whole message, attachments included
    assert await store.take_pending("c1", "not-running") is None
    got = await store.take_pending("c1", "t1")
    assert got.turn_id == "f1" and got.message.text == "text of f1" and bytes(got.message.attachments[0].data) \
        == b"\x00\x01" and got.message.event_type == FOLLOWUP and got.stream_id == "stream-f1"
    # t1 ends with only the steer waiting: the steer is dropped, the conversation goes idle
    nxt, dropped = await store.finish(status("t1", "idle", completion="success"))
    assert nxt is None and [d.turn_id for d in dropped] == ["s1"]
    cur = await store.get("c1")
    assert (cur.state, cur.current_turn_id, cur.completion) == ("idle", "t1", "success")
    # a steer with no running turn is answered, never started
    off = await store.offer(status("s2"), turn("s2", event_type=STEER), max_pending=2)
    assert off.outcome == "no_active_turn" and (await store.get("c1")).state == "idle"


async def test_an_untaken_follow_up_becomes_the_next_turn(store):
    await store.offer(status("t1"), turn("t1"), max_pending=5)
    for t in (turn("s1", event_type=STEER), turn("f1"), turn("f2")):
        assert (await store.offer(status(t.turn_id), t, max_pending=5)).outcome == "continued"
    nxt, dropped = await store.finish(status("t1", "idle", completion="success"))
    assert nxt.turn_id == "f1" and [d.turn_id for d in dropped] == ["s1"]
    cur = await store.get("c1")
    assert (cur.state, cur.current_turn_id, cur.completion, cur.origin_stream_id) == \
        ("in_progress", "f1", "queued_next", "stream-f1")
    # f2 still waits: a continuation of f1 now
    assert (await store.take_pending("c1", "f1")).turn_id == "f2"
    nxt, _ = await store.finish(status("f1", "error", completion="error"))
    assert nxt is None and (await store.get("c1")).state == "error"


async def test_another_sessions_conversation_is_foreign(store):
    await store.offer(status("t1"), turn("t1"), max_pending=5)
    other = Session(session_id="s2", user_type=UserType.ANONYMOUS, tenant="home", project="demo")
    off = await store.offer(status("x", session_id="s2"), turn("x", session=other), max_pending=5)
    assert off.outcome == "foreign"


async def test_a_waiting_bundle_wakes_when_a_continuation_arrives(store):
    await store.offer(status("t1"), turn("t1"), max_pending=5)
    got = []

    async def bundle_side():
        with trio.fail_after(5):
            while (t := await store.take_pending("c1", "t1")) is None:
                await store.wait_pending("c1")
        got.append(t.turn_id)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(bundle_side)
        await trio.sleep(0.05)
        await store.offer(status("f1"), turn("f1"), max_pending=5)
    assert got == ["f1"]


async def test_offers_racing_a_finish_are_never_lost():
    """Many follow-ups offered while the turn ends: each either was taken as the next turn or
    still waits for it; none vanished (Redis: concurrent clients against the scripts)."""
    with redis_server() as srv:
        client = BACKENDS["native"].client(srv.url)
        store = RedisConvStatusStore(client, prefix="t")
        await store.offer(status("t1"), turn("t1"), max_pending=100)
        outcomes = {}

        async def offer(i):
            outcomes[i] = (await store.offer(status(f"f{i}"), turn(f"f{i}"), max_pending=100)).outcome

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(offer, i)
            nursery.start_soon(store.finish, status("t1", "idle", completion="success"))
        started = [i for i, o in outcomes.items() if o == "started"]
        continued = {f"f{i}" for i, o in outcomes.items() if o == "continued"}
        cur = await store.get("c1")
        seen = set()
        while (t := await store.take_pending("c1", cur.current_turn_id)) is not None:
            seen.add(t.turn_id)
        if cur.completion == "queued_next":
            seen.add(cur.current_turn_id)  # promoted from the waiting list
        assert len(started) <= 1 and continued <= seen | {cur.current_turn_id}
        assert len(continued) + len(started) == 20
        await client.aclose()
