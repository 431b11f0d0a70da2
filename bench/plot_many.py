"""Sessions sustained vs CPU per event, per target, from `many` reports (README's Performance plot).

    python3 bench/plot_many.py bench/results/many-*.json bench/results/many-redis-*.json [--out docs/perf-many.png]

One point per target and report: x is the server's CPU µs per delivered event at the highest rung
whose p99 stayed under 50 ms (the gateway's alone where the report separates it: `many --redis`
with its separate worker), y is the sessions sustained there. Filled markers: in memory; open:
through Redis.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

COLORS = {"kdc-sse": "#1f77b4", "kdc-sio": "#2ca02c", "node-sio": "#d62728", "py-sio": "#9467bd",
          "sse-starlette": "#8c564b"}


def points(report: dict) -> list[tuple[str, float, int]]:
    """(target, CPU µs per event, sessions sustained) of one `many` report."""
    out = []
    for name, res in report["targets"].items():
        m = res["median"]
        if not m.get("sustained") or not m.get("deliveries_per_s"):
            continue
        us = m.get("gateway_cpu_us_per_event")
        if us is None:  # older reports: the server's whole CPU
            us = m["server_cpu_pct"] / 100 / m["deliveries_per_s"] * 1e6
        out.append((name, float(us), int(m["sessions"])))
    return out


def plot(reports: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    placed: list[tuple[float, int]] = []
    for rep in reports:
        redis = bool(rep.get("redis"))
        for name, us, sessions in points(rep):
            color = COLORS.get(name, "black")
            ax.scatter([us], [sessions], s=60, color=color if not redis else "white", edgecolors=color,
                       linewidths=2, marker="s" if redis else "o", zorder=3)
            # a label near an earlier point's goes below it, then further down (no overlaps)
            near = sum(1 for x, y in placed if abs(x - us) / max(x, us) < 0.25 and y == sessions)
            placed.append((us, sessions))
            ax.annotate(f"{name}{' (Redis)' if redis else ''}", (us, sessions), textcoords="offset points",
                        xytext=(6, 4 - 12 * near), fontsize=8)
    rate = next((r["params"]["rate"] for r in reports), 20)
    ax.set_xscale("log")
    ax.set_xlabel("server CPU µs per delivered event (log)")
    ax.set_ylabel(f"sessions sustained at {rate:g} ev/s, p99 < 50 ms")
    ax.set_title("many: sessions sustained vs CPU per event")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+")
    p.add_argument("--out", default="docs/perf-many.png")
    a = p.parse_args(argv)
    reports = [json.loads(Path(f).read_text()) for f in a.reports]
    reports = [r for r in reports if r.get("workload") == "many"]
    if not reports:
        p.error("no `many` report among the files")
    plot(reports, Path(a.out))
    for rep in reports:
        for name, us, sessions in points(rep):
            print(f"{name:14s} {'redis' if rep.get('redis') else 'memory':7s} {us:8.1f} us/event  {sessions:6d} sessions")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
