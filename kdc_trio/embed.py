"""Hosting the gateway inside your own Trio program: `async with kdc_trio.running(...) as gw:`.

    async with trio.open_nursery() as nursery:          # or just inside trio.run
        async with kdc_trio.running(Settings.from_env(port=0), bundle=MyBundle()) as gw:
            print(gw.url)                               # http://127.0.0.1:<bound port>
            ...                                         # serve until the block ends

The gateway runs in a nursery the block owns: it listens before the block starts, and when the
block ends it drains (streams get `server_shutdown`, then `KDC_SHUTDOWN_GRACE_S` to finish) and
returns only when every part has stopped. An exception in the block cancels it at once instead.
"""

from __future__ import annotations

from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, AsyncIterator

import trio

from kdc_trio.config import Settings

if TYPE_CHECKING:
    from kdc_trio.gateway import Gateway
    from kdc_trio.processor.bundle import Bundle

# Listening on every address: local callers reach it on loopback.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def url_for(host: str, port: int) -> str:
    """The http:// URL a process on this machine uses to reach `host:port`."""
    host = _WILDCARDS.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@dataclass(frozen=True, kw_only=True)
class RunningGateway:
    """A gateway serving inside `running()`: where it listens, and the gateway itself."""

    gateway: "Gateway"
    port: int
    ports: tuple[int, ...]
    url: str

    @property
    def settings(self) -> Settings:
        return self.gateway.settings

    def drain(self) -> None:
        """Begin the graceful stop now (the block's end waits for it)."""
        self.gateway.drain()


@asynccontextmanager
async def running(settings: Settings | None = None, *, bundle: "Bundle | None" = None,
                  with_worker: bool = True) -> AsyncIterator[RunningGateway]:
    """Run a gateway for the duration of the block (settings default to the environment's;
    `bundle` defaults to `KDC_BUNDLE`; `with_worker=False` serves without running bundles,
    for a gateway whose workers are other processes behind `REDIS_URL`)."""
    from kdc_trio.gateway import open_gateway

    settings = settings if settings is not None else Settings.from_env()
    async with AsyncExitStack() as stack:
        gw = await open_gateway(settings, stack, bundle=bundle, with_worker=with_worker)
        raised: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                ports = await nursery.start(gw.run)
                handle = RunningGateway(gateway=gw, port=ports[0], ports=tuple(ports),
                                        url=url_for(settings.host, ports[0]))
                gw.base_url = handle.url
                try:
                    yield handle
                except BaseException as exc:
                    raised = exc
                    nursery.cancel_scope.cancel()
                    raise
                gw.drain()  # gw.run returns once the server has drained; the nursery then closes
        except BaseExceptionGroup as group:
            # The block's own exception, alone (the gateway's tasks just got cancelled): give it
            # back as itself, as if there were no nursery in between.
            if raised is not None and len(group.exceptions) == 1 and group.exceptions[0] is raised:
                raise raised from None
            raise
