"""Start a real gateway on 127.0.0.1:0 inside a test's nursery."""

from __future__ import annotations

from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import fields
from typing import Any, AsyncIterator

import trio

from kdc_trio.config import Settings
from kdc_trio.gateway import Gateway, open_gateway

TEST_SECRET = "test-secret-0123456789-0123456789-abcdef"


def test_settings(env: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Test defaults, then `env` (environment names, e.g. {"KDC_TURN_RETRY_S": "5"}), then overrides."""
    # Rate limits and admission are off unless a test is about them (tests/gateway/test_protections.py):
    # many tests start more turns a minute than an anonymous client may.
    base = dict(host="127.0.0.1", port=0, jwt_secret=TEST_SECRET, sse_heartbeat_s=15.0, shutdown_grace_s=2.0,
                relay_linger_ms=0, rate_limits=False, admission=False)
    env = env or {}
    from_env = {f.name for f in fields(Settings) if f.metadata.get("env") in env}
    base = {k: v for k, v in base.items() if k not in from_env}
    base.update(overrides)
    return Settings.from_env(env, **base)


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
