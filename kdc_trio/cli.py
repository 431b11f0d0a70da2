"""`kdc-trio serve | worker | token | chat | settings | conformance`."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
from contextlib import AsyncExitStack

import trio

from kdc_trio.config import Settings
from kdc_trio.logs import setup_logging
from kdc_trio.util import heap

log = logging.getLogger("kdc_trio.cli")


async def _watch_signals(gw, scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for sig in signals:
            if gw.server.draining.is_set():
                log.info("second signal: stopping now")
                scope.cancel()
                return
            log.info("signal %s: draining", signal.Signals(sig).name)
            gw.drain()


def _settle_heap(settings: Settings) -> None:
    frozen = heap.settle(young=settings.gc_young_threshold)
    log.info("start-up heap settled: %d objects frozen; young generation collected every %d allocations",
             frozen, gc.get_threshold()[0])


async def serve(settings: Settings, *, with_worker: bool = True, port_file: str | None = None) -> None:
    from kdc_trio.gateway import open_gateway

    async with AsyncExitStack() as stack:
        gw = await open_gateway(settings, stack, with_worker=with_worker)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, gw, nursery.cancel_scope)

            async def run_gateway(*, task_status: trio.TaskStatus[list[int]]) -> None:
                await gw.run(task_status=task_status)
                nursery.cancel_scope.cancel()  # drained: stop watching for signals too

            ports = await nursery.start(run_gateway)
            _settle_heap(settings)
            print(f"kdc-trio listening on http://{settings.host}:{ports[0]}  (bus: {gw.bus.name})", flush=True)
            if port_file:
                with open(port_file, "w") as f:
                    f.write(str(ports[0]))
            await trio.sleep(0)
        log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kdc-trio", description="Realtime gateway for AI chat apps (SSE, Socket.IO)")
    sub = p.add_subparsers(dest="cmd", required=True)
    ps = sub.add_parser("serve", help="run the gateway (with an in-process worker unless --no-worker)")
    ps.add_argument("--no-worker", action="store_true", help="gateway only: bundles run in `kdc-trio worker`")
    ps.add_argument("--port-file", help="write the bound port here once listening (for tests and scripts)")
    ps.add_argument("--workers", type=int, default=1,
                    help="run N gateway processes on one port (SO_REUSEPORT, restarted when they die; needs REDIS_URL)")
    sub.add_parser("worker", help="run bundles for queued turns (needs REDIS_URL)")
    pt = sub.add_parser("token", help="mint a development token signed with KDC_JWT_SECRET")
    pt.add_argument("--sub", default="dev-user")
    pt.add_argument("--roles", default="", help="comma-separated roles")
    pt.add_argument("--ttl", type=int, default=3600)
    pt.add_argument("--username")
    from kdc_trio.client.cli import add_parser as add_chat_parser

    add_chat_parser(sub)
    sub.add_parser("settings", help="print every setting (environment name, default, meaning) as Markdown")
    pc = sub.add_parser("conformance", help="serve the app the official Socket.IO/Engine.IO suites expect")
    pc.add_argument("--port", type=int, default=3000)
    pc.add_argument("--host", default="localhost", help="the suites connect to localhost:3000 (IPv4 or IPv6)")
    args = p.parse_args(argv)
    if args.cmd == "chat":
        from kdc_trio.client.cli import run as run_chat

        return run_chat(args)
    if args.cmd == "settings":
        from kdc_trio.settings_doc import settings_markdown

        print(settings_markdown())
        return 0
    settings = Settings.from_env()
    if args.cmd == "token":
        from kdc_trio.auth.mint import MintError, mint_token

        try:
            print(mint_token(settings, subject=args.sub, roles=tuple(r for r in args.roles.split(",") if r),
                             ttl_s=args.ttl, username=args.username))
        except MintError as exc:
            print(f"kdc-trio token: {exc}", file=sys.stderr)
            return 2
        return 0
    setup_logging(settings)
    from kdc_trio.processor.bundle import BundleLoadError

    try:
        if args.cmd == "serve" and args.workers > 1:
            from kdc_trio.supervisor import supervise

            trio.run(supervise, settings, args.workers, ["--no-worker"] if args.no_worker else [], args.port_file)
        elif args.cmd == "serve":
            trio.run(lambda: serve(settings, with_worker=not args.no_worker, port_file=args.port_file))
        elif args.cmd == "worker":
            from kdc_trio.processor.worker import run_worker

            async def worker() -> None:
                async with trio.open_nursery() as nursery:
                    await nursery.start(run_worker, settings)
                    _settle_heap(settings)

            trio.run(worker)
    except BundleLoadError as exc:
        print(f"kdc-trio: KDC_BUNDLE={settings.bundle}: {exc}", file=sys.stderr)
        return 2
    if args.cmd == "conformance":
        from kdc_trio.transports.conformance import run_conformance

        import dataclasses

        trio.run(run_conformance, dataclasses.replace(settings, host=args.host), args.port)
    return 0
