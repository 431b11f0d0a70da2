"""The five workloads. Each takes a running server and returns one run's numbers.

Load generators are separate processes (bench/loadgen/client.py), so the server under test and
the clients never share an interpreter; each reports whether it was CPU-bound.
"""

from __future__ import annotations

import json
import secrets
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from bench.kernel import socket_buffers, socket_struct_bytes, tcp_mem_pages
from bench.live import LineReader
from bench.targets import Running

CLIENT = Path(__file__).resolve().parent / "loadgen" / "client.py"
PER_PROCESS = 250  # connections one load-generator process holds
IDLE_PER_PROCESS = 2000  # idle connections cost the generator nothing after the handshake


# How long a load generator waits for its deliveries (its spec's `timeout`): then it reports
# what it got. A quick run delivers 200 events in well under a second; 30 s leaves a loaded CI
# box room and still ends a stalled run (it then reports incomplete) inside the test's deadline.
GEN_TIMEOUT_S = 120
QUICK_GEN_TIMEOUT_S = 30
# The runner's margin over a load generator's own timeout before it calls it stuck: the
# generator reports by then (it stops waiting for connections and deliveries at its timeout).
REPORT_MARGIN_S = 30
OPEN_CONCURRENCY = 64  # bench/loadgen/client.py: handshakes in flight per generator


class Gen:
    """One load-generator process. Each line it owes is waited for with a deadline derived from
    its own timeout (`ready`, `result`): a generator that says nothing is killed and named."""

    def __init__(self, running: Running, **spec) -> None:
        spec = {"proto": running.target.proto, "flavor": running.target.flavor, "base": running.base,
                "timeout": GEN_TIMEOUT_S, **spec}
        self.spec = spec
        self.proc = subprocess.Popen([sys.executable, str(CLIENT), json.dumps(spec)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        self.out = LineReader(self.proc, f"the load generator for {running.target.name} "
                                         f"({spec.get('mode', 'count')}, {spec.get('connections')} connections)")

    def ready(self) -> dict:
        """Its `ready` line: every connection open (each handshake has `timeout` once it starts)."""
        rounds = -(-max(1, self.spec.get("connections") or 1) // self.spec.get("open_concurrency", OPEN_CONCURRENCY))
        return self.line("its connections open", self.spec["timeout"] * rounds + REPORT_MARGIN_S)

    def result(self) -> dict:
        """Its result line, after `go`: it stops waiting for deliveries at its timeout."""
        return self.line("its result", self.spec["timeout"] + self.spec.get("duration", 0) + REPORT_MARGIN_S)

    def line(self, what: str, timeout: float) -> dict:
        try:
            return json.loads(self.out.line(what, timeout))
        except BaseException:
            self.kill()
            raise

    def send(self, word: str) -> None:
        self.proc.stdin.write(word.encode() + b"\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        """Let it finish (stdin closed), SIGKILL after 30 s."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
        self.proc.stdout.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@contextmanager
def generators() -> Iterator[list[Gen]]:
    """The load generators a workload starts (append them): closed when it ends, killed at once
    when it fails, so none outlives its run."""
    gens: list[Gen] = []
    try:
        yield gens
    except BaseException:
        for g in gens:
            g.kill()
        raise
    finally:
        for g in gens:
            g.close()


def _split(total: int, per: int = PER_PROCESS) -> list[int]:
    procs = max(1, -(-total // per))
    return [total // procs + (1 if i < total % procs else 0) for i in range(procs)]


# How long the measurement waits for a peer's last PUBLISHes to reach Redis before counting them.
PUBLISH_SETTLE_S = 0.3


class Cpu:
    """CPU seconds of the gateway, of a separate producer worker and of the single Redis every
    target is joined to (`--redis`; None otherwise) over a measurement, and the messages
    published on that Redis meanwhile (equal work: every target's events pass through it)."""

    def __init__(self, running: Running) -> None:
        self.running = running
        self.gw0, self.worker0, self.redis0 = running.cpu_s(), running.worker_cpu_s(), running.redis_counters()

    def stop(self) -> "Cpu":
        self.gateway = self.running.cpu_s() - self.gw0
        self.worker = self.running.worker_cpu_s() - self.worker0
        redis1 = self.running.redis_counters()
        self.redis = self.redis_published = None
        if redis1 is not None and self.redis0 is not None:
            self.redis = redis1[0] - self.redis0[0]
            # A peer may deliver locally before its PUBLISHes reach Redis (socket.io's redis
            # adapter publishes without waiting): count them once they have landed.
            time.sleep(PUBLISH_SETTLE_S)
            self.redis_published = self.running.redis_counters()[1] - self.redis0[1]
        self.total = self.gateway + self.worker
        return self


def _measure(running: Running, gens: list[Gen]) -> tuple[list[dict], float, Cpu]:
    cpu = Cpu(running)
    t0 = time.perf_counter()
    for g in gens:
        g.send("go")
    results = [g.result() for g in gens]
    wall = time.perf_counter() - t0
    cpu.stop()
    for g in gens:
        g.close()
    return results, wall, cpu


def _summary(results: list[dict], cpu: Cpu, running: Running, expected: int) -> dict:
    """`server_cpu_s_per_100k`: every server process (gateway and a separate worker);
    `gateway_cpu_us_per_event`: the gateway's alone (a peer's server is both)."""
    deliveries = sum(r["deliveries"] for r in results)
    wall = max(r["wall_s"] for r in results)
    lat = sorted(v for r in results for v in r["latency_ms"])
    q = (lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else None)
    nbytes = sum(r.get("delta_bytes", 0) for r in results)
    lags = sorted(v for r in results for v in r.get("lag_ms", ()))
    return {"deliveries": deliveries, "expected": expected, "complete": deliveries >= expected,
            "bytes_per_event": nbytes / deliveries if deliveries else None,
            "sample": next((r["sample"] for r in results if r.get("sample")), None),
            "deliveries_per_s": deliveries / wall if wall > 0 else 0.0,
            "p50_ms": q(0.50), "p99_ms": q(0.99), "max_ms": lat[-1] if lat else None,
            # paced streams: how far behind its schedule (first + i / rate) the i-th event arrived
            "lag_p99_ms": lags[min(len(lags) - 1, int(0.99 * len(lags)))] if lags else None,
            "server_cpu_s_per_100k": cpu.total / deliveries * 1e5 if deliveries else None,
            "gateway_cpu_us_per_event": cpu.gateway / deliveries * 1e6 if deliveries else None,
            "worker_cpu_s": cpu.worker, "separate_worker": running.worker is not None,
            "worker_cpu_us_per_event": cpu.worker / deliveries * 1e6 if deliveries and running.worker else None,
            "redis_cpu_us_per_event": cpu.redis / deliveries * 1e6 if deliveries and cpu.redis is not None else None,
            "redis_published": cpu.redis_published,
            "server_rss_mb": running.rss_mb(), "client_cpu_bound": any(r["cpu_bound"] for r in results)}


def stream(running: Running, *, n: int, size: int, gen_timeout: float = GEN_TIMEOUT_S, **_) -> dict:
    with generators() as gens:
        g = Gen(running, connections=1, trigger={"n": n, "size": size, "rate": 0}, expect=n, timeout=gen_timeout)
        gens.append(g)
        g.ready()
        results, _, cpu = _measure(running, gens)
    return _summary(results, cpu, running, n)


def fanout(running: Running, *, n: int, size: int, k: int, gen_timeout: float = GEN_TIMEOUT_S, **_) -> dict:
    sizes = _split(k)
    # kdc-trio makes the session; a peer's is named here, 24 characters as kdc-trio's (equal bytes)
    session = None if running.target.flavor == "kdc" else secrets.token_urlsafe(18)
    with generators() as gens:
        first = Gen(running, connections=sizes[0], session=session, share_session=True,
                    trigger={"n": n, "size": size, "rate": 0, "broadcast": True}, expect=n, timeout=gen_timeout)
        gens.append(first)
        session = first.ready()["session"]
        for c in sizes[1:]:
            gens.append(Gen(running, connections=c, session=session, trigger=None, expect=n, timeout=gen_timeout))
        for g in gens[1:]:
            g.ready()
        results, _, cpu = _measure(running, gens)
    return _summary(results, cpu, running, n * k)


def many(running: Running, *, c: int, rate: float, duration: float, size: int, **_) -> dict:
    per = int(rate * duration)
    with generators() as gens:
        first = 0
        for m in _split(c):
            # the sessions' first events spread evenly over one period (`phase`): independent
            # sessions are not in step, and the targets' triggers arrive at different paces (an
            # SSE turn is an HTTP POST, a Socket.IO one a WebSocket message)
            gens.append(Gen(running, connections=m, trigger={"n": per, "size": size, "rate": rate}, trigger_all=True,
                            spread={"first": first, "of": c}, expect=per, timeout=duration * 4 + 30))
            first += m
        for g in gens:
            g.ready()
        results, wall, cpu = _measure(running, gens)
    out = _summary(results, cpu, running, per * c)
    out.update({"sessions": c, "rate_per_session": rate, "server_cpu_pct": cpu.total / wall * 100,
                "gateway_cpu_pct": cpu.gateway / wall * 100})
    return out


def idle(running: Running, *, c: int, gen_timeout: float = GEN_TIMEOUT_S, **_) -> dict:
    """RSS per open connection, and what the kernel holds beside it: the server side's socket
    buffers (bench/kernel.py) plus the slab objects of each socket."""
    time.sleep(0.5)
    before, (_, buf_before), pages_before = running.rss_mb(), socket_buffers(running.port), tcp_mem_pages()
    with generators() as gens:
        for m in _split(c, IDLE_PER_PROCESS):
            gens.append(Gen(running, connections=m, mode="idle", trigger=None, expect=0, timeout=gen_timeout))
        opened = [g.ready() for g in gens]
        time.sleep(1.0)
        after, (held, buf_after), pages_after = running.rss_mb(), socket_buffers(running.port), tcp_mem_pages()
        for g in gens:
            g.send("stop")
    struct = socket_struct_bytes()
    buf_kib = (buf_after - buf_before) / 1024 / c
    return {"connections": c, "established": held, "rss_before_mb": before, "rss_after_mb": after,
            "kib_per_connection": (after - before) * 1024 / c, "open_s": max(o["open_s"] for o in opened),
            "kernel_buffer_kib_per_connection": buf_kib,
            "kernel_kib_per_connection": buf_kib + struct / 1024 if struct is not None else None,
            "tcp_mem_pages_delta": pages_after - pages_before}


def churn(running: Running, *, clients: int, duration: float, gen_timeout: float = GEN_TIMEOUT_S, **_) -> dict:
    with generators() as gens:
        g = Gen(running, mode="churn", connections=clients, duration=duration, trigger=None, expect=0,
                timeout=gen_timeout)
        gens.append(g)
        g.ready()
        cpu = Cpu(running)
        g.send("go")
        r = g.result()
        cpu.stop()
    return {"cycles": r["cycles"], "errors": r["errors"], "cycles_per_s": r["cycles"] / r["wall_s"],
            "server_cpu_s_per_1k_cycles": cpu.total / max(1, r["cycles"]) * 1000,
            "server_rss_mb": running.rss_mb(), "client_cpu_bound": r["cpu_bound"]}


WORKLOADS = {"stream": stream, "fan-out": fanout, "many": many, "idle": idle, "churn": churn}
# The number each workload is ranked by (higher is better unless listed in LOWER_IS_BETTER).
HEADLINE = {"stream": "deliveries_per_s", "fan-out": "deliveries_per_s", "many": "deliveries_per_s",
            "idle": "kib_per_connection", "churn": "cycles_per_s"}
LOWER_IS_BETTER = {"kib_per_connection"}


def median_run(runs: list[dict], key: str) -> dict:
    """The run whose headline number is the median."""
    ordered = sorted(runs, key=lambda r: r.get(key) or 0)
    return ordered[len(ordered) // 2] if len(ordered) % 2 else ordered[len(ordered) // 2 - 1]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
