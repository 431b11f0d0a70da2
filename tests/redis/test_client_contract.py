"""The Redis client contract, run against both backends (the trio-native RESP client and
redis-py under trio-asyncio) and real redis-server processes started by the test."""

from __future__ import annotations

import pytest
import trio
from redis.connection import parse_url as redis_py_parse_url

from kdc_trio.redis.client import RedisClient, RedisConnectionError, RedisError
from kdc_trio.redis.url import parse_redis_url
from tests.redis.backends import backend  # noqa: F401  (the fixture)
from tests.support.redis_server import messages, redis_server


@pytest.mark.parametrize("url", [
    "redis://localhost", "redis://h:6380/2", "redis://:secret@h/1", "redis://user:p%40ss@h:7000/3",
    "rediss://u:p@h:6390", "redis://h?db=5", "redis://h/4?db=5",
])
def test_urls_are_read_as_redis_py_reads_them(url):
    ours, theirs = parse_redis_url(url), redis_py_parse_url(url)
    assert ours.host == theirs["host"]
    assert ours.port == theirs.get("port", 6379)
    assert ours.db == int(theirs.get("db", 0))
    assert ours.username == theirs.get("username") and ours.password == theirs.get("password")
    assert ours.ssl == url.startswith("rediss")
    assert "p@ss" not in repr(ours) and "secret" not in repr(ours)


async def test_commands_pipelines_errors_and_select(backend):
    with redis_server() as srv:
        async with backend.loop():
            client = backend.client(srv.url.replace("/0", "/3"))
            assert await client.execute("SET", "k", "v") == b"OK"
            assert await client.execute("GET", "k") == b"v"
            assert await client.pipeline([("INCR", "n")] * 1000) == list(range(1, 1001))
            with pytest.raises(RedisError, match="WRONGTYPE"):
                await client.execute("LPUSH", "k", "x")
            mixed = await client.pipeline([("GET", "k"), ("LPUSH", "k", "x"), ("GET", "k")])
            assert mixed[0] == b"v" and isinstance(mixed[1], RedisError) and mixed[2] == b"v"
            await client.execute("HSET", "h", "a", "1")
            assert await client.execute("HGETALL", "h") == [b"a", b"1"], "raw RESP replies"
            assert await client.execute("DBSIZE") == 3
            other = backend.client(srv.url)
            assert await other.execute("DBSIZE") == 0, "the first client is on db 3"
            await client.aclose()
            await other.aclose()


async def test_concurrent_callers_share_a_bounded_pool(backend):
    with redis_server() as srv:
        async with backend.loop():
            client = backend.client(srv.url, max_connections=4)
            results = []

            async def worker(i):
                results.append((i, await client.execute("ECHO", str(i))))

            async with trio.open_nursery() as nursery:
                for i in range(200):
                    nursery.start_soon(worker, i)
            assert sorted(results) == [(i, str(i).encode()) for i in range(200)]
            clients = await client.execute("CLIENT", "LIST")
            assert clients.count(b"cmd=") <= 4 + 1, "at most max_connections (+ the CLIENT LIST caller)"
            await client.aclose()


async def test_acl_user_auth_and_wrong_password(backend):
    with redis_server() as srv:
        async with backend.loop():
            admin = backend.client(srv.url)
            await admin.execute("ACL", "SETUSER", "app", "on", ">app-pass", "~*", "&*", "+@all")
            ok = backend.client(f"redis://app:app-pass@127.0.0.1:{srv.port}/0")
            assert await ok.execute("ACL", "WHOAMI") == b"app"
            bad = backend.client(f"redis://app:nope@127.0.0.1:{srv.port}/0")
            with pytest.raises((RedisError, RedisConnectionError), match="WRONGPASS|invalid username"):
                await bad.execute("PING")
            for c in (admin, ok, bad):
                await c.aclose()


async def test_a_dead_server_is_a_connection_error_and_a_restart_is_survived(backend):
    with redis_server() as srv:
        async with backend.loop():
            client = backend.client(srv.url, connect_timeout=1)
            assert await client.execute("PING") == b"PONG"
            srv.kill()
            with pytest.raises(RedisConnectionError):
                await client.execute("PING")
            srv.start()
            assert await client.execute("PING") == b"PONG"
            await client.aclose()


async def test_pubsub_1000_channels_subscribed_and_unsubscribed_while_messages_flow(backend):
    with redis_server() as srv:
        async with backend.loop():
            batches: list[dict] = []
            ps = backend.pubsub(srv.url, on_batch=batches.append)
            client = backend.client(srv.url)
            async with trio.open_nursery() as nursery:
                await nursery.start(ps.run)
                await ps.subscribe("steady")
                sent = 0

                async def publisher():
                    nonlocal sent
                    while True:
                        await client.pipeline([("PUBLISH", "steady", str(sent + i)) for i in range(50)])
                        sent += 50
                        await trio.sleep(0.001)

                nursery.start_soon(publisher)
                churn = [f"chan:{i}" for i in range(1000)]
                await ps.subscribe(*churn)
                numsub = await client.execute("PUBSUB", "NUMSUB", "chan:0", "chan:999")
                assert numsub == [b"chan:0", 1, b"chan:999", 1]
                await client.execute("PUBLISH", "chan:500", "hello")
                with trio.fail_after(5):
                    while not any(b"chan:500" in b for b in batches):
                        await trio.sleep(0.01)
                await ps.unsubscribe(*churn)
                with trio.fail_after(5):
                    while {c for c in await client.execute("PUBSUB", "CHANNELS")} & {b"chan:0", b"chan:999"}:
                        await trio.sleep(0.01)
                with trio.fail_after(10):
                    while sum(len(b.get(b"steady", ())) for b in batches) < 2000:
                        await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
            steady = [int(d) for b in batches for d in b.get(b"steady", ())]
            assert steady == list(range(len(steady))), "every message, in order"
            assert [d for b in batches for d in b.get(b"chan:500", ())] == [b"hello"]
            assert max(len(messages(b)) for b in batches) > 1, "messages of one read arrive as one batch"
            await client.aclose()


async def test_pubsub_survives_a_redis_restart_and_resubscribes(backend):
    with redis_server() as srv:
        async with backend.loop():
            got: list[bytes] = []
            reconnects = []
            ps = backend.pubsub(srv.url, on_batch=lambda b: got.extend(d for _, d in messages(b)),
                                on_reconnect=lambda: reconnects.append(1))
            client = backend.client(srv.url)
            async with trio.open_nursery() as nursery:
                await nursery.start(ps.run)
                await ps.subscribe("a", "b")
                await client.execute("PUBLISH", "a", "before")
                with trio.fail_after(5):
                    while b"before" not in got:
                        await trio.sleep(0.01)
                srv.restart()
                with trio.fail_after(15):
                    while not reconnects:
                        await trio.sleep(0.02)
                await client.execute("PUBLISH", "b", "after")
                with trio.fail_after(5):
                    while b"after" not in got:
                        await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
            assert got == [b"before", b"after"]
            assert ps.gaps == 1 and {"a", "b"} <= ps.wanted
            await client.aclose()


async def test_the_native_pool_opens_no_more_than_it_may():
    with redis_server() as srv:
        client = RedisClient(srv.url, max_connections=3)
        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(client.execute, "PING")
        assert client.opened == 3
        await client.aclose()
