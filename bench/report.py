"""The printed table, the ratios and the PNG of one bench/ report."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python3 bench/report.py …
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.targets import TARGETS  # noqa: E402
from bench.workloads import HEADLINE, LOWER_IS_BETTER  # noqa: E402

COLUMNS = {
    "stream": [("deliveries_per_s", "deliv/s", "{:,.0f}"), ("p50_ms", "p50 ms", "{:.2f}"), ("p99_ms", "p99 ms", "{:.2f}"),
               ("max_ms", "max ms", "{:.1f}"), ("server_cpu_s_per_100k", "CPU s/100k", "{:.2f}"),
               ("gateway_cpu_us_per_event", "gw µs/event", "{:.1f}"),
               ("server_rss_mb", "RSS MB", "{:.0f}"), ("bytes_per_event", "B/event", "{:.0f}")],
    "idle": [("kib_per_connection", "KiB/conn", "{:.1f}"), ("kernel_kib_per_connection", "kern KiB/conn", "{:.1f}"),
             ("rss_after_mb", "RSS MB", "{:.0f}"), ("established", "open conns", "{:,}"), ("open_s", "open s", "{:.1f}")],
    "churn": [("cycles_per_s", "conn/s", "{:,.0f}"), ("errors", "errors", "{}"),
              ("server_cpu_s_per_1k_cycles", "CPU s/1k", "{:.2f}"), ("server_rss_mb", "RSS MB", "{:.0f}")],
}
COLUMNS["fan-out"] = COLUMNS["stream"]
COLUMNS["many"] = COLUMNS["stream"][:3] + [("lag_p99_ms", "lag p99 ms", "{:.1f}"),
                                            ("server_cpu_pct", "CPU %", "{:.0f}"),
                                            ("gateway_cpu_us_per_event", "gw µs/event", "{:.1f}"),
                                            ("sustained_events_per_s", "C×R ok/s", "{:,.0f}"),
                                            ("sessions", "C", "{}"), ("bytes_per_event", "B/event", "{:.0f}")]


# Through a single Redis (`--redis`): the separate worker's CPU and Redis's own per delivered
# event, beside the gateway's (a peer's one process is gateway and producer).
THROUGH_REDIS = [("worker_cpu_us_per_event", "worker µs/event", "{:.1f}"),
                 ("redis_cpu_us_per_event", "Redis µs/event", "{:.1f}")]


def columns(report: dict) -> list[tuple[str, str, str]]:
    cols = COLUMNS[report["workload"]]
    if not report.get("redis") or report["workload"] not in ("stream", "fan-out", "many"):
        return cols
    at = next(i for i, (k, _, _) in enumerate(cols) if k == "gateway_cpu_us_per_event") + 1
    return cols[:at] + THROUGH_REDIS + cols[at:]


def _fmt(fmt: str, v) -> str:
    return "-" if v is None else fmt.format(v)


def print_table(report: dict) -> None:
    w = report["workload"]
    cols = columns(report)
    print(f"\n{w}{' (redis)' if report['redis'] else ''}: median of {report['runs']} run(s), "
          f"params {{{', '.join(f'{k}={v}' for k, v in report['params'].items() if k != 'quick')}}}")
    widths = [max(14, len(h) + 2) for _, h, _ in cols]
    print(f"{'target':<15}" + "".join(f"{h:>{w}}" for (_, h, _), w in zip(cols, widths)) + "  notes")
    for name, res in report["targets"].items():
        m = res["median"]
        notes = []
        if m.get("client_cpu_bound"):
            notes.append("client-bound")
        if m.get("complete") is False:
            notes.append(f"incomplete {m['deliveries']}/{m['expected']}")
        print(f"{name:<15}" + "".join(f"{_fmt(f, m.get(k)):>{w}}" for (k, _, f), w in zip(cols, widths))
              + "  " + ", ".join(notes))
    for name, why in report.get("failed", {}).items():
        print(f"{name:<15} FAILED: {why}")
    for line in ratios(report):
        print(line)
    limit = report.get("redis_limit")
    if limit:
        print(f"the limit on this Redis: a bare hiredis subscriber receives "
              f"{limit['bare_hiredis_subscriber_msgs_per_s']:,.0f} msg/s; redis-benchmark publishes "
              f"{limit['redis_benchmark_publish_per_s']:,.0f} msg/s")


def ratios(report: dict) -> list[str]:
    key = HEADLINE[report["workload"]]
    res = report["targets"]
    lines = []
    for kdc in ("kdc-sse", "kdc-sio"):
        if kdc not in res:
            continue
        mine = res[kdc]["median"].get(key)
        for peer, r in res.items():
            if TARGETS[peer].flavor == "kdc" or TARGETS[peer].proto != TARGETS[kdc].proto:
                continue
            theirs = r["median"].get(key)
            if mine and theirs:
                ratio = theirs / mine if key in LOWER_IS_BETTER else mine / theirs
                lines.append(f"{kdc} / {peer}: {ratio:.2f}x {'(lower is better, inverted)' if key in LOWER_IS_BETTER else ''}")
    return lines


def write_png(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = HEADLINE[report["workload"]]
    names = list(report["targets"])
    values = [report["targets"][n]["median"].get(key) or 0 for n in names]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    bars = ax.bar(names, values, color=["#2b7" if n.startswith("kdc") else "#888" for n in names])
    ax.bar_label(bars, fmt="{:,.0f}" if values and max(values) > 100 else "{:.1f}")
    ax.set_ylabel(key)
    ax.set_title(f"{report['workload']}{' via Redis' if report['redis'] else ''} — {report['cpus']} CPUs")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown_table(report: dict) -> str:
    """The report as a Markdown table (for the README's Performance section)."""
    w = report["workload"]
    cols = columns(report)
    shown = {"stream": ("n", "size"), "fan-out": ("n", "size", "k"), "many": ("c", "rate", "duration", "size"),
             "idle": ("c",), "churn": ("clients", "duration")}[w]
    head = f"**{w}{' via Redis' if report['redis'] else ''}** (" + ", ".join(
        f"{k}={report['params'][k]}" for k in shown) + ")"
    lines = [head, "", "| target | " + " | ".join(h for _, h, _ in cols) + " | notes |",
             "|---|" + "---:|" * len(cols) + "---|"]
    for name, res in report["targets"].items():
        m = res["median"]
        notes = ", ".join(x for x in ("client-bound" if m.get("client_cpu_bound") else "",
                                      f"incomplete {m['deliveries']}/{m['expected']}"
                                      if m.get("complete") is False else "") if x)
        lines.append(f"| {name} | " + " | ".join(_fmt(f, m.get(k)) for k, _, f in cols) + f" | {notes} |")
    extra = ratios(report)
    limit = report.get("redis_limit")
    if limit:
        extra.append(f"limit: bare hiredis subscriber {limit['bare_hiredis_subscriber_msgs_per_s']:,.0f} msg/s, "
                     f"redis-benchmark PUBLISH {limit['redis_benchmark_publish_per_s']:,.0f}/s")
    if extra:
        lines += ["", "; ".join(x.strip() for x in extra)]
    return "\n".join(lines)


if __name__ == "__main__":  # python3 bench/report.py bench/results/*.json  → Markdown tables
    import json

    for path in sys.argv[1:]:
        print(markdown_table(json.loads(Path(path).read_text())), end="\n\n")
