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

# How long the client waits for the handshake (its HTTP requests and WebSocket open: python-engineio's
# `request_timeout`, 5 s by default) and then for the server's CONNECT or CONNECT_ERROR
# (`wait_timeout`, 1 s by default). Both are answered in milliseconds; the test's gateway runs in
# the test's own process (one GIL with this client's thread) on a 2-core CI box that may be busy,
# so they are generous: a refusal is still told at once, and a lapse is reported as such.
CONNECT_TIMEOUT_S = 20.0


async def _main(url: str, auth: Any, transports: list[str], scenario: Scenario, headers: dict) -> SioResult:
    res = SioResult()
    sio = socketio.AsyncClient(reconnection=False, request_timeout=CONNECT_TIMEOUT_S)

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
        await sio.connect(url, auth=auth, transports=transports, wait_timeout=CONNECT_TIMEOUT_S, headers=headers)
    except socketio.exceptions.ConnectionError as exc:
        if res.connect_error is None:
            # python-socketio says "Unexpected connection error" when `wait_timeout` lapsed
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
                  headers: dict | None = None, timeout: float = 3 * CONNECT_TIMEOUT_S + 30.0) -> SioResult:
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
