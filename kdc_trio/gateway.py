"""The composition root: settings in, a running gateway out.

`Gateway` holds the parts (auth, sessions, bus, relay, turn queue, processor) and the
router; `run()` starts them in one nursery, in dependency order, and serves HTTP. Embedded
defaults (no `REDIS_URL`) put everything in memory in this one process.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import trio

from kdc_trio.auth.authenticator import Authenticator
from kdc_trio.config import Settings
from kdc_trio.processor.bundle import Bundle, load_bundle
from kdc_trio.processor.conv_status import ConvStatusStore, MemoryConvStatusStore
from kdc_trio.processor.queue import MemoryTurnQueue, TurnQueue
from kdc_trio.ports import Counters, Ports
from kdc_trio.processor.runner import Processor
from kdc_trio.protect.admission import Admission
from kdc_trio.protect.guard import Guard
from kdc_trio.protect.ratelimit import MemoryRateLimiter, RateLimiter
from kdc_trio.relay.bus import Bus, MemoryBus
from kdc_trio.relay.chat_relay import ChatRelayCommunicator
from kdc_trio.metrics import GatewayMetrics
from kdc_trio.server import Router, Server
from kdc_trio.server.cors import CORS
from kdc_trio.sessions.store import MemorySessionStore, SessionStore
from kdc_trio.transports.expiry import LiveStreams

log = logging.getLogger("kdc_trio.gateway")


@dataclass(eq=False)
class Gateway:
    settings: Settings
    store: SessionStore
    bus: Bus
    conv_store: ConvStatusStore
    queue: TurnQueue
    bundle: Bundle | None
    limiter: RateLimiter = field(default_factory=MemoryRateLimiter)
    authenticator: Authenticator = field(init=False)
    relay: ChatRelayCommunicator = field(init=False)
    processor: Processor | None = field(init=False, default=None)
    server: Server = field(init=False)
    counters: Counters = field(default_factory=Counters)
    metrics: GatewayMetrics = field(init=False)
    base_url: str = ""  # set once listening (tests, logs)

    def __post_init__(self) -> None:
        s = self.settings
        self.authenticator = Authenticator(s)
        self.metrics = GatewayMetrics(self)
        self.relay = ChatRelayCommunicator(self.bus, linger_s=s.relay_linger_ms / 1000,
                                           observe=self.metrics.observe_batch)
        if self.bundle is not None:
            self.processor = Processor.from_settings(s, queue=self.queue, bundle=self.bundle,
                                                     publish=self.relay.publish, conv_store=self.conv_store,
                                                     on_turn_end=self.metrics.turn_finished, bus=self.bus)
        from kdc_trio.transports.socketio import PATH as SIO_PATH

        cors = CORS.from_settings(s, guarded_prefixes=(SIO_PATH,))
        self.router = Router()
        self.server = Server(s, cors.wrap(self.router), cors.headers)
        self.admission = Admission(s, queue_depth=self.queue.depth,
                                   connections=lambda: (self.server.connections, self.server.max_connections))
        self.guard = Guard(s, limiter=self.limiter, admission=self.admission)
        # Transports get the parts they use (kdc_trio/ports.py), never this Gateway.
        self.ports = Ports(settings=s, authenticator=self.authenticator, store=self.store, relay=self.relay,
                           conv_store=self.conv_store, queue=self.queue, counters=self.counters, bus=self.bus,
                           server=self.server, processor=self.processor, metrics=self.metrics,
                           guard=self.guard, streams=LiveStreams())
        self.server.on_drain.append(self.ports.streams.close_all)  # SSE streams end when the server drains
        from kdc_trio.transports import rest, socketio, sse, web

        sse.install(self.router, self.ports)
        rest.install(self.router, self.ports)
        if s.demo_page:
            web.install(self.router)
        self.engineio = socketio.install(self.router, self.ports)
        self.engineio.draining = self.server.draining

    async def run(self, *, task_status: trio.TaskStatus[list[int]] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every part; `task_status.started(ports)` once the server listens; return once the
        server has drained (after `drain()`), cancelling the rest."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.bus.run)
            await nursery.start(self.relay.run)
            await nursery.start(self.queue.run)
            if self.guard.admission is not None:
                await nursery.start(self.guard.admission.run)
            if self.processor is not None:
                await nursery.start(self.processor.run)
            await nursery.start(self.engineio.run)
            ports = await nursery.start(self._serve_then_cancel, nursery.cancel_scope)
            task_status.started(ports)

    async def _serve_then_cancel(self, scope: trio.CancelScope, *,
                                 task_status: trio.TaskStatus[list[int]] = trio.TASK_STATUS_IGNORED) -> None:
        await self.server.serve(task_status=task_status)
        scope.cancel()

    def drain(self) -> None:
        self.server.drain()


def memory_gateway(settings: Settings, *, bundle: Bundle | None = None, with_worker: bool = True) -> Gateway:
    """Everything in this process: memory bus, memory sessions, memory queue."""
    return Gateway(
        settings=settings,
        store=MemorySessionStore(ttl_s=settings.session_ttl_s, max_sessions=settings.memory_max_sessions),
        bus=MemoryBus(log_size=settings.session_log_size, log_ttl_s=settings.session_log_ttl_s,
                      max_logs=settings.session_log_max_sessions, log_budget_bytes=settings.session_log_budget_bytes,
                      log_session_bytes=settings.session_log_bytes),
        conv_store=MemoryConvStatusStore(max_conversations=settings.memory_max_conversations),
        queue=MemoryTurnQueue(settings.turn_queue_size),
        bundle=(bundle or load_bundle(settings.bundle)) if with_worker else None,
    )


async def open_gateway(settings: Settings, stack: AsyncExitStack, *, bundle: Bundle | None = None,
                       with_worker: bool = True) -> Gateway:
    """The gateway the settings ask for: embedded without REDIS_URL, Redis-backed with it."""
    if not settings.redis_url:
        return memory_gateway(settings, bundle=bundle, with_worker=with_worker)
    from kdc_trio.gateway_redis import open_redis_parts

    parts = await open_redis_parts(settings, stack, listen=True)
    return Gateway(settings=settings, store=parts.store, bus=parts.bus, conv_store=parts.conv_store,
                   queue=parts.queue, limiter=parts.limiter, bundle=(bundle or load_bundle(settings.bundle)) if with_worker else None)
