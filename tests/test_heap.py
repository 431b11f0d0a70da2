"""`kdc-trio serve` and `kdc-trio worker` freeze their start-up heap (kdc_trio/util/heap.py), so
full garbage collections walk only what the process made since (connections, sessions, turns)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from contextlib import ExitStack

from tests.support.processes import ROOT, spawn
from tests.support.redis_server import redis_server


def _frozen(proc, timeout: float = 20.0) -> int:
    """The count the process logged (a worker logs it just after saying it is ready)."""
    deadline = time.monotonic() + timeout
    while not (m := re.search(r"start-up heap settled: (\d+) objects frozen", proc.output())):
        assert time.monotonic() < deadline, proc.output()
        time.sleep(0.05)
    return int(m.group(1))


def test_serve_and_worker_freeze_their_start_up_heap():
    with redis_server() as srv, ExitStack() as stack:
        gw = spawn(stack, "serve", {})
        worker = spawn(stack, "worker", {"REDIS_URL": srv.url})
        # the code itself: modules, classes, functions (tens of thousands of objects)
        assert _frozen(gw) > 20_000
        assert _frozen(worker) > 20_000
        # events in flight are mostly gone before a young collection walks (and promotes) them
        assert "young generation collected every 10000 allocations" in gw.output()
        assert "young generation collected every 10000 allocations" in worker.output()


def test_the_young_threshold_is_a_setting():
    with redis_server() as srv, ExitStack() as stack:
        gw = spawn(stack, "serve", {"KDC_GC_YOUNG_THRESHOLD": "2500"})
        worker = spawn(stack, "worker", {"REDIS_URL": srv.url, "KDC_GC_YOUNG_THRESHOLD": "0"})
        _frozen(gw), _frozen(worker)
        assert "young generation collected every 2500 allocations" in gw.output()
        # 0: the interpreter's own threshold stays
        own = subprocess.run([sys.executable, "-c", "import gc; print(gc.get_threshold()[0])"], capture_output=True,
                             text=True, timeout=60).stdout.strip()
        assert f"young generation collected every {own} allocations" in worker.output()


def test_settle_leaves_later_objects_to_the_collector():
    code = ("import gc; from kdc_trio.util import heap; n = heap.settle(); later = [[] for _ in range(10)];"
            "assert gc.get_freeze_count() == n > 1000; assert all(gc.is_tracked(x) for x in later);"
            "print(len(gc.get_objects()) < n)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True", "the frozen objects are no longer in the collected generations"


def test_settle_can_collect_the_young_generation_less_often():
    code = ("import gc; from kdc_trio.util import heap; before = gc.get_threshold(); heap.settle(young=12345);"
            "print(gc.get_threshold() == (12345, *before[1:]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
