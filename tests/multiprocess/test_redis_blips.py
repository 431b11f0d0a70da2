"""Redis failing under running processes: the processes survive, turns end, later turns run.

Each test kills or cuts Redis at the worst moment, with a turn in the middle of its deltas.
"""

from __future__ import annotations

import time
from contextlib import ExitStack

import httpx
import trio

from kdc_trio.redis.client import RedisClient
from tests.support.processes import spawn
from tests.support.redis_server import redis_server
from tests.support.sse_client import SSEStream, open_stream

BUNDLE = "tests.support.bundles:SlowBroadcastBundle"


def turn_ended(st: SSEStream, turn_id: str) -> bool:
    """The turn's last word: a final conv_status (idle or error) for it."""
    return any(e.data["data"].get("current_turn_id") == turn_id and e.data["data"]["state"] in ("idle", "error")
               for e in st.of("conv_status"))


async def post(client: httpx.AsyncClient, st: SSEStream, text: str) -> str:
    """Post a turn to the stream's session; returns its turn_id."""
    r = await client.post(f"/sse/chat?stream_id=s&user_session_id={st.ready['session_id']}", json={"message": text})
    assert r.status_code == 202, r.text
    return r.json()["turn_id"]


async def post_and_finish(client: httpx.AsyncClient, st: SSEStream, text: str) -> str:
    turn_id = await post(client, st, text)
    await st.wait_for(lambda s: turn_ended(s, turn_id), timeout=30)
    return turn_id


async def test_client_kill_mid_turn_leaves_serve_running_and_the_turn_ended():
    """Defect: `CLIENT KILL TYPE normal` ended `kdc-trio serve` (RedisConnectionError from the
    queue reader); the running turn was lost and later posts never ran."""
    with redis_server() as srv, ExitStack() as stack:
        env = {"REDIS_URL": srv.url, "KDC_BUNDLE": BUNDLE}
        gw = spawn(stack, "serve", env)
        redis = RedisClient(srv.url)
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client, trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, "/sse/stream?stream_id=s")
            turn_id = await post(client, st, "kill")
            await st.wait_event("chat_delta", count=3, timeout=20)
            for _ in range(3):
                await redis.execute("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
                await trio.sleep(0.3)
            await st.wait_for(lambda s: turn_ended(s, turn_id), timeout=30)
            assert gw.proc.poll() is None, gw.output()
            await post_and_finish(client, st, "after")
            nursery.cancel_scope.cancel()
        await redis.aclose()
        assert gw.proc.poll() is None, gw.output()


# A Redis that keeps its data over a kill -9 and restart (a blip, not a data loss).
PERSISTENT = ("--appendonly", "yes", "--appendfsync", "always")


async def test_a_2s_redis_outage_mid_turn_leaves_a_standalone_worker_running_and_the_turn_retried():
    """Defect: a 2 s Redis outage ended standalone workers; the running turn was lost silently
    (no chat_error, conv_status stuck at in_progress) and later posts got 202 but never ran."""
    with redis_server(*PERSISTENT) as srv, ExitStack() as stack:
        env = {"REDIS_URL": srv.url, "KDC_BUNDLE": BUNDLE, "KDC_REDIS_RETRY_MAX_MS": "1000"}
        gw = spawn(stack, "serve", env, "--no-worker")
        worker = spawn(stack, "worker", env)
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=30) as client, trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, "/sse/stream?stream_id=s")
            turn_id = await post(client, st, "outage")
            await st.wait_event("chat_delta", count=3, timeout=20)
            srv.kill()
            await trio.sleep(2)
            srv.start()
            back = time.monotonic()
            before = len(st.events)
            await st.wait_for(lambda s: len(s.events) > before, timeout=30)
            flowing_after = time.monotonic() - back
            await st.wait_for(lambda s: turn_ended(s, turn_id), timeout=30)
            ended_after = time.monotonic() - back
            assert worker.proc.poll() is None, worker.output()
            assert gw.proc.poll() is None, gw.output()
            await post_and_finish(client, st, "after")
            nursery.cancel_scope.cancel()
    final = [e for e in st.of("conv_status") if e.data["data"].get("current_turn_id") == turn_id][-1]
    if final.data["data"]["state"] == "idle":  # completed: run again whole, and says it is a retry
        starts = st.of("chat_start")
        assert any(e.data["data"].get("retried") for e in starts), [e.data for e in starts]
        assert st.of("chat_complete")
    else:
        assert any(e.data["conversation"]["turn_id"] == turn_id for e in st.of("chat_error"))
    ids = [int(e.id) for e in st.events if e.id]
    assert ids == sorted(ids) and len(ids) == len(set(ids)), "one session sequence, in order, no duplicates"
    print(f"events flowed {flowing_after:.2f}s and the turn ended ({final.data['data']['state']}) "
          f"{ended_after:.2f}s after Redis came back")


async def test_a_redis_restart_that_lost_its_data_leaves_serve_running_and_new_turns_run():
    """A Redis restarted without its data (no persistence): the queue's consumer group is gone
    (NOGROUP) and is re-created, so posts after the restart run instead of waiting for ever."""
    with redis_server() as srv, ExitStack() as stack:
        env = {"REDIS_URL": srv.url, "KDC_BUNDLE": BUNDLE, "KDC_REDIS_RETRY_MAX_MS": "1000"}
        gw = spawn(stack, "serve", env)
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=30) as client, trio.open_nursery() as nursery:
            st = await open_stream(nursery, client, "/sse/stream?stream_id=s")
            await post_and_finish(client, st, "before")
            srv.restart()
            back = time.monotonic()
            fresh = await open_stream(nursery, client, "/sse/stream?stream_id=s", timeout=30)
            await post_and_finish(client, fresh, "after")
            ran_after = time.monotonic() - back
            assert gw.proc.poll() is None, gw.output()
            assert "consumer group workers re-created" in gw.output()
            nursery.cancel_scope.cancel()
    print(f"a new session's turn ran end to end {ran_after:.2f}s after Redis restarted empty")
