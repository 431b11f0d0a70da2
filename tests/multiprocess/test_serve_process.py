"""`python3 -m kdc_trio serve` as a real process: SIGTERM drains it.

A live SSE stream gets `server_shutdown` `{reason: "draining"}` and ends; the process stops
accepting and exits 0 within the grace period.
"""

from __future__ import annotations

import signal
import time
from contextlib import ExitStack

import httpx
import trio

from tests.support.processes import KdcProcess
from tests.support.sse_client import open_stream


async def test_sigterm_tells_streams_and_exits_within_the_grace_period():
    with ExitStack() as stack:
        gw = KdcProcess("serve", {"KDC_SHUTDOWN_GRACE_S": "2"})
        stack.callback(gw.stop)
        gw.wait_ready()
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
            async with trio.open_nursery() as nursery:
                st = await open_stream(nursery, client, "/sse/stream?stream_id=s")
                started = time.monotonic()
                gw.proc.send_signal(signal.SIGTERM)
                await st.wait_event("server_shutdown", timeout=15)
                with trio.fail_after(10):
                    while gw.proc.poll() is None:
                        await trio.sleep(0.05)
                stopped_after = time.monotonic() - started
                nursery.cancel_scope.cancel()
        assert gw.proc.returncode == 0, gw.output()
        assert stopped_after < 1.5, f"the stream ended at once, not after the 2 s grace: {stopped_after}"
        assert st.of("server_shutdown")[0].data["reason"] == "draining"
        assert "stopped" in gw.output()
