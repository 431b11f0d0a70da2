"""Redis Sentinel through the native client, with real processes started by each test on free
ports (tests/support/redis_sentinel.py: a master, a replica, three Sentinels, quorum 2): commands
and pub/sub through a `redis+sentinel://` URL; the master SIGKILLed → failover → commands, pub/sub
and a gateway's SSE stream go on on the new master. Each failover test prints what it measured."""

from __future__ import annotations

import shutil
import time
from contextlib import ExitStack

import httpx
import pytest
import trio

from kdc_trio.redis.client import RedisClient
from kdc_trio.redis.connection import Connection, RedisConnectionError, RedisError
from kdc_trio.redis.pubsub import PubSub
from kdc_trio.redis.sentinel import SentinelConnector
from kdc_trio.redis.sentinel_watch import SentinelWatch
from kdc_trio.redis.url import parse_redis_url, parse_sentinel_url
from kdc_trio.relay.keys import SessionKey
from tests.support.bundles import LONG_BROADCAST
from tests.support.delivery import count
from tests.support.gateway import running_gateway, test_settings
from tests.support.processes import spawn
from tests.support.redis_sentinel import MASTER_NAME, Sentinel, redis_sentinel
from tests.support.redis_server import RedisServer, messages
from tests.support.sse_client import open_stream, open_stream_and_post

# From the kill to a command answered by the new master: ~1 s until the master is down for the
# Sentinels, an election and the promotion (~2-4 s), then our next connection re-resolves.
RECOVER_DEADLINE_S = 20.0


async def wait_until_answered(client: RedisClient, *args) -> object:
    """Retry `args` (as a client of a real application would) until the new master answers."""
    with trio.fail_after(RECOVER_DEADLINE_S):
        while True:
            try:
                return await client.execute(*args, timeout=1.0)
            except (RedisConnectionError, RedisError):
                await trio.sleep(0.05)


async def test_commands_and_pubsub_follow_the_master_through_a_failover():
    with redis_sentinel() as setup:
        client = RedisClient(setup.url, connect_timeout=2.0, command_timeout=2.0)
        got: list[bytes] = []
        reconnects: list[float] = []
        pubsub = PubSub(setup.url, on_batch=lambda b: got.extend(d for _, d in messages(b)),
                        on_reconnect=lambda: reconnects.append(time.monotonic()), connect_timeout=2.0,
                        backoff_max=0.2, ping_interval=0.5, ping_timeout=0.5)
        async with trio.open_nursery() as nursery:
            await nursery.start(pubsub.run)
            await pubsub.subscribe("news")
            assert await client.execute("SET", "before", "kept") == b"OK"
            assert await client.execute("WAIT", 1, 2000) == 1, "on the replica before the kill"
            assert isinstance(client.connector, SentinelConnector)
            assert client.connector.master == ("127.0.0.1", setup.master.port)
            assert await client.publish("news", "one") == 1

            old = setup.master.port
            killed = time.monotonic()
            setup.kill_master()
            assert await wait_until_answered(client, "INCR", "after") == 1
            recover_s = time.monotonic() - killed
            new = await trio.to_thread.run_sync(setup.wait_failover, old)
            assert new == setup.replica.port
            assert client.connector.master == ("127.0.0.1", new)
            assert await client.execute("GET", "before") == b"kept", "what was replicated survived"
            assert await client.execute("ROLE") is not None

            with trio.fail_after(RECOVER_DEADLINE_S):  # the pub/sub connection re-resolved too
                while not reconnects or await client.publish("news", "two") != 1:
                    await trio.sleep(0.05)
                while b"two" not in got:
                    await trio.sleep(0.02)
            pubsub_s = reconnects[0] - killed
            nursery.cancel_scope.cancel()
        print(f"[sentinel failover] commands answered by the new master {recover_s:.2f}s after the SIGKILL; "
              f"pub/sub re-subscribed on it after {pubsub_s:.2f}s (gaps={pubsub.gaps}); "
              f"resolutions={client.connector.resolutions}")
        assert got[0] == b"one" and pubsub.gaps >= 1
        await client.aclose()


async def test_a_manual_failover_moves_every_connection_off_the_live_old_master_once_announced():
    """`SENTINEL FAILOVER`: the old master stays up, taking writes, until the Sentinels demote it
    (seconds); what it takes after the promotion is lost when it resyncs. The watch hears the
    leader announce the promotion: writes wait for the switch and land on the new master (none
    lost), and the pub/sub connection moves."""
    with redis_sentinel() as setup:
        connector = SentinelConnector(parse_sentinel_url(setup.url))
        client = RedisClient(connector, connect_timeout=5.0, command_timeout=5.0)
        got: list[bytes] = []
        pubsub = PubSub(connector, on_batch=lambda b: got.extend(d for _, d in messages(b)), backoff_max=0.2)
        watch = SentinelWatch(connector)
        writes: list[tuple[int, int]] = []  # (index, the connector's epoch when the write started)
        failed = 0
        async with trio.open_nursery() as nursery:
            await nursery.start(pubsub.run)
            await nursery.start(watch.run)
            await pubsub.subscribe("news")
            old = setup.master.port
            setup.sentinels[0].client().execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
            started = time.monotonic()
            switched_at = None
            while time.monotonic() - started < 30:
                i, epoch = len(writes) + failed, connector.epoch
                try:
                    await client.execute("RPUSH", "writes", i, timeout=1.0)
                    writes.append((i, epoch))
                except (RedisConnectionError, RedisError):
                    failed += 1
                if connector.epoch and switched_at is None:
                    switched_at = time.monotonic() - started
                if sum(1 for _, e in writes if e) > 50 and await client.publish("news", "x"):
                    break
                await trio.sleep(0.005)
            new = await trio.to_thread.run_sync(setup.wait_failover, old)
            with trio.fail_after(10):
                while b"x" not in got:
                    await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
        held = {int(v) for v in await client.execute("LRANGE", "writes", 0, -1)}
        lost_before = [i for i, e in writes if not e and i not in held]
        lost_after = [i for i, e in writes if e and i not in held]
        print(f"[manual failover] promotion heard {switched_at:.2f}s after SENTINEL FAILOVER; {len(writes)} writes "
              f"acknowledged, {failed} failed; lost: {len(lost_before)} started before the promotion was heard, "
              f"{len(lost_after)} after; +switch-master={watch.switches}, pub/sub gaps={pubsub.gaps}")
        assert new == setup.replica.port and connector.master == ("127.0.0.1", new)
        assert watch.switches >= 1 and pubsub.gaps >= 1
        assert lost_before + lost_after == [], "every acknowledged write is on the new master"
        assert connector.holds == 1
        await client.aclose()


async def test_a_pooled_connection_to_a_demoted_master_is_dropped_on_readonly():
    """A connection still open to a server that is a replica now (the old master, demoted) gets
    `-READONLY`: the pool closes it and its idle peers, and the exchange runs on the master."""
    with redis_sentinel() as setup:
        client = RedisClient(setup.url)
        stale = await Connection.open(parse_redis_url(setup.replica.url))
        stale.exchanges = 1
        client._idle.append(stale)  # as if it had been opened before the failover
        assert await client.pipeline([("GET", "n"), ("INCR", "n")]) == [None, 1]
        assert client.demoted == 1 and stale.broken
        assert await client.execute("INCR", "n") == 2
        await client.aclose()


async def test_a_sentinel_naming_a_replica_is_asked_last_and_the_master_is_found():
    """The first Sentinel of the URL has a stale view (it names a replica as the master): ROLE
    says so, that Sentinel goes to the back of the line and the others name the master."""
    with redis_sentinel() as setup:
        chained = RedisServer("--replicaof", "127.0.0.1", str(setup.replica.port))
        chained.start()
        stale = Sentinel(chained.port)  # monitors a replica under the same master name
        try:
            url = setup.url.replace("://", f"://127.0.0.1:{stale.port},", 1)
            connector = SentinelConnector(parse_sentinel_url(url))
            with trio.fail_after(10):
                while True:  # until the stale Sentinel answers at all
                    try:
                        await connector._ask(("127.0.0.1", stale.port))
                        break
                    except (RedisConnectionError, RedisError):
                        await trio.sleep(0.1)
            conn = await connector.open(timeout=5.0)
            assert (await conn.execute("ROLE"))[0] == b"master"
            assert connector.not_master == 1 and connector.master == ("127.0.0.1", setup.master.port)
            await conn.aclose()
            conn = await connector.open(timeout=5.0)  # the stale one is now asked last
            assert connector.not_master == 1
            await conn.aclose()
        finally:
            stale.close()
            chained.kill()
            shutil.rmtree(chained.dir, ignore_errors=True)


async def test_no_master_found_in_time_is_a_connection_error_with_the_last_reason():
    with redis_sentinel(sentinels=1) as setup:
        url = parse_sentinel_url(setup.url.replace(f"/{MASTER_NAME}/", "/unknown/") + "?sentinel_timeout=0.5")
        connector = SentinelConnector(url)
        with pytest.raises(RedisConnectionError, match="does not know master 'unknown'"):
            await connector.open(timeout=1.0)
        setup.sentinels[0].kill()
        with pytest.raises(RedisConnectionError, match=f"127.0.0.1:{setup.sentinels[0].port}"):
            await connector.open(timeout=1.0)


DELTAS = LONG_BROADCAST.deltas


def fail_over(setup, how: str) -> None:
    if how == "sigkill":
        setup.kill_master()
    else:  # the old master stays up (and would take writes until demoted)
        setup.sentinels[0].client().execute_command("SENTINEL", "FAILOVER", MASTER_NAME)


@pytest.mark.parametrize("how", ["sigkill", "manual"])
async def test_an_sse_client_stays_connected_through_a_failover_and_gets_every_event_once(how):
    with redis_sentinel() as setup:
        settings = test_settings(redis_url=setup.url)  # the default retry, ping and connect deadlines
        async with running_gateway(settings, bundle=LONG_BROADCAST) as gw, \
                httpx.AsyncClient(base_url=gw.base_url, timeout=30) as client, trio.open_nursery() as nursery:
            st = await open_stream_and_post(nursery, client, "", "failover", "long")
            await st.wait_event("chat_delta", count=10, timeout=20)
            n = len(st.events)
            started = time.monotonic()
            old = setup.master.port
            await trio.to_thread.run_sync(fail_over, setup, how)
            await st.wait_for(lambda s: len(s.events) > n, timeout=RECOVER_DEADLINE_S)
            recover_s = time.monotonic() - started
            new = await trio.to_thread.run_sync(setup.wait_failover, old)
            await st.wait_for(lambda s: any(e.event == "chat_complete" for e in s.events[n:]), timeout=40)
            nursery.cancel_scope.cancel()
        stats = gw.bus.statistics()
        on_new_master = RedisClient(f"redis://127.0.0.1:{new}/0")
        key = SessionKey(st.ready["tenant"], st.ready["project"], st.ready["session_id"])
        logged = int(await on_new_master.execute("GET", gw.bus._seq_key(key)))
        await on_new_master.aclose()
    check_stream(st, recover_s, f"SSE through a Sentinel failover ({how}), relay_gap={stats['relay_gap']}, "
                                f"filled_from_log={stats['recovered_after_gap']}, rewinds={stats['seq_rewinds']}, "
                                f"new master's seq={logged}")
    assert stats["relay_gap"] >= 1
    if how == "manual":  # the old master took no event after the promotion: the new one has them all
        # (without the watch: the old master took events 16..63 after the promotion, the new one had 15)
        assert logged >= int([e.id for e in st.events if e.id][-1]) and stats["seq_rewinds"] == 0


def check_stream(st, recover_s: float, name: str) -> None:
    """The stream stayed connected and got the turn (its last attempt whole) once each, in order."""
    assert st.dropped is None and len(st.of("ready")) == 1, "one connection, never dropped"
    events = [e for e in st.events if e.id]
    first = next(int(e.id) for e in events if e.event == "chat_start")
    last = [int(e.id) for e in events if e.event == "chat_complete"][-1]
    texts = [e.data["delta"]["text"] for e in events if e.event == "chat_delta"]
    c = count([int(e.id) for e in events], first, last, recover_s)
    print(c.line(f"{name}, attempts={sum(1 for e in events if e.event == 'chat_start')}"))
    assert (c.duplicates, c.gaps, c.reordered) == (0, 0, 0) and c.received == c.sent
    assert texts[-DELTAS:] == [f"d{i} " for i in range(DELTAS)], "the last attempt is whole"


async def test_gateway_and_worker_processes_follow_a_failover_clients_on_both_gateways_lose_nothing():
    """`kdc-trio serve` ×2 and `kdc-trio worker` on REDIS_URL=redis+sentinel://…; one session with a
    stream on each gateway; the master SIGKILLed mid-turn: both streams get the whole turn."""
    with redis_sentinel() as setup, ExitStack() as stack:
        env = {"REDIS_URL": setup.url, "KDC_BUNDLE": "tests.support.bundles:LONG_BROADCAST",
               "KDC_RELAY_LINGER_MS": "0"}
        a, b = spawn(stack, "serve", env, "--no-worker"), spawn(stack, "serve", env, "--no-worker")
        spawn(stack, "worker", env)
        recover: dict[str, float] = {}
        async with httpx.AsyncClient(timeout=30) as client, trio.open_nursery() as nursery:
            on_a = await open_stream(nursery, client, f"{a.base_url}/sse/stream?stream_id=on-a")
            on_b = await open_stream_and_post(nursery, client, b.base_url, "on-b", "x",
                                              session_id=on_a.ready["session_id"])
            await on_a.wait_event("chat_delta", count=10, timeout=20)
            seen = {"A": len(on_a.events), "B": len(on_b.events)}
            killed = time.monotonic()
            await trio.to_thread.run_sync(setup.kill_master)

            async def follow(name, st):
                await st.wait_for(lambda s: len(s.events) > seen[name], timeout=RECOVER_DEADLINE_S)
                recover[name] = time.monotonic() - killed
                await st.wait_for(lambda s: any(e.event == "chat_complete" for e in s.events), timeout=40)

            async with trio.open_nursery() as both:
                both.start_soon(follow, "A", on_a)
                both.start_soon(follow, "B", on_b)
            nursery.cancel_scope.cancel()
    for name, st in (("A", on_a), ("B", on_b)):
        check_stream(st, recover[name], f"SSE on gateway process {name} through a Sentinel failover")
