"""The trio-native RESP client against real redis-server processes started by the test."""

from __future__ import annotations

import pytest
import trio
from redis.connection import parse_url as redis_py_parse_url

from kdc_trio.redis.client import RedisClient, RedisConnectionError, RedisError
from kdc_trio.redis.pubsub import PubSub
from kdc_trio.redis.url import parse_redis_url
from tests.support.redis_server import redis_server


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


async def test_commands_pipelines_errors_and_select():
    with redis_server() as srv:
        client = RedisClient(srv.url.replace("/0", "/3"))
        assert await client.execute("SET", "k", "v") == b"OK"
        assert await client.execute("GET", "k") == b"v"
        replies = await client.pipeline([("INCR", "n")] * 1000)
        assert replies == list(range(1, 1001))
        with pytest.raises(RedisError, match="WRONGTYPE"):
            await client.execute("LPUSH", "k", "x")
        mixed = await client.pipeline([("GET", "k"), ("LPUSH", "k", "x"), ("GET", "k")])
        assert mixed[0] == b"v" and isinstance(mixed[1], RedisError) and mixed[2] == b"v"
        assert await client.execute("DBSIZE") == 2
        other = RedisClient(srv.url)
        assert await other.execute("DBSIZE") == 0, "SELECT put the first client on db 3"
        await client.aclose()
        await other.aclose()


async def test_concurrent_callers_share_a_bounded_pool():
    with redis_server() as srv:
        client = RedisClient(srv.url, max_connections=4)
        results = []

        async def worker(i):
            results.append((i, await client.execute("ECHO", str(i))))

        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(worker, i)
        assert all(v == str(i).encode() for i, v in results) and len(results) == 200
        assert client.opened <= 4
        await client.aclose()


async def test_acl_user_auth_and_wrong_password():
    with redis_server() as srv:
        admin = RedisClient(srv.url)
        await admin.execute("ACL", "SETUSER", "app", "on", ">app-pass", "~*", "&*", "+@all")
        ok = RedisClient(f"redis://app:app-pass@127.0.0.1:{srv.port}/0")
        assert await ok.execute("ACL", "WHOAMI") == b"app"
        bad = RedisClient(f"redis://app:nope@127.0.0.1:{srv.port}/0")
        with pytest.raises(RedisError, match="WRONGPASS"):
            await bad.execute("PING")
        for c in (admin, ok, bad):
            await c.aclose()


async def test_a_dead_server_is_a_connection_error_and_a_restart_is_survived():
    with redis_server() as srv:
        client = RedisClient(srv.url, connect_timeout=1)
        assert await client.execute("PING") == b"PONG"
        srv.kill()
        with pytest.raises(RedisConnectionError):
            await client.execute("PING")
        srv.start()
        assert await client.execute("PING") == b"PONG"
        await client.aclose()


async def test_pubsub_1000_channels_subscribed_and_unsubscribed_while_messages_flow():
    with redis_server() as srv:
        batches: list[list] = []
        ps = PubSub(srv.url, on_batch=batches.append)
        client = RedisClient(srv.url)
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
            assert await client.execute("PUBSUB", "NUMSUB", "chan:0", "chan:999") == [b"chan:0", 1, b"chan:999", 1]
            await client.execute("PUBLISH", "chan:500", "hello")
            await ps.unsubscribe(*churn)
            with trio.fail_after(5):
                while len(await client.execute("PUBSUB", "CHANNELS")) != 1:
                    await trio.sleep(0.01)
            with trio.fail_after(5):
                while sum(1 for b in batches for c, _ in b if c == b"steady") < 2000:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        steady = [int(d) for b in batches for c, d in b if c == b"steady"]
        assert steady == list(range(len(steady))), "every message, in order"
        assert [(c, d) for b in batches for c, d in b if c == b"chan:500"] == [(b"chan:500", b"hello")]
        assert max(len(b) for b in batches) > 1, "messages of one read arrive as one batch"
        await client.aclose()


async def test_pubsub_survives_a_redis_restart_and_resubscribes():
    with redis_server() as srv:
        got: list[bytes] = []
        reconnects = []
        ps = PubSub(srv.url, on_batch=lambda b: got.extend(d for _, d in b),
                    on_reconnect=lambda: reconnects.append(1), backoff_max=0.2)
        async with trio.open_nursery() as nursery:
            await nursery.start(ps.run)
            await ps.subscribe("a", "b")
            client = RedisClient(srv.url)
            await client.execute("PUBLISH", "a", "before")
            srv.restart()
            with trio.fail_after(10):
                while not reconnects:
                    await trio.sleep(0.02)
            await client.execute("PUBLISH", "b", "after")
            with trio.fail_after(5):
                while b"after" not in got:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        assert got == [b"before", b"after"]
        assert ps.gaps == 1 and ps.wanted == {"a", "b"}
        await client.aclose()
