"""KDC_MAX_SSE_CONNECTIONS holds under a burst: the cap is checked and counted before the open
awaits its session, so 40 concurrent opens against a cap of 10 give exactly 10 streams and 30
answers of 429 with Retry-After (counted after the await, all 40 were served before)."""

from __future__ import annotations

import trio

from tests.server.raw import connect, send
from tests.support.gateway import running_gateway, test_settings


async def test_concurrent_stream_opens_never_pass_the_cap():
    async with running_gateway(test_settings(max_sse_connections=10), with_worker=False) as gw:
        port = int(gw.base_url.rsplit(":", 1)[1])
        streams = [await connect(port) for _ in range(40)]
        statuses: list[int] = []
        async with trio.open_nursery() as nursery:
            for i, stream in enumerate(streams):
                await send(stream, f"GET /sse/stream?stream_id=s{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode())

            async def status_of(stream):
                r = await read_status(stream)
                statuses.append(r)

            for stream in streams:
                nursery.start_soon(status_of, stream)
        open_now = gw.counters.sse_streams
        for stream in streams:
            await stream.aclose()
        with trio.fail_after(5):
            while gw.counters.sse_streams:
                await trio.sleep(0.01)
    assert sorted(statuses) == [200] * 10 + [429] * 30
    assert open_now == 10


async def read_status(stream) -> int:
    """The status of the response's head (a stream's body never ends; a 429's does)."""
    data = b""
    with trio.fail_after(10):
        while b"\r\n" not in data:
            data += await stream.receive_some(4096)
    return int(data.split(b" ", 2)[1])
