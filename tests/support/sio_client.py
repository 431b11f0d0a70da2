"""python-socketio's AsyncClient (asyncio) driven from a trio test: it runs in a worker thread
with its own event loop; the test gets what it received once the scenario ends."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import socketio
import trio


@dataclass
class SioResult:
    events: list[tuple[str, Any]] = field(default_factory=list)
    acks: list[Any] = field(default_factory=list)
    connect_error: Any = None
    connected: bool = False
    transport: str | None = None
    disconnected: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, pred: Callable[["SioResult"], bool], timeout: float = 10.0) -> None:
        """Inside a scenario: until `pred(self)` holds (woken by each received event)."""
        async with asyncio.timeout(timeout):
            while not pred(self):
                self.changed.clear()
                await self.changed.wait()

    def of(self, event: str) -> list[Any]:
        return [d for e, d in self.events if e == event]

    def names(self) -> list[str]:
        return [e for e, _ in self.events]


Scenario = Callable[[socketio.AsyncClient, SioResult], Awaitable[None]]


async def _main(url: str, auth: Any, transports: list[str], scenario: Scenario, headers: dict) -> SioResult:
    res = SioResult()
    sio = socketio.AsyncClient(reconnection=False)

    @sio.on("*")
    async def catch_all(event, *args):
        res.events.append((event, args[0] if len(args) == 1 else list(args)))
        res.changed.set()

    @sio.event
    async def connect_error(data):
        res.connect_error = data

    @sio.event
    async def disconnect(*args):
        res.disconnected = True

    try:
        await sio.connect(url, auth=auth, transports=transports, wait_timeout=5, headers=headers)
    except socketio.exceptions.ConnectionError as exc:
        if res.connect_error is None:
            res.connect_error = str(exc)
        return res
    res.connected = True
    res.transport = sio.transport()
    try:
        await asyncio.wait_for(scenario(sio, res), 30)
    finally:
        await sio.disconnect()
    return res


async def run_sio(url: str, scenario: Scenario, *, auth: Any = None, transports: list[str] | None = None,
                  headers: dict | None = None, timeout: float = 40.0) -> SioResult:
    """Connect, run `scenario(sio, result)`, disconnect; returns what was received."""
    box: dict[str, Any] = {}

    def thread() -> None:
        try:
            box["result"] = asyncio.run(_main(url, auth, transports or ["polling", "websocket"], scenario,
                                              headers or {}))
        except BaseException as exc:  # handed to the trio side
            box["error"] = exc

    done = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def runner() -> None:
        try:
            thread()
        finally:
            token.run_sync_soon(done.set)

    threading.Thread(target=runner, daemon=True).start()
    with trio.fail_after(timeout):
        await done.wait()
    if "error" in box:
        raise box["error"]
    return box["result"]
