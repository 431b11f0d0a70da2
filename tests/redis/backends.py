"""The two Redis backends behind one interface, for contract tests that run against both."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

import pytest

from kdc_trio.redis.client import RedisClient
from kdc_trio.redis.compat import CompatClient, CompatPubSub, open_compat_loop
from kdc_trio.redis.pubsub import PubSub


@asynccontextmanager
async def no_loop() -> AsyncIterator[None]:
    yield


@dataclass(frozen=True)
class Backend:
    name: str
    client: Callable[..., Any]
    pubsub: Callable[..., Any]
    loop: Callable[[], Any]


BACKENDS = {
    "native": Backend("native", RedisClient, lambda url, **kw: PubSub(url, backoff_max=0.2, **kw), no_loop),
    "compat": Backend("compat", CompatClient, CompatPubSub, open_compat_loop),
}


@pytest.fixture(params=list(BACKENDS))
def backend(request) -> Backend:
    return BACKENDS[request.param]
