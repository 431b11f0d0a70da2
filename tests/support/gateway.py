"""Start a real gateway on 127.0.0.1:0 inside a test's nursery."""

from __future__ import annotations

from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, AsyncIterator

import trio

from kdc_trio.config import Settings
from kdc_trio.gateway import Gateway, open_gateway

TEST_SECRET = "test-secret-0123456789-0123456789-abcdef"


def test_settings(**overrides: Any) -> Settings:
    base = dict(host="127.0.0.1", port=0, jwt_secret=TEST_SECRET, sse_heartbeat_s=15.0, shutdown_grace_s=2.0,
                relay_linger_ms=0)
    base.update(overrides)
    return Settings.from_env({}, **base)


test_settings.__test__ = False  # a factory, not a test (pytest collects names starting with test_)


@asynccontextmanager
async def running_gateway(settings: Settings | None = None, *, bundle: Any = None,
                          with_worker: bool = True) -> AsyncIterator[Gateway]:
    """Yields the running Gateway; `gw.base_url` is its http://127.0.0.1:<port>."""
    settings = settings or test_settings()
    async with AsyncExitStack() as stack:
        gw = await open_gateway(settings, stack, bundle=bundle, with_worker=with_worker)
        async with trio.open_nursery() as nursery:
            ports = await nursery.start(gw.run)
            gw.base_url = f"http://127.0.0.1:{ports[0]}"  # type: ignore[attr-defined]
            try:
                yield gw
            finally:
                nursery.cancel_scope.cancel()
