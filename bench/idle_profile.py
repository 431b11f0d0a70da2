"""Where the memory of idle connections goes: one in-process gateway, N idle connections.

    PYTHONPATH=$PWD python bench/idle_profile.py --proto sse|sio --c 2000 [--trace] [--top 25]

Starts the gateway in this process (the bench's settings: memory bus, bench bundle), opens `--c`
idle connections from load-generator processes (bench/loadgen/client.py, as `bench/run.py idle`),
and prints, per connection: RSS growth, live trio tasks, and with `--trace` the Python allocations
still held (tracemalloc, grouped by the allocating line, with the innermost frames of the
traceback). tracemalloc itself costs memory and time: read RSS from a run without `--trace`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tracemalloc
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path

import psutil
import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kdc_trio.metrics import trio_tasks  # noqa: E402

CLIENT = ROOT / "bench" / "loadgen" / "client.py"
PER_PROCESS = 250


def bench_env() -> None:
    os.environ.update({"KDC_PORT": "0", "KDC_BUNDLE": "kdc_trio.bundles.bench:BenchBundle",
                       "KDC_LOG_LEVEL": "WARNING", "SSE_CLIENT_QUEUE": "200000",
                       "KDC_MAX_SSE_CONNECTIONS": "100000", "KDC_MAX_CONNECTIONS": "100000",
                       "KDC_WORKER_CONCURRENCY": "2000", "KDC_TURN_QUEUE_SIZE": "100000",
                       "KDC_RATE_LIMITS": "0", "KDC_ADMISSION": "0"})


def task_names() -> Counter:
    return Counter(t.name.rsplit(".", 1)[-1] for t in trio_tasks())


async def open_clients(proto: str, port: int, c: int) -> list[trio.Process]:
    procs = []
    sizes = [PER_PROCESS] * (c // PER_PROCESS) + ([c % PER_PROCESS] if c % PER_PROCESS else [])
    for m in sizes:
        spec = {"proto": proto, "flavor": "kdc", "base": f"http://127.0.0.1:{port}", "timeout": 120,
                "connections": m, "mode": "idle", "trigger": None, "expect": 0}
        procs.append(await trio.lowlevel.open_process([sys.executable, str(CLIENT), json.dumps(spec)],
                                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE))
    for p in procs:
        buf = b""
        while b"\n" not in buf:
            chunk = await p.stdout.receive_some(4096)
            if not chunk:
                raise RuntimeError("load generator exited")
            buf += chunk
    return procs


async def main(a: argparse.Namespace) -> None:
    from kdc_trio.config import Settings
    from kdc_trio.gateway import open_gateway

    settings = Settings.from_env()
    proc = psutil.Process()
    async with AsyncExitStack() as stack:
        gw = await open_gateway(settings, stack)
        async with trio.open_nursery() as nursery:
            ports = await nursery.start(gw.run)
            await trio.sleep(0.5)
            gc.collect()
            tasks0 = task_names()
            rss0 = proc.memory_info().rss
            snap0 = tracemalloc.take_snapshot() if a.trace else None
            procs = await open_clients(a.proto, ports[0], a.c)
            await trio.sleep(1.0)
            rss1 = proc.memory_info().rss
            garbage = gc.collect()
            rss2 = proc.memory_info().rss
            tasks1 = task_names()
            print(f"{a.proto}: {a.c} idle connections: RSS +{(rss1 - rss0) / 1024 / a.c:.1f} KiB/conn "
                  f"({rss0 / 2**20:.0f} → {rss1 / 2**20:.0f} MB); after gc.collect() +{(rss2 - rss0) / 1024 / a.c:.1f} "
                  f"KiB/conn ({garbage / a.c:.1f} unreachable objects/conn were waiting)")
            grown = tasks1 - tasks0
            print(f"tasks: +{sum(grown.values()) / a.c:.2f}/conn: " +
                  ", ".join(f"{k} {v / a.c:.2f}" for k, v in grown.most_common()))
            if a.trace:
                snap1 = tracemalloc.take_snapshot()
                stats = snap1.compare_to(snap0, "traceback")
                total = sum(s.size_diff for s in stats)
                print(f"tracemalloc: +{total / 1024 / a.c:.2f} KiB/conn held by Python allocations")
                for key in ("filename", "lineno"):
                    print(f"  by {key}:")
                    for s in snap1.compare_to(snap0, key)[:a.top]:
                        if s.size_diff > 0:
                            f = s.traceback[0]
                            print(f"  {s.size_diff / a.c:8.0f} B/conn {s.count_diff / a.c:6.2f} blocks  "
                                  f"{'/'.join(Path(f.filename).parts[-2:])}:{f.lineno if key == 'lineno' else ''}")
                print("  by traceback:")
                for s in stats[:a.top]:
                    if s.size_diff <= 0:
                        continue
                    frames = [f for f in s.traceback if "/trio/" not in f.filename][-a.depth:] or list(s.traceback)[-1:]
                    where = " < ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames))
                    print(f"  {s.size_diff / a.c:8.0f} B/conn {s.count_diff / a.c:6.2f} blocks  {where}")
            for p in procs:
                p.kill()
            gw.drain()
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--proto", choices=["sse", "sio"], default="sse")
    p.add_argument("--c", type=int, default=2000)
    p.add_argument("--trace", action="store_true")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--depth", type=int, default=4)
    args = p.parse_args()
    bench_env()
    if args.trace:
        tracemalloc.start(25)
    trio.run(main, args)
