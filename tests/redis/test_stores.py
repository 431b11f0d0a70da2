"""Sessions, conversation status and the Streams turn queue in a real Redis (both client backends)
and in a real 3-master Redis Cluster (the cluster client routes every operation by slot)."""

from __future__ import annotations

import pytest
import trio

from kdc_trio.ingress.models import Attachment, ChatMessage
from kdc_trio.processor.conv_status import ConvStatus
from kdc_trio.processor.queue import QueueFull
from kdc_trio.processor.redis_conv_status import RedisConvStatusStore
from kdc_trio.processor.redis_queue import RedisTurnQueue
from kdc_trio.processor.turn import Turn
from kdc_trio.auth.identity import Identity
from kdc_trio.sessions.model import Session, UserType
from kdc_trio.sessions.redis_store import RedisSessionStore
from kdc_trio.sessions.resolver import resolve_session, seen_refresh_s
from kdc_trio.redis.cluster import ClusterClient
from tests.redis.backends import BACKENDS
from tests.support.redis_cluster import cluster3  # noqa: F401  (the fixture)
from tests.support.redis_server import redis_server


@pytest.fixture(params=[*BACKENDS, "cluster"])
async def redis(request):
    """Each store on a fresh Redis through both client backends, and on a 3-master Redis Cluster."""
    if request.param == "cluster":
        client = ClusterClient(request.getfixturevalue("cluster3").seed_url)
        await client.execute("FLUSHALL")
        yield client
        assert (client.moved, client.asked) == (0, 0), "every command went to its slot's master at once"
        await client.aclose()
        return
    backend = BACKENDS[request.param]
    with redis_server() as srv:
        async with backend.loop():
            client = backend.client(srv.url)
            yield client
            await client.aclose()


async def test_sessions_round_trip_with_ttl_and_user_index(redis):
    store = RedisSessionStore(redis, prefix="t", ttl_s=100)
    s = Session(session_id="s1", user_type=UserType.PRIVILEGED, tenant="home", project="demo", user_id="alice",
                username="Alice", roles=("admin", "ops"))
    await store.put(s)
    got = await store.get("s1")
    assert got == s
    assert (await store.find_by_user("home", "demo", "alice")) == s
    assert await store.find_by_user("home", "other", "alice") is None
    assert await store.get("nope") is None
    assert 90 < await redis.execute("TTL", "t:session:s1") <= 100
    anon = Session(session_id="s2", user_type=UserType.ANONYMOUS, tenant="home", project="demo")
    await store.put(anon)
    assert (await store.get("s2")).user_id is None
    assert await store.ping()


async def test_conversation_busy_check_is_atomic_and_owned(redis):
    store = RedisConvStatusStore(redis, prefix="t")
    first = ConvStatus(conversation_id="c1", session_id="s1", state="in_progress", current_turn_id="t1")
    ok, prev = await store.begin_turn(first, allow_busy=False)
    assert ok and prev is None
    ok, prev = await store.begin_turn(ConvStatus(conversation_id="c1", session_id="s1", state="in_progress",
                                                 current_turn_id="t2"), allow_busy=False)
    assert not ok and prev.current_turn_id == "t1"
    ok, prev = await store.begin_turn(ConvStatus(conversation_id="c1", session_id="other", state="in_progress"),
                                      allow_busy=True)
    assert not ok and prev.session_id == "s1", "another session never takes a conversation over"
    await store.set(ConvStatus(conversation_id="c1", session_id="s1", state="idle", completion="success"))
    results = []

    async def racer(i):
        results.append((await store.begin_turn(
            ConvStatus(conversation_id="c1", session_id="s1", state="in_progress", current_turn_id=f"r{i}"),
            allow_busy=False))[0])

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(racer, i)
    assert results.count(True) == 1, "exactly one of concurrent turns wins"


def make_turn(*sizes: int) -> Turn:
    session = Session(session_id="s1", user_type=UserType.ANONYMOUS, tenant="home", project="demo")
    atts = [Attachment(filename=f"f{i}", mime="application/octet-stream", data=bytes([i % 256]) * n)
            for i, n in enumerate(sizes)]
    msg = ChatMessage(text="hi", payload={"text": "hi"}, conversation_id="c1", turn_id="t1", attachments=atts)
    return Turn(session=session, stream_id="st", message=msg, conversation_id="c1")


async def test_queue_carries_small_attachments_inline_and_large_ones_beside(redis):
    q = RedisTurnQueue(redis, prefix="t", inline_bytes=1000, attachment_ttl_s=60)
    async with trio.open_nursery() as nursery:
        await nursery.start(q.run)
        sent = make_turn(10, 5000)
        await q.put(sent)
        assert len(await redis.execute("KEYS", "t:att:*")) == 1
        with trio.fail_after(5):
            got = await q.get()
        assert [a.data for a in got.message.attachments] == [a.data for a in sent.message.attachments]
        assert got.attempt == 1 and got.error is None
        await q.ack(got)
        assert await redis.execute("XLEN", "t:{turns}") == 0
        assert await redis.execute("KEYS", "t:att:*") == []
        nursery.cancel_scope.cancel()


async def test_queue_is_bounded_and_an_expired_attachment_fails_the_turn(redis):
    q = RedisTurnQueue(redis, prefix="t", maxlen=2, inline_bytes=10, attachment_ttl_s=60)
    await q.put(make_turn(100))
    await q.put(make_turn())
    with pytest.raises(QueueFull):
        await q.put(make_turn(100))
    assert len(await redis.execute("KEYS", "t:att:*")) == 1, "a refused turn leaves no attachment behind"
    await redis.execute("DEL", *(await redis.execute("KEYS", "t:att:*")))
    async with trio.open_nursery() as nursery:
        await nursery.start(q.run)
        with trio.fail_after(5):
            first = await q.get()
        assert first.error and "f0" in first.error and "expired" in first.error
        nursery.cancel_scope.cancel()


async def test_a_turn_whose_worker_died_is_reclaimed_with_its_attempt(redis):
    dead = RedisTurnQueue(redis, prefix="t", lease_ms=300, consumer="dead")
    alive = RedisTurnQueue(redis, prefix="t", lease_ms=300, consumer="alive")
    await dead.put(make_turn())
    async with trio.open_nursery() as nursery:
        await nursery.start(dead.run)
        with trio.fail_after(5):
            taken = await dead.get()
        nursery.cancel_scope.cancel()  # the worker dies holding the turn, never acks
    async with trio.open_nursery() as nursery:
        await nursery.start(alive.run)
        with trio.fail_after(5):
            retried = await alive.get()
        await alive.ack(retried)
        nursery.cancel_scope.cancel()
    assert retried.turn_id == taken.turn_id and retried.attempt == 2
    assert alive.reclaimed == 1
    assert await redis.execute("XPENDING", "t:{turns}", "workers") == [0, None, None, None]


async def test_a_running_turn_is_not_reclaimed_while_its_worker_renews_the_lease(redis):
    worker = RedisTurnQueue(redis, prefix="t", lease_ms=300, consumer="busy")
    thief = RedisTurnQueue(redis, prefix="t", lease_ms=300, consumer="thief")
    await worker.put(make_turn())
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        await nursery.start(thief.run)
        with trio.fail_after(5):
            await worker.get()
        with trio.move_on_after(1.2):  # four leases long
            await thief.get()
            pytest.fail("a turn with a live worker was taken over")
        nursery.cancel_scope.cancel()
    assert thief.reclaimed == 0


async def test_a_session_seen_moments_ago_is_not_rewritten_by_the_next_request(redis):
    """`resolve_session` rewrites a reused session (refreshing its TTL) only when something in it
    changes or its last write is older than the refresh interval (1 % of the TTL here: 1 s)."""
    store = RedisSessionStore(redis, prefix="t", ttl_s=100)
    assert seen_refresh_s(store) == 1.0
    made = await resolve_session(store, session_id=None, identity=None, tenant=None, project=None)
    stored = await store.get(made.session_id)
    await redis.execute("EXPIRE", f"t:session:{made.session_id}", 50)
    again = await resolve_session(store, session_id=made.session_id, identity=None, tenant=None, project=None)
    assert again == stored, "nothing changed: the same session, not written again"
    assert await redis.execute("TTL", f"t:session:{made.session_id}") <= 50
    # a token's holder takes the anonymous session over: written at once
    alice = Identity(subject="alice", username="Alice", email=None, roles=("user",), user_type=UserType.REGISTERED)
    upgraded = await resolve_session(store, session_id=made.session_id, identity=alice, tenant=None, project=None)
    assert (await store.get(made.session_id)).user_id == "alice" == upgraded.user_id
    assert await redis.execute("TTL", f"t:session:{made.session_id}") > 90
    await redis.execute("EXPIRE", f"t:session:{made.session_id}", 50)
    await trio.sleep(1.1)
    # past the refresh interval: last seen and the TTL are written again
    later = await resolve_session(store, session_id=made.session_id, identity=alice, tenant=None, project=None)
    assert later.last_seen > upgraded.last_seen
    assert (await store.get(made.session_id)).last_seen == later.last_seen
    assert await redis.execute("TTL", f"t:session:{made.session_id}") > 90
