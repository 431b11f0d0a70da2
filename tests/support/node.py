"""Node and the official socket.io-client for tests: found (and `npm ci`-installed) or a clear failure."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).resolve().parent.parent / "node"


def services_required() -> bool:
    return os.environ.get("KDC_REQUIRE_SERVICES") == "1"


def node_client_dir() -> Path:
    """tests/node with its node_modules installed; fails (CI) or skips when Node is missing."""
    if not (shutil.which("node") and shutil.which("npm")):
        msg = "node and npm are needed for the socket.io-client tests"
        if services_required():
            pytest.fail(msg)
        pytest.skip(msg)
    if not (NODE_DIR / "node_modules" / "socket.io-client").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=300,
                       stdout=subprocess.DEVNULL)
    return NODE_DIR
