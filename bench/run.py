"""bench/ runner: one workload against kdc-trio and the peers, in the same run.

    python3 bench/run.py <stream|fan-out|many|idle|churn>
        [--targets kdc-sse,kdc-sio,node-sio,py-sio,sse-starlette] [--redis] [--quick] [--runs 3]
        [--n N] [--size S] [--k K] [--c C] [--rate R] [--duration D] [--clients W] [--workers N] [--out DIR]

Prints a table (median of the runs), the ratios of kdc-trio against each peer speaking the same
protocol, and writes `<out>/<workload>-<timestamp>.json` and `.png`. `--redis` starts a
redis-server for the run and joins every target to it (kdc-trio's RedisBus, socket.io's
redis-adapter, python-socketio's AsyncRedisManager, sse-starlette over redis.asyncio pub/sub).
`many` climbs a ladder of session counts and reports the highest C×R whose p99 stays under
50 ms. Every run (and every rung) starts its server afresh. `--workers N` runs kdc-trio as
`serve --workers N` (N processes on one port, joined through the run's Redis, so it implies
`--redis`); CPU and RSS are then summed over the supervisor and its workers. Numbers marked `client-bound` came from a load generator that used >80% of a core.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import print_table, write_png  # noqa: E402
from bench.targets import TARGETS, RedisServer, Running  # noqa: E402
from bench.workloads import HEADLINE, WORKLOADS, median_run  # noqa: E402

P99_BUDGET_MS = 50.0
DEFAULTS = {"n": 20000, "size": 100, "k": 50, "c": 1000, "rate": 20.0, "duration": 5.0, "clients": 8}
QUICK = {"n": 200, "size": 100, "k": 4, "c": 20, "rate": 20.0, "duration": 1.0, "clients": 2}
LADDER = [100, 200, 400, 800, 1600]


def fresh_run(name: str, redis_url: str | None, workload: str, params: dict) -> dict:
    """One run on a freshly started server: no state, memory or leaked streams carried over."""
    running = Running(TARGETS[name], redis_url, workers=params.get("server_workers", 1))
    try:
        return WORKLOADS[workload](running, **params)
    finally:
        running.stop()


def run_target(name: str, workload: str, params: dict, runs: int, redis_url: str | None) -> dict:
    if workload == "many":
        return run_ladder(name, redis_url, params, runs)
    results = [fresh_run(name, redis_url, workload, params) for _ in range(runs)]
    return {"runs": results, "median": median_run(results, HEADLINE[workload])}


def run_ladder(name: str, redis_url: str | None, params: dict, runs: int) -> dict:
    rungs = [params["c"]] if params.get("quick") else [c for c in LADDER if c <= params["c"]] or [params["c"]]
    steps, best = [], None
    for c in rungs:
        results = [fresh_run(name, redis_url, "many", {**params, "c": c}) for _ in range(runs)]
        step = median_run(results, "deliveries_per_s")
        steps.append(step)
        if step["complete"] and step["p99_ms"] is not None and step["p99_ms"] < P99_BUDGET_MS:
            best = step
        else:
            break
    chosen = best or steps[0]
    return {"runs": steps, "median": {**chosen, "sustained": best is not None,
                                      "sustained_events_per_s": (best["sessions"] * best["rate_per_session"])
                                      if best else 0.0}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workload", choices=list(WORKLOADS))
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--redis", action="store_true")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one run: checks that the harness works")
    p.add_argument("--runs", type=int)
    for k, v in DEFAULTS.items():
        p.add_argument(f"--{k}", type=type(v))
    p.add_argument("--workers", type=int, default=1,
                   help="kdc-trio server processes (serve --workers N; implies --redis)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    a = p.parse_args(argv)
    if a.workers > 1:
        a.redis = True
    params = dict(QUICK if a.quick else DEFAULTS)
    params.update({k: getattr(a, k) for k in DEFAULTS if getattr(a, k) is not None})
    params["quick"] = a.quick
    params["server_workers"] = a.workers
    runs = a.runs or (1 if a.quick else 3)
    targets = [t.strip() for t in a.targets.split(",") if t.strip()]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        p.error(f"unknown targets: {', '.join(sorted(unknown))}")
    redis = RedisServer() if a.redis else None
    report = {"workload": a.workload, "params": params, "runs": runs, "redis": a.redis, "cpus": os.cpu_count(),
              "load_before": os.getloadavg(), "targets": {}}
    try:
        if redis:  # the limit, on the same Redis in the same run
            from bench.redis_relay_rate import bare_subscriber_rate, redis_benchmark_publish_rate

            report["redis_limit"] = {
                "bare_hiredis_subscriber_msgs_per_s": bare_subscriber_rate(redis.port, 20_000 if a.quick else 200_000,
                                                                           params["size"]),
                "redis_benchmark_publish_per_s": redis_benchmark_publish_rate(redis.port, 20_000 if a.quick
                                                                              else 200_000, params["size"])}
        for name in targets:
            print(f"… {name}", file=sys.stderr, flush=True)
            try:
                report["targets"][name] = run_target(name, a.workload, params, runs, redis.url if redis else None)
            except Exception as exc:  # one target failing must not lose the others' numbers
                print(f"{name} failed: {exc}", file=sys.stderr, flush=True)
                report.setdefault("failed", {})[name] = str(exc)
    finally:
        if redis:
            redis.stop()
    print_table(report)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = (f"-w{a.workers}" if a.workers > 1 else "") + ("-redis" if a.redis else "")
    stem = out / f"{a.workload}{tag}-{time.strftime('%Y%m%d-%H%M%S')}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    write_png(report, stem.with_suffix(".png"))
    print(f"wrote {stem}.json and {stem}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
