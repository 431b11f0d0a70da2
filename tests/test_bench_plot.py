"""bench/plot_many.py: the README's sessions-vs-CPU plot from `many` reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.plot_many import points  # noqa: E402


def report(redis: bool, **targets) -> dict:
    return {"workload": "many", "redis": redis, "params": {"rate": 20.0}, "targets": {
        name: {"median": m} for name, m in targets.items()}}


def test_points_take_the_sustained_rung_and_the_gateways_own_cpu_when_known():
    rep = report(True,
                 a={"sustained": True, "sessions": 800, "deliveries_per_s": 16000, "server_cpu_pct": 80,
                    "gateway_cpu_us_per_event": 21.5},
                 b={"sustained": True, "sessions": 200, "deliveries_per_s": 4000, "server_cpu_pct": 40},
                 c={"sustained": False, "sessions": 100, "deliveries_per_s": 2000, "server_cpu_pct": 99})
    assert points(rep) == [("a", 21.5, 800), ("b", 100.0, 200)]


def test_the_plot_is_written(tmp_path):
    files = []
    for i, redis in enumerate((False, True)):
        f = tmp_path / f"many-{i}.json"
        f.write_text(json.dumps(report(redis, **{"kdc-sse": {"sustained": True, "sessions": 400,
                                                            "deliveries_per_s": 8000, "server_cpu_pct": 50}})))
        files.append(str(f))
    out = subprocess.run([sys.executable, "bench/plot_many.py", *files, "--out", str(tmp_path / "p.png")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "p.png").stat().st_size > 5000
    lines = [ln.split() for ln in out.stdout.splitlines()]
    assert ["kdc-sse", "memory", "62.5", "us/event", "400", "sessions"] in lines
    assert ["kdc-sse", "redis", "62.5", "us/event", "400", "sessions"] in lines
