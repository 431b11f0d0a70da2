"""The fuzz driver: a live server, many connections at once, counts by response class, verdicts.

A target (one module per surface) implements `async def connection(ctx, rng)`: it opens one TCP
connection, sends a batch of generated inputs on it (pipelined, in split writes) and records one
outcome per input with `ctx.record(cls, sample)`. The driver runs `--conns` such loops until
`--n` inputs are recorded, each connection under a deadline (a connection that passes it is a
hang), with `/health` asked every second meanwhile, and samples the server's RSS and open files
before and after (after a settle pause, once every connection is closed).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Protocol

import trio

from bench.live import HealthWatch, LiveServer

# A connection's whole batch must be answered (or the connection closed) within this.
CONNECTION_DEADLINE_S = 20.0
# Let the server drop what the last connections left (Engine.IO sessions close at ping timeout).
SETTLE_S = 3.0
KEEP_SAMPLES = 20


class Target(Protocol):
    name: str
    env: dict[str, str]

    async def connection(self, ctx: "Ctx", rng: random.Random) -> None: ...


@dataclass
class Stats:
    inputs: int = 0
    classes: Counter = field(default_factory=Counter)
    samples: dict[str, list[str]] = field(default_factory=dict)
    connections: int = 0

    def record(self, cls: str, sample: bytes | str | None = None, seed: int | None = None) -> None:
        self.inputs += 1
        self.classes[cls] += 1
        if sample is not None and bad(cls):
            kept = self.samples.setdefault(cls, [])
            if len(kept) < KEEP_SAMPLES:
                kept.append(f"seed={seed} {sample[:400]!r}")


def bad(cls: str) -> bool:
    """Classes that are findings: a 500, a hang, a response that is not HTTP, a crashed client.
    Other 5xx are answers (501 unknown coding, 503 queue full or body budget, 505 version)."""
    return cls in ("500", "timeout", "bad_response") or cls.startswith("client_error")


class Ctx:
    def __init__(self, host: str, port: int, stats: Stats, seed: int) -> None:
        self.host, self.port, self.stats, self.seed = host, port, stats, seed

    def record(self, cls: str, sample: bytes | str | None = None) -> None:
        self.stats.record(cls, sample, self.seed)

    async def open(self) -> trio.SocketStream:
        return await trio.open_tcp_stream(self.host, self.port)


def status_class(status: int) -> str:
    return str(status) if status >= 500 else f"{status // 100}xx"


async def send_split(rng: random.Random, stream: trio.SocketStream, data: bytes) -> None:
    """Send `data` in one write, or split at random offsets (one byte at a time now and then)."""
    if len(data) < 2 or rng.random() < 0.6:
        await stream.send_all(data)
        return
    if rng.random() < 0.05 and len(data) < 300:
        cuts = list(range(1, len(data)))
    else:
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 6))))
    prev = 0
    for c in cuts + [len(data)]:
        await stream.send_all(data[prev:c])
        prev = c
        if rng.random() < 0.3:
            await trio.sleep(0)


async def run_load(target: Target, ctx_factory: Callable[[int], Ctx], n: int, conns: int, seed: int,
                   progress: Callable[[], None], stop_at: float) -> None:
    stats = ctx_factory(0).stats
    next_conn = 0

    async def worker() -> None:
        nonlocal next_conn
        while stats.inputs < n and time.monotonic() < stop_at:
            index = next_conn
            next_conn += 1
            ctx = ctx_factory(seed * 1_000_003 + index)
            rng = random.Random(ctx.seed)
            stats.connections += 1
            try:
                with trio.fail_after(CONNECTION_DEADLINE_S):
                    await target.connection(ctx, rng)
            except trio.TooSlowError:
                ctx.record("timeout", f"connection {index} passed {CONNECTION_DEADLINE_S}s")
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                ctx.record("io_error", repr(exc))
            except Exception as exc:  # noqa: BLE001 - the fuzzer's own bug: counted, shown, not fatal
                ctx.record(f"client_error:{type(exc).__name__}", repr(exc))

    async def ticker() -> None:
        while True:
            await trio.sleep(5)
            progress()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        async with trio.open_nursery() as workers:
            for _ in range(conns):
                workers.start_soon(worker)
        nursery.cancel_scope.cancel()


def fuzz(target: Target, *, n: int, conns: int, seed: int, out: Path, max_rss_growth_mb: float,
         max_fd_growth: int, minutes: float = 0.0) -> dict:
    server = LiveServer(target.env)
    stats = Stats()
    t0 = time.monotonic()
    before = server.sample()
    failures: list[str] = []
    client_cpu0 = time.process_time()

    def progress() -> None:
        rate = stats.inputs / max(1e-9, time.monotonic() - t0)
        print(f"  {target.name}: {stats.inputs:,} inputs, {stats.connections:,} connections, {rate:,.0f}/s, "
              f"rss {server.rss_mb():.0f} MB, fds {server.open_files()}, {dict(stats.classes.most_common(6))}",
              flush=True)

    try:
        with HealthWatch(server, interval=1.0, timeout=10.0) as health:
            stop_at = t0 + minutes * 60 if minutes else float("inf")
            trio.run(run_load, target, lambda s: Ctx(server.host, server.port, stats, s), n, conns, seed, progress,
                     stop_at)
        wall = time.monotonic() - t0
        time.sleep(SETTLE_S)
        alive = server.alive()
        after = server.sample() if alive else {}
        cpu_s = server.cpu_s() if alive else 0.0
        healthy_after = server.health_ok() if alive else False
    finally:
        code = server.stop()
    if not alive:
        failures.append(f"server died (exit {code}): {server.log_tail(1500)}")
    if health.failures:
        failures.append(f"/health failed {len(health.failures)} times: {health.failures[:3]}")
    if alive and not healthy_after:
        failures.append("/health did not answer after the run")
    for cls, k in stats.classes.items():
        if bad(cls):
            failures.append(f"{k} inputs gave {cls}")
    if after:
        if after["rss_mb"] - before["rss_mb"] > max_rss_growth_mb:
            failures.append(f"RSS grew {after['rss_mb'] - before['rss_mb']:.0f} MB (allowed {max_rss_growth_mb})")
        if after["open_files"] - before["open_files"] > max_fd_growth:
            failures.append(f"open files grew by {after['open_files'] - before['open_files']} (allowed {max_fd_growth})")
    report = {"target": target.name, "inputs": stats.inputs, "asked": n, "minutes_cap": minutes, "server_cpu_s": round(cpu_s, 1),
              "client_cpu_s": round(time.process_time() - client_cpu0, 1), "connections": stats.connections, "seed": seed,
              "wall_s": round(wall, 1), "inputs_per_s": round(stats.inputs / wall), "classes": dict(stats.classes),
              "before": before, "after": after, "health_checks": health.checks,
              "health_worst_s": round(health.worst_s, 3), "samples": stats.samples, "failures": failures,
              "ok": not failures, "server_log_tail": server.log_tail(2000) if failures else ""}
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"fuzz-{target.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.json"
    path.write_text(json.dumps(report, indent=1))
    report["path"] = str(path)
    return report


def table(report: dict) -> str:
    short = f" (of {report['asked']:,} asked; stopped at the {report['minutes_cap']}-minute cap)" \
        if report["inputs"] < report["asked"] else ""
    rows = [f"fuzz {report['target']}: {report['inputs']:,} inputs{short} on {report['connections']:,} connections in "
            f"{report['wall_s']} s ({report['inputs_per_s']:,}/s; CPU s: server {report['server_cpu_s']}, fuzzer "
            f"{report['client_cpu_s']}), seed {report['seed']}",
            "| class | inputs |", "|---|---:|"]
    rows += [f"| {cls} | {k:,} |" for cls, k in sorted(report["classes"].items(), key=lambda kv: -kv[1])]
    b, a = report["before"], report["after"] or {}
    rows.append(f"RSS {b['rss_mb']:.1f} → {a.get('rss_mb', float('nan')):.1f} MB; open files {b['open_files']} → "
                f"{a.get('open_files', '-')}; /health {report['health_checks']} checks, worst "
                f"{report['health_worst_s']} s")
    rows.append("OK" if report["ok"] else "FAIL: " + "; ".join(f[:300] for f in report["failures"]))
    return "\n".join(rows)


Connection = Callable[[Ctx, random.Random], Awaitable[None]]
