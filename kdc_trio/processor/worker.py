"""`kdc-trio worker`: a process that only runs bundles for turns queued in Redis.

It takes turns from the shared stream, runs the configured bundle, publishes the events on the
sessions' channels (every gateway holding a connection of the session relays them) and acks.
On SIGINT/SIGTERM it stops; turns it was running are taken over by another worker once their
lease lapses (`KDC_TURN_LEASE_MS`).
"""

from __future__ import annotations

import logging
import signal
from contextlib import AsyncExitStack

import trio

from kdc_trio.config import Settings
from kdc_trio.gateway_redis import open_redis_parts
from kdc_trio.processor.bundle import Bundle, load_bundle
from kdc_trio.processor.runner import Processor

log = logging.getLogger("kdc_trio.worker")


async def run_worker(settings: Settings, *, bundle: Bundle | None = None,
                     task_status: trio.TaskStatus[Processor] = trio.TASK_STATUS_IGNORED) -> None:
    if not settings.redis_url:
        raise SystemExit("kdc-trio worker needs REDIS_URL: workers and gateways meet in Redis")
    async with AsyncExitStack() as stack:
        parts = await open_redis_parts(settings, stack, listen=False)
        processor = Processor.from_settings(settings, queue=parts.queue, bundle=bundle or load_bundle(settings.bundle),
                                            publish=parts.bus.publish, conv_store=parts.conv_store,
                                            bus=parts.bus)
        async with trio.open_nursery() as nursery:
            await nursery.start(parts.bus.run)
            await nursery.start(parts.queue.run)
            await nursery.start(processor.run)
            log.info("worker %s running %s (concurrency %d)", parts.queue.consumer, settings.bundle,
                     settings.worker_concurrency)
            print(f"kdc-trio worker {parts.queue.consumer} ready", flush=True)
            task_status.started(processor)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for sig in signals:
                    log.info("signal %s: stopping", signal.Signals(sig).name)
                    nursery.cancel_scope.cancel()
                    break
