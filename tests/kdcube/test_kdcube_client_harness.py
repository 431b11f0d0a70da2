"""KDCube's real web client (its Redux store + middleware over SSE and Socket.IO, and SseChatService),
bundled with esbuild and run in Node against `kdc-trio serve`: every scenario, every step passes.
Collected only with KDCUBE_SRC set (see conftest.py); needs node and npm (the harness runs `npm ci`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
def test_kdcube_client_harness(tmp_path):
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.fail("KDCUBE_SRC is set but node/npm are not on the PATH: the harness runs KDCube's client in Node")
    out = subprocess.run([sys.executable, str(ROOT / "tools/kdcube_harness/run.py"),
                          "--kdcube-src", os.environ["KDCUBE_SRC"], "--json", str(tmp_path / "results.json")],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert (tmp_path / "results.json").exists(), out.stdout + out.stderr
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    failed = {name: [s for s in r["steps"] if not s["ok"]] for name, r in results.items()}
    assert out.returncode == 0 and not any(failed.values()), out.stdout
