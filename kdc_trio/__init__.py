"""kdc-trio: a realtime gateway for AI chat applications on Trio.

`kdc_trio.running(settings, bundle=…)` hosts the gateway inside your Trio program
(see `kdc_trio.embed`); `kdc_trio.client` talks to a gateway from trio or asyncio.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["running", "RunningGateway"]


def __getattr__(name: str) -> Any:
    # Lazy: `import kdc_trio.config` (or the client) should not import the whole server.
    if name in ("running", "RunningGateway"):
        from kdc_trio import embed

        return getattr(embed, name)
    raise AttributeError(f"module 'kdc_trio' has no attribute {name!r}")
