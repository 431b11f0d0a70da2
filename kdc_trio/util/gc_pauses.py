"""How long the garbage collector stops the process, per generation: one histogram per process.

A collection stops everything on the event loop while it runs; a full (generation 2) one walks
every tracked object the process holds, so its pause grows with the connections held (~65-77
objects each; ~0.4 s at 10,000 connections on the bench box). `/metrics` shows it as
`kdc_gc_pause_seconds{generation}`. `gc.callbacks` is process-wide, so is this: `installed()`
adds one callback the first time (tests run many gateways in one process; each reads the same
counts). The callback costs two clock reads and a bucket bisect per collection.
"""

from __future__ import annotations

import gc
import time
from bisect import bisect_left

# A young collection takes well under a millisecond to a few; a full one at scale, tenths of a
# second. Seconds.
GC_PAUSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class GcPauses:
    __slots__ = ("bounds", "counts", "sums", "_start")

    _installed: "GcPauses | None" = None

    def __init__(self) -> None:
        self.bounds = list(GC_PAUSE_BUCKETS)
        # per generation (0, 1, 2): counts per bucket, the last above every bound (+Inf)
        self.counts = [[0] * (len(self.bounds) + 1) for _ in range(3)]
        self.sums = [0.0, 0.0, 0.0]
        self._start = 0.0

    @classmethod
    def installed(cls) -> "GcPauses":
        """The process's instance, its callback registered with the collector."""
        if cls._installed is None:
            cls._installed = cls()
            gc.callbacks.append(cls._installed._callback)
        return cls._installed

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
            return
        pause = time.perf_counter() - self._start
        generation = info["generation"]  # 0, 1 or 2
        self.counts[generation][bisect_left(self.bounds, pause)] += 1
        self.sums[generation] += pause
