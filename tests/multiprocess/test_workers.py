"""`kdc-trio serve --workers N`: N processes on one port through SO_REUSEPORT, one deployment via Redis.

- without REDIS_URL it refuses, naming the fix;
- a session whose two SSE streams landed on different worker processes gets every event on both;
- a worker killed with SIGKILL is restarted and the port keeps answering;
- SIGTERM drains every worker and the supervisor exits 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import ExitStack

import httpx
import psutil
import trio

from tests.support.processes import ROOT, KdcProcess
from tests.support.redis_server import redis_server
from tests.support.sse_client import open_stream

TURN_END = "chat_complete"


def test_workers_without_redis_refuse_with_the_fix():
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    r = subprocess.run([sys.executable, "-m", "kdc_trio", "serve", "--workers", "2"], cwd=ROOT, timeout=30,
                       env={**env, "PYTHONPATH": str(ROOT), "KDC_PORT": "0"}, capture_output=True, text=True)
    assert r.returncode != 0
    assert "--workers N needs REDIS_URL" in r.stderr and "REDIS_URL=redis://" in r.stderr


async def _stream_on_a_new_connection(nursery, base_url: str, path: str, clients: list) -> tuple[int, object]:
    """Open a stream on a fresh TCP connection and learn which worker process took it: one
    connection per client, so /health and the stream travel on the same socket."""
    client = httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(10, read=60),
                               limits=httpx.Limits(max_connections=1))
    clients.append(client)
    pid = (await client.get("/health")).json()["pid"]
    st = await open_stream(nursery, client, path)
    return pid, st


async def test_a_session_spread_over_two_workers_gets_every_event_and_a_dead_worker_comes_back():
    with redis_server() as srv, ExitStack() as stack:
        sup = KdcProcess("serve", {"REDIS_URL": srv.url, "KDC_SHUTDOWN_GRACE_S": "1"}, "--workers", "2")
        stack.callback(sup.stop)
        sup.wait_ready(timeout=60)
        children = psutil.Process(sup.proc.pid).children()
        assert len(children) == 2, children
        clients: list[httpx.AsyncClient] = []
        try:
            async with trio.open_nursery() as nursery:
                pid_a, first = await _stream_on_a_new_connection(nursery, sup.base_url, "/sse/stream?stream_id=a",
                                                                 clients)
                sid = first.ready["session_id"]
                streams = {pid_a: first}
                with trio.fail_after(30):  # the kernel hashes connections over the workers: try until both hold one
                    while len(streams) < 2:
                        pid, st = await _stream_on_a_new_connection(
                            nursery, sup.base_url, f"/sse/stream?stream_id=b{len(clients)}&user_session_id={sid}",
                            clients)
                        streams.setdefault(pid, st)
                assert set(streams) == {c.pid for c in children}
                # One turn posted for each stream, each post on a fresh connection (any worker may take
                # it, and any worker's runner may run it): a turn's events go to the stream that asked,
                # the session's conv_status to every stream, wherever each one landed.
                for st in streams.values():
                    async with httpx.AsyncClient(base_url=sup.base_url, timeout=10) as poster:
                        r = await poster.post(f"/sse/chat?stream_id={st.ready['stream_id']}&user_session_id={sid}",
                                              json={"message": "across workers"})
                        assert r.status_code == 202, r.text
                for pid, st in streams.items():
                    await st.wait_event(TURN_END, timeout=30)
                    await st.wait_for(lambda s: sum(e.data.get("data", {}).get("state") == "idle"
                                                    for e in s.of("conv_status")) >= 2, timeout=30)
                nursery.cancel_scope.cancel()
        finally:
            for c in clients:
                await c.aclose()
        one, two = streams.values()
        for st in (one, two):
            events = [e.event for e in st.events if e.event.startswith("chat_")]
            assert events[0] == "chat_start" and events[-1] == TURN_END and "chat_delta" in events
        broadcast = [[(e.id, e.data["data"]["state"]) for e in st.of("conv_status")] for st in (one, two)]
        assert broadcast[0] == broadcast[1], "both workers' streams got the session's events, same sequence"

        victim = children[0]
        victim.send_signal(signal.SIGKILL)
        with trio.fail_after(30):
            while True:
                now = psutil.Process(sup.proc.pid).children()
                if len(now) == 2 and victim.pid not in {c.pid for c in now}:
                    break
                await trio.sleep(0.1)
        async with httpx.AsyncClient(base_url=sup.base_url, timeout=10) as client:
            with trio.fail_after(30):  # the new worker listens soon after it starts
                answered = set()
                while answered != {c.pid for c in now}:
                    async with httpx.AsyncClient(base_url=sup.base_url, timeout=10) as fresh:
                        answered.add((await fresh.get("/health")).json()["pid"])
            assert (await client.get("/health")).status_code == 200
        assert "restarting" in sup.output()

        sup.proc.send_signal(signal.SIGTERM)
        rc = await trio.to_thread.run_sync(lambda: sup.proc.wait(timeout=20))
        assert rc == 0, sup.output()
        assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in now)
