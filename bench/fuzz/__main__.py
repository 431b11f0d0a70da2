"""`python3 -m bench.fuzz http|sse|eio-polling|eio-ws|sio [--n 1000000] [--seed S] [--conns C]`

Fuzzes one surface of a live `kdc-trio serve` (started here on a free port, embedded defaults)
with generated inputs (mutations of valid requests and packets), prints a table of responses by
class and writes `bench/results/fuzz-<target>-<time>.json`. Exits 1 on a finding: a 500, a hang
(a connection neither answered nor closed within its deadline), a response that is not HTTP, the
server dead or `/health` unanswered, RSS or open files grown past the allowance.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from bench.fuzz.driver import fuzz, table
from bench.live import ROOT

TARGETS = {"http": "http", "sse": "sse", "eio-polling": "eio_polling", "eio-ws": "eio_ws", "sio": "sio"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.fuzz", description=__doc__.split("\n\n")[1])
    p.add_argument("target", choices=[*TARGETS, "all"])
    p.add_argument("--n", type=int, default=1_000_000, help="inputs to send")
    p.add_argument("--seed", type=int, default=None, help="default: the time")
    p.add_argument("--conns", type=int, default=16, help="connections at once")
    p.add_argument("--minutes", type=float, default=0, help="stop after this long even if --n is not reached (0: no cap)")
    p.add_argument("--max-rss-growth-mb", type=float, default=256.0)
    p.add_argument("--max-fd-growth", type=int, default=64)
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time())
    ok = True
    for name in (TARGETS if args.target == "all" else [args.target]):
        target = importlib.import_module(f"bench.fuzz.{TARGETS[name]}")
        report = fuzz(target, n=args.n, conns=args.conns, seed=seed, out=Path(args.out),
                      max_rss_growth_mb=args.max_rss_growth_mb, max_fd_growth=args.max_fd_growth, minutes=args.minutes)
        print(table(report))
        for cls, samples in report["samples"].items():
            print(f"  {cls}: {samples[:3]}")
        print(f"wrote {report['path']}", flush=True)
        ok = ok and report["ok"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
