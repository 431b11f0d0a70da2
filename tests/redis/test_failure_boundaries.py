"""Failure boundaries against a real Redis that is killed, paused or cut at the worst moment.

- a turn whose bundle fails while Redis is down: the gateway survives and, once Redis is back,
  the turn ends with chat_error and its final conv_status (they were lost, and the error escaped
  the worker and ended the gateway);
- undecodable queue entries: dead-lettered once with their reason, the workers go on (the first
  one ended the worker, and the entry went from worker to worker);
- a pub/sub subscribe that times out takes its channel back (it stayed wanted for ever);
- a half-open pub/sub connection is found by PING and re-made, the gap filled from the session
  log (the gateway stayed deaf);
- requests while Redis is down get 503 + Retry-After (they got a 500 "internal_error", logged as
  a crash), and the gateway serves again once Redis is back.
"""

from __future__ import annotations

import json
import signal
import time

import httpx
import pytest
import trio

from kdc_trio.processor.redis_conv_status import RedisConvStatusStore
from kdc_trio.processor.redis_queue import RedisTurnQueue
from kdc_trio.processor.runner import Processor
from kdc_trio.redis.client import RedisClient
from kdc_trio.redis.pubsub import PubSub
from kdc_trio.relay.keys import SessionKey
from tests.redis.backends import BACKENDS
from tests.redis.test_stores import make_turn
from tests.support.gateway import running_gateway, test_settings
from tests.support.redis_server import redis_server
from tests.support.sse_client import SSEStream, open_stream
from tests.support.tcp_proxy import TCPProxy

# A Redis that keeps its data over a kill -9 and restart (a blip, not a data loss).
PERSISTENT = ("--appendonly", "yes", "--appendfsync", "always")


def turn_ended(st: SSEStream, turn_id: str, state: str | None = None) -> bool:
    return any(e.data["data"].get("current_turn_id") == turn_id
               and e.data["data"]["state"] in ((state,) if state else ("idle", "error"))
               for e in st.of("conv_status"))


class BreaksOnCue:
    """Says `chat_start`, then raises when the test says so (after it stopped Redis)."""

    def __init__(self) -> None:
        self.go = trio.Event()

    async def run(self, turn, comm) -> None:
        await comm.start(message=turn.message.text)
        if turn.message.text == "break":
            await self.go.wait()
            raise RuntimeError("the bundle broke")
        await comm.complete()


async def test_a_turn_failing_while_redis_is_down_ends_with_chat_error_once_redis_is_back():
    with redis_server(*PERSISTENT) as srv:
        bundle = BreaksOnCue()
        settings = test_settings({"KDC_REDIS_RETRY_MAX_MS": "500"}, redis_url=srv.url)
        async with running_gateway(settings, bundle=bundle) as gw, \
                httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client, trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, "/sse/stream?stream_id=s")
            sid = st.ready["session_id"]
            r = await client.post(f"/sse/chat?stream_id=s&user_session_id={sid}", json={"message": "break"})
            assert r.status_code == 202, r.text
            turn_id = r.json()["turn_id"]
            await st.wait_event("chat_start")
            srv.kill()
            bundle.go.set()  # the bundle fails now; telling it (chat_error, conv_status) fails too
            await trio.sleep(1.5)
            assert gw.processor.running == 1, "the worker is still trying to tell the turn's end"
            srv.start()
            back = time.monotonic()
            await st.wait_for(lambda s: turn_ended(s, turn_id, "error"), timeout=30)
            told_after = time.monotonic() - back
            errors = [e for e in st.of("chat_error") if e.data["conversation"]["turn_id"] == turn_id]
            assert len(errors) == 1 and "RuntimeError" in errors[0].data["data"]["error"]
            r = await client.post(f"/sse/chat?stream_id=s&user_session_id={sid}", json={"message": "after"})
            assert r.status_code == 202, r.text
            await st.wait_for(lambda s: turn_ended(s, r.json()["turn_id"], "idle"), timeout=20)
            assert gw.processor.failed == 1 and gw.processor.completed == 1 and gw.processor.released == 0
            metrics = (await client.get("/metrics")).text
            assert "kdc_turns_handed_back_total 0.0" in metrics and "kdc_turn_reruns_total 0.0" in metrics
            nursery.cancel_scope.cancel()
    print(f"chat_error + conv_status told {told_after:.2f}s after Redis came back")


async def test_a_turn_whose_end_cannot_be_told_in_time_is_handed_back_and_run_again():
    """Past KDC_TURN_RETRY_S with Redis still down, the worker hands the turn back to the queue
    (stops renewing its lease); once Redis is back the turn is taken over and runs again."""
    with redis_server(*PERSISTENT) as srv:
        bundle = BreaksOnCue()
        settings = test_settings({"KDC_TURN_RETRY_S": "1", "KDC_TURN_LEASE_MS": "1000",
                                  "KDC_REDIS_RETRY_MAX_MS": "300"}, redis_url=srv.url)
        async with running_gateway(settings, bundle=bundle) as gw, \
                httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client, trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, "/sse/stream?stream_id=s")
            sid = st.ready["session_id"]
            r = await client.post(f"/sse/chat?stream_id=s&user_session_id={sid}", json={"message": "break"})
            turn_id = r.json()["turn_id"]
            await st.wait_event("chat_start")
            srv.kill()
            bundle.go.set()
            with trio.fail_after(10):
                while not gw.processor.released:
                    await trio.sleep(0.05)
            bundle.go = trio.Event()
            bundle.go.set()  # the next run breaks too (the turn is the same): it ends with chat_error
            srv.start()
            await st.wait_for(lambda s: turn_ended(s, turn_id, "error"), timeout=30)
            nursery.cancel_scope.cancel()
    starts = [e.data["data"] for e in st.of("chat_start")]
    assert len(starts) == 2 and starts[1]["retried"] and starts[1]["attempt"] == 2, starts
    assert len(st.of("chat_error")) == 1, "the first run's end was never told; the second run's was"
    assert gw.processor.released == 1 and gw.queue.reclaimed == 1


class Recording:
    def __init__(self) -> None:
        self.ran: list[str] = []

    async def run(self, turn, comm) -> None:
        self.ran.append(turn.message.text)
        await comm.complete()


async def test_undecodable_entries_are_dead_lettered_once_and_the_workers_go_on():
    published = []

    async def publish(key, *, event, data, target_sid=None) -> int:
        published.append(event)
        return len(published)

    with redis_server() as srv:
        redis = RedisClient(srv.url)
        bundle = Recording()
        queues = [RedisTurnQueue(redis, prefix="t", lease_ms=300, consumer=f"w{i}") for i in (1, 2)]
        async with trio.open_nursery() as nursery:
            for q in queues:
                await nursery.start(q.run)
                await nursery.start(Processor(queue=q, bundle=bundle, publish=publish, concurrency=2,
                                              turn_timeout_s=5, conv_store=RedisConvStatusStore(redis)).run)
            poison = [("turn", "{not json"), ("other", "no turn field"), ("turn", json.dumps({"message": {}})),
                      ("turn", b"\xff\xfe binary")]
            for name, value in poison:
                await redis.execute("XADD", "t:{turns}", "*", name, value)
            await queues[0].put(make_turn())
            with trio.fail_after(10):
                while not bundle.ran or await redis.execute("XLEN", "t:{turns}"):
                    await trio.sleep(0.02)
            await trio.sleep(1.5)  # five leases: nothing is reclaimed, nothing moved twice
            dead = await redis.execute("XRANGE", "t:{turns}:dead", "-", "+")
            pending = await redis.execute("XPENDING", "t:{turns}", "workers")
            nursery.cancel_scope.cancel()
        await redis.aclose()
    assert bundle.ran == ["hi"], "a good turn behind the bad ones ran"
    assert len(dead) == len(poison), dead
    entries = sorted((dict(zip(fields[::2], fields[1::2])) for _, fields in dead),
                     key=lambda e: tuple(map(int, e[b"entry"].split(b"-"))))  # in the order they were added
    assert [(k, e[b"f:" + k.encode()]) for (k, _), e in zip(poison, entries)] == \
        [(k, v.encode() if isinstance(v, str) else v) for k, v in poison], "the entry kept byte for byte"
    reasons = [e[b"reason"].decode() for e in entries]
    assert reasons[0].startswith("JSONDecodeError") and reasons[1].startswith("KeyError")
    assert all(r for r in reasons)
    assert pending[0] == 0, "nothing left pending"
    assert sum(q.dead_lettered for q in queues) == len(poison)


@pytest.mark.parametrize("name", list(BACKENDS))
async def test_a_subscribe_that_times_out_takes_its_channel_back(name):
    backend = BACKENDS[name]
    with redis_server() as srv:
        async with backend.loop():
            ps = backend.pubsub(srv.url, on_batch=lambda b: None, confirm_timeout=0.5)
            client = backend.client(srv.url)
            async with trio.open_nursery() as nursery:
                await nursery.start(ps.run)
                await ps.subscribe("kept")
                srv.proc.send_signal(signal.SIGSTOP)
                try:
                    with pytest.raises(trio.TooSlowError):
                        await ps.subscribe("lost")
                    assert "lost" not in ps.wanted and "kept" in ps.wanted
                finally:
                    srv.proc.send_signal(signal.SIGCONT)
                with trio.fail_after(5):
                    while {c.decode() for c in await client.execute("PUBSUB", "CHANNELS")} != {"kept"} | (
                            {"__kdc_compat_keepalive__"} if name == "compat" else set()):
                        await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
            await client.aclose()


@pytest.mark.parametrize("backend", list(BACKENDS))
async def test_a_half_open_pubsub_connection_is_found_by_ping_and_the_gap_filled(backend):
    with redis_server() as srv:
        proxy = TCPProxy(srv.port)
        try:
            settings = test_settings({"KDC_PUBSUB_PING_INTERVAL_S": "0.5", "KDC_PUBSUB_PING_TIMEOUT_S": "1"},
                                     redis_url=f"redis://127.0.0.1:{proxy.port}/0", redis_backend=backend)
            async with running_gateway(settings) as gw, \
                    httpx.AsyncClient(base_url=gw.base_url, timeout=30) as client, trio.open_nursery() as nursery:
                st = await open_stream(nursery, client, "/sse/stream?stream_id=s")
                key = SessionKey(st.ready["tenant"], st.ready["project"], st.ready["session_id"])
                await gw.bus.publish(key, event="chat_service", data={"n": 0})
                await st.wait_for(lambda s: s.of("chat_service"))
                assert proxy.freeze(b"SUBSCRIBE") == 1, "the pub/sub connection goes silent"
                cut = time.monotonic()
                await gw.bus.publish(key, event="chat_service", data={"n": 1})  # commands still flow
                await st.wait_for(lambda s: len(s.of("chat_service")) == 2, timeout=15)
                heard_after = time.monotonic() - cut
                await gw.bus.publish(key, event="chat_service", data={"n": 2})
                await st.wait_for(lambda s: len(s.of("chat_service")) == 3, timeout=15)
                metrics = (await client.get("/metrics")).text
                nursery.cancel_scope.cancel()
        finally:
            proxy.close()
    assert [e.data["n"] for e in st.of("chat_service")] == [0, 1, 2]
    missed = [line for line in metrics.splitlines() if line.startswith("kdc_redis_pings_missed_total")]
    assert missed and float(missed[0].split()[1]) >= 1, missed
    assert gw.bus.service.pubsub.gaps >= 1 and gw.bus.service.pubsub.pings_missed >= 1
    print(f"{backend}: half-open pub/sub found and the event delivered {heard_after:.2f}s after the cut")


async def test_a_pong_that_arrived_while_the_process_was_stalled_is_not_a_missed_ping():
    """The process stalls (a GC pause, a busy box) past `ping_timeout` right after a PING went
    out; the PONG arrives meanwhile. Trio then wakes the reader (socket readable) and the pinger
    (deadline passed) in the same batch, in either order: the pinger must let the reader take the
    PONG before it calls the connection lost (before it did, about half of these stalls were a gap)."""
    with redis_server() as srv:
        ps = PubSub(srv.url, on_batch=lambda batch: None, ping_interval=0.2, ping_timeout=0.1)
        async with trio.open_nursery() as nursery:
            await nursery.start(ps.run)
            await ps.subscribe("stalled")
            for _ in range(20):
                with trio.fail_after(30):  # every batch: the pinger asks, the writer sends in the next one
                    while not ps._ping_due:
                        await trio.sleep(0)
                    while ps._ping_due:  # the writer took it, in the step that sent it: it is in the kernel
                        await trio.sleep(0)
                time.sleep(0.3)  # the whole process stalls; Redis answers meanwhile
                await trio.sleep(0)
            nursery.cancel_scope.cancel()
    assert (ps.pings_missed, ps.gaps) == (0, 0)


async def test_requests_while_redis_is_down_get_503_and_the_gateway_serves_after():
    with redis_server() as srv:
        async with running_gateway(test_settings(redis_url=srv.url)) as gw, \
                httpx.AsyncClient(base_url=gw.base_url, timeout=30) as client:
            assert (await client.get("/api/session")).status_code == 200
            srv.kill()
            for r in [await client.get("/api/session"), await client.get("/sse/stream?stream_id=s"),
                      await client.post("/sse/chat?stream_id=s", json={"message": "hi"})]:
                assert r.status_code == 503, (r.request.url, r.text)
                assert r.json()["error"] == "service_unavailable" and r.headers["retry-after"] == "1"
            srv.start()
            with trio.fail_after(20):
                while (await client.get("/api/session")).status_code != 200:
                    await trio.sleep(0.1)


async def test_a_caller_cancelled_or_out_of_time_before_sending_runs_nothing():
    """The first send is a non-blocking send on the raw socket and a free pool slot is taken
    without a scheduler pass: neither checks for cancellation, so the pipeline does before it
    sends. A caller already cancelled, or whose deadline has passed, must not have its command
    run in Redis (a retry would run it twice), nor spend the pooled connection."""
    from kdc_trio.redis.connection import RedisTimeoutError

    with redis_server() as srv:
        client = RedisClient(srv.url)
        await client.execute("SET", "k", "0")
        with trio.CancelScope() as scope:
            scope.cancel()
            await client.execute("INCR", "k")
        assert scope.cancelled_caught
        with pytest.raises(RedisTimeoutError):
            await client.execute("INCR", "k", timeout=0)
        with pytest.raises(ValueError):
            await client.execute("INCR", "k", timeout=-1)
        assert await client.execute("GET", "k") == b"0", "none of the three INCRs ran"
        assert client.opened == 1, "and the pooled connection was not spent on them"
        await client.aclose()
