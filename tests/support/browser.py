"""Headless Chromium (Debian's `chromium` package) driven by Playwright for Python.

Playwright's own browser download is not used: the system browser is passed as
`executable_path`. Without it (or without playwright) a test skips, or fails under
KDC_REQUIRE_SERVICES=1 (CI), where `.ci/run` installs it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.node import services_required

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def _missing(msg: str):
    if services_required():
        pytest.fail(msg + " (KDC_REQUIRE_SERVICES=1)")
    pytest.skip(msg)


def chromium_path() -> str:
    explicit = os.environ.get("KDC_CHROMIUM")
    found = explicit if explicit and os.path.exists(explicit) else next(
        (p for p in map(shutil.which, CANDIDATES) if p), None)
    if not found:
        _missing("chromium is needed for the browser tests (apt-get install -y chromium)")
    return found


def launch(playwright):
    """A headless Chromium from the system package."""
    return playwright.chromium.launch(executable_path=chromium_path(), headless=True,
                                      args=["--no-sandbox", "--disable-dev-shm-usage"])


@contextmanager
def sync_playwright() -> Iterator:
    """Playwright's sync API on a plain asyncio loop: trio-asyncio (the compat Redis backend's
    tests import it) installs a global loop policy whose loops Playwright cannot run in."""
    try:
        from playwright.sync_api import sync_playwright as start
    except ImportError:
        _missing("playwright is needed for the browser tests (pip install playwright)")
    policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    try:
        with start() as pw:
            yield pw
    finally:
        asyncio.set_event_loop_policy(policy)


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
