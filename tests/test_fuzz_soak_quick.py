"""CI's slice of the fuzzers and the soak (bench/fuzz, bench/soak): each fuzzer with a few thousand
inputs against its own live server, and a one-minute soak at a small connection count. The
commands exit 1 on a finding (a 500, a hang, a dead server, growth past the allowance), so these
fail when the server regresses; the full runs (1,000,000 inputs, 30 minutes) are in the README."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], tmp_path: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args, "--out", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("target", ["http", "sse", "eio-polling", "eio-ws", "sio"])
def test_fuzzer_slice(tmp_path, target):
    out = run(["bench.fuzz", target, "--n", "2000", "--seed", "7", "--conns", "8"], tmp_path, 170)
    [report_path] = tmp_path.glob(f"fuzz-{target}-*.json")
    report = json.loads(report_path.read_text())
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert report["ok"] and report["inputs"] >= 2000, report["failures"]
    assert "500" not in report["classes"] and "timeout" not in report["classes"]
    assert report["health_checks"] >= 1 or report["wall_s"] < 1.5
    assert "| class | inputs |" in out.stdout


@pytest.mark.timeout(240)
def test_soak_one_minute(tmp_path):
    out = run(["bench.soak", "--minutes", "1", "--conns", "150", "--turn-every", "10", "--interval", "3"],
              tmp_path, 230)
    [report_path] = tmp_path.glob("soak-*.json")
    report = json.loads(report_path.read_text())
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert report_path.with_suffix(".png").stat().st_size > 1000
    assert len(report["samples"]) >= 10
    last = report["samples"][-1]
    assert sum(last["open"].values()) == 150 and set(last["open"]) == {"sse", "ws", "polling"}
    assert report["clients"]["deltas"] > 0 and last["tasks"] > 0
    assert all(v["ok"] for v in report["growth"].values()), report["growth"]
