"""The soak: many mixed connections held for minutes with turns flowing; fails on growth.

    python3 -m bench.soak --minutes 30 [--conns 2000] [--turn-every 60] [--out bench/results]

Starts `kdc-trio serve` (embedded, the bench bundle, a JWT secret so half the clients present
tokens), opens `--conns` connections from client processes (bench/soak/clients.py: a third SSE
streams, a third Socket.IO over WebSocket, a third Socket.IO over HTTP long-polling; every other
one with a token), and has each post a turn every `--turn-every` seconds on average (the bench
bundle streams `chat_delta`s back to the sender). Every `--interval` seconds it samples the
server's RSS and open files (psutil), its trio task count and connection gauges (`/metrics`),
and the clients' delivery latency. Writes `soak-<time>.json` and `.png` (RSS, open files, tasks,
latency over time) and exits 1 when, over the second half, a least-squares line through RSS,
open files or tasks grows by more than its allowance (`ALLOWANCE`) across that half, when the
server died or `/health` failed, or when connections were lost and not reopened.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.live import ROOT, HealthWatch, LiveServer, raise_file_limit

# Growth allowed across the second half of the run, from a least-squares line: absolute floor,
# or this fraction of the half's mean, whichever is larger. RSS of a Python process under a
# steady load drifts a few MB as the allocator settles; a leak of one object per turn or per
# reconnect grows far past these within minutes.
ALLOWANCE = {"rss_mb": (16.0, 0.10), "open_files": (40, 0.03), "tasks": (150, 0.05)}
KINDS = ["sse", "ws", "polling"]
# Connection i is MIX[i % len(MIX)]: 3/7 SSE, 3/7 WebSocket, 1/7 long-polling (two TCP connections each).
MIX = ["sse", "ws", "sse", "ws", "polling", "sse", "ws"]
PER_PROCESS = 700  # connections one client process holds
# Events kept per session: small, so the logs are full (flat) early and growth means a leak.
LOG_SIZE = 50
SECRET = "soak-secret-not-for-production-use"


class ClientProc:
    def __init__(self, spec: dict) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.soak.clients", json.dumps(spec)], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.lines: queue.Queue[dict] = queue.Queue()
        self.last: dict = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                pass
        self.lines.put({"exited": self.proc.wait()})

    def wait_line(self, timeout: float) -> dict:
        self.last = self.lines.get(timeout=timeout)
        if "exited" in self.last:
            raise RuntimeError(f"soak client exited with {self.last['exited']}")
        return self.last

    def drain(self) -> dict:
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return self.last
            if "exited" not in line:
                self.last = line

    def stop(self) -> dict:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        final = self.last
        try:
            while "final" not in final:
                final = self.wait_line(30)
        except (queue.Empty, RuntimeError):
            pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        return final


def tasks_now(server: LiveServer) -> float | None:
    try:
        return server.metrics().get("kdc_trio_tasks")
    except OSError:
        return None


def slope_per_min(ts: list[float], ys: list[float]) -> float:
    n = len(ts)
    if n < 2:
        return 0.0
    mt, my = sum(ts) / n, sum(ys) / n
    var = sum((t - mt) ** 2 for t in ts)
    return sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / var if var else 0.0


def growth_verdicts(samples: list[dict]) -> dict:
    """Per watched series: the second half's slope, its projected growth across the half, the allowance."""
    t_end = samples[-1]["t_min"]
    half = [s for s in samples if s["t_min"] >= t_end / 2]
    out = {}
    for key, (floor, frac) in ALLOWANCE.items():
        pts = [(s["t_min"], s[key]) for s in half if s.get(key) is not None]
        if len(pts) < 3:
            out[key] = {"ok": False, "why": "too few samples"}
            continue
        ts, ys = zip(*pts)
        slope = slope_per_min(list(ts), list(ys))
        growth = slope * (ts[-1] - ts[0])
        allowed = max(floor, frac * sum(ys) / len(ys))
        out[key] = {"slope_per_min": round(slope, 3), "growth_over_half": round(growth, 2),
                    "allowed": round(allowed, 2), "first": ys[0], "last": ys[-1], "ok": growth <= allowed}
    return out


def aggregate(windows: list[dict]) -> dict:
    p50s = [w["lat_p50_ms"] for w in windows if w.get("lat_p50_ms") is not None]
    p99s = [w["lat_p99_ms"] for w in windows if w.get("lat_p99_ms") is not None]
    errors: dict[str, int] = {}
    for w in windows:
        for k, v in w.get("errors", {}).items():
            errors[k] = errors.get(k, 0) + v
    return {"open": {k: sum(w.get("open", {}).get(k, 0) for w in windows) for k in KINDS},
            "posted": sum(w.get("posted", 0) for w in windows), "refused": sum(w.get("refused", 0) for w in windows),
            "deltas": sum(w.get("deltas", 0) for w in windows),
            "reconnects": sum(w.get("reconnects", 0) for w in windows), "errors": errors,
            "lat_p50_ms": sorted(p50s)[len(p50s) // 2] if p50s else None, "lat_p99_ms": max(p99s) if p99s else None}


def plot(samples: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t_min"] for s in samples]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    for ax, key, label in [(axes[0][0], "rss_mb", "server RSS (MB)"), (axes[0][1], "open_files", "server open files"),
                           (axes[1][0], "tasks", "server trio tasks")]:
        ax.plot(t, [s.get(key) for s in samples])
        ax.set_title(label)
        ax.set_ylim(bottom=0)
    ax = axes[1][1]
    ax.plot(t, [s.get("lat_p50_ms") for s in samples], label="p50")
    ax.plot(t, [s.get("lat_p99_ms") for s in samples], label="p99 (worst client process)")
    ax.set_title("delivery latency (ms)")
    ax.legend()
    for ax in axes[1]:
        ax.set_xlabel("minutes")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    limit = raise_file_limit()
    env = {"KDC_BUNDLE": "kdc_trio.bundles.bench:BenchBundle", "KDC_JWT_SECRET": SECRET,
           "KDC_WORKER_CONCURRENCY": "256", "KDC_SESSION_LOG_SIZE": str(LOG_SIZE)}
    server = LiveServer(env)
    nprocs = max(1, -(-args.conns // PER_PROCESS))
    procs = []
    started = time.time()
    report: dict = {"command": " ".join(sys.argv), "conns": args.conns, "minutes": args.minutes,
                    "turn_every_s": args.turn_every, "turn": {"n": args.deltas, "size": 100, "rate": args.rate},
                    "file_limit": limit, "client_processes": nprocs, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                             time.gmtime(started))}
    samples: list[dict] = []
    failures: list[str] = []
    try:
        for i in range(nprocs):
            share = args.conns // nprocs + (1 if i < args.conns % nprocs else 0)
            procs.append(ClientProc({"host": server.host, "port": server.port, "conns": share, "kinds": MIX,
                                     "secret": SECRET, "turn_every_s": args.turn_every, "interval": args.interval,
                                     "turn": {"n": args.deltas, "size": 100, "rate": args.rate},
                                     "first_index": i * PER_PROCESS}))
        for p in procs:
            p.wait_line(timeout=max(120, args.conns / 10))
        report["open_s"] = round(time.time() - started, 1)
        report["before"] = {**server.sample(), "tasks": tasks_now(server)}
        print(f"soak: {args.conns} connections open in {report['open_s']} s; running {args.minutes} min", flush=True)
        t0 = time.monotonic()
        end = t0 + args.minutes * 60
        metric_misses: list[str] = []
        with HealthWatch(server, interval=5.0, timeout=10.0) as health:
            while time.monotonic() < end:
                time.sleep(min(args.interval, max(0.0, end - time.monotonic())))
                if not server.alive():
                    failures.append(f"server exited with {server.proc.returncode}")
                    break
                try:
                    m = server.metrics()
                except OSError as exc:  # a slow scrape is a data point, not the end of the soak
                    m = {}
                    metric_misses.append(f"{time.monotonic() - t0:.0f}s: {exc!r}")
                agg = aggregate([p.drain() for p in procs])
                s = {"t_min": round((time.monotonic() - t0) / 60, 3), **server.sample(),
                     "tasks": m.get("kdc_trio_tasks"), "connections": m.get('kdc_connections{transport="tcp"}'),
                     "sse_streams": m.get('kdc_connections{transport="sse"}'),
                     "sio_sockets": m.get('kdc_connections{transport="socketio"}'),
                     "eio_sessions": m.get("kdc_engineio_sessions"),
                     "turns_accepted": m.get('kdc_turns_total{outcome="accepted"}'),
                     **agg}
                samples.append(s)
                print(f"  {s['t_min']:6.2f} min  rss {s['rss_mb']:7.1f} MB  fds {s['open_files']:5d}  "
                      f"tasks {s['tasks']}  open {sum(agg['open'].values())}  deltas {agg['deltas']}  "
                      f"p50 {agg['lat_p50_ms']} p99 {agg['lat_p99_ms']} ms", flush=True)
        report["metrics_misses"] = metric_misses
        report["health"] = {"checks": health.checks, "failures": health.failures[:20], "worst_s": round(health.worst_s, 2)}
        failures += health.failures[:5]
        report["after"] = {**server.sample(), "tasks": tasks_now(server)} if server.alive() else {}
    finally:
        finals = [p.stop() for p in procs]
        code = server.stop()
    report["clients"] = aggregate(finals)
    report["samples"] = samples
    report["server_exit"] = code
    if samples:
        report["growth"] = growth_verdicts(samples)
        failures += [f"{k} grew {v.get('growth_over_half')} over the second half (allowed {v.get('allowed')})"
                     for k, v in report["growth"].items() if not v["ok"]]
        open_end = sum(samples[-1]["open"].values())
        if open_end < 0.97 * args.conns:
            failures.append(f"only {open_end} of {args.conns} connections open at the end")
        if not report["clients"]["deltas"]:
            failures.append("no chat_delta was delivered")
    else:
        failures.append("no samples")
    report["failures"] = failures
    report["ok"] = not failures
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"soak-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(started))}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1))
    if samples:
        plot(samples, stem.with_suffix(".png"), f"soak: {args.conns} connections, {args.minutes} min")
    print(json.dumps({k: report.get(k) for k in ("before", "after", "growth", "clients", "health", "failures")}, indent=1))
    print(f"wrote {stem}.json/.png: {'OK' if report['ok'] else 'FAIL'}")
    return 0 if report["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--conns", type=int, default=2000)
    p.add_argument("--turn-every", type=float, default=60.0, help="mean seconds between one connection's turns")
    p.add_argument("--deltas", type=int, default=10, help="chat_deltas per turn (bench bundle)")
    p.add_argument("--rate", type=float, default=20.0, help="deltas per second within a turn")
    p.add_argument("--interval", type=float, default=0, help="seconds between samples (0: minutes*60/60, 2..10)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args(argv)
    if not args.interval:
        args.interval = min(10.0, max(2.0, args.minutes))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
